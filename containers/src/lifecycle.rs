//! What happens to an existing container: start, stop, kill, wait, restart, rename, remove.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::container::{list, parse_signal, short_id, Container};
use crate::error::{ContainerError, Result};
use crate::events::container_event;
use crate::network::{network_options, NetworkChoice};
use crate::record::{self, wait_gone};
use crate::supervisor::Launch;
use crate::{names, rootfs};

/// Makes a stopped (or created) container ready to run again, on its own upper dir, with the
/// spec it was created with. [`Launch::run_attached`] or [`Launch::start_detached`] runs it.
pub fn prepare_start(store: &gcr_storage::Store, c: &Container) -> Result<Launch> {
    let image = c.image_id().ok_or_else(|| {
        ContainerError::State(format!(
            "container {} records no image: only containers of images can be started again",
            c.display_name()
        ))
    })?;
    let image = store.resolve_image(&image)?;
    let spec = c.spec()?;
    let (upper, work) = (c.upper_dir(), c.work_dir());
    if work.join("work/incompat/volatile").exists() {
        return Err(ContainerError::State(format!(
            "container {} was mounted volatile (by an older gcr): its files cannot be trusted again; remove it",
            c.display_name()
        )));
    }
    let rootfs = rootfs::image_rootfs(store, &image, None, upper, work);
    let mut options = gcr_runtime::RunOptions::new(rootfs, c.id.clone(), &c.dir);
    options.tty = spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    options.init = c.meta.init;
    options.stdin = c.meta.stdin;
    options.user = c.meta.user.clone();
    options.extra_hosts = c.meta.extra_hosts.clone();
    options.group_add = c.meta.group_add.clone();
    options.dns = gcr_runtime::DnsOptions {
        servers: c.meta.dns.clone(),
        search: c.meta.dns_search.clone(),
        options: c.meta.dns_options.clone(),
    };
    let mut spec = spec;
    if let Some(target) = c
        .meta
        .network
        .as_deref()
        .and_then(|n| n.strip_prefix(crate::network::CONTAINER_MODE))
    {
        let (_, netns) = crate::network::shared_network_of(store, target)?;
        gcr_runtime::set_namespace_path(
            &mut spec,
            oci_spec::runtime::LinuxNamespaceType::Network,
            &netns,
        );
    } else if let Some(name) = &c.meta.network {
        options.network = match NetworkChoice::parse(name) {
            Ok(choice) => network_options(choice, &c.meta.ports)?,
            // Not a built-in one: a user network.
            Err(_) => crate::user_networks::runtime_options(
                store,
                name,
                &c.meta.ports,
                crate::user_networks::member_names(&c.id, &c.meta),
                c.meta.ip.as_deref(),
            )?,
        };
        options.network.more_bridges =
            crate::attachments::extra_bridges(store, &c.id, &c.meta, &c.dir)?;
    }
    options.overlay_volatile = false;
    options.pid_file = Some(record::pid_file(&c.dir));
    for marker in [
        record::EXIT,
        record::CREATED,
        record::STOPPED,
        record::PAUSED,
    ] {
        record::clear_mark(&c.dir, marker);
    }
    let mut meta = c.meta.clone();
    // The new owner records itself when it runs it.
    meta.pid = 0;
    Ok(Launch {
        store: store.clone(),
        id: c.id.clone(),
        dir: c.dir.clone(),
        spec,
        options,
        meta,
        keep: !c.meta.remove,
        _userns_lease: None,
    })
}

/// `stop`: the container's stop signal (its STOPSIGNAL, else SIGTERM), then SIGKILL after
/// `timeout` seconds (default: its --stop-timeout, else 10). A stopped one stays stopped: its
/// restart policy does not run it again.
pub fn stop(store: &gcr_storage::Store, c: &Container, timeout: Option<u64>) -> Result<()> {
    let time = timeout.or(c.meta.stop_timeout).unwrap_or(10);
    refuse_if_paused(c, "stop")?;
    if c.alive() {
        let _ = record::mark(&c.dir, record::STOPPED);
        let signal = parse_signal(c.meta.stop_signal.as_deref().unwrap_or("SIGTERM"))?;
        let kill_event = |signal: Signal| {
            let number = (signal as i32).to_string();
            container_event(store, &c.id, &c.meta, "kill", &[("signal", number)]);
        };
        kill_event(signal);
        c.signal(signal)?;
        if !wait_gone(&c.meta, Duration::from_secs(time)) {
            kill_event(Signal::SIGKILL);
            c.signal(Signal::SIGKILL)?;
            if !wait_gone(&c.meta, Duration::from_secs(10)) {
                return Err(ContainerError::State(format!(
                    "container {} did not end after SIGKILL",
                    c.display_name()
                )));
            }
        }
    }
    container_event(store, &c.id, &c.meta, "stop", &[]);
    Ok(())
}

/// `kill`: a signal to the container's PID 1; SIGKILL and SIGTERM count as stopped by hand.
pub fn kill(store: &gcr_storage::Store, c: &Container, signal: Signal) -> Result<()> {
    if !c.alive() {
        return Err(ContainerError::NotRunning(c.display_name()));
    }
    refuse_if_paused(c, "kill")?;
    if matches!(signal, Signal::SIGKILL | Signal::SIGTERM) {
        let _ = record::mark(&c.dir, record::STOPPED);
    }
    let number = (signal as i32).to_string();
    container_event(store, &c.id, &c.meta, "kill", &[("signal", number)]);
    c.signal(signal)
}

/// `wait`: blocks until the container ends; its exit status (-1 when none was recorded).
pub fn wait(c: &Container) -> Result<i32> {
    while c.alive() {
        std::thread::sleep(Duration::from_millis(50));
    }
    // The supervisor writes the status just before it exits; a container removed with
    // --rm has none left to read.
    match std::fs::read_to_string(c.dir.join(record::EXIT)) {
        Ok(code) => Ok(code.trim().parse().unwrap_or(-1)),
        Err(_) if c.meta.remove => Err(ContainerError::State(format!(
            "container {} was removed when it ended (--rm): its exit status is gone",
            c.display_name()
        ))),
        Err(_) => Ok(-1),
    }
}

/// `rm`: removes a container that is not running; with `force` a running one is killed
/// first (and its restart policy told to leave it).
pub fn remove(store: &gcr_storage::Store, c: &Container, force: bool) -> Result<()> {
    if c.running() {
        if !force {
            return Err(ContainerError::State(format!(
                "container {} is running: stop its `gcr run` (pid {}) or use -f",
                short_id(&c.id),
                c.meta.pid
            )));
        }
        // Marked first, so that a restart policy does not run it again; killed at PID 1,
        // the container's supervisor sees it end and cleans up (its cgroups); failing that,
        // the supervisor goes and takes the container along.
        let _ = record::mark(&c.dir, record::STOPPED);
        let _ = record::mark(&c.dir, record::REMOVING);
        // A frozen process would not die of its SIGKILL until thawed (v1).
        if record::has_mark(&c.dir, record::PAUSED) {
            gcr_runtime::cgroups::thaw_container(&crate::limits::cgroup_rel(
                &c.id,
                c.spec().ok().as_ref(),
            ))?;
            record::clear_mark(&c.dir, record::PAUSED);
        }
        if c.alive() {
            c.signal(Signal::SIGKILL)?;
        }
        if !wait_gone(&c.meta, Duration::from_secs(10)) && c.meta.owner_alive() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.meta.pid as i32),
                Signal::SIGKILL,
            );
            wait_gone(&c.meta, Duration::from_secs(10));
        }
    }
    // Groups a killed supervisor could not remove (empty now that the container is gone).
    gcr_runtime::cgroups::remove_container_groups(&crate::limits::cgroup_rel(
        &c.id,
        c.spec().ok().as_ref(),
    ));
    store.unregister_container(&c.id)?;
    container_event(store, &c.id, &c.meta, "destroy", &[]);
    Ok(())
}

/// `container prune`: removes every container that is not running; returns their IDs.
pub fn remove_stopped(store: &gcr_storage::Store) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for c in list(store)? {
        if !c.running() {
            store.unregister_container(&c.id)?;
            container_event(store, &c.id, &c.meta, "destroy", &[]);
            removed.push(c.id);
        }
    }
    Ok(removed)
}

/// `rename`: a new name, unique as for `--name`.
pub fn rename(store: &gcr_storage::Store, c: &Container, name: &str) -> Result<()> {
    names::check_name(name)?;
    let _names = names::NameLock::take(store)?;
    names::ensure_name_free(store, name)?;
    // Re-read under the lock: the supervisor may have rewritten the record meanwhile.
    let mut meta = record::read_meta(&c.dir);
    let old_name = meta.name.replace(name.to_string()).unwrap_or_default();
    record::write_meta(&c.dir, &meta)?;
    container_event(
        store,
        &c.id,
        &meta,
        "rename",
        &[("oldName", format!("/{old_name}"))],
    );
    Ok(())
}

/// `restart`: stop (if running), then start in the background.
pub fn restart(store: &gcr_storage::Store, c: &Container, timeout: Option<u64>) -> Result<()> {
    stop(store, c, timeout)?;
    // Read again: the stop changed the record.
    let fresh = Container::read(c.id.clone(), c.dir.clone());
    prepare_start(store, &fresh)?.start_detached()
}

/// `resize` (the Docker API's, for a container run with a terminal): its terminal's size.
/// A container without a terminal has nothing to resize (as Docker, not an error).
pub fn resize(c: &Container, rows: u16, cols: u16) -> Result<()> {
    let c = c.current();
    let Some(pid) = c.pid().filter(|_| c.alive()) else {
        return Err(ContainerError::NotRunning(c.display_name()));
    };
    gcr_runtime::resize_terminal(pid.as_raw() as u32, rows, cols)?;
    Ok(())
}

/// The terminal size of an exec's command, found below `worker`, the process that relays
/// it (false: it has no terminal yet).
pub fn resize_exec(worker: u32, rows: u16, cols: u16) -> Result<bool> {
    Ok(gcr_runtime::resize_terminal(worker, rows, cols)?)
}

/// Docker's answer to stop, kill or exec of a paused container: unpause it first.
pub(crate) fn refuse_if_paused(c: &Container, what: &str) -> Result<()> {
    if c.state() == crate::State::Paused {
        return Err(ContainerError::State(format!(
            "cannot {what} container {}: it is paused; unpause it first (`gcr unpause {}`)",
            c.display_name(),
            c.display_name()
        )));
    }
    Ok(())
}

/// `pause`: freezes every process of the running container (the cgroup freezer), as root;
/// rootless where the kernel lets the user freeze its own cgroups (v2 with delegation).
pub fn pause(store: &gcr_storage::Store, c: &Container) -> Result<()> {
    let c = c.current();
    if !c.alive() {
        return Err(ContainerError::NotRunning(c.display_name()));
    }
    if c.state() == crate::State::Paused {
        return Err(ContainerError::State(format!(
            "container {} is already paused",
            c.display_name()
        )));
    }
    let v1 = !std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    if gcr_runtime::userns::is_rootless() && v1 {
        return Err(ContainerError::Unsupported(
            "pause is not supported rootless on cgroup v1: the freezer there is root's (run as root, or on a cgroup v2 system with a delegated user session)".into(),
        ));
    }
    let pids = || {
        crate::inspect::processes(&c)
            .map(|list| list.iter().map(|p| p.pid as i32).collect())
            .unwrap_or_default()
    };
    gcr_runtime::cgroups::freeze_container(
        &crate::limits::cgroup_rel(&c.id, c.spec().ok().as_ref()),
        pids,
    )?;
    record::mark(&c.dir, record::PAUSED)?;
    container_event(store, &c.id, &c.meta, "pause", &[]);
    Ok(())
}

/// `unpause`: thaws a paused container.
pub fn unpause(store: &gcr_storage::Store, c: &Container) -> Result<()> {
    let c = c.current();
    if c.state() != crate::State::Paused {
        return Err(ContainerError::State(format!(
            "container {} is not paused",
            c.display_name()
        )));
    }
    gcr_runtime::cgroups::thaw_container(&crate::limits::cgroup_rel(
        &c.id,
        c.spec().ok().as_ref(),
    ))?;
    record::clear_mark(&c.dir, record::PAUSED);
    container_event(store, &c.id, &c.meta, "unpause", &[]);
    Ok(())
}
