//! File-system helpers: a private mount namespace, OverlayFS mounts, path resolution that
//! never leaves a root, owners and no-follow opens, and Go-style glob matching of one path
//! component.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::Mode;

/// Move this process into its own mount namespace with private propagation, so the build's
/// overlay mounts are invisible outside and vanish with the process.
pub(crate) fn private_mount_namespace() -> io::Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).map_err(io::Error::from)?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(io::Error::from)
}

/// An OverlayFS mount, detached on drop.
pub(crate) struct OverlayMount {
    target: PathBuf,
}

impl OverlayMount {
    /// Mount `lower` (top first) with an optional upper and work dir at `target`. With one
    /// lower dir and no upper, a read-only bind mount is used (OverlayFS needs two lowers).
    pub(crate) fn mount(
        lower: &[PathBuf],
        upper_work: Option<(&Path, &Path)>,
        target: &Path,
        userxattr: bool,
    ) -> io::Result<OverlayMount> {
        std::fs::create_dir_all(target)?;
        if upper_work.is_none() && lower.len() == 1 {
            mount(
                Some(lower[0].as_path()),
                target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(io::Error::from)?;
            let _ = mount(
                None::<&str>,
                target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None::<&str>,
            );
            return Ok(OverlayMount {
                target: target.to_path_buf(),
            });
        }
        if lower.is_empty() {
            return Err(io::Error::other(
                "an overlay needs at least one lower directory",
            ));
        }
        // The options must fit in one page; with many layers, name the lower dirs through
        // short symlinks in a scratch directory and mount from there.
        let long = lower.iter().map(|p| p.as_os_str().len() + 1).sum::<usize>() > 3000;
        let links_dir = target.with_extension("lowers");
        let relative_to = if long {
            let _ = std::fs::remove_dir_all(&links_dir);
            std::fs::create_dir_all(&links_dir)?;
            for (i, p) in lower.iter().enumerate() {
                std::os::unix::fs::symlink(p, links_dir.join(i.to_string()))?;
            }
            Some(links_dir.clone())
        } else {
            None
        };
        let lowers: Vec<String> = if long {
            (0..lower.len()).map(|i| i.to_string()).collect()
        } else {
            lower.iter().map(|p| escape_option(p)).collect()
        };
        let mut options = format!("lowerdir={}", lowers.join(":"));
        if let Some((upper, work)) = upper_work {
            options.push_str(&format!(
                ",upperdir={},workdir={}",
                escape_option(upper),
                escape_option(work)
            ));
            // The upper dir becomes a layer, so it must hold real copies: no redirected
            // directories and no metadata-only copy-ups (kernels can default to either).
            // `userxattr` already rules both out and refuses them as explicit options.
            if !userxattr {
                options.push_str(",redirect_dir=off,metacopy=off");
            }
        }
        if userxattr {
            options.push_str(",userxattr");
        }
        let previous_dir = match &relative_to {
            Some(base) => {
                let previous = std::env::current_dir()?;
                std::env::set_current_dir(base)?;
                Some(previous)
            }
            None => None,
        };
        let target_abs = std::fs::canonicalize(target)?;
        let result = mount(
            Some("overlay"),
            &target_abs,
            Some("overlay"),
            MsFlags::empty(),
            Some(options.as_str()),
        );
        if let Some(previous) = previous_dir {
            std::env::set_current_dir(previous)?;
            // The kernel resolved the links at mount time.
            let _ = std::fs::remove_dir_all(&links_dir);
        }
        result.map_err(|e| io::Error::other(format!("mounting overlay ({options}): {e}")))?;
        Ok(OverlayMount {
            target: target.to_path_buf(),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.target
    }
}

impl Drop for OverlayMount {
    fn drop(&mut self) {
        if let Err(e) = umount2(&self.target, MntFlags::MNT_DETACH) {
            tracing::warn!(path = %self.target.display(), error = %e, "unmounting");
        }
    }
}

fn escape_option(p: &Path) -> String {
    let s = p.to_string_lossy();
    s.replace('\\', "\\\\")
        .replace(':', "\\:")
        .replace(',', "\\,")
}

/// Normalises a slash path: drops `.`, empty parts and the leading `/`; returns None when a
/// `..` would climb above the start.
pub(crate) fn clean_relative(path: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir if !out.pop() => return None,
            _ => {}
        }
    }
    Some(out)
}

/// How symlinks met while resolving are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Confine {
    /// Resolve as if the root were `/` (absolute links and `..` stay inside): image roots.
    InRoot,
    /// Refuse anything that leaves the root: the build context.
    Beneath,
}

fn open_root(root: &Path) -> io::Result<OwnedFd> {
    nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)
}

fn resolve_flags(confine: Confine) -> ResolveFlag {
    match confine {
        Confine::InRoot => ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        Confine::Beneath => ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS,
    }
}

/// Open `rel` under `root` (following symlinks as `confine` allows) as an O_PATH fd.
fn open_confined(
    root_fd: &OwnedFd,
    rel: &Path,
    confine: Confine,
    dir: bool,
) -> Result<OwnedFd, Errno> {
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let mut flags = OFlag::O_PATH | OFlag::O_CLOEXEC;
    if dir {
        flags |= OFlag::O_DIRECTORY;
    }
    let how = OpenHow::new().flags(flags).resolve(resolve_flags(confine));
    openat2(root_fd, rel, how)
}

/// The real path of an open fd.
fn fd_path(fd: &OwnedFd) -> io::Result<PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Why a path could not be resolved inside its root.
#[derive(Debug)]
pub(crate) enum ResolveError {
    /// It does not exist.
    NotFound,
    /// It leads outside the root (only with [`Confine::Beneath`]).
    Escapes,
    Other(io::Error),
}

impl std::fmt::Display for ResolveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResolveError::NotFound => write!(f, "no such file or directory"),
            ResolveError::Escapes => write!(f, "it leads outside the root"),
            ResolveError::Other(e) => write!(f, "{e}"),
        }
    }
}

fn resolve_errno(e: Errno) -> ResolveError {
    match e {
        Errno::ENOENT => ResolveError::NotFound,
        Errno::EXDEV | Errno::ELOOP => ResolveError::Escapes,
        other => ResolveError::Other(io::Error::from(other)),
    }
}

/// The host path of `rel` under `root`, every symlink on the way (the last one too) followed
/// as `confine` allows. The result has no symlink in it.
pub(crate) fn resolve(root: &Path, rel: &Path, confine: Confine) -> Result<PathBuf, ResolveError> {
    let root_fd = open_root(root).map_err(ResolveError::Other)?;
    let fd = open_confined(&root_fd, rel, confine, false).map_err(resolve_errno)?;
    fd_path(&fd).map_err(ResolveError::Other)
}

/// The host path of `rel`'s parent directory under `root` (resolved as [`resolve`]) joined
/// with `rel`'s last component, which is not followed.
pub(crate) fn resolve_parent(
    root: &Path,
    rel: &Path,
    confine: Confine,
) -> Result<PathBuf, ResolveError> {
    let Some(name) = rel.file_name() else {
        return resolve(root, rel, confine);
    };
    let parent = rel.parent().unwrap_or(Path::new(""));
    let root_fd = open_root(root).map_err(ResolveError::Other)?;
    let fd = open_confined(&root_fd, parent, confine, true).map_err(resolve_errno)?;
    Ok(fd_path(&fd).map_err(ResolveError::Other)?.join(name))
}

/// Make the directory `rel` (and missing parents) inside the image root `root`, resolving
/// symlinks inside the root; new directories get mode 0755 and `owner`. Returns its host path.
pub(crate) fn mkdir_in_root(
    root: &Path,
    rel: &Path,
    owner: (u32, u32),
    created: &mut Vec<PathBuf>,
) -> io::Result<PathBuf> {
    let root_fd = open_root(root)?;
    let mut prefix = PathBuf::new();
    let mut current = fd_path(&open_confined(&root_fd, &prefix, Confine::InRoot, true)?)?;
    for c in rel.components() {
        let Component::Normal(name) = c else { continue };
        prefix.push(name);
        match open_confined(&root_fd, &prefix, Confine::InRoot, true) {
            Ok(fd) => current = fd_path(&fd)?,
            Err(Errno::ENOENT) => {
                let path = current.join(name);
                std::fs::create_dir(&path)?;
                set_owner(&path, owner.0, owner.1)?;
                std::fs::set_permissions(
                    &path,
                    std::os::unix::fs::PermissionsExt::from_mode(0o755),
                )?;
                created.push(path.clone());
                // Re-resolve: the new directory is now the canonical place.
                current = fd_path(&open_confined(&root_fd, &prefix, Confine::InRoot, true)?)?;
            }
            Err(Errno::ENOTDIR) => {
                return Err(io::Error::other(format!(
                    "/{} exists and is not a directory",
                    prefix.display()
                )))
            }
            Err(e) => return Err(io::Error::from(e)),
        }
    }
    Ok(current)
}

/// Give `path` (not followed) the owner `uid:gid`. An owner outside the rootless namespace's
/// mapping is recorded in the store's owner xattr instead, which the layer commit writes
/// into the tar (symlinks cannot carry it and keep the mapped owner).
pub(crate) fn set_owner(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    match std::os::unix::fs::lchown(path, Some(uid), Some(gid)) {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::EPERM)) => {
            if std::fs::symlink_metadata(path)?.file_type().is_symlink() {
                return Ok(());
            }
            xattr::set(
                path,
                gcr_storage::unpack::OWNER_XATTR,
                format!("{uid}:{gid}").as_bytes(),
            )
        }
        Err(e) => Err(e),
    }
}

/// Open a source file without following a symlink in its last component (the walk saw a
/// regular file there; a swapped-in link must not redirect the read).
pub(crate) fn open_nofollow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// True when `s` has glob metacharacters (`*`, `?`, `[`).
pub(crate) fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Go's `path.Match` for one component: `*`, `?`, `[...]` with ranges and `^`/`!`, `\` escapes.
pub(crate) fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    match_from(&p, &n)
}

fn match_from(p: &[char], n: &[char]) -> bool {
    if p.is_empty() {
        return n.is_empty();
    }
    match p[0] {
        '*' => (0..=n.len()).any(|i| match_from(&p[1..], &n[i..])),
        '?' => !n.is_empty() && match_from(&p[1..], &n[1..]),
        '[' => {
            let Some(c) = n.first() else { return false };
            match class_match(&p[1..], *c) {
                Some((hit, rest)) => hit && match_from(rest, &n[1..]),
                None => false,
            }
        }
        '\\' if p.len() > 1 => !n.is_empty() && n[0] == p[1] && match_from(&p[2..], &n[1..]),
        c => !n.is_empty() && n[0] == c && match_from(&p[1..], &n[1..]),
    }
}

/// Matches `c` against a class body (after `[`); returns whether it matched and what follows `]`.
fn class_match(p: &[char], c: char) -> Option<(bool, &[char])> {
    let mut i = 0;
    let negate = matches!(p.first(), Some('^') | Some('!'));
    if negate {
        i += 1;
    }
    let mut hit = false;
    let mut first = true;
    while i < p.len() {
        if p[i] == ']' && !first {
            return Some((hit != negate, &p[i + 1..]));
        }
        first = false;
        let mut lo = p[i];
        if lo == '\\' {
            i += 1;
            lo = *p.get(i)?;
        }
        i += 1;
        let mut hi = lo;
        if p.get(i) == Some(&'-') && p.get(i + 1).is_some_and(|x| *x != ']') {
            hi = p[i + 1];
            if hi == '\\' {
                hi = *p.get(i + 2)?;
                i += 1;
            }
            i += 2;
        }
        if lo <= c && c <= hi {
            hit = true;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_follow_go() {
        assert!(glob_match("*.txt", "a.txt"));
        assert!(!glob_match("*.txt", "a.txt.bak"));
        assert!(glob_match("a?c", "abc"));
        assert!(glob_match("[a-c]x", "bx"));
        assert!(!glob_match("[^a-c]x", "bx"));
        assert!(glob_match("\\*", "*"));
        assert!(glob_match("*", ""));
    }

    #[test]
    fn relative_paths_never_climb() {
        assert_eq!(clean_relative("/a/./b/"), Some(PathBuf::from("a/b")));
        assert_eq!(clean_relative("a/../b"), Some(PathBuf::from("b")));
        assert_eq!(clean_relative("../x"), None);
        assert_eq!(clean_relative("/"), Some(PathBuf::new()));
    }
}
