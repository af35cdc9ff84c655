//! `stats`: what a running container uses (CPU time, memory, tasks, network and block I/O),
//! for every front end. Figures come from the container's own cgroups where it has them (v1
//! or v2, see `gcr_runtime::container_cgroup`); a container without one (rootless on cgroup
//! v1, or started without limits) is counted from /proc of its processes instead, which
//! counts less (resident memory only, no limit) and is marked as such ([`Source`]). A figure
//! that cannot be read at all is `None`: front ends show it as unknown, never as a guess.
//!
//! CPU % needs two samples: [`Sample::cpu_percent`] relates the container's CPU time between
//! them to the machine's (/proc/stat), as Docker does.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use crate::container::Container;
use crate::error::{ContainerError, Result};

pub use gcr_runtime::{CpuCounters, IoCounter, MemoryCounters};

/// Where a group of figures was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The container's own cgroup.
    Cgroup,
    /// /proc of the container's processes (no cgroup of its own for this controller).
    Proc,
}

/// Bytes and packets of one network interface (`/proc/PID/net/dev`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetCounters {
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// One reading of a running container.
#[derive(Debug, Clone)]
pub struct Sample {
    pub read: chrono::DateTime<chrono::Utc>,
    /// CPU time of the whole machine (every CPU, busy or idle), nanoseconds.
    pub system_cpu_ns: u64,
    pub online_cpus: u32,
    /// The machine's memory (MemTotal), bytes.
    pub host_memory: u64,
    pub cpu: Option<CpuCounters>,
    pub cpu_source: Source,
    /// From /proc: `usage` is the resident memory of its processes and `limit` is `None`.
    pub memory: Option<MemoryCounters>,
    pub memory_source: Source,
    /// Tasks (threads included).
    pub pids: Option<u64>,
    pub pids_limit: Option<u64>,
    pub pids_source: Source,
    /// Bytes read and written; from /proc (`Source::Proc`) one Read and one Write entry on
    /// device 0:0 (all devices, as /proc/PID/io counts them). `None` if a process's
    /// counters could not be read.
    pub io: Option<Vec<IoCounter>>,
    pub io_source: Source,
    /// Interfaces of its network namespace but `lo`; `None` with the host's network
    /// (its counters would be the host's) or when they cannot be read.
    pub networks: Option<BTreeMap<String, NetCounters>>,
    /// The memory limit its spec asks for (the limit not enforced without a memory cgroup).
    pub requested_memory_limit: Option<u64>,
    /// Whether the spec asks for any limit (why it would have a cgroup).
    pub limited: bool,
}

impl Sample {
    /// Docker's CPU %: the container's CPU time over the machine's since `previous`, times
    /// the number of CPUs (100% is one CPU busy). `None` without CPU figures or time between.
    pub fn cpu_percent(&self, previous: &Sample) -> Option<f64> {
        let (now, before) = (self.cpu.as_ref()?, previous.cpu.as_ref()?);
        let system = self.system_cpu_ns.checked_sub(previous.system_cpu_ns)?;
        if system == 0 {
            return None;
        }
        let used = now.total_ns.saturating_sub(before.total_ns);
        Some(used as f64 / system as f64 * f64::from(self.online_cpus.max(1)) * 100.0)
    }

    /// Memory in use as Docker shows it: the usage less inactive file pages (cache the kernel
    /// drops first).
    pub fn memory_used(&self) -> Option<u64> {
        let m = self.memory.as_ref()?;
        let inactive = m
            .stats
            .get("total_inactive_file")
            .or_else(|| m.stats.get("inactive_file"))
            .copied()
            .filter(|v| *v < m.usage)
            .unwrap_or(0);
        Some(m.usage - inactive)
    }

    /// The memory limit in effect: the cgroup's, at most the machine's memory; the
    /// machine's when nothing limits the container.
    pub fn memory_limit(&self) -> u64 {
        let limit = self.memory.as_ref().and_then(|m| m.limit);
        limit.map_or(self.host_memory, |l| l.min(self.host_memory))
    }

    /// (read, written) bytes of block I/O.
    pub fn block_io(&self) -> Option<(u64, u64)> {
        let entries = self.io.as_ref()?;
        let sum = |op: &str| {
            entries
                .iter()
                .filter(|e| e.op.eq_ignore_ascii_case(op))
                .map(|e| e.value)
                .sum()
        };
        Some((sum("read"), sum("write")))
    }

    /// (received, sent) bytes over every interface.
    pub fn net_io(&self) -> Option<(u64, u64)> {
        let nets = self.networks.as_ref()?;
        Some((
            nets.values().map(|n| n.rx_bytes).sum(),
            nets.values().map(|n| n.tx_bytes).sum(),
        ))
    }

    /// What a front end should tell the user about figures not from a cgroup (one line),
    /// or `None` when all come from the container's own cgroup.
    pub fn note(&self) -> Option<String> {
        if [
            self.cpu_source,
            self.memory_source,
            self.pids_source,
            self.io_source,
        ]
        .iter()
        .all(|s| *s == Source::Cgroup)
        {
            return None;
        }
        let why = if self.limited {
            "none could be made for its limits: rootless without cgroups, as on cgroup v1"
        } else {
            "gcr makes one only for a container with limits"
        };
        let mut text =
            format!("no cgroup of its own ({why}), so counted from /proc of its processes");
        if self.memory_source == Source::Proc {
            text.push_str(
                "; memory is their resident memory (page cache and tmpfs not counted), the \
                 limit the host's",
            );
            if let Some(limit) = self.requested_memory_limit {
                text.push_str(&format!(
                    "; its memory limit of {} MiB is not enforced",
                    limit >> 20
                ));
            }
        }
        Some(text)
    }
}

/// Reads container `c` now. Errors: `NotRunning` when it does not run.
pub fn sample(c: &Container) -> Result<Sample> {
    let pid = match c.pid() {
        Some(pid) if c.alive() => pid.as_raw(),
        _ => return Err(ContainerError::NotRunning(c.display_name())),
    };
    let (system_cpu_ns, online_cpus) = system_cpu()?;
    let spec = c.spec().ok();
    let resources = spec
        .as_ref()
        .and_then(|s| s.linux().as_ref())
        .and_then(|l| l.resources().as_ref());
    let requested_memory_limit = resources
        .and_then(|r| r.memory().as_ref())
        .and_then(|m| m.limit())
        .and_then(|l| u64::try_from(l).ok());
    // What makes the runtime create a container's cgroups (see gcr_runtime::cgroups).
    let limited = resources.is_some_and(|r| {
        r.memory()
            .as_ref()
            .is_some_and(|m| m.limit().is_some() || m.reservation().is_some_and(|v| v > 0))
            || r.pids().is_some()
            || r.hugepage_limits().as_ref().is_some_and(|h| !h.is_empty())
            || r.cpu().as_ref().is_some_and(|c| {
                c.quota().is_some_and(|q| q > 0)
                    || c.shares().is_some_and(|s| s > 0)
                    || c.cpus().as_ref().is_some_and(|v| !v.is_empty())
                    || c.mems().as_ref().is_some_and(|v| !v.is_empty())
            })
    });
    let group =
        gcr_runtime::container_cgroup(&crate::limits::cgroup_rel(&c.id, c.spec().ok().as_ref()))
            .map(|g| (g.usage(), g.pids()));
    let (usage, group_pids) = group.unwrap_or_default();
    // The processes: the cgroup's list when it has one, else those of its PID namespace.
    let members = if group_pids.is_empty() {
        proc_members(pid)
    } else {
        group_pids
    };
    let procs: Vec<ProcCounters> = members.iter().filter_map(|p| proc_counters(*p)).collect();
    let tick_ns = tick_ns();
    let (cpu, cpu_source) = match usage.cpu {
        Some(cpu) => (Some(cpu), Source::Cgroup),
        None => {
            let user: u64 = procs.iter().map(|p| p.user_ticks).sum();
            let system: u64 = procs.iter().map(|p| p.system_ticks).sum();
            let cpu = CpuCounters {
                total_ns: (user + system) * tick_ns,
                user_ns: Some(user * tick_ns),
                system_ns: Some(system * tick_ns),
                percpu_ns: Vec::new(),
            };
            (Some(cpu), Source::Proc)
        }
    };
    let (memory, memory_source) = match usage.memory {
        Some(m) => (Some(m), Source::Cgroup),
        None => {
            let rss = procs.iter().map(|p| p.rss).sum();
            let m = MemoryCounters {
                usage: rss,
                ..Default::default()
            };
            (Some(m), Source::Proc)
        }
    };
    let (pids, pids_source) = match usage.pids {
        Some(n) => (Some(n), Source::Cgroup),
        None => (Some(procs.iter().map(|p| p.threads).sum()), Source::Proc),
    };
    let (io, io_source) = match usage.io {
        Some(io) => (Some(io), Source::Cgroup),
        None => {
            let counted: Option<Vec<(u64, u64)>> = procs.iter().map(|p| p.io).collect();
            let io = counted.map(|list| {
                let entry = |op: &str, value| IoCounter {
                    major: 0,
                    minor: 0,
                    op: op.to_string(),
                    value,
                };
                vec![
                    entry("Read", list.iter().map(|v| v.0).sum()),
                    entry("Write", list.iter().map(|v| v.1).sum()),
                ]
            });
            (io, Source::Proc)
        }
    };
    let host_network = crate::inspect::network_mode(&c.meta, spec.as_ref()) == "host";
    let networks = if host_network {
        None
    } else {
        std::fs::read_to_string(format!("/proc/{pid}/net/dev"))
            .ok()
            .map(|t| net_dev(&t))
    };
    Ok(Sample {
        read: chrono::Utc::now(),
        system_cpu_ns,
        online_cpus,
        host_memory: host_memory(),
        cpu,
        cpu_source,
        memory,
        memory_source,
        pids,
        pids_limit: usage.pids_limit,
        pids_source,
        io,
        io_source,
        networks,
        requested_memory_limit,
        limited,
    })
}

/// Docker's stats document (`GET /containers/{id}/stats`) of `now` with `pre` as the
/// previous reading (`precpu_stats`); a container that does not run gets Docker's zeros.
pub fn docker_stats(c: &Container, now: Option<&Sample>, pre: Option<&Sample>) -> Value {
    const ZERO_TIME: &str = "0001-01-01T00:00:00Z";
    let time = |s: Option<&Sample>| {
        s.map_or(ZERO_TIME.to_string(), |s| {
            s.read.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
        })
    };
    let cpu_stats = |s: Option<&Sample>| {
        let cpu = s.and_then(|s| s.cpu.clone()).unwrap_or_default();
        let mut usage = json!({
            "total_usage": cpu.total_ns,
            "usage_in_kernelmode": cpu.system_ns.unwrap_or(0),
            "usage_in_usermode": cpu.user_ns.unwrap_or(0),
        });
        if !cpu.percpu_ns.is_empty() {
            usage["percpu_usage"] = json!(cpu.percpu_ns);
        }
        let mut stats = json!({
            "cpu_usage": usage,
            "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
        });
        if let Some(s) = s {
            stats["system_cpu_usage"] = json!(s.system_cpu_ns);
            stats["online_cpus"] = json!(s.online_cpus);
        }
        stats
    };
    let mut doc = json!({
        "name": format!("/{}", c.meta.name.clone().unwrap_or_default()),
        "id": c.id,
        "read": time(now),
        "preread": time(pre),
        "num_procs": 0,
        "storage_stats": {},
        "cpu_stats": cpu_stats(now),
        "precpu_stats": cpu_stats(pre),
        "pids_stats": {},
        "blkio_stats": {
            "io_service_bytes_recursive": Value::Null,
            "io_serviced_recursive": Value::Null,
            "io_queue_recursive": Value::Null,
            "io_service_time_recursive": Value::Null,
            "io_wait_time_recursive": Value::Null,
            "io_merged_recursive": Value::Null,
            "io_time_recursive": Value::Null,
            "sectors_recursive": Value::Null,
        },
        "memory_stats": {},
    });
    let Some(s) = now else { return doc };
    if let Some(m) = &s.memory {
        let mut memory = json!({
            "usage": m.usage,
            "stats": m.stats,
            "limit": s.memory_limit(),
        });
        if let Some(max) = m.max_usage {
            memory["max_usage"] = json!(max);
        }
        if let Some(failcnt) = m.failcnt {
            memory["failcnt"] = json!(failcnt);
        }
        doc["memory_stats"] = memory;
    }
    if let Some(n) = s.pids {
        doc["pids_stats"]["current"] = json!(n);
    }
    if let Some(limit) = s.pids_limit {
        doc["pids_stats"]["limit"] = json!(limit);
    }
    if let Some(io) = &s.io {
        doc["blkio_stats"]["io_service_bytes_recursive"] = io
            .iter()
            .map(|e| json!({"major": e.major, "minor": e.minor, "op": e.op, "value": e.value}))
            .collect();
    }
    if let Some(nets) = &s.networks {
        let nets: serde_json::Map<String, Value> = nets
            .iter()
            .map(|(name, n)| {
                let entry = json!({
                    "rx_bytes": n.rx_bytes, "rx_packets": n.rx_packets,
                    "rx_errors": n.rx_errors, "rx_dropped": n.rx_dropped,
                    "tx_bytes": n.tx_bytes, "tx_packets": n.tx_packets,
                    "tx_errors": n.tx_errors, "tx_dropped": n.tx_dropped,
                });
                (name.clone(), entry)
            })
            .collect();
        doc["networks"] = Value::Object(nets);
    }
    doc
}

/// (the machine's CPU time in ns, the number of online CPUs) from /proc/stat: the first
/// seven fields of its `cpu` line (user .. softirq), as Docker counts them.
fn system_cpu() -> Result<(u64, u32)> {
    let text = std::fs::read_to_string("/proc/stat")
        .map_err(|e| ContainerError::io("read", "/proc/stat", e))?;
    let mut total = None;
    let mut cpus = 0u32;
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        match fields.next() {
            Some("cpu") => {
                let ticks: u64 = fields.take(7).filter_map(|v| v.parse::<u64>().ok()).sum();
                total = Some(ticks * tick_ns());
            }
            Some(name) if name.starts_with("cpu") => cpus += 1,
            _ => {}
        }
    }
    let total = total.ok_or_else(|| {
        ContainerError::State("/proc/stat has no cpu line: cannot count CPU time".into())
    })?;
    Ok((total, cpus.max(1)))
}

/// Nanoseconds per clock tick (USER_HZ, the unit of /proc/stat and /proc/PID/stat).
fn tick_ns() -> u64 {
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|hz| *hz > 0)
        .unwrap_or(100) as u64;
    1_000_000_000 / hz
}

fn host_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// `/proc/PID/net/dev`: every interface but `lo`.
fn net_dev(text: &str) -> BTreeMap<String, NetCounters> {
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let name = name.trim();
            if name == "lo" {
                return None;
            }
            let v: Vec<u64> = rest
                .split_whitespace()
                .filter_map(|f| f.parse().ok())
                .collect();
            if v.len() < 12 {
                return None;
            }
            Some((
                name.to_string(),
                NetCounters {
                    rx_bytes: v[0],
                    rx_packets: v[1],
                    rx_errors: v[2],
                    rx_dropped: v[3],
                    tx_bytes: v[8],
                    tx_packets: v[9],
                    tx_errors: v[10],
                    tx_dropped: v[11],
                },
            ))
        })
        .collect()
}

/// What /proc says of one process.
struct ProcCounters {
    /// utime + cutime and stime + cstime (its own and its waited-for children's), ticks.
    user_ticks: u64,
    system_ticks: u64,
    /// VmRSS, bytes.
    rss: u64,
    threads: u64,
    /// read_bytes, write_bytes of /proc/PID/io (`None` if not readable).
    io: Option<(u64, u64)>,
}

fn proc_counters(pid: i32) -> Option<ProcCounters> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command, which is in parentheses and may hold anything.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<u64> = after
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // after ')': state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14).
    let field = |i: usize| fields.get(i).copied().unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let status_field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
    };
    let io = std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|text| {
            let get = |key: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(key))
                    .and_then(|v| v.trim().parse::<u64>().ok())
            };
            Some((get("read_bytes:")?, get("write_bytes:")?))
        });
    Some(ProcCounters {
        user_ticks: field(11) + field(13),
        system_ticks: field(12) + field(14),
        rss: status_field("VmRSS:").unwrap_or(0) * 1024,
        threads: status_field("Threads:").unwrap_or(1),
        io,
    })
}

/// The processes of the container whose PID 1 is `pid1`: those in its PID namespace (all
/// of it when it has its own), with their descendants (a process whose namespace this user
/// may not read is still found through its parent); with the host's PID namespace, PID 1
/// and its descendants.
fn proc_members(pid1: i32) -> Vec<i32> {
    let ns_of = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/pid")).ok();
    let theirs = ns_of(&pid1.to_string());
    let own_namespace = theirs.is_some() && theirs != ns_of("self");
    let mut members: BTreeSet<i32> = BTreeSet::from([pid1]);
    let mut parents: Vec<(i32, i32)> = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(pid) = name.parse::<i32>() else {
            continue;
        };
        if own_namespace && ns_of(&name) == theirs {
            members.insert(pid);
            continue;
        }
        let status = std::fs::read_to_string(format!("/proc/{name}/status")).unwrap_or_default();
        if let Some(ppid) = status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .and_then(|v| v.trim().parse::<i32>().ok())
        {
            parents.push((pid, ppid));
        }
    }
    // Descendants, until no more are found.
    loop {
        let before = members.len();
        for (pid, ppid) in &parents {
            if members.contains(ppid) {
                members.insert(*pid);
            }
        }
        if members.len() == before {
            break;
        }
    }
    members.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(cpu_ns: u64, system_ns: u64) -> Sample {
        Sample {
            read: chrono::Utc::now(),
            system_cpu_ns: system_ns,
            online_cpus: 2,
            host_memory: 8 << 30,
            cpu: Some(CpuCounters {
                total_ns: cpu_ns,
                ..Default::default()
            }),
            cpu_source: Source::Cgroup,
            memory: Some(MemoryCounters {
                usage: 30 << 20,
                limit: Some(64 << 20),
                stats: BTreeMap::from([("total_inactive_file".to_string(), 10 << 20)]),
                ..Default::default()
            }),
            memory_source: Source::Cgroup,
            pids: Some(3),
            pids_limit: None,
            pids_source: Source::Cgroup,
            io: Some(vec![
                IoCounter {
                    major: 8,
                    minor: 0,
                    op: "Read".into(),
                    value: 4096,
                },
                IoCounter {
                    major: 8,
                    minor: 0,
                    op: "Write".into(),
                    value: 100,
                },
            ]),
            io_source: Source::Cgroup,
            networks: Some(net_dev(
                "h1\nh2\n    lo: 5 1 0 0 0 0 0 0 5 1 0 0 0 0 0 0\n  eth0: 100 2 0 0 0 0 0 0 50 1 0 0 0 0 0 0\n",
            )),
            requested_memory_limit: Some(64 << 20),
            limited: true,
        }
    }

    #[test]
    fn figures_as_docker_computes_them() {
        let before = at(1_000_000_000, 100_000_000_000);
        // Half a CPU second over one second of two CPUs' time: 50% of one CPU.
        let now = at(1_500_000_000, 102_000_000_000);
        assert_eq!(now.cpu_percent(&before).map(|p| p.round()), Some(50.0));
        assert_eq!(now.memory_used(), Some(20 << 20));
        assert_eq!(now.memory_limit(), 64 << 20);
        assert_eq!(now.block_io(), Some((4096, 100)));
        assert_eq!(now.net_io(), Some((100, 50)));
        assert_eq!(now.note(), None);
    }

    #[test]
    fn proc_figures_say_so_and_the_limit_is_the_hosts() {
        let mut s = at(0, 0);
        s.memory_source = Source::Proc;
        s.memory = Some(MemoryCounters {
            usage: 1 << 20,
            ..Default::default()
        });
        assert_eq!(s.memory_limit(), 8 << 30);
        let note = s.note().unwrap();
        assert!(
            note.contains("rootless") && note.contains("64 MiB is not enforced"),
            "{note}"
        );
    }
}
