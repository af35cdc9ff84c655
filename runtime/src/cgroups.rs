//! Resource limits (memory, swap, pids, cpu, cpuset, block I/O) and device rules through
//! cgroups: v2 (unified) or v1 (legacy and hybrid, as on this project's machines, where the v2
//! mount holds no controller gcr uses). The files per setting and the OCI containers' groups
//! live here; gcr's own containers' groups in `cgroup_gcr`.
//!
//! A container gets `gcr/<id>` at the top of each hierarchy it needs, beside (never inside)
//! whatever cgroup the calling service lives in, and only when the spec asks for a limit: an
//! unlimited container pays nothing. Rootless, failing to create the group is a warning and
//! the container runs without the limits.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxResources};

use crate::error::RuntimeError;

pub use crate::cgroup_gcr::{
    container_frozen, freeze_container, group_path, limits_enforceable, remove_container_groups,
    thaw_container, update_container, warn_limits_not_enforced,
};

pub(crate) const ROOT: &str = "/sys/fs/cgroup";

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
pub(crate) fn fill_cpuset(hierarchy: &Path, rel: &Path) -> Result<(), RuntimeError> {
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

pub(crate) fn write(dir: &Path, file: &str, value: &str) -> Result<(), RuntimeError> {
    let path = dir.join(file);
    std::fs::write(&path, value).map_err(|e| RuntimeError::io("write cgroup file", path, e))
}

/// Writes the spec's device rules, then runc's default list, into a v1 devices group.
pub(crate) fn write_device_rules(
    dir: &Path,
    rules: &[LinuxDeviceCgroup],
) -> Result<(), RuntimeError> {
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
    // What every container may use whatever the spec says (runc's list): its /dev nodes,
    // ptys, and mknod of anything (opening one is another matter).
    entries.extend(DEFAULT_DEVICE_RULES.iter().map(|r| (true, r.to_string())));
    for (allow, entry) in entries {
        let file = if allow {
            "devices.allow"
        } else {
            "devices.deny"
        };
        write(dir, file, &entry)?;
    }
    Ok(())
}

/// Device rules on v2: the spec's `rules`, then runc's default list, as an eBPF filter attached
/// to the v2 group `dir` (the kernel checks it before every device open and mknod there).
pub fn attach_device_filter(dir: &Path, rules: &[LinuxDeviceCgroup]) -> Result<(), RuntimeError> {
    let mut all: Vec<crate::device_filter::DeviceRule> = rules
        .iter()
        .map(crate::device_filter::DeviceRule::of_spec)
        .collect();
    all.extend(
        DEFAULT_DEVICE_RULES
            .iter()
            .filter_map(|r| crate::device_filter::DeviceRule::of_entry(r)),
    );
    crate::device_filter::attach(dir, &all)
}

/// Writes one setting. The block I/O weight goes to whichever weight file the kernel's I/O
/// scheduler offers; when it offers none that is an error naming the directory, never a
/// silent skip.
fn write_setting(dir: &Path, file: &str, value: &str) -> Result<(), RuntimeError> {
    let candidates: [&str; 2] = match file {
        "blkio.weight" => ["blkio.weight", "blkio.bfq.weight"],
        "io.weight" => ["io.bfq.weight", "io.weight"],
        _ => return write(dir, file, value),
    };
    let Some(found) = candidates.iter().find(|f| dir.join(f).exists()) else {
        return Err(RuntimeError::Setup(format!(
            "cannot set the block I/O weight: {} has neither {} nor {} (the kernel's I/O scheduler here has no weights; bfq has them)",
            dir.display(),
            candidates[0],
            candidates[1]
        )));
    };
    if *found == "io.weight" {
        // v1's 10..1000 onto v2's 1..10000, as runc converts it.
        let weight: u64 = value.parse().unwrap_or(500);
        let converted = 1 + (weight.clamp(10, 1000) - 10) * 9999 / 990;
        return write(dir, found, &format!("default {converted}"));
    }
    write(dir, found, value)
}

/// Writes `wanted` into the directories `dir_of` names per controller. v1 refuses a memory
/// limit above the memory+swap one: on that error the memory+swap limit is written first.
pub(crate) fn apply(
    wanted: &[(&'static str, String, String)],
    dir_of: impl Fn(&str) -> Result<PathBuf, RuntimeError>,
) -> Result<(), RuntimeError> {
    for (controller, file, value) in wanted {
        let dir = dir_of(controller)?;
        match write_setting(&dir, file, value) {
            Err(e) if file == "memory.limit_in_bytes" => {
                let Some((_, swap_file, swap)) =
                    wanted.iter().find(|w| w.1 == "memory.memsw.limit_in_bytes")
                else {
                    return Err(e);
                };
                write(&dir, swap_file, swap)?;
                write(&dir, file, value)?;
            }
            other => other?,
        }
    }
    Ok(())
}

/// (controller, file, value) triples the spec asks for, in v1 or v2 terms.
pub(crate) fn settings(res: &LinuxResources, unified: bool) -> Vec<(&'static str, String, String)> {
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
    if let Some(swap) = res.memory().as_ref().and_then(|m| m.swap()) {
        // Docker's --memory-swap (and OCI's swap) is memory and swap together; v2 limits the
        // swap alone.
        if unified {
            let limit = res.memory().as_ref().and_then(|m| m.limit()).unwrap_or(-1);
            let v = if swap < 0 || limit < 0 {
                "max".to_string()
            } else {
                (swap - limit).max(0).to_string()
            };
            out.push(("memory", "memory.swap.max".into(), v));
        } else {
            let v = if swap < 0 { -1 } else { swap };
            out.push((
                "memory",
                "memory.memsw.limit_in_bytes".into(),
                v.to_string(),
            ));
        }
    }
    if let Some(io) = res.block_io() {
        let controller = if unified { "io" } else { "blkio" };
        if let Some(weight) = io.weight().filter(|w| *w > 0) {
            let file = if unified { "io.weight" } else { "blkio.weight" };
            out.push((controller, file.into(), weight.to_string()));
        }
        for (devices, v1_file, v2_key) in [
            (
                io.throttle_read_bps_device(),
                "blkio.throttle.read_bps_device",
                "rbps",
            ),
            (
                io.throttle_write_bps_device(),
                "blkio.throttle.write_bps_device",
                "wbps",
            ),
            (
                io.throttle_read_iops_device(),
                "blkio.throttle.read_iops_device",
                "riops",
            ),
            (
                io.throttle_write_iops_device(),
                "blkio.throttle.write_iops_device",
                "wiops",
            ),
        ] {
            for d in devices.iter().flatten() {
                let (major, minor, rate) = (d.major(), d.minor(), d.rate());
                if unified {
                    out.push((
                        controller,
                        "io.max".into(),
                        format!("{major}:{minor} {v2_key}={rate}"),
                    ));
                } else {
                    out.push((
                        controller,
                        v1_file.into(),
                        format!("{major}:{minor} {rate}"),
                    ));
                }
            }
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
                // v2: the spec's device rules as a filter on the group, made once here.
                match (
                    unified && !rootless,
                    res.devices().as_deref(),
                    cg.dirs.first(),
                ) {
                    (true, Some(rules), Some(dir)) if !rules.is_empty() => {
                        attach_device_filter(dir, rules)?
                    }
                    _ => {}
                }
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
        apply(&settings(res, unified), |c| {
            self.controller_dir(c, unified).map(Path::to_path_buf)
        })?;
        if !unified {
            if let Some(rules) = res.devices() {
                write_device_rules(self.controller_dir("devices", false)?, rules)?;
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
