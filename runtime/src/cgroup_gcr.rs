//! The groups of gcr's own containers (OCI ones are in [`crate::cgroups::Cgroup::create_at`]):
//! `gcr/<id>`, or `<parent>/<id>` with `--cgroup-parent`, in each v1 hierarchy the container
//! needs, or below the v2 base: the hierarchy's root, rootless the user's delegated subtree.
//! Made only when the spec limits something (or, as root on v1, for its device rules), so an
//! unlimited container pays nothing; `update` changes them while it runs; `pause` freezes it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use oci_spec::runtime::LinuxResources;

use crate::cgroups::{
    apply, fill_cpuset, is_unified, settings, v1_hierarchies, write, write_device_rules, Cgroup,
    ROOT,
};
use crate::error::RuntimeError;

/// The path of a gcr container's groups below each hierarchy's root (or the v2 base): the
/// spec's `linux.cgroupsPath` (`--cgroup-parent` and the ID), else `gcr/<id>`.
pub fn group_path(id: &str, cgroups_path: Option<&Path>) -> String {
    match cgroups_path
        .and_then(|p| p.to_str())
        .map(|p| p.trim_matches('/'))
    {
        Some(p) if !p.is_empty() => p.to_string(),
        _ => format!("gcr/{id}"),
    }
}

/// Where gcr's v2 groups go: the hierarchy's root as root; rootless, the user's delegated
/// subtree (systemd's `user@UID.service`: its own cgroup.controllers, writable by the user).
pub(crate) fn v2_base() -> Result<PathBuf, RuntimeError> {
    if !crate::userns::is_rootless() {
        return Ok(PathBuf::from(ROOT));
    }
    delegated_subtree().ok_or_else(|| {
        RuntimeError::Setup(
            "this user has no delegated cgroup v2 subtree (a systemd user session gives one)"
                .into(),
        )
    })
}

fn delegated_subtree() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let own = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    let writable = |p: &Path| nix::unistd::access(p, nix::unistd::AccessFlags::W_OK).is_ok();
    let mut dir = PathBuf::from(ROOT);
    for part in Path::new(own.trim_start_matches('/')).components() {
        dir.push(part);
        let name = part.as_os_str().to_string_lossy();
        if name.starts_with("user@") && name.ends_with(".service") {
            let usable = dir.join("cgroup.controllers").exists()
                && writable(&dir)
                && writable(&dir.join("cgroup.subtree_control"));
            return usable.then_some(dir);
        }
    }
    None
}

/// Whether this process can limit a container: root, or rootless on v2 with a delegated
/// subtree (rootless v1 hierarchies are root's).
pub fn limits_enforceable() -> bool {
    !crate::userns::is_rootless() || (is_unified() && delegated_subtree().is_some())
}

static WARNED: AtomicBool = AtomicBool::new(false);

/// Says once per process that rootless limits are not enforced, and why.
pub fn warn_limits_not_enforced() {
    if !WARNED.swap(true, Ordering::Relaxed) {
        let why = if is_unified() {
            "this user has no delegated cgroup v2 subtree (a systemd user session gives one)"
        } else {
            "cgroup v1 hierarchies are root's"
        };
        tracing::warn!("resource limits are not enforced: running rootless and {why}");
    }
}

impl Cgroup {
    /// Creates a gcr container's groups at `rel` (see [`group_path`]) and applies the limits
    /// and, as root on v1, the device rules; `None` when nothing is limited (or, rootless,
    /// when no group can be made: the caller has said so once).
    pub fn create(
        rel: &str,
        res: Option<&LinuxResources>,
        rootless: bool,
    ) -> Result<Option<Cgroup>, RuntimeError> {
        let Some(res) = res else { return Ok(None) };
        let unified = is_unified();
        let wanted = settings(res, unified);
        // v1: the devices controller; v2: an eBPF filter on the group. Rootless, the user
        // namespace already keeps host devices out of reach (no mknod, no device bind but
        // what the user may open).
        let devices = res
            .devices()
            .as_ref()
            .filter(|r| !r.is_empty() && !crate::userns::is_rootless());
        if wanted.is_empty() && devices.is_none() {
            return Ok(None);
        }
        if rootless && !limits_enforceable() {
            warn_limits_not_enforced();
            return Ok(None);
        }
        let mut cg = Cgroup { dirs: Vec::new() };
        let result = (|| {
            if !wanted.is_empty() {
                cg.make_limited(rel, &wanted, unified)?;
            }
            match devices {
                Some(rules) if unified => {
                    let dir = make_v2_group(rel, &[])?;
                    if !cg.dirs.contains(&dir) {
                        cg.dirs.push(dir.clone());
                    }
                    crate::cgroups::attach_device_filter(&dir, rules)?;
                }
                Some(rules) => {
                    let dir = Path::new(ROOT).join("devices").join(rel);
                    std::fs::create_dir_all(&dir)
                        .map_err(|e| RuntimeError::io("create cgroup", &dir, e))?;
                    cg.dirs.push(dir.clone());
                    write_device_rules(&dir, rules)?;
                }
                None => {}
            }
            Ok(())
        })();
        match result {
            Ok(()) => Ok(Some(cg)),
            Err(e) => {
                cg.remove();
                if rootless {
                    tracing::warn!("resource limits are not enforced: {e}");
                    return Ok(None);
                }
                Err(e)
            }
        }
    }

    fn make_limited(
        &mut self,
        rel: &str,
        wanted: &[(&'static str, String, String)],
        unified: bool,
    ) -> Result<(), RuntimeError> {
        if unified {
            let dir = make_v2_group(rel, wanted)?;
            self.dirs.push(dir.clone());
            apply(wanted, |_| Ok(dir.clone()))
        } else {
            for (controller, _, _) in wanted {
                let dir = Path::new(ROOT).join(controller).join(rel);
                if !self.dirs.contains(&dir) {
                    make_v1_group(controller, rel)?;
                    self.dirs.push(dir);
                }
            }
            apply(wanted, |c| Ok(Path::new(ROOT).join(c).join(rel)))?;
            self.add_counting_groups(rel);
            Ok(())
        }
    }
}

/// v1: the group `rel` in one controller's hierarchy (cpuset's filled from its parents).
fn make_v1_group(controller: &str, rel: &str) -> Result<(), RuntimeError> {
    let hierarchy = Path::new(ROOT).join(controller);
    let dir = hierarchy.join(rel);
    std::fs::create_dir_all(&dir).map_err(|e| RuntimeError::io("create cgroup", &dir, e))?;
    if controller == "cpuset" {
        fill_cpuset(&hierarchy, Path::new(rel))?;
    }
    Ok(())
}

/// v2: the group `rel` below the base, with the controllers `wanted` needs (and the counting
/// ones) enabled on the way down.
fn make_v2_group(
    rel: &str,
    wanted: &[(&'static str, String, String)],
) -> Result<PathBuf, RuntimeError> {
    let base = v2_base()?;
    let dir = base.join(rel);
    std::fs::create_dir_all(&dir).map_err(|e| RuntimeError::io("create cgroup", &dir, e))?;
    let mut controllers: Vec<&str> = wanted.iter().map(|w| w.0).collect();
    controllers.sort_unstable();
    controllers.dedup();
    // Best effort per controller: one already enabled or not delegatable shows up as a
    // missing file with its path when written.
    let mut parent = base.clone();
    for part in Path::new(rel)
        .parent()
        .into_iter()
        .flat_map(Path::components)
    {
        for c in &controllers {
            let _ = write(&parent, "cgroup.subtree_control", &format!("+{c}"));
        }
        crate::cgroup_usage::enable_counters(&parent, &parent);
        parent.push(part);
    }
    for c in &controllers {
        let _ = write(&parent, "cgroup.subtree_control", &format!("+{c}"));
    }
    crate::cgroup_usage::enable_counters(&parent, &parent);
    Ok(dir)
}

/// `update`: applies `res` to the running gcr container whose groups are at `rel`. A
/// controller it has no group in yet gets one, and the container's processes (`pids()`, as
/// the host sees them) move into it.
pub fn update_container(
    rel: &str,
    res: &LinuxResources,
    pids: impl Fn() -> Vec<i32>,
) -> Result<(), RuntimeError> {
    if !limits_enforceable() {
        return Err(RuntimeError::Setup(
            "cannot update the limits of a rootless container without a delegated cgroup v2 subtree"
                .into(),
        ));
    }
    let unified = is_unified();
    let wanted = settings(res, unified);
    if unified {
        let fresh = !v2_base()?.join(rel).is_dir();
        let dir = make_v2_group(rel, &wanted)?;
        if fresh {
            move_into(
                &Cgroup {
                    dirs: vec![dir.clone()],
                },
                &pids,
            )?;
        }
        return apply(&wanted, |_| Ok(dir.clone()));
    }
    for (controller, _, _) in &wanted {
        let dir = Path::new(ROOT).join(controller).join(rel);
        if !dir.is_dir() {
            make_v1_group(controller, rel)?;
            move_into(&Cgroup { dirs: vec![dir] }, &pids)?;
        }
    }
    apply(&wanted, |c| Ok(Path::new(ROOT).join(c).join(rel)))
}

/// Moves every one of `pids()` into `group`. Processes forked meanwhile follow their parent;
/// the move is repeated until none is missing.
fn move_into(group: &Cgroup, pids: &impl Fn() -> Vec<i32>) -> Result<(), RuntimeError> {
    for _ in 0..10 {
        let inside = group.pids();
        let missing: Vec<i32> = pids().into_iter().filter(|p| !inside.contains(p)).collect();
        if missing.is_empty() {
            return Ok(());
        }
        for pid in missing {
            // A process that ended meanwhile is no longer there to move.
            if let Err(e) = group.add(pid) {
                if Path::new(&format!("/proc/{pid}")).exists() {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

/// Removes what is left of an ended container's groups at `rel`: those `update` or `pause`
/// made beside the runtime's own (which went with the run).
pub fn remove_container_groups(rel: &str) {
    let dirs: Vec<PathBuf> = if is_unified() {
        v2_base().map(|b| vec![b.join(rel)]).unwrap_or_default()
    } else {
        v1_hierarchies().into_iter().map(|h| h.join(rel)).collect()
    };
    let dirs: Vec<PathBuf> = dirs.into_iter().filter(|d| d.is_dir()).collect();
    if !dirs.is_empty() {
        Cgroup { dirs }.remove();
    }
}

/// The freezer group `pause` puts a gcr container's processes in: v1's freezer hierarchy, or
/// on v2 the container's own group (made by its limits or here).
fn pause_group(rel: &str) -> Result<Cgroup, RuntimeError> {
    let dir = if is_unified() {
        v2_base()?.join(rel)
    } else {
        Path::new(ROOT).join("freezer").join(rel)
    };
    Ok(Cgroup { dirs: vec![dir] })
}

/// `pause`: moves the container's processes (`pids`, as the host sees them) into its freezer
/// group at `rel` (see [`group_path`]) and freezes it.
pub fn freeze_container(rel: &str, more_pids: impl Fn() -> Vec<i32>) -> Result<(), RuntimeError> {
    let group = pause_group(rel)?;
    let dir = &group.dirs[0];
    if !is_unified() && !Path::new(ROOT).join("freezer").is_dir() {
        return Err(RuntimeError::Setup(format!(
            "pause needs the freezer cgroup controller, which is not mounted under {ROOT}"
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| RuntimeError::io("create cgroup", dir, e))?;
    move_into(&group, &more_pids)?;
    group.set_frozen(true)
}

/// `unpause`: thaws the container's freezer group.
pub fn thaw_container(rel: &str) -> Result<(), RuntimeError> {
    let group = pause_group(rel)?;
    if !group.dirs[0].is_dir() {
        return Ok(());
    }
    group.set_frozen(false)
}

/// Whether the container's freezer group is frozen now.
pub fn container_frozen(rel: &str) -> bool {
    pause_group(rel).is_ok_and(|g| g.dirs[0].is_dir() && g.is_frozen().unwrap_or(false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_paths() {
        assert_eq!(group_path("abc", None), "gcr/abc");
        assert_eq!(group_path("abc", Some(Path::new(""))), "gcr/abc");
        assert_eq!(group_path("abc", Some(Path::new("/mine/abc"))), "mine/abc");
    }
}
