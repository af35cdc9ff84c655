//! `user[:group]` resolution against a container's own /etc/passwd and /etc/group.
//!
//! The files are read through the rootfs with `RESOLVE_IN_ROOT`, non-blocking, only when they
//! are regular files, and only up to [`MAX_USER_FILE_BYTES`]: an image that makes /etc/passwd a
//! FIFO, /dev/zero or a symlink to a host file gets an error, not a hang or a host read. libc's
//! `getpwnam` is never used (it would load NSS modules from the image).

use std::path::{Path, PathBuf};

use crate::fs::Root;

/// Larger user databases are refused (containerd uses the same cap).
pub const MAX_USER_FILE_BYTES: u64 = 10 << 20;

/// Ids above this wrap to negative values in some runtimes (CVE-2024-40635); refused.
const MAX_ID: u64 = i32::MAX as u64;

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("invalid user {spec:?}: {reason}")]
    Invalid { spec: String, reason: String },
    #[error("unable to find user {name}: no matching entries in passwd file")]
    NoSuchUser { name: String },
    #[error("unable to find group {name}: no matching entries in group file")]
    NoSuchGroup { name: String },
    #[error("cannot read {}: {reason}", path.display())]
    Read { path: PathBuf, reason: String },
}

/// The identity a container process runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    /// From /etc/passwd, `/` when the user has no entry.
    pub home: String,
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

fn parse_id(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 7 || line.starts_with('#') {
                return None;
            }
            let uid = parse_id(f[2]).filter(|v| *v <= MAX_ID)? as u32;
            let gid = parse_id(f[3]).filter(|v| *v <= MAX_ID)? as u32;
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid,
                gid,
                home: f[5].to_string(),
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 4 || line.starts_with('#') {
                return None;
            }
            let gid = parse_id(f[2]).filter(|v| *v <= MAX_ID)? as u32;
            Some(GroupEntry {
                name: f[0].to_string(),
                gid,
                members: f[3]
                    .split(',')
                    .map(str::trim)
                    .filter(|m| !m.is_empty())
                    .map(String::from)
                    .collect(),
            })
        })
        .collect()
}

fn read_db(root: &Root, rel: &str) -> Result<String, UserError> {
    match root.read_capped(Path::new(rel), MAX_USER_FILE_BYTES) {
        Ok(Some(bytes)) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        Ok(None) => Ok(String::new()),
        Err(e) => Err(UserError::Read {
            path: PathBuf::from("/").join(rel),
            reason: match e {
                nix::errno::Errno::EINVAL => "not a regular file".to_string(),
                nix::errno::Errno::EFBIG => {
                    format!("larger than {MAX_USER_FILE_BYTES} bytes")
                }
                other => other.desc().to_string(),
            },
        }),
    }
}

/// Resolves `spec` (`user`, `uid`, `user:group`, `uid:gid`, ...) against the user database
/// of the rootfs at `rootfs`.
pub fn resolve_user(rootfs: &Path, spec: &str) -> Result<ExecUser, UserError> {
    let root = Root::open(rootfs).map_err(|e| UserError::Read {
        path: rootfs.to_path_buf(),
        reason: e.to_string(),
    })?;
    resolve_user_in(&root, spec)
}

pub(crate) fn resolve_user_in(root: &Root, spec: &str) -> Result<ExecUser, UserError> {
    let invalid = |reason: &str| UserError::Invalid {
        spec: spec.to_string(),
        reason: reason.to_string(),
    };
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if user_part.is_empty() {
        return Err(invalid("empty user name"));
    }
    if group_part == Some("") {
        return Err(invalid("empty group name"));
    }
    let passwd = parse_passwd(&read_db(root, "etc/passwd")?);
    let numeric_user = user_part.bytes().all(|b| b.is_ascii_digit());
    let entry =
        if numeric_user {
            let uid = parse_id(user_part)
                .filter(|v| *v <= MAX_ID)
                .ok_or_else(|| invalid("uid out of range (0 to 2147483647)"))?;
            passwd.iter().find(|p| p.uid as u64 == uid)
        } else {
            if user_part.contains(['/', '\0']) {
                return Err(invalid("bad character in user name"));
            }
            Some(passwd.iter().find(|p| p.name == user_part).ok_or_else(|| {
                UserError::NoSuchUser {
                    name: user_part.to_string(),
                }
            })?)
        };
    let uid = match entry {
        Some(e) => e.uid,
        None => parse_id(user_part).unwrap_or(0) as u32,
    };
    let mut gid = entry.map(|e| e.gid).unwrap_or(0);
    let home = entry
        .map(|e| e.home.clone())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "/".to_string());

    let need_groups = group_part.is_some() || entry.is_some();
    let groups = if need_groups {
        parse_group(&read_db(root, "etc/group")?)
    } else {
        Vec::new()
    };
    if let Some(g) = group_part {
        if g.bytes().all(|b| b.is_ascii_digit()) {
            gid = parse_id(g)
                .filter(|v| *v <= MAX_ID)
                .ok_or_else(|| invalid("gid out of range (0 to 2147483647)"))?
                as u32;
        } else {
            gid = groups
                .iter()
                .find(|e| e.name == g)
                .ok_or_else(|| UserError::NoSuchGroup {
                    name: g.to_string(),
                })?
                .gid;
        }
    }
    let mut additional_gids = Vec::new();
    if group_part.is_none() {
        if let Some(e) = entry {
            additional_gids.push(gid);
            for g in &groups {
                if g.members.contains(&e.name) && !additional_gids.contains(&g.gid) {
                    additional_gids.push(g.gid);
                }
            }
        }
    }
    if additional_gids.is_empty() {
        additional_gids.push(gid);
    }
    Ok(ExecUser {
        uid,
        gid,
        additional_gids,
        home,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs(passwd: &str, group: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/passwd"), passwd).unwrap();
        std::fs::write(dir.path().join("etc/group"), group).unwrap();
        dir
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/bin/false\nbob:x:1000:1000::/home/bob:/bin/sh\n";
    const GROUP: &str =
        "root:x:0:\nwheel:x:10:root\ndaemon:x:1:\nbob:x:1000:\nstaff:x:50:bob,alice\n";

    #[test]
    fn buildkit_additional_gids_cases() {
        let dir = rootfs(PASSWD, GROUP);
        let r = resolve_user(dir.path(), "root").unwrap();
        assert_eq!(
            (r.uid, r.gid, r.additional_gids.clone()),
            (0, 0, vec![0, 10])
        );
        assert_eq!(r.home, "/root");
        let r = resolve_user(dir.path(), "1234").unwrap();
        assert_eq!(
            (r.uid, r.gid, r.additional_gids.clone()),
            (1234, 0, vec![0])
        );
        assert_eq!(r.home, "/");
        let r = resolve_user(dir.path(), "1234:1234").unwrap();
        assert_eq!((r.uid, r.gid, r.additional_gids), (1234, 1234, vec![1234]));
        let r = resolve_user(dir.path(), "daemon").unwrap();
        assert_eq!((r.uid, r.gid, r.additional_gids), (1, 1, vec![1]));
        let r = resolve_user(dir.path(), "bob:staff").unwrap();
        assert_eq!((r.uid, r.gid), (1000, 50));
        let r = resolve_user(dir.path(), "bob").unwrap();
        assert_eq!(r.additional_gids, vec![1000, 50]);
    }

    #[test]
    fn bad_users_are_errors() {
        let dir = rootfs(PASSWD, GROUP);
        for spec in [
            "2147483648",
            "4294967295",
            "99999999999999999999",
            "-1",
            "nobody",
            ":0",
            "0:",
            "bob:nogroup",
        ] {
            assert!(resolve_user(dir.path(), spec).is_err(), "{spec} accepted");
        }
    }

    #[test]
    fn hostile_user_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", dir.path().join("etc/passwd")).unwrap();
        // The symlink resolves inside the root, where there is no dev/zero: treated as absent.
        assert_eq!(resolve_user(dir.path(), "0").unwrap().uid, 0);
        assert!(resolve_user(dir.path(), "root").is_err());
        std::fs::create_dir(dir.path().join("dev")).unwrap();
        nix::unistd::mkfifo(
            &dir.path().join("dev/zero"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        let err = resolve_user(dir.path(), "root").unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
        std::fs::remove_file(dir.path().join("etc/passwd")).unwrap();
        let big = std::fs::File::create(dir.path().join("etc/passwd")).unwrap();
        big.set_len(MAX_USER_FILE_BYTES + 1).unwrap();
        let err = resolve_user(dir.path(), "root").unwrap_err().to_string();
        assert!(err.contains("larger than"), "{err}");
    }
}
