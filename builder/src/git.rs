//! `ADD` of a git repository (BuildKit's git source): `URL[#REF][:SUBDIR]`, fetched with the
//! host's `git` into a work directory of the store, checked out at REF, every file's time set
//! to the commit's (so the layer does not depend on when it was fetched).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Whether an ADD source names a git repository, by BuildKit's rules: `git@host:path`,
/// `git://...`, or an http(s)/ssh URL whose path ends in `.git`.
pub(crate) fn is_git_url(source: &str) -> bool {
    if source.starts_with("git@") || source.starts_with("git://") {
        return true;
    }
    let without_fragment = source.split('#').next().unwrap_or(source);
    ["http://", "https://", "ssh://"]
        .iter()
        .any(|scheme| source.starts_with(scheme))
        && without_fragment.trim_end_matches('/').ends_with(".git")
}

/// A parsed git source.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GitSource {
    pub url: String,
    /// A branch, tag or commit (None: the remote's default branch).
    pub reference: Option<String>,
    /// The directory of the repository to copy (None: all of it).
    pub subdir: Option<String>,
}

impl GitSource {
    pub fn parse(source: &str) -> Result<GitSource, String> {
        let (url, fragment) = match source.split_once('#') {
            Some((url, fragment)) => (url, Some(fragment)),
            None => (source, None),
        };
        let (reference, subdir) = match fragment {
            None => (None, None),
            Some(f) => match f.split_once(':') {
                Some((r, s)) => (Some(r), Some(s)),
                None => (Some(f), None),
            },
        };
        let reference = reference.filter(|r| !r.is_empty()).map(str::to_string);
        if let Some(r) = &reference {
            if r.starts_with('-') || r.contains("..") || r.chars().any(char::is_whitespace) {
                return Err(format!("ADD {source}: {r:?} is not a git reference"));
            }
        }
        let subdir = subdir
            .map(|s| s.trim_matches('/'))
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        if let Some(s) = &subdir {
            if s.split('/').any(|c| c == "..") {
                return Err(format!(
                    "ADD {source}: the subdirectory {s:?} leaves the repository"
                ));
            }
        }
        Ok(GitSource {
            url: url.to_string(),
            reference,
            subdir,
        })
    }
}

/// A checked-out repository.
pub(crate) struct Checkout {
    /// What to copy: the work tree, or its subdirectory.
    pub root: PathBuf,
    pub commit: String,
}

/// `git` with no user or system configuration, no prompts, and only network transports
/// (`ext::` and local paths could run commands or read the host's files).
fn git(dir: &Path) -> Command {
    let mut command = Command::new("git");
    command
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "protocol.allow=never",
            "-c",
            "protocol.https.allow=always",
            "-c",
            "protocol.http.allow=always",
            "-c",
            "protocol.ssh.allow=always",
            "-c",
            "protocol.git.allow=always",
            "-c",
            "advice.detachedHead=false",
        ])
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(std::process::Stdio::null());
    command
}

fn run(command: &mut Command, what: &str) -> Result<String, String> {
    let out = command.output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            "ADD of a git repository needs git: install it (Debian package git)".to_string()
        } else {
            format!("cannot run git to {what}: {e}")
        }
    })?;
    if !out.status.success() {
        return Err(format!(
            "git could not {what}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Fetches `source` into `dir` (empty) and checks it out; `.git` is removed unless kept.
pub(crate) fn checkout(
    source: &GitSource,
    dir: &Path,
    keep_git_dir: bool,
) -> Result<Checkout, String> {
    let url = &source.url;
    run(git(dir).args(["init", "-q"]), "make a repository")?;
    run(
        git(dir).args(["remote", "add", "origin", "--"]).arg(url),
        "add the remote",
    )?;
    let wanted = source.reference.clone().unwrap_or_else(|| "HEAD".into());
    // Shallow first (smart HTTP, ssh); a dumb HTTP server or a bare commit needs it all.
    let shallow = run(
        git(dir)
            .args(["fetch", "-q", "--depth", "1", "origin", "--"])
            .arg(&wanted),
        "fetch",
    );
    let target = match shallow {
        Ok(_) => "FETCH_HEAD".to_string(),
        Err(_) => {
            run(
                git(dir).args([
                    "fetch",
                    "-q",
                    "--tags",
                    "origin",
                    "+refs/heads/*:refs/remotes/origin/*",
                ]),
                &format!("fetch {url}"),
            )?;
            match &source.reference {
                Some(r) => [
                    format!("refs/remotes/origin/{r}"),
                    format!("refs/tags/{r}"),
                    r.clone(),
                ]
                .into_iter()
                .find(|c| {
                    run(
                        git(dir)
                            .args(["rev-parse", "-q", "--verify"])
                            .arg(format!("{c}^{{commit}}")),
                        "resolve",
                    )
                    .is_ok()
                })
                .ok_or_else(|| format!("ADD {url}: no branch, tag or commit {r:?}"))?,
                None => {
                    let head = run(
                        git(dir).args(["ls-remote", "--symref", "origin", "HEAD"]),
                        &format!("read the default branch of {url}"),
                    )?;
                    head.lines()
                        .find_map(|l| l.strip_prefix("ref: refs/heads/"))
                        .and_then(|l| l.split_whitespace().next())
                        .map(|b| format!("refs/remotes/origin/{b}"))
                        .ok_or_else(|| format!("ADD {url}: the repository has no default branch"))?
                }
            }
        }
    };
    run(
        git(dir).args(["checkout", "-q", "--detach"]).arg(&target),
        "check out",
    )?;
    let commit = run(git(dir).args(["rev-parse", "HEAD"]), "resolve HEAD")?;
    let time: i64 = run(
        git(dir).args(["log", "-1", "--format=%ct"]),
        "read the commit time",
    )?
    .parse()
    .map_err(|_| format!("ADD {url}: the commit has no readable time"))?;
    if !keep_git_dir {
        let dot_git = dir.join(".git");
        std::fs::remove_dir_all(&dot_git)
            .map_err(|e| format!("cannot remove {}: {e}", dot_git.display()))?;
    }
    set_times(dir, time).map_err(|e| format!("cannot set the times of {}: {e}", dir.display()))?;
    let root = match &source.subdir {
        Some(sub) => {
            let root = dir.join(sub);
            let inside = std::fs::canonicalize(&root)
                .map_err(|_| format!("ADD {url}: no directory {sub:?} in the repository"))?;
            if !inside.starts_with(std::fs::canonicalize(dir).unwrap_or_default())
                || !inside.is_dir()
            {
                return Err(format!(
                    "ADD {url}: {sub:?} is not a directory of the repository"
                ));
            }
            inside
        }
        None => dir.to_path_buf(),
    };
    Ok(Checkout { root, commit })
}

/// Every entry's modification time (symlinks' own) set to `seconds`.
fn set_times(dir: &Path, seconds: i64) -> std::io::Result<()> {
    use nix::sys::stat::{utimensat, UtimensatFlags};
    use nix::sys::time::TimeSpec;
    let at = TimeSpec::new(seconds, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                stack.push(entry?.path());
            }
        }
        utimensat(
            nix::fcntl::AT_FDCWD,
            &path,
            &at,
            &at,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(std::io::Error::from)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_sources_read_as_buildkit_reads_them() {
        assert!(is_git_url("https://example.com/repo.git"));
        assert!(is_git_url("https://example.com/repo.git#v1:sub"));
        assert!(is_git_url("git@github.com:org/repo"));
        assert!(!is_git_url("https://example.com/file.tar.gz"));
        let s = GitSource::parse("http://127.0.0.1/r.git#v1.0:docs/").unwrap();
        assert_eq!(s.url, "http://127.0.0.1/r.git");
        assert_eq!(s.reference.as_deref(), Some("v1.0"));
        assert_eq!(s.subdir.as_deref(), Some("docs"));
        let s = GitSource::parse("http://h/r.git#:sub").unwrap();
        assert_eq!((s.reference, s.subdir.as_deref()), (None, Some("sub")));
        assert!(GitSource::parse("http://h/r.git#--upload-pack=x").is_err());
        assert!(GitSource::parse("http://h/r.git#main:../x").is_err());
    }
}
