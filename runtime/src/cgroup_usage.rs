//! What a container's own cgroups count (for `stats`): memory, CPU time, tasks and block I/O,
//! from its groups in the v1 hierarchies or its v2 group. A controller the container has no
//! group of its own in reads as `None`: the caller counts another way or says it cannot,
//! never with the figures of a parent group the container merely lives in.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::cgroups::{is_unified, v1_hierarchies, Cgroup};

const ROOT: &str = "/sys/fs/cgroup";

/// v1 prints "no limit" as the largest page-aligned i64; anything this large is unlimited.
const UNLIMITED: u64 = 1 << 62;

/// Memory as the group counts it (page cache and tmpfs included, as the kernel charges them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryCounters {
    /// `memory.usage_in_bytes` (v1) or `memory.current` (v2).
    pub usage: u64,
    /// The most it used: v1 `memory.max_usage_in_bytes`, v2 `memory.peak` where the kernel
    /// has it.
    pub max_usage: Option<u64>,
    /// `memory.limit_in_bytes` / `memory.max`; `None` when unlimited.
    pub limit: Option<u64>,
    /// How often the limit was hit (v1 `memory.failcnt`, v2 `max` of `memory.events`).
    pub failcnt: Option<u64>,
    /// `memory.stat`, every counter by its name.
    pub stats: BTreeMap<String, u64>,
}

/// CPU time the group's tasks used, in nanoseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuCounters {
    pub total_ns: u64,
    pub user_ns: Option<u64>,
    pub system_ns: Option<u64>,
    /// Per CPU (v1 `cpuacct.usage_percpu`); empty on v2, which does not count per CPU.
    pub percpu_ns: Vec<u64>,
}

/// One line of the block I/O counters: bytes of `op` (Read, Write, ... as the kernel names
/// them on v1; read, write on v2) on device `major:minor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoCounter {
    pub major: u64,
    pub minor: u64,
    pub op: String,
    pub value: u64,
}

/// What a container's groups count; `None` where it has no group of its own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupUsage {
    /// Read from a v2 group (else v1 hierarchies).
    pub unified: bool,
    pub memory: Option<MemoryCounters>,
    pub cpu: Option<CpuCounters>,
    /// Tasks (threads included) in the group, and its limit (`None`: unlimited).
    pub pids: Option<u64>,
    pub pids_limit: Option<u64>,
    /// Bytes read and written per device and operation.
    pub io: Option<Vec<IoCounter>>,
}

/// The groups gcr made for the container whose groups are at `rel` (see
/// [`crate::cgroups::group_path`]) that exist now; `None` when it has none (it was not limited,
/// or runs rootless without a delegated subtree).
pub fn container_cgroup(rel: &str) -> Option<Cgroup> {
    let dirs: Vec<PathBuf> = if is_unified() {
        vec![crate::cgroup_gcr::v2_base().ok()?.join(rel)]
    } else {
        v1_hierarchies().into_iter().map(|h| h.join(rel)).collect()
    };
    let dirs: Vec<PathBuf> = dirs.into_iter().filter(|d| d.is_dir()).collect();
    (!dirs.is_empty()).then_some(Cgroup { dirs })
}

/// v2: enables the counting controllers (memory, pids, io) for gcr's groups too, each on
/// its own and best effort (one a parent does not offer is simply not counted).
pub(crate) fn enable_counters(root: &Path, parent: &Path) {
    for counter in ["+memory", "+pids", "+io"] {
        for dir in [root, parent] {
            let _ = std::fs::write(dir.join("cgroup.subtree_control"), counter);
        }
    }
}

impl Cgroup {
    /// v1: a limited container also gets its own group in each counting controller it has
    /// none in yet (memory, pids, cpuacct, blkio), so `stats` reads its figures in one
    /// place. Best effort: where it has none, stats count from /proc instead.
    pub(crate) fn add_counting_groups(&mut self, rel: &str) {
        for controller in ["memory", "pids", "cpuacct", "blkio"] {
            let Ok(mount) = std::fs::canonicalize(Path::new(ROOT).join(controller)) else {
                continue;
            };
            // ROOT/cpuacct may be a link to the cpu,cpuacct hierarchy a limit made a group in.
            if self
                .dirs
                .iter()
                .any(|d| std::fs::canonicalize(d).is_ok_and(|d| d.starts_with(&mount)))
            {
                continue;
            }
            let dir = mount.join(rel);
            match std::fs::create_dir_all(&dir) {
                Ok(()) => self.dirs.push(dir),
                Err(e) => {
                    tracing::debug!("no {controller} cgroup for stats at {}: {e}", dir.display())
                }
            }
        }
    }
}

fn read(dir: &Path, file: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(file)).ok()
}

fn number(dir: &Path, file: &str) -> Option<u64> {
    read(dir, file)?.trim().parse().ok()
}

/// `max` or a number: the limit, `None` when there is none.
fn limit(dir: &Path, file: &str) -> Option<u64> {
    let text = read(dir, file)?;
    text.trim().parse().ok().filter(|v| *v < UNLIMITED)
}

/// `key value` lines (memory.stat, cpu.stat, cpuacct.stat, memory.events).
fn keyed(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|line| {
            let (key, value) = line.split_once(' ')?;
            Some((key.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

/// v1 blkio lines: `MAJ:MIN Op VALUE` (and a final `Total VALUE`, skipped).
fn blkio_lines(text: &str) -> Vec<IoCounter> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let (device, op, value) = (f.next()?, f.next()?, f.next()?);
            let (major, minor) = device.split_once(':')?;
            Some(IoCounter {
                major: major.parse().ok()?,
                minor: minor.parse().ok()?,
                op: op.to_string(),
                value: value.parse().ok()?,
            })
        })
        .collect()
}

/// v2 `io.stat`: `MAJ:MIN rbytes=N wbytes=N rios=N ...` as read and write entries.
fn io_stat_lines(text: &str) -> Vec<IoCounter> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let Some((major, minor)) = f.next().and_then(|d| d.split_once(':')) else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (major.parse(), minor.parse()) else {
            continue;
        };
        for field in f {
            let Some((key, value)) = field.split_once('=') else {
                continue;
            };
            let op = match key {
                "rbytes" => "read",
                "wbytes" => "write",
                _ => continue,
            };
            if let Ok(value) = value.parse() {
                out.push(IoCounter {
                    major,
                    minor,
                    op: op.to_string(),
                    value,
                });
            }
        }
    }
    out
}

/// Nanoseconds of USER_HZ ticks (cpuacct.stat counts in them).
fn ticks_to_ns(ticks: u64) -> u64 {
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|hz| *hz > 0)
        .unwrap_or(100) as u64;
    ticks.saturating_mul(1_000_000_000 / hz)
}

impl Cgroup {
    /// The directory of this group in the v1 hierarchy of `controller` (`None` if it has
    /// none there).
    fn v1_dir(&self, controller: &str) -> Option<&Path> {
        self.dirs.iter().map(PathBuf::as_path).find(|d| {
            d.strip_prefix(ROOT)
                .ok()
                .and_then(|r| r.components().next())
                .and_then(|c| c.as_os_str().to_str())
                .is_some_and(|name| name.split(',').any(|n| n == controller))
        })
    }

    /// What the group counts now (see [`CgroupUsage`]).
    pub fn usage(&self) -> CgroupUsage {
        match self.dirs.first() {
            Some(dir) if dir.join("cgroup.controllers").exists() => v2_usage(dir),
            _ => self.v1_usage(),
        }
    }

    fn v1_usage(&self) -> CgroupUsage {
        let memory = self.v1_dir("memory").and_then(|dir| {
            Some(MemoryCounters {
                usage: number(dir, "memory.usage_in_bytes")?,
                max_usage: number(dir, "memory.max_usage_in_bytes"),
                limit: limit(dir, "memory.limit_in_bytes"),
                failcnt: number(dir, "memory.failcnt"),
                stats: read(dir, "memory.stat")
                    .map(|t| keyed(&t))
                    .unwrap_or_default(),
            })
        });
        let cpu = self.v1_dir("cpuacct").and_then(|dir| {
            let ticks = read(dir, "cpuacct.stat").map(|t| keyed(&t));
            let from_ticks = |key: &str| ticks.as_ref()?.get(key).map(|t| ticks_to_ns(*t));
            Some(CpuCounters {
                total_ns: number(dir, "cpuacct.usage")?,
                user_ns: number(dir, "cpuacct.usage_user").or_else(|| from_ticks("user")),
                system_ns: number(dir, "cpuacct.usage_sys").or_else(|| from_ticks("system")),
                percpu_ns: read(dir, "cpuacct.usage_percpu")
                    .map(|t| {
                        t.split_whitespace()
                            .filter_map(|v| v.parse().ok())
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        });
        let pids_dir = self.v1_dir("pids");
        let io = self.v1_dir("blkio").and_then(|dir| {
            [
                "blkio.throttle.io_service_bytes_recursive",
                "blkio.io_service_bytes_recursive",
                "blkio.throttle.io_service_bytes",
            ]
            .iter()
            .find_map(|file| read(dir, file))
            .map(|t| blkio_lines(&t))
        });
        CgroupUsage {
            unified: false,
            memory,
            cpu,
            pids: pids_dir.and_then(|d| number(d, "pids.current")),
            pids_limit: pids_dir.and_then(|d| limit(d, "pids.max")),
            io,
        }
    }
}

fn v2_usage(dir: &Path) -> CgroupUsage {
    let memory = number(dir, "memory.current").map(|usage| MemoryCounters {
        usage,
        max_usage: number(dir, "memory.peak"),
        limit: limit(dir, "memory.max"),
        failcnt: read(dir, "memory.events").and_then(|t| keyed(&t).get("max").copied()),
        stats: read(dir, "memory.stat")
            .map(|t| keyed(&t))
            .unwrap_or_default(),
    });
    let cpu = read(dir, "cpu.stat").and_then(|text| {
        let stat = keyed(&text);
        let us = |key: &str| stat.get(key).map(|v| v.saturating_mul(1000));
        Some(CpuCounters {
            total_ns: us("usage_usec")?,
            user_ns: us("user_usec"),
            system_ns: us("system_usec"),
            percpu_ns: Vec::new(),
        })
    });
    CgroupUsage {
        unified: true,
        memory,
        cpu,
        pids: number(dir, "pids.current"),
        pids_limit: limit(dir, "pids.max"),
        io: read(dir, "io.stat").map(|t| io_stat_lines(&t)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blkio_and_io_stat_lines() {
        let v1 = "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\n8:0 Total 12288\nTotal 12288\n";
        let entries = blkio_lines(v1);
        assert_eq!(entries.len(), 4);
        assert_eq!(
            entries[1],
            IoCounter {
                major: 8,
                minor: 0,
                op: "Write".into(),
                value: 8192
            }
        );
        let v2 = "259:0 rbytes=100 wbytes=200 rios=1 wios=2 dbytes=0 dios=0\n";
        let entries = io_stat_lines(v2);
        assert_eq!(
            entries
                .iter()
                .map(|e| (e.op.as_str(), e.value))
                .collect::<Vec<_>>(),
            [("read", 100), ("write", 200)]
        );
    }

    #[test]
    fn keyed_counters_and_limits() {
        let stats = keyed("cache 20971520\nrss 53248\nbad line here\n");
        assert_eq!(stats.get("cache"), Some(&20971520));
        assert_eq!(stats.len(), 2);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), "max\n").unwrap();
        std::fs::write(dir.path().join("b"), "9223372036854771712\n").unwrap();
        std::fs::write(dir.path().join("c"), "67108864\n").unwrap();
        assert_eq!(limit(dir.path(), "a"), None);
        assert_eq!(limit(dir.path(), "b"), None);
        assert_eq!(limit(dir.path(), "c"), Some(64 << 20));
    }
}
