//! Rootless gcr: the user namespace the whole gcr process lives in when run by an
//! unprivileged user.
//!
//! [`enter_rootless_userns`] is called by the cli first thing, while the process is still
//! single-threaded. It does not re-exec: the process itself `unshare`s a new user + mount
//! namespace (which already gives it every capability there), and a helper forked just before
//! runs `newuidmap`/`newgidmap` on it from the parent namespace, mapping uid/gid 0 to the user
//! and 1..=N to the user's /etc/subuid and /etc/subgid ranges. Their exit status is checked.
//! Without a range (or without the helpers) a single mapping 0 -> user is written directly,
//! with a warning. Afterwards the process sees itself as uid 0 and everything below the cli can
//! act as root; [`rootless_ids`] tells it that it is in fact rootless.

use std::io::Read;
use std::path::Path;
use std::process::Command;

use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::unistd::{ForkResult, Gid, Uid};

/// Set by [`enter_rootless_userns`] to `UID:GID` of the real user; inherited by children.
pub const ROOTLESS_ENV: &str = "_GCR_ROOTLESS";

#[derive(Debug, thiserror::Error)]
pub enum UsernsError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create a user namespace: {0} (are unprivileged user namespaces enabled? gcr must be started single-threaded)")]
    Unshare(Errno),
    #[error("{tool} failed: {message}")]
    MapTool { tool: String, message: String },
    #[error("cannot write {file}: {source}")]
    WriteMap {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot fork the id-mapping helper: {0}")]
    Fork(Errno),
}

/// One line of /etc/subuid or /etc/subgid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub start: u32,
    pub count: u32,
}

/// What [`enter_rootless_userns`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rootless {
    /// Already root, or already inside gcr's user namespace: nothing to do.
    NotNeeded,
    /// Now inside a new user namespace as uid 0. `subordinate` is false when only the user's
    /// own id could be mapped.
    Entered {
        uid: u32,
        gid: u32,
        subordinate: bool,
    },
}

/// The ranges of `user` (name or numeric uid) in a subuid/subgid file. A missing file means
/// no ranges.
pub fn subordinate_ranges(file: &Path, user: &str, id: u32) -> Result<Vec<IdRange>, UsernsError> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(UsernsError::Read {
                path: file.to_path_buf(),
                source,
            })
        }
    };
    let id = id.to_string();
    Ok(text
        .lines()
        .filter_map(|line| {
            let mut f = line.trim().split(':');
            let (who, start, count) = (f.next()?, f.next()?, f.next()?);
            if who != user && who != id {
                return None;
            }
            Some(IdRange {
                start: start.parse().ok()?,
                count: count.parse().ok().filter(|c| *c > 0)?,
            })
        })
        .collect())
}

/// The real user's uid and gid when this process is rootless gcr inside its user namespace.
pub fn rootless_ids() -> Option<(u32, u32)> {
    let v = std::env::var(ROOTLESS_ENV).ok()?;
    let (u, g) = v.split_once(':')?;
    Some((u.parse().ok()?, g.parse().ok()?))
}

/// The user's own directory for gcr's run-time state (network leases, the rootless network
/// namespace's keeper): `$XDG_RUNTIME_DIR/gcr` when that directory is the user's, else
/// `/tmp/gcr-run-UID` (made 0700 and checked to be the user's by whoever creates state in
/// it).
pub fn user_state_dir(uid: u32) -> std::path::PathBuf {
    use std::os::unix::fs::MetadataExt;
    // Only a runtime directory of this user's own (`su` and `runuser` pass the caller's on).
    let own = std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|d| !d.is_empty())
        .map(std::path::PathBuf::from)
        .filter(|d| std::fs::metadata(d).is_ok_and(|m| m.uid() == Uid::effective().as_raw()));
    match own {
        Some(dir) => dir.join("gcr"),
        None => std::path::PathBuf::from(format!("/tmp/gcr-run-{uid}")),
    }
}

/// Joins the user namespace of the rootless network namespace's keeper (see `switch`), so
/// that this process's containers and that namespace have one owner; then a mount namespace
/// of its own, as a new rootless namespace would have. False when there is no keeper or it
/// cannot be joined (a new namespace is made then).
fn join_keeper(uid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    // Only a record in a directory of this user's own, closed to others, is trusted (under
    // /tmp anybody could have made one first).
    let base = user_state_dir(uid);
    let trusted = std::fs::symlink_metadata(&base)
        .is_ok_and(|m| m.is_dir() && m.uid() == uid && m.mode() & 0o022 == 0);
    if !trusted {
        return false;
    }
    let state = base.join("net");
    match crate::switch::live_keeper(&state) {
        Some(keeper) => join_user_namespace_of(keeper),
        None => false,
    }
}

/// Joins the user namespace of process `pid` (a keeper, or a container whose namespaces a
/// new container shares), then a mount namespace of its own.
fn join_user_namespace_of(pid: u32) -> bool {
    let Ok(userns) = std::fs::File::open(format!("/proc/{pid}/ns/user")) else {
        return false;
    };
    if nix::sched::setns(&userns, CloneFlags::CLONE_NEWUSER).is_err() {
        return false;
    }
    // Past the setns there is no way back: a failure here is the caller's error.
    nix::sched::unshare(CloneFlags::CLONE_NEWNS).is_ok()
}

/// Whether gcr runs rootless: inside its own user namespace already, or as a user not yet
/// in it.
pub fn is_rootless() -> bool {
    rootless_ids().is_some() || !Uid::effective().is_root()
}

fn map_args(own: u32, ranges: &[IdRange]) -> Vec<String> {
    let mut args = vec!["0".to_string(), own.to_string(), "1".to_string()];
    let mut next = 1u64;
    for r in ranges {
        args.extend([next.to_string(), r.start.to_string(), r.count.to_string()]);
        next += r.count as u64;
    }
    args
}

fn helper_exists(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

/// Enters gcr's rootless user + mount namespace (see the module docs). Call it before any
/// thread exists (before building a tokio runtime).
pub fn enter_rootless_userns() -> Result<Rootless, UsernsError> {
    enter_rootless_userns_beside(None)
}

/// As [`enter_rootless_userns`], but into the user namespace of process `beside` when it
/// is given and can be joined (`--network container:NAME`: a namespace of that container's
/// is only joined from the user namespace that owns it).
pub fn enter_rootless_userns_beside(beside: Option<u32>) -> Result<Rootless, UsernsError> {
    let uid = Uid::effective().as_raw();
    let gid = Gid::effective().as_raw();
    if uid == 0 {
        return Ok(Rootless::NotNeeded);
    }
    let name = nix::unistd::User::from_uid(Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string());
    let uid_ranges = subordinate_ranges(Path::new("/etc/subuid"), &name, uid)?;
    let gid_ranges = subordinate_ranges(Path::new("/etc/subgid"), &name, uid)?;
    let tools = helper_exists("newuidmap") && helper_exists("newgidmap");
    let subordinate = !uid_ranges.is_empty() && !gid_ranges.is_empty() && tools;

    if beside.is_some_and(|pid| Uid::effective().as_raw() != 0 && join_user_namespace_of(pid)) {
        tracing::debug!("joined the user namespace of the container whose network is shared");
    } else if join_keeper(uid) {
        tracing::debug!("joined the user namespace of the rootless network namespace");
    } else if !subordinate {
        tracing::warn!(
            "no subordinate id range for {name} in /etc/subuid and /etc/subgid{}: only uid {uid} is mapped (as root) inside containers",
            if tools { "" } else { " (or newuidmap/newgidmap missing: install uidmap)" }
        );
        nix::sched::unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS)
            .map_err(UsernsError::Unshare)?;
        for (file, content) in [
            ("/proc/self/setgroups", "deny".to_string()),
            ("/proc/self/uid_map", format!("0 {uid} 1\n")),
            ("/proc/self/gid_map", format!("0 {gid} 1\n")),
        ] {
            std::fs::write(file, content).map_err(|source| UsernsError::WriteMap {
                file: file.to_string(),
                source,
            })?;
        }
    } else {
        map_with_helpers(uid, gid, &uid_ranges, &gid_ranges)?;
    }
    // Mounts made from here on stay in our namespace.
    let _ = nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_SLAVE | nix::mount::MsFlags::MS_REC,
        None::<&str>,
    );
    std::env::set_var(ROOTLESS_ENV, format!("{uid}:{gid}"));
    Ok(Rootless::Entered {
        uid,
        gid,
        subordinate,
    })
}

fn map_with_helpers(
    uid: u32,
    gid: u32,
    uid_ranges: &[IdRange],
    gid_ranges: &[IdRange],
) -> Result<(), UsernsError> {
    let target = nix::unistd::getpid().as_raw();
    let (go_r, go_w) = nix::unistd::pipe().map_err(UsernsError::Fork)?;
    let (err_r, err_w) = nix::unistd::pipe().map_err(UsernsError::Fork)?;
    // The caller guarantees a single-threaded process; the child only runs the two helper
    // commands and _exits.
    match crate::sys::fork().map_err(UsernsError::Fork)? {
        ForkResult::Child => {
            drop(go_w);
            drop(err_r);
            let mut b = [0u8; 1];
            let code = match nix::unistd::read(&go_r, &mut b) {
                Ok(1) => {
                    let mut failed = None;
                    for (tool, own, ranges) in [
                        ("newuidmap", uid, uid_ranges),
                        ("newgidmap", gid, gid_ranges),
                    ] {
                        let out = Command::new(tool)
                            .arg(target.to_string())
                            .args(map_args(own, ranges))
                            .output();
                        match out {
                            Ok(o) if o.status.success() => {}
                            Ok(o) => {
                                failed = Some(format!(
                                    "{tool}\n{} ({})",
                                    String::from_utf8_lossy(&o.stderr).trim(),
                                    o.status
                                ));
                                break;
                            }
                            Err(e) => {
                                failed = Some(format!("{tool}\n{e}"));
                                break;
                            }
                        }
                    }
                    match failed {
                        None => 0,
                        Some(msg) => {
                            let _ = nix::unistd::write(&err_w, msg.as_bytes());
                            1
                        }
                    }
                }
                _ => 1,
            };
            // Ends the helper without running the parent's exit handlers.
            crate::sys::exit_now(code)
        }
        ForkResult::Parent { child } => {
            drop(go_r);
            drop(err_w);
            let unshared = nix::sched::unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS);
            if unshared.is_ok() {
                let _ = nix::unistd::write(&go_w, b"g");
            }
            drop(go_w);
            let status = nix::sys::wait::waitpid(child, None);
            unshared.map_err(UsernsError::Unshare)?;
            let mut msg = String::new();
            let _ = std::fs::File::from(err_r).read_to_string(&mut msg);
            match status {
                Ok(nix::sys::wait::WaitStatus::Exited(_, 0)) => Ok(()),
                _ => {
                    let (tool, message) =
                        msg.split_once('\n').unwrap_or(("newuidmap", msg.as_str()));
                    Err(UsernsError::MapTool {
                        tool: tool.to_string(),
                        message: if message.is_empty() {
                            "the helper process failed".to_string()
                        } else {
                            message.to_string()
                        },
                    })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_subordinate_files() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("subuid");
        std::fs::write(
            &f,
            "alice:100000:65536\n1001:200000:1000\nbob:x:1\nalice:300000:10\n",
        )
        .unwrap();
        assert_eq!(
            subordinate_ranges(&f, "alice", 1000).unwrap(),
            vec![
                IdRange {
                    start: 100000,
                    count: 65536
                },
                IdRange {
                    start: 300000,
                    count: 10
                }
            ]
        );
        assert_eq!(subordinate_ranges(&f, "carol", 1001).unwrap().len(), 1);
        assert!(subordinate_ranges(&f, "bob", 5).unwrap().is_empty());
        assert!(subordinate_ranges(&dir.path().join("none"), "a", 1)
            .unwrap()
            .is_empty());
        assert_eq!(
            map_args(
                1000,
                &[IdRange {
                    start: 100000,
                    count: 65536
                }]
            ),
            ["0", "1000", "1", "1", "100000", "65536"]
        );
    }
}
