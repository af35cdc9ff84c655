//! create, start, run, state, kill, delete, ps, list, pause and resume.

use std::collections::HashMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill as send_signal, Signal};
use nix::unistd::Pid;
use oci_spec::runtime::{ContainerState, State};

use crate::error::OciError;
use crate::log::Log;
use crate::state::{self, Container, Record, Status, CONFIG, FIFO};
use crate::{spec, CreateArgs, Global};

/// Removes a container's directory unless disarmed: a failed create leaves nothing behind.
struct DirGuard<'a>(Option<&'a Path>);

impl Drop for DirGuard<'_> {
    fn drop(&mut self) {
        if let Some(dir) = self.0 {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// `create` (and the first half of `run`): the container is set up and its process waits
/// at its start gate. With `foreground`, a terminal without a console socket is allowed
/// (run relays the pty itself).
pub fn create(
    global: &Global,
    log: &Log,
    root: &Path,
    args: &CreateArgs,
    foreground: bool,
) -> Result<(Container, Option<std::os::fd::OwnedFd>), OciError> {
    let dir = state::dir_of(root, &args.id)?;
    let bundle = spec::bundle_dir(args.bundle.as_deref())?;
    let spec = spec::load(&bundle)?;
    let terminal = spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    if terminal && args.console_socket.is_none() && !foreground {
        return Err(OciError::Usage(
            "cannot allocate a tty if gcr-oci will detach without a --console-socket".into(),
        ));
    }
    if !terminal && args.console_socket.is_some() {
        return Err(OciError::Usage(
            "--console-socket given but process.terminal is not set in config.json".into(),
        ));
    }
    let cgroups_path = spec.linux().as_ref().and_then(|l| l.cgroups_path().clone());
    if global.systemd_cgroup {
        log.warn(&format!(
            "--systemd-cgroup: gcr-oci has no systemd driver; the cgroup is made through cgroupfs at {}",
            gcr_runtime::cgroups::oci_path(cgroups_path.as_deref(), &args.id)
        ));
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(root)
        .map_err(|e| OciError::io("create the state root", root, e))?;
    match std::fs::DirBuilder::new().mode(0o711).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(OciError::Exists(args.id.clone()))
        }
        Err(e) => return Err(OciError::io("create", &dir, e)),
    }
    let mut guard = DirGuard(Some(&dir));
    let fifo = dir.join(FIFO);
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .map_err(|e| OciError::io("create the start gate", &fifo, e.into()))?;
    std::fs::copy(bundle.join("config.json"), dir.join(CONFIG))
        .map_err(|e| OciError::io("copy config.json to", dir.join(CONFIG), e))?;

    let rootfs = spec::rootfs(&spec, &bundle);
    let annotations: HashMap<String, String> = spec.annotations().clone().unwrap_or_default();
    let mut oci_state = State::default();
    oci_state.set_version(crate::OCI_VERSION.to_string());
    oci_state.set_id(args.id.clone());
    oci_state.set_status(ContainerState::Creating);
    oci_state.set_bundle(bundle.clone());
    oci_state.set_annotations(Some(annotations.clone()));
    let mut opts = gcr_runtime::RunOptions::new(
        gcr_runtime::RootfsSource::Directory(rootfs.clone()),
        args.id.clone(),
        dir.clone(),
    );
    opts.tty = terminal;
    opts.stdin = true;
    opts.etc_files = false;
    opts.oci = Some(gcr_runtime::OciLaunch {
        exec_fifo: fifo,
        console_socket: args.console_socket.clone(),
        state: oci_state,
        preserve_fds: args.preserve_fds,
        no_pivot: args.no_pivot,
    });
    // Relative mount sources are relative to the bundle (runtime-spec "Mounts").
    std::env::set_current_dir(&bundle).map_err(|e| OciError::io("chdir to", &bundle, e))?;
    let created = gcr_runtime::create_container(&spec, &opts)?;
    let container = Container {
        dir: dir.clone(),
        record: Record {
            id: args.id.clone(),
            pid: created.pid,
            pid_start: state::start_time(created.pid).unwrap_or_default(),
            bundle,
            rootfs,
            created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            owner: String::new(),
            annotations,
            cgroup: created.cgroup.clone(),
        },
    };
    let saved = container.save().and_then(|()| match &args.pid_file {
        Some(path) => state::write_atomic(path, created.pid.to_string().as_bytes()),
        None => Ok(()),
    });
    if let Err(e) = saved {
        let _ = send_signal(Pid::from_raw(created.pid), Signal::SIGKILL);
        if let Some(cg) = container.cgroup() {
            cg.remove();
        }
        return Err(e);
    }
    guard.0 = None;
    Ok((container, created.master))
}

/// `start`: the command of a created container runs; poststart hooks follow.
pub fn start(log: &Log, root: &Path, id: &str) -> Result<(), OciError> {
    let container = Container::load(root, id)?;
    match container.status() {
        Status::Created => {}
        Status::Stopped => {
            return Err(OciError::WrongState {
                id: id.into(),
                status: "stopped",
                action: "start a container that has stopped",
            })
        }
        other => {
            return Err(OciError::WrongState {
                id: id.into(),
                status: other.as_str(),
                action: "start an already running container",
            })
        }
    }
    gcr_runtime::start_container(
        &container.fifo(),
        container.record.pid,
        &container.hook_state(Status::Created),
    )?;
    let _ = std::fs::remove_file(container.fifo());
    let spec = container.spec()?;
    if let Some(hooks) = spec.hooks() {
        let poststart = hooks.poststart().clone().unwrap_or_default();
        // runtime-spec: a failing poststart hook is a warning; the others and the container
        // go on.
        let state = container.hook_state(Status::Running);
        for e in gcr_runtime::run_all_hooks("poststart", &poststart, &state) {
            log.warn(&e.to_string());
        }
    }
    Ok(())
}

/// `run`: create and start; in the foreground, wait for the command, then delete.
pub fn run(
    global: &Global,
    log: &Log,
    root: &Path,
    args: &CreateArgs,
    detach: bool,
    keep: bool,
) -> Result<i32, OciError> {
    let (container, master) = create(global, log, root, args, !detach)?;
    if let Err(e) = start(log, root, &args.id) {
        let _ = delete(log, root, &args.id, true);
        return Err(e);
    }
    if detach {
        return Ok(0);
    }
    let code = gcr_runtime::wait_container(container.record.pid, master)?;
    if !keep {
        delete(log, root, &args.id, true)?;
    }
    Ok(code)
}

/// `state`: the OCI state JSON.
pub fn state(root: &Path, id: &str) -> Result<(), OciError> {
    let container = Container::load(root, id)?;
    let value = container.state_json(container.status());
    println!(
        "{}",
        serde_json::to_string_pretty(&value).unwrap_or_default()
    );
    Ok(())
}

/// A signal by name (`TERM`, `SIGTERM`, any case) or number.
pub fn parse_signal(text: &str) -> Result<Signal, OciError> {
    let bad = || OciError::Usage(format!("unknown signal {text:?}"));
    if let Ok(n) = text.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| bad());
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>().map_err(|_| bad())
}

/// `kill`: a signal to the container's process, or with `all` to every process of its
/// cgroup.
pub fn kill(root: &Path, id: &str, signal: Option<&str>, all: bool) -> Result<(), OciError> {
    let container = Container::load(root, id)?;
    let signal = parse_signal(signal.unwrap_or("SIGTERM"))?;
    if container.status() == Status::Stopped {
        return Err(OciError::WrongState {
            id: id.into(),
            status: "stopped",
            action: "signal it: container not running",
        });
    }
    let pids = match (all, container.cgroup()) {
        (true, Some(cg)) => cg.pids(),
        _ => vec![container.record.pid],
    };
    for pid in pids {
        match send_signal(Pid::from_raw(pid), signal) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(e) => {
                return Err(OciError::io(
                    "signal process",
                    format!("/proc/{pid}"),
                    e.into(),
                ))
            }
        }
    }
    Ok(())
}

/// Waits (up to `limit`) until the container's first process is gone or a zombie.
fn wait_stopped(container: &Container, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while container.alive() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

/// `delete`: a stopped or created container's record and cgroup go, poststop hooks run.
/// `force` kills a running one first; an unknown id is then not an error (as runc).
pub fn delete(log: &Log, root: &Path, id: &str, force: bool) -> Result<(), OciError> {
    let container = match Container::load(root, id) {
        Ok(c) => c,
        Err(e @ (OciError::NotExist(_) | OciError::Corrupt { .. })) => {
            // A create killed before its state file was written leaves a bare directory.
            let dir = state::dir_of(root, id)?;
            let existed = dir.is_dir();
            let _ = std::fs::remove_dir_all(&dir);
            return if force || (existed && matches!(e, OciError::Corrupt { .. })) {
                Ok(())
            } else {
                Err(e)
            };
        }
        Err(e) => return Err(e),
    };
    let status = container.status();
    match status {
        Status::Stopped | Status::Created => {}
        _ if force => {}
        other => {
            return Err(OciError::WrongState {
                id: id.into(),
                status: other.as_str(),
                action: "delete a container that is not stopped (use --force)",
            })
        }
    }
    if status != Status::Stopped {
        let cgroup = container.cgroup();
        if status == Status::Paused {
            if let Some(cg) = &cgroup {
                let _ = cg.set_frozen(false);
            }
        }
        let pids = cgroup
            .as_ref()
            .map(|cg| cg.pids())
            .unwrap_or_else(|| vec![container.record.pid]);
        for pid in pids.into_iter().chain([container.record.pid]) {
            let _ = send_signal(Pid::from_raw(pid), Signal::SIGKILL);
        }
        if !wait_stopped(&container, Duration::from_secs(10)) {
            return Err(OciError::Usage(format!(
                "container {id}: its process {} did not die after SIGKILL",
                container.record.pid
            )));
        }
    }
    if let Some(cg) = container.cgroup() {
        cg.remove();
    }
    let spec = container.spec();
    let own_mount_ns = spec
        .as_ref()
        .ok()
        .and_then(|s| s.linux().as_ref())
        .is_none_or(|l| {
            l.namespaces()
                .iter()
                .flatten()
                .any(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Mount)
        });
    if !own_mount_ns {
        gcr_runtime::remove_mounts_under(&container.record.rootfs);
    }
    if let Ok(Some(hooks)) = spec.as_ref().map(|s| s.hooks()) {
        let poststop = hooks.poststop().clone().unwrap_or_default();
        // runtime-spec: a failing poststop hook is a warning; the others and the delete go on.
        let state = container.hook_state(Status::Stopped);
        for e in gcr_runtime::run_all_hooks("poststop", &poststop, &state) {
            log.warn(&e.to_string());
        }
    }
    std::fs::remove_dir_all(&container.dir).map_err(|e| OciError::io("remove", &container.dir, e))
}

fn running(container: &Container, action: &'static str) -> Result<(), OciError> {
    match container.status() {
        Status::Running | Status::Paused => Ok(()),
        other => Err(OciError::WrongState {
            id: container.record.id.clone(),
            status: other.as_str(),
            action,
        }),
    }
}

/// `ps`: the container's processes as ps(1) shows them, or their pids as JSON.
pub fn ps(root: &Path, id: &str, format: &str, ps_args: &[String]) -> Result<(), OciError> {
    let container = Container::load(root, id)?;
    running(&container, "list its processes")?;
    let pids = container
        .cgroup()
        .map(|cg| cg.pids())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| vec![container.record.pid]);
    match format {
        "json" => {
            println!("{}", serde_json::to_string(&pids).unwrap_or_default());
            Ok(())
        }
        "table" => {
            let args: Vec<String> = if ps_args.is_empty() {
                vec!["-ef".into()]
            } else {
                ps_args.to_vec()
            };
            let out = std::process::Command::new("ps")
                .args(&args)
                .output()
                .map_err(|e| OciError::io("run", "ps", e))?;
            let text = String::from_utf8_lossy(&out.stdout);
            let mut lines = text.lines();
            let header = lines.next().unwrap_or("");
            let column = header
                .split_whitespace()
                .position(|c| c == "PID")
                .ok_or_else(|| OciError::Usage("ps printed no PID column".into()))?;
            println!("{header}");
            for line in lines {
                let pid = line
                    .split_whitespace()
                    .nth(column)
                    .and_then(|p| p.parse::<i32>().ok());
                if pid.is_some_and(|p| pids.contains(&p)) {
                    println!("{line}");
                }
            }
            Ok(())
        }
        other => Err(OciError::Usage(format!(
            "--format {other:?}: use table or json"
        ))),
    }
}

/// `list`: every container under --root.
pub fn list(root: &Path, format: &str, quiet: bool) -> Result<(), OciError> {
    let containers = state::list(root)?;
    if quiet {
        for c in &containers {
            println!("{}", c.record.id);
        }
        return Ok(());
    }
    match format {
        "json" => {
            let all: Vec<serde_json::Value> = containers
                .iter()
                .map(|c| c.state_json(c.status()))
                .collect();
            println!("{}", serde_json::to_string(&all).unwrap_or_default());
        }
        "table" => {
            println!(
                "{:<20} {:<8} {:<10} {:<40} CREATED",
                "ID", "PID", "STATUS", "BUNDLE"
            );
            for c in &containers {
                let status = c.status();
                let pid = if status == Status::Stopped {
                    0
                } else {
                    c.record.pid
                };
                println!(
                    "{:<20} {:<8} {:<10} {:<40} {}",
                    c.record.id,
                    pid,
                    status.as_str(),
                    c.record.bundle.display(),
                    c.record.created
                );
            }
        }
        other => {
            return Err(OciError::Usage(format!(
                "--format {other:?}: use table or json"
            )))
        }
    }
    Ok(())
}

/// `pause` (`freeze`) and `resume`: the freezer of the container's cgroup.
pub fn pause(root: &Path, id: &str, freeze: bool) -> Result<(), OciError> {
    let container = Container::load(root, id)?;
    let status = container.status();
    match (freeze, status) {
        (true, Status::Running) | (false, Status::Paused) => {}
        (_, other) => {
            return Err(OciError::WrongState {
                id: id.into(),
                status: other.as_str(),
                action: if freeze {
                    "pause a container that is not running"
                } else {
                    "resume a container that is not paused"
                },
            })
        }
    }
    let cgroup = container.cgroup().ok_or_else(|| {
        OciError::Usage(format!(
            "container {id} has no cgroup (rootless without cgroup delegation): it cannot be paused"
        ))
    })?;
    cgroup.set_frozen(freeze)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_and_number() {
        assert_eq!(parse_signal("TERM").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("sigkill").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("SIGUSR1").unwrap(), Signal::SIGUSR1);
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("999").is_err());
    }
}
