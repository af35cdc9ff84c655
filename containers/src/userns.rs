//! Rootful user namespaces for containers (`--userns=auto`, `--uidmap`/`--gidmap`) and the
//! machine-wide leases that keep two containers from getting the same `auto` range.

use std::path::Path;

use crate::error::{ContainerError, Result};

/// What a container asks of user namespaces.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum UsernsMode {
    /// The caller's namespace (the default; rootless gcr's own namespace).
    #[default]
    Host,
    /// A free range of `size` ids of the "containers" subordinate ranges.
    Auto { size: u32 },
    /// Rootless: the user's own uid and gid inside (a namespace nested in gcr's, as
    /// Podman's `keep-id`); the command runs as that user unless `-u` says otherwise.
    KeepId,
    /// Explicit maps: (container id, host id, size).
    Maps {
        uid_map: Vec<(u32, u32, u32)>,
        gid_map: Vec<(u32, u32, u32)>,
    },
}

impl UsernsMode {
    /// `--userns MODE` with `--uidmap`/`--gidmap` values, as Podman reads them.
    pub fn parse(mode: Option<&str>, uidmap: &[String], gidmap: &[String]) -> Result<UsernsMode> {
        let mode = mode.unwrap_or("");
        let explicit = !uidmap.is_empty() || !gidmap.is_empty();
        if gcr_runtime::userns::rootless_ids().is_some() {
            if mode == "keep-id" && !explicit {
                return Ok(UsernsMode::KeepId);
            }
            if explicit || !matches!(mode, "" | "host") {
                return Err(ContainerError::invalid(format!(
                    "--userns={mode}{} is not supported rootless yet: rootless gcr runs every container in its own user namespace, mapped from your /etc/subuid range",
                    if explicit { " / --uidmap / --gidmap" } else { "" }
                )));
            }
            return Ok(UsernsMode::Host);
        }
        if explicit {
            if !matches!(mode, "" | "private") {
                return Err(ContainerError::invalid(format!(
                    "--uidmap/--gidmap cannot be combined with --userns={mode}"
                )));
            }
            let uid_map = parse_id_maps("--uidmap", uidmap)?;
            let gid_map = if gidmap.is_empty() {
                uid_map.clone()
            } else {
                parse_id_maps("--gidmap", gidmap)?
            };
            if uid_map.is_empty() {
                return Err(ContainerError::invalid("--gidmap needs a --uidmap too"));
            }
            return Ok(UsernsMode::Maps { uid_map, gid_map });
        }
        Ok(match mode {
            "" | "host" => UsernsMode::Host,
            "auto" | "private" => UsernsMode::Auto { size: 65536 },
            other => match other.strip_prefix("auto:size=") {
                Some(n) => UsernsMode::Auto {
                    size: n.parse::<u32>().ok().filter(|n| *n > 0).ok_or_else(|| {
                        ContainerError::invalid(format!(
                            "--userns={other}: size must be a positive number"
                        ))
                    })?,
                },
                None => {
                    return Err(ContainerError::invalid(format!(
                    "unknown --userns {other:?}: use host, auto, auto:size=N or private (keep-id is for rootless gcr; nomap and ns: are not supported yet)"
                )))
                }
            },
        })
    }
}

/// A user namespace chosen for a container, with the lease that reserves an auto range.
pub struct MappedUserns {
    pub uid_map: Vec<(u32, u32, u32)>,
    pub gid_map: Vec<(u32, u32, u32)>,
    /// Held for the container's life: no other gcr gets the same `auto` range.
    pub lease: Option<std::fs::File>,
}

/// Where `--userns=auto` reservations are locked: ids are machine-wide, so not per store.
const USERNS_LEASES: &str = "/run/gcr/userns";
/// Subordinate ids for `--userns=auto` belong to this user, as with Podman.
const AUTO_USER: &str = "containers";

/// The namespace `mode` asks for (None: the caller's).
pub fn user_namespace(mode: &UsernsMode) -> Result<Option<MappedUserns>> {
    match mode {
        UsernsMode::Host => Ok(None),
        UsernsMode::Maps { uid_map, gid_map } => Ok(Some(MappedUserns {
            uid_map: uid_map.clone(),
            gid_map: gid_map.clone(),
            lease: None,
        })),
        UsernsMode::Auto { size } => allocate_userns(*size).map(Some),
        UsernsMode::KeepId => keep_id().map(Some),
    }
}

/// The user's (uid, gid) on the host, for `keep-id`'s default user.
pub fn keep_id_user() -> Option<(u32, u32)> {
    gcr_runtime::userns::rootless_ids()
}

/// `keep-id`: inside gcr's rootless namespace (0 = the user, 1.. = the subordinate ids), a
/// nested one where the user's host uid is itself: 0..U map to gcr's 1..=U, U to gcr's 0
/// (the user), and the ids above U to themselves.
fn keep_id() -> Result<MappedUserns> {
    let (uid, gid) = keep_id_user().ok_or_else(|| {
        ContainerError::invalid("--userns=keep-id is for rootless gcr (as root, use --userns=auto)")
    })?;
    let count = |file: &str| -> Result<u32> {
        let text =
            std::fs::read_to_string(file).map_err(|e| ContainerError::io("read", file, e))?;
        Ok(text
            .lines()
            .filter_map(|l| l.split_whitespace().nth(2)?.parse::<u32>().ok())
            .sum())
    };
    let map = |id: u32, total: u32| -> Result<Vec<(u32, u32, u32)>> {
        if total < 2 {
            return Err(ContainerError::invalid(
                "--userns=keep-id needs subordinate ids: give your user a range in /etc/subuid and /etc/subgid",
            ));
        }
        let below = id.min(total - 1);
        let mut maps = vec![(id, 0, 1)];
        if below > 0 {
            maps.push((0, 1, below));
        }
        if id + 1 < total {
            maps.push((id + 1, id + 1, total - id - 1));
        }
        Ok(maps)
    };
    Ok(MappedUserns {
        uid_map: map(uid, count("/proc/self/uid_map")?)?,
        gid_map: map(gid, count("/proc/self/gid_map")?)?,
        lease: None,
    })
}

/// `C:H:S[,C:H:S...]` values of --uidmap/--gidmap.
pub fn parse_id_maps(flag: &str, values: &[String]) -> Result<Vec<(u32, u32, u32)>> {
    let mut maps = Vec::new();
    for value in values.iter().flat_map(|v| v.split(',')) {
        let parts: Vec<Option<u32>> = value.split(':').map(|x| x.parse().ok()).collect();
        match parts[..] {
            [Some(c), Some(h), Some(n)]
                if n > 0 && c.checked_add(n).is_some() && h.checked_add(n).is_some() =>
            {
                maps.push((c, h, n))
            }
            _ => {
                return Err(ContainerError::invalid(format!(
                    "{flag} {value:?}: expected CONTAINER_ID:HOST_ID:SIZE with a size above 0"
                )))
            }
        }
    }
    for (i, a) in maps.iter().enumerate() {
        for b in &maps[i + 1..] {
            let overlap = |x: u32, y: u32| x < y + b.2 && y < x + a.2;
            if overlap(a.0, b.0) || overlap(a.1, b.1) {
                return Err(ContainerError::invalid(format!(
                    "{flag}: the ranges {a:?} and {b:?} overlap"
                )));
            }
        }
    }
    Ok(maps)
}

/// Reserves `size` ids from the "containers" ranges of /etc/subuid and /etc/subgid that no
/// running gcr container holds. Each reservation is a lease file `UID-GID-SIZE` locked by its
/// gcr for the container's life; a short global lock orders the allocations, and leases whose
/// lock is free are stale and removed.
fn allocate_userns(size: u32) -> Result<MappedUserns> {
    let ranges =
        |file: &str| gcr_runtime::userns::subordinate_ranges(Path::new(file), AUTO_USER, u32::MAX);
    let (uids, gids) = (ranges("/etc/subuid")?, ranges("/etc/subgid")?);
    if uids.is_empty() || gids.is_empty() {
        return Err(ContainerError::invalid(format!(
            "--userns=auto needs subordinate ids for the user {AUTO_USER:?}: add a line such as \"{AUTO_USER}:2147483647:2147483648\" to /etc/subuid and /etc/subgid (as for Podman)"
        )));
    }
    let dir = Path::new(USERNS_LEASES);
    std::fs::create_dir_all(dir).map_err(|e| ContainerError::io("create", dir, e))?;
    let open = |path: &Path| {
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| ContainerError::io("open", path, e))
    };
    let global_path = dir.join("allocate.lock");
    let global = open(&global_path)?;
    global
        .lock()
        .map_err(|e| ContainerError::io("lock", &global_path, e))?;
    // Ranges held by live leases: (uid start, gid start, size).
    let mut taken = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| ContainerError::io("read", dir, e))?;
    for entry in entries {
        let path = entry
            .map_err(|e| ContainerError::io("read", dir, e))?
            .path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let parts: Vec<u32> = name.split('-').filter_map(|x| x.parse().ok()).collect();
        let [uid, gid, n] = parts[..] else { continue };
        let lease = open(&path)?;
        match lease.try_lock() {
            Ok(()) => {
                let _ = std::fs::remove_file(&path);
            }
            Err(std::fs::TryLockError::WouldBlock) => taken.push((uid, gid, n)),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(ContainerError::io("lock", &path, e))
            }
        }
    }
    let free = |start: u32, pick: fn(&(u32, u32, u32)) -> u32| {
        taken.iter().all(|t| {
            start as u64 + size as u64 <= pick(t) as u64
                || pick(t) as u64 + t.2 as u64 <= start as u64
        })
    };
    let slots = |ranges: &[gcr_runtime::userns::IdRange]| -> Vec<u32> {
        ranges
            .iter()
            .flat_map(|r| (0..r.count / size).map(move |k| r.start + k * size))
            .collect()
    };
    let uid_start = slots(&uids).into_iter().find(|s| free(*s, |t| t.0));
    let gid_start = slots(&gids).into_iter().find(|s| free(*s, |t| t.1));
    let (Some(uid_start), Some(gid_start)) = (uid_start, gid_start) else {
        return Err(ContainerError::invalid(format!(
            "--userns=auto: no free range of {size} ids left for the user {AUTO_USER:?} in /etc/subuid and /etc/subgid (running containers hold the rest)"
        )));
    };
    let path = dir.join(format!("{uid_start}-{gid_start}-{size}"));
    let lease = open(&path)?;
    lease
        .try_lock()
        .map_err(|e| ContainerError::Invalid(format!("cannot lock {}: {e}", path.display())))?;
    Ok(MappedUserns {
        uid_map: vec![(0, uid_start, size)],
        gid_map: vec![(0, gid_start, size)],
        lease: Some(lease),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_maps_are_checked() {
        assert_eq!(
            parse_id_maps("--uidmap", &["0:100000:65536".into()]).unwrap(),
            [(0, 100000, 65536)]
        );
        assert!(parse_id_maps("--uidmap", &["0:1:0".into()]).is_err());
        assert!(parse_id_maps("--uidmap", &["0:1".into()]).is_err());
        assert!(parse_id_maps("--uidmap", &["0:100:10,5:200:10".into()]).is_err());
    }
}
