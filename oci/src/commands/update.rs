//! `update`: new resource limits for a running container's cgroup, from `--resources FILE`
//! (runtime-spec `linux.resources` JSON, `-` for stdin) and runc's single-value flags.

use std::path::{Path, PathBuf};

use clap::Args;
use oci_spec::runtime::LinuxResources;

use crate::error::OciError;
use crate::state::{Container, Status, CONFIG};

#[derive(Debug, Clone, Args)]
pub struct UpdateArgs {
    /// A runtime-spec linux.resources JSON file (`-` for stdin).
    #[arg(short, long)]
    pub resources: Option<PathBuf>,
    /// Memory limit in bytes.
    #[arg(long)]
    pub memory: Option<i64>,
    /// Memory soft limit in bytes.
    #[arg(long = "memory-reservation")]
    pub memory_reservation: Option<i64>,
    /// Maximum number of pids (-1: unlimited).
    #[arg(long = "pids-limit")]
    pub pids_limit: Option<i64>,
    /// CPU CFS quota in microseconds per period.
    #[arg(long = "cpu-quota")]
    pub cpu_quota: Option<i64>,
    /// CPU CFS period in microseconds.
    #[arg(long = "cpu-period")]
    pub cpu_period: Option<u64>,
    /// CPU shares (relative weight).
    #[arg(long = "cpu-share")]
    pub cpu_share: Option<u64>,
    /// CPUs the container may use (cpuset, e.g. 0-1).
    #[arg(long = "cpuset-cpus")]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes the container may use.
    #[arg(long = "cpuset-mems")]
    pub cpuset_mems: Option<String>,
    pub id: String,
}

/// The resources the flags name, over `res`.
fn apply_flags(mut res: LinuxResources, args: &UpdateArgs) -> LinuxResources {
    if args.memory.is_some() || args.memory_reservation.is_some() {
        let mut memory = (*res.memory()).unwrap_or_default();
        if let Some(limit) = args.memory {
            memory.set_limit(Some(limit));
        }
        if let Some(low) = args.memory_reservation {
            memory.set_reservation(Some(low));
        }
        res.set_memory(Some(memory));
    }
    if let Some(limit) = args.pids_limit {
        let mut pids = (*res.pids()).unwrap_or_default();
        pids.set_limit(limit);
        res.set_pids(Some(pids));
    }
    let cpu_flags = args.cpu_quota.is_some()
        || args.cpu_period.is_some()
        || args.cpu_share.is_some()
        || args.cpuset_cpus.is_some()
        || args.cpuset_mems.is_some();
    if cpu_flags {
        let mut cpu = res.cpu().clone().unwrap_or_default();
        if args.cpu_quota.is_some() {
            cpu.set_quota(args.cpu_quota);
        }
        if args.cpu_period.is_some() {
            cpu.set_period(args.cpu_period);
        }
        if args.cpu_share.is_some() {
            cpu.set_shares(args.cpu_share);
        }
        if args.cpuset_cpus.is_some() {
            cpu.set_cpus(args.cpuset_cpus.clone());
        }
        if args.cpuset_mems.is_some() {
            cpu.set_mems(args.cpuset_mems.clone());
        }
        res.set_cpu(Some(cpu));
    }
    res
}

pub fn update(root: &Path, args: &UpdateArgs) -> Result<(), OciError> {
    let container = Container::load(root, &args.id)?;
    match container.status() {
        Status::Running | Status::Paused | Status::Created => {}
        other => {
            return Err(OciError::WrongState {
                id: args.id.clone(),
                status: other.as_str(),
                action: "update it",
            })
        }
    }
    let cgroup = container.cgroup().ok_or_else(|| {
        OciError::Usage(format!(
            "container {} has no cgroup (rootless without cgroup delegation): its limits cannot change",
            args.id
        ))
    })?;
    let base = match &args.resources {
        Some(path) => crate::spec::read_json(path, "linux.resources object")?,
        None => LinuxResources::default(),
    };
    let res = apply_flags(base, args);
    cgroup.update(&res)?;
    // The record keeps what the container now has.
    let mut spec = container.spec()?;
    if let Some(linux) = spec.linux_mut() {
        linux.set_resources(Some(res));
    }
    let text = serde_json::to_vec(&spec).map_err(|e| OciError::Config {
        path: container.dir.join(CONFIG),
        message: e.to_string(),
    })?;
    crate::state::write_atomic(&container.dir.join(CONFIG), &text)
}
