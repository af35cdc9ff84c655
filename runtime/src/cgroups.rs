//! Resource limits (memory, pids, cpu) through cgroups: v2 (unified) or v1 (legacy and hybrid,
//! as on this project's machines, where the v2 mount holds no controller gcr uses).
//!
//! A container gets `gcr/<id>` at the top of each hierarchy it needs, beside (never inside)
//! whatever cgroup the calling service lives in, and only when the spec asks for a limit: an
//! unlimited container pays nothing. Rootless, failing to create the group is a warning and
//! the container runs without the limits.

use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxResources;

use crate::error::RuntimeError;

const ROOT: &str = "/sys/fs/cgroup";

/// Device rules every container gets after its spec's (v1 devices cgroup).
const DEFAULT_DEVICE_RULES: &[&str] = &[
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 1:8 rwm",
    "c 1:9 rwm",
    "c 5:0 rwm",
    "c 5:1 rwm",
    "c 5:2 rwm",
    "c 136:* rwm",
    "c 10:200 rwm",
];

/// The cgroup directories of one container; removed by [`Cgroup::remove`].
#[derive(Debug, Clone)]
pub struct Cgroup {
    pub dirs: Vec<PathBuf>,
}

/// The cgroup path of an OCI container (`linux.cgroupsPath`), relative to each hierarchy's
/// root: an absolute path as is; a relative one under gcr-oci's group; systemd's
/// `slice:prefix:name` (gcr uses cgroupfs) as the directory systemd would make,
/// `slice/prefix-name.scope`; none at all: `/gcr-oci/<id>`.
pub fn oci_path(path: Option<&Path>, id: &str) -> String {
    let text = path.map(|p| p.to_string_lossy().into_owned());
    match text.as_deref() {
        None | Some("") => format!("/gcr-oci/{id}"),
        Some(p) if p.starts_with('/') => p.to_string(),
        Some(p) => match p.split(':').collect::<Vec<_>>()[..] {
            [slice, prefix, name] => {
                let slice = if slice.is_empty() {
                    "system.slice"
                } else {
                    slice
                };
                format!("/{slice}/{prefix}-{name}.scope")
            }
            _ => format!("/gcr-oci/{p}"),
        },
    }
}

/// The v1 hierarchies mounted under /sys/fs/cgroup (their directories), the named systemd one
/// included; empty on a unified host.
pub(crate) fn v1_hierarchies() -> Vec<PathBuf> {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = mounts
        .lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let (_, point, fstype) = (f.next()?, f.next()?, f.next()?);
            (fstype == "cgroup" && point.starts_with("/sys/fs/cgroup/"))
                .then(|| PathBuf::from(point))
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    dirs
}

/// v1 cpuset: a new group has no cpus or mems, and no task may join it until it has: copy
/// each empty value down from the parent, from the top of `rel` on.
fn fill_cpuset(hierarchy: &Path, rel: &Path) -> Result<(), RuntimeError> {
    let mut dir = hierarchy.to_path_buf();
    for part in rel.components() {
        let parent = dir.clone();
        dir.push(part);
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let current = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
            if current.trim().is_empty() {
                let value = std::fs::read_to_string(parent.join(file)).unwrap_or_default();
                write(&dir, file, value.trim())?;
            }
        }
    }
    Ok(())
}

pub(crate) fn is_unified() -> bool {
    nix::sys::statfs::statfs(ROOT)
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

fn write(dir: &Path, file: &str, value: &str) -> Result<(), RuntimeError> {
    let path = dir.join(file);
    std::fs::write(&path, value).map_err(|e| RuntimeError::io("write cgroup file", path, e))
}

/// (controller, file, value) triples the spec asks for, in v1 or v2 terms.
fn settings(res: &LinuxResources, unified: bool) -> Vec<(&'static str, String, String)> {
    let mut out = Vec::new();
    if let Some(limit) = res.memory().as_ref().and_then(|m| m.limit()) {
        let v = if limit < 0 {
            "max".to_string()
        } else {
            limit.to_string()
        };
        if unified {
            out.push(("memory", "memory.max".into(), v));
        } else {
            out.push((
                "memory",
                "memory.limit_in_bytes".into(),
                if limit < 0 { "-1".into() } else { v },
            ));
        }
    }
    if let Some(low) = res.memory().as_ref().and_then(|m| m.reservation()) {
        if low > 0 {
            let file = if unified {
                "memory.low"
            } else {
                "memory.soft_limit_in_bytes"
            };
            out.push(("memory", file.to_string(), low.to_string()));
        }
    }
    for page in res.hugepage_limits().iter().flatten() {
        // An unknown page size has no file: the write fails and says so.
        let file = if unified {
            format!("hugetlb.{}.max", page.page_size())
        } else {
            format!("hugetlb.{}.limit_in_bytes", page.page_size())
        };
        out.push(("hugetlb", file, page.limit().to_string()));
    }
    if let Some(limit) = res.pids().as_ref().map(|p| p.limit()) {
        let v = if limit <= 0 {
            "max".to_string()
        } else {
            limit.to_string()
        };
        out.push(("pids", "pids.max".into(), v));
    }
    if let Some(cpu) = res.cpu() {
        let period = cpu.period().unwrap_or(100_000);
        if let Some(quota) = cpu.quota().filter(|q| *q > 0) {
            if unified {
                out.push(("cpu", "cpu.max".into(), format!("{quota} {period}")));
            } else {
                out.push(("cpu", "cpu.cfs_period_us".into(), period.to_string()));
                out.push(("cpu", "cpu.cfs_quota_us".into(), quota.to_string()));
            }
        }
        if let Some(cpus) = cpu.cpus().as_ref().filter(|c| !c.is_empty()) {
            out.push(("cpuset", "cpuset.cpus".into(), cpus.clone()));
        }
        if let Some(mems) = cpu.mems().as_ref().filter(|m| !m.is_empty()) {
            out.push(("cpuset", "cpuset.mems".into(), mems.clone()));
        }
        if let Some(shares) = cpu.shares().filter(|s| *s > 0) {
            if unified {
                // The conversion runc and crun use from shares (2..262144) to weight (1..10000).
                let weight = 1 + ((shares.clamp(2, 262_144) - 2) * 9999) / 262_142;
                out.push(("cpu", "cpu.weight".into(), weight.to_string()));
            } else {
                out.push(("cpu", "cpu.shares".into(), shares.to_string()));
            }
        }
    }
    out
}

impl Cgroup {
    /// An OCI container's group at `path` (see [`oci_path`]) in every hierarchy, created
    /// whether or not anything is limited, with `res` applied. Rootless, failing to create
    /// it is a warning and `None`.
    pub fn create_at(
        path: &str,
        res: Option<&LinuxResources>,
        rootless: bool,
    ) -> Result<Option<Cgroup>, RuntimeError> {
        let rel = Path::new(path.trim_start_matches('/'));
        if rel
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(RuntimeError::InvalidSpec(format!(
                "cgroupsPath {path:?} must not contain . or .. components"
            )));
        }
        let unified = is_unified();
        let cg = Cgroup::at(path);
        let result = (|| {
            if unified {
                let _ = write(
                    Path::new(ROOT),
                    "cgroup.subtree_control",
                    "+cpu +memory +pids +io +cpuset",
                );
            }
            for dir in &cg.dirs {
                std::fs::create_dir_all(dir)
                    .map_err(|e| RuntimeError::io("create cgroup", dir, e))?;
                if !unified && dir.starts_with(Path::new(ROOT).join("cpuset")) {
                    fill_cpuset(&Path::new(ROOT).join("cpuset"), rel)?;
                }
            }
            if let Some(res) = res {
                cg.update(res)?;
            }
            Ok(())
        })();
        match result {
            Ok(()) => Ok(Some(cg)),
            Err(e) if rootless => {
                cg.remove();
                tracing::warn!("cgroup {path} not created (rootless cgroups unavailable): {e}");
                Ok(None)
            }
            Err(e) => {
                cg.remove();
                Err(e)
            }
        }
    }

    /// The directories of the group at `path` (see [`oci_path`]) in each hierarchy.
    pub fn at(path: &str) -> Cgroup {
        let rel = path.trim_start_matches('/');
        let dirs = if is_unified() {
            vec![Path::new(ROOT).join(rel)]
        } else {
            v1_hierarchies().into_iter().map(|h| h.join(rel)).collect()
        };
        Cgroup { dirs }
    }

    /// Applies `res` (memory, pids, cpu; device rules on v1) to the existing group.
    pub fn update(&self, res: &LinuxResources) -> Result<(), RuntimeError> {
        let unified = is_unified();
        for (controller, file, value) in settings(res, unified) {
            let dir = self.controller_dir(controller, unified)?;
            write(dir, &file, &value)?;
        }
        if !unified {
            if let Some(rules) = res.devices() {
                let dir = self.controller_dir("devices", false)?;
                let mut entries: Vec<(bool, String)> = rules
                    .iter()
                    .map(|rule| {
                        let kind = rule
                            .typ()
                            .map_or("a".to_string(), |t| t.as_str().to_string());
                        let number = |n: Option<i64>| n.map_or("*".to_string(), |n| n.to_string());
                        let entry = if kind == "a" {
                            "a".to_string()
                        } else {
                            format!(
                                "{kind} {}:{} {}",
                                number(rule.major()),
                                number(rule.minor()),
                                rule.access().as_deref().unwrap_or("rwm")
                            )
                        };
                        (rule.allow(), entry)
                    })
                    .collect();
                // What every container may use whatever the spec says (runc's list): its
                // /dev nodes, ptys, and mknod of anything (opening one is another matter).
                entries.extend(DEFAULT_DEVICE_RULES.iter().map(|r| (true, r.to_string())));
                for (allow, entry) in entries {
                    let file = if allow {
                        "devices.allow"
                    } else {
                        "devices.deny"
                    };
                    write(dir, file, &entry)?;
                }
            }
        }
        Ok(())
    }

    fn controller_dir(&self, controller: &str, unified: bool) -> Result<&Path, RuntimeError> {
        if unified {
            return self
                .dirs
                .first()
                .map(PathBuf::as_path)
                .ok_or_else(|| RuntimeError::InvalidSpec("the container has no cgroup".into()));
        }
        self.dirs
            .iter()
            .find(|d| {
                d.strip_prefix(ROOT)
                    .ok()
                    .and_then(|r| r.components().next())
                    .is_some_and(|c| {
                        c.as_os_str()
                            .to_str()
                            .is_some_and(|name| name.split(',').any(|n| n == controller))
                    })
            })
            .map(PathBuf::as_path)
            .ok_or_else(|| {
                RuntimeError::InvalidSpec(format!(
                    "the {controller} cgroup controller is not mounted under {ROOT}"
                ))
            })
    }

    /// Freezes (`true`) or thaws every process of the group, and waits until the kernel
    /// says it is done.
    pub fn set_frozen(&self, frozen: bool) -> Result<(), RuntimeError> {
        let unified = is_unified();
        let dir = self.controller_dir("freezer", unified)?;
        if unified {
            write(dir, "cgroup.freeze", if frozen { "1" } else { "0" })?;
        } else {
            write(
                dir,
                "freezer.state",
                if frozen { "FROZEN" } else { "THAWED" },
            )?;
        }
        for _ in 0..1000 {
            if self.is_frozen()? == frozen {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        Err(RuntimeError::Setup(format!(
            "the cgroup {} did not become {} within 1 s",
            dir.display(),
            if frozen { "frozen" } else { "thawed" }
        )))
    }

    /// How often the kernel's OOM killer killed a process of the group (v1
    /// memory.oom_control, v2 memory.events); 0 without a memory group.
    pub fn oom_kills(&self) -> u64 {
        let unified = is_unified();
        let Ok(dir) = self.controller_dir("memory", unified) else {
            return 0;
        };
        let file = if unified {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        std::fs::read_to_string(dir.join(file))
            .ok()
            .and_then(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix("oom_kill "))
                    .and_then(|n| n.trim().parse().ok())
            })
            .unwrap_or(0)
    }

    /// Whether the group is frozen.
    pub fn is_frozen(&self) -> Result<bool, RuntimeError> {
        let unified = is_unified();
        let dir = self.controller_dir("freezer", unified)?;
        if unified {
            let path = dir.join("cgroup.events");
            let events =
                std::fs::read_to_string(&path).map_err(|e| RuntimeError::io("read", path, e))?;
            Ok(events.lines().any(|l| l == "frozen 1"))
        } else {
            let path = dir.join("freezer.state");
            let state =
                std::fs::read_to_string(&path).map_err(|e| RuntimeError::io("read", path, e))?;
            Ok(state.trim() == "FROZEN")
        }
    }

    /// The pids of every process in the group (as this process's pid namespace sees them).
    pub fn pids(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = self
            .dirs
            .iter()
            .filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
            .flat_map(|text| {
                text.lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect::<Vec<i32>>()
            })
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Creates the container's cgroups and applies the limits; `None` when nothing is limited
    /// (or, rootless, when cgroups cannot be created).
    pub fn create(
        id: &str,
        res: Option<&LinuxResources>,
        rootless: bool,
    ) -> Result<Option<Cgroup>, RuntimeError> {
        let Some(res) = res else { return Ok(None) };
        let unified = is_unified();
        let wanted = settings(res, unified);
        if wanted.is_empty() {
            return Ok(None);
        }
        match Self::create_with(id, &wanted, unified) {
            Ok(cg) => Ok(Some(cg)),
            Err(e) if rootless => {
                tracing::warn!("resource limits not applied (rootless cgroups unavailable): {e}");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn create_with(
        id: &str,
        wanted: &[(&'static str, String, String)],
        unified: bool,
    ) -> Result<Cgroup, RuntimeError> {
        let mut cg = Cgroup { dirs: Vec::new() };
        let result = (|| {
            if unified {
                let parent = Path::new(ROOT).join("gcr");
                std::fs::create_dir_all(&parent)
                    .map_err(|e| RuntimeError::io("create cgroup", &parent, e))?;
                let mut controllers: Vec<&str> = wanted.iter().map(|w| w.0).collect();
                controllers.dedup();
                let enable: String = controllers.iter().map(|c| format!("+{c} ")).collect();
                // Best effort: a controller already enabled or not delegatable shows up below
                // as a missing file with its path.
                let _ = write(Path::new(ROOT), "cgroup.subtree_control", enable.trim());
                let _ = write(&parent, "cgroup.subtree_control", enable.trim());
                crate::cgroup_usage::enable_counters(Path::new(ROOT), &parent);
                let dir = parent.join(id);
                std::fs::create_dir(&dir)
                    .map_err(|e| RuntimeError::io("create cgroup", &dir, e))?;
                cg.dirs.push(dir.clone());
                for (_, file, value) in wanted {
                    write(&dir, file, value)?;
                }
            } else {
                for (controller, file, value) in wanted {
                    let dir = Path::new(ROOT).join(controller).join("gcr").join(id);
                    if !cg.dirs.contains(&dir) {
                        std::fs::create_dir_all(&dir)
                            .map_err(|e| RuntimeError::io("create cgroup", &dir, e))?;
                        cg.dirs.push(dir.clone());
                    }
                    write(&dir, file, value)?;
                }
                cg.add_counting_groups(id);
            }
            Ok(())
        })();
        match result {
            Ok(()) => Ok(cg),
            Err(e) => {
                cg.remove();
                Err(e)
            }
        }
    }

    /// Moves process `pid` into every group (the parent does this for the child before the
    /// child unshares its cgroup namespace, so the container sees its own group as the root).
    pub fn add(&self, pid: i32) -> Result<(), RuntimeError> {
        for dir in &self.dirs {
            write(dir, "cgroup.procs", &pid.to_string())?;
        }
        Ok(())
    }

    /// Removes the groups once the container is gone (retrying while the kernel still counts
    /// exiting tasks).
    pub fn remove(&self) {
        for dir in &self.dirs {
            for _ in 0..50 {
                match std::fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
                }
            }
        }
    }
}

/// The freezer group `pause` puts a gcr container's processes in: v1's freezer hierarchy, or
/// on v2 the container's own group (`gcr/<id>`, made by its limits or here).
fn pause_group(id: &str) -> Cgroup {
    let dir = if is_unified() {
        Path::new(ROOT).join("gcr").join(id)
    } else {
        Path::new(ROOT).join("freezer").join("gcr").join(id)
    };
    Cgroup { dirs: vec![dir] }
}

/// `pause`: moves the container's processes (`pids`, as the host sees them) into its freezer
/// group and freezes it. Processes forked meanwhile follow their parent into the group; the
/// move is repeated until every one of `more_pids()` is in it.
pub fn freeze_container(id: &str, more_pids: impl Fn() -> Vec<i32>) -> Result<(), RuntimeError> {
    let group = pause_group(id);
    let dir = &group.dirs[0];
    if !is_unified() && !Path::new(ROOT).join("freezer").is_dir() {
        return Err(RuntimeError::Setup(format!(
            "pause needs the freezer cgroup controller, which is not mounted under {ROOT}"
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| RuntimeError::io("create cgroup", dir, e))?;
    for _ in 0..10 {
        let inside = group.pids();
        let missing: Vec<i32> = more_pids()
            .into_iter()
            .filter(|p| !inside.contains(p))
            .collect();
        if missing.is_empty() {
            return group.set_frozen(true);
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
    group.set_frozen(true)
}

/// `unpause`: thaws the container's freezer group.
pub fn thaw_container(id: &str) -> Result<(), RuntimeError> {
    let group = pause_group(id);
    if !group.dirs[0].is_dir() {
        return Ok(());
    }
    group.set_frozen(false)
}

/// Whether the container's freezer group is frozen now.
pub fn container_frozen(id: &str) -> bool {
    let group = pause_group(id);
    group.dirs[0].is_dir() && group.is_frozen().unwrap_or(false)
}

/// Removes the freezer group of an ended container (v1; on v2 the group goes with the
/// container's other limits, or here if pause made it).
pub fn remove_pause_group(id: &str) {
    let group = pause_group(id);
    if group.dirs[0].is_dir() {
        let _ = std::fs::remove_dir(&group.dirs[0]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oci_cgroup_paths() {
        assert_eq!(oci_path(None, "c1"), "/gcr-oci/c1");
        assert_eq!(
            oci_path(Some(Path::new("/libpod_parent/x")), "c1"),
            "/libpod_parent/x"
        );
        assert_eq!(oci_path(Some(Path::new("rel/x")), "c1"), "/gcr-oci/rel/x");
        assert_eq!(
            oci_path(Some(Path::new("machine.slice:libpod:abc")), "c1"),
            "/machine.slice/libpod-abc.scope"
        );
        assert_eq!(
            oci_path(Some(Path::new(":cri:abc")), "c1"),
            "/system.slice/cri-abc.scope"
        );
    }

    #[test]
    fn cgroups_path_may_not_climb() {
        let err = Cgroup::create_at("/a/../../etc", None, false).unwrap_err();
        assert!(err.to_string().contains(".."), "{err}");
    }
}
