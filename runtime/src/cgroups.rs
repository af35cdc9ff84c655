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

/// The cgroup directories of one container; removed by [`Cgroup::remove`].
#[derive(Debug)]
pub(crate) struct Cgroup {
    pub dirs: Vec<PathBuf>,
}

fn is_unified() -> bool {
    nix::sys::statfs::statfs(ROOT)
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

fn write(dir: &Path, file: &str, value: &str) -> Result<(), RuntimeError> {
    let path = dir.join(file);
    std::fs::write(&path, value).map_err(|e| RuntimeError::io("write cgroup file", path, e))
}

/// (controller, file, value) triples the spec asks for, in v1 or v2 terms.
fn settings(res: &LinuxResources, unified: bool) -> Vec<(&'static str, &'static str, String)> {
    let mut out = Vec::new();
    if let Some(limit) = res.memory().as_ref().and_then(|m| m.limit()) {
        let v = if limit < 0 {
            "max".to_string()
        } else {
            limit.to_string()
        };
        if unified {
            out.push(("memory", "memory.max", v));
        } else {
            out.push((
                "memory",
                "memory.limit_in_bytes",
                if limit < 0 { "-1".into() } else { v },
            ));
        }
    }
    if let Some(limit) = res.pids().as_ref().map(|p| p.limit()) {
        let v = if limit <= 0 {
            "max".to_string()
        } else {
            limit.to_string()
        };
        out.push(("pids", "pids.max", v));
    }
    if let Some(cpu) = res.cpu() {
        let period = cpu.period().unwrap_or(100_000);
        if let Some(quota) = cpu.quota().filter(|q| *q > 0) {
            if unified {
                out.push(("cpu", "cpu.max", format!("{quota} {period}")));
            } else {
                out.push(("cpu", "cpu.cfs_period_us", period.to_string()));
                out.push(("cpu", "cpu.cfs_quota_us", quota.to_string()));
            }
        }
        if let Some(shares) = cpu.shares().filter(|s| *s > 0) {
            if unified {
                // The conversion runc and crun use from shares (2..262144) to weight (1..10000).
                let weight = 1 + ((shares.clamp(2, 262_144) - 2) * 9999) / 262_142;
                out.push(("cpu", "cpu.weight", weight.to_string()));
            } else {
                out.push(("cpu", "cpu.shares", shares.to_string()));
            }
        }
    }
    out
}

impl Cgroup {
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
        wanted: &[(&'static str, &'static str, String)],
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
