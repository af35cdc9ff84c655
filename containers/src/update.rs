//! `update`: new limits and restart policy for a container. A running one gets them in its
//! cgroup files at once; every one keeps them in its record (config.json for the next start,
//! meta.json for inspect), so a restart or `start` uses them too.

use crate::container::Container;
use crate::error::{ContainerError, Result};
use crate::record;
use crate::supervisor::RestartPolicy;

/// What `update` changes; `None` keeps the current value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpdateOptions {
    /// Bytes.
    pub memory: Option<i64>,
    /// Memory and swap together; -1: unlimited swap.
    pub memory_swap: Option<i64>,
    pub cpus: Option<f64>,
    pub cpu_shares: Option<u64>,
    /// -1: unlimited.
    pub pids_limit: Option<i64>,
    /// Docker's policy text: no, always, unless-stopped, on-failure[:MAX].
    pub restart: Option<String>,
}

impl UpdateOptions {
    fn changes_limits(&self) -> bool {
        self.memory.is_some()
            || self.memory_swap.is_some()
            || self.cpus.is_some()
            || self.cpu_shares.is_some()
            || self.pids_limit.is_some()
    }
}

/// `update CONTAINER`: see the module's documentation.
pub fn update(store: &gcr_storage::Store, c: &Container, changes: &UpdateOptions) -> Result<()> {
    let c = c.current();
    let limits = changes.changes_limits();
    if !limits && changes.restart.is_none() {
        return Err(ContainerError::invalid(
            "nothing to update: give --memory, --memory-swap, --cpus, --cpu-shares, --pids-limit or --restart",
        ));
    }
    let v1 = !std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    if limits && gcr_runtime::userns::is_rootless() && v1 {
        return Err(ContainerError::Unsupported(
            "update of resource limits is not supported rootless on cgroup v1: the hierarchies there are root's (run as root, or on a cgroup v2 system with a delegated user session)".into(),
        ));
    }
    if let Some(policy) = &changes.restart {
        RestartPolicy::parse(policy)?;
        if c.meta.remove && policy != "no" {
            return Err(ContainerError::invalid(format!(
                "cannot give container {} a restart policy: it is removed when it ends (--rm)",
                c.display_name()
            )));
        }
    }
    let mut merged = c.meta.resources.clone();
    if let (Some(memory), None) = (changes.memory, changes.memory_swap) {
        if let Some(swap) = merged.memory_swap.filter(|s| *s > 0 && memory > *s) {
            return Err(ContainerError::invalid(format!(
                "--memory {memory} is above the container's --memory-swap {swap} (memory and swap together): update --memory-swap at the same time"
            )));
        }
    }
    merged.memory = changes.memory.or(merged.memory);
    merged.memory_swap = changes.memory_swap.or(merged.memory_swap);
    merged.cpus = changes.cpus.or(merged.cpus);
    merged.cpu_shares = changes.cpu_shares.or(merged.cpu_shares);
    merged.pids_limit = changes.pids_limit.or(merged.pids_limit);
    if limits {
        let wanted = crate::limits::resource_limits(&merged)?.unwrap_or_default();
        let mut spec = c.spec()?;
        let mut linux = spec.linux().clone().unwrap_or_default();
        // The device rules and the rest stay as they were made.
        let mut resources = linux.resources().clone().unwrap_or_default();
        resources.set_memory(*wanted.memory());
        resources.set_cpu(wanted.cpu().clone());
        resources.set_pids(*wanted.pids());
        if c.alive() {
            let pids = || {
                crate::inspect::processes(&c)
                    .map(|list| list.iter().map(|p| p.pid as i32).collect())
                    .unwrap_or_default()
            };
            let rel = crate::limits::cgroup_rel(&c.id, Some(&spec));
            gcr_runtime::cgroups::update_container(&rel, &resources, pids)?;
        }
        linux.set_resources(Some(resources));
        spec.set_linux(Some(linux));
        record::write_spec(&c.dir, &spec)?;
    }
    // Read again just before the write: the supervisor records restarts in it.
    let mut meta = record::read_meta(&c.dir);
    meta.resources = merged;
    if let Some(policy) = &changes.restart {
        meta.restart = (policy != "no").then(|| policy.clone());
    }
    record::write_meta(&c.dir, &meta)?;
    crate::events::container_event(store, &c.id, &meta, "update", &[]);
    Ok(())
}
