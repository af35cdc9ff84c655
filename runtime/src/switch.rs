//! The rootless network namespace: where rootless user networks keep their bridges.
//!
//! A rootless user may not make a bridge or a veth on the host, and a veth may only join two
//! network namespaces that the same user namespace owns. So rootless gcr keeps one shared
//! network namespace per user (as Podman's "rootless netns"), held by a small keeper process
//! (`gcr __gcr-network-keeper`): the bridges of the user networks live there, each container
//! on a user network gets a veth from its own namespace to its network's bridge, and
//! slirp4netns on `tap0` of the shared namespace takes their traffic out (masqueraded there by
//! the bridge's nftables rules). The keeper's user namespace becomes rootless gcr's own: a
//! rootless gcr started while the keeper lives joins it instead of making a new one
//! (`userns::enter_rootless_userns`), so its containers' namespaces and the shared one have
//! one owner. The keeper is started by the first container on a user network and stopped
//! when the last user network's bridge goes; slirp4netns ends with it (its exit fd).
//!
//! The keeper's record (`keeper` in the user's network state: its PID and start time, then
//! slirp4netns's) is written under the network state lock.

use std::io::{BufRead, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::sched::CloneFlags;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::error::RuntimeError;
use crate::network::{inheritable, owner_alive, process_start};

/// Set while a long-lived caller (the API service) relies on the keeper: it counts as a
/// user of the namespace then, not as the short-lived command that may stop it.
pub(crate) static HELD_BY_THIS_PROCESS: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// The argument that makes the gcr binary the keeper.
pub const KEEPER_ARG: &str = "__gcr-network-keeper";

/// The keeper's record in the rootless network state directory.
fn record_path(state: &Path) -> PathBuf {
    state.join("keeper")
}

/// The live keeper's PID, read from `state` (no lock needed: the record is renamed into place).
pub(crate) fn live_keeper(state: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(record_path(state)).ok()?;
    let first = text.lines().next()?;
    owner_alive(first).then(|| first.split_whitespace().next()?.parse().ok())?
}

/// Runs `work` inside the rootless network namespace, started if it is not there yet (the
/// caller holds the network state lock).
pub(crate) fn in_switch(
    state: &Path,
    work: impl FnOnce() -> Result<(), RuntimeError>,
) -> Result<(), RuntimeError> {
    let keeper = ensure_keeper(state)?;
    enter_and_run(keeper, work)
}

/// Runs `work` inside the rootless network namespace if its keeper lives (else there is
/// nothing in it to act on).
pub(crate) fn in_switch_if_alive(
    state: &Path,
    work: impl FnOnce() -> Result<(), RuntimeError>,
) -> Result<(), RuntimeError> {
    match live_keeper(state) {
        Some(keeper) => enter_and_run(keeper, work),
        None => Ok(()),
    }
}

fn enter_and_run(
    keeper: u32,
    work: impl FnOnce() -> Result<(), RuntimeError>,
) -> Result<(), RuntimeError> {
    let path = format!("/proc/{keeper}/ns/net");
    let netns = std::fs::File::open(&path).map_err(|e| RuntimeError::io("open", &path, e))?;
    crate::sys::in_child(|| {
        nix::sched::setns(netns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| {
            RuntimeError::Setup(format!(
                "cannot enter the rootless network namespace of keeper process {keeper}: {e} \
                 (it belongs to another user namespace, made while this gcr already ran: run the command again)"
            ))
        })?;
        work()
    })
}

/// The keeper's PID: the live one, or a new one with slirp4netns attached.
fn ensure_keeper(state: &Path) -> Result<u32, RuntimeError> {
    if let Some(pid) = live_keeper(state) {
        return Ok(pid);
    }
    // A new namespace has none of the old one's bridges or rules.
    for entry in std::fs::read_dir(state).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("nat-checked-") || name.starts_with("bridge-") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    let slirp = crate::network::slirp_binary()?;
    let exe = std::env::current_exe()
        .map_err(|e| RuntimeError::io("find", Path::new("/proc/self/exe"), e))?;
    // slirp4netns ends when the keeper does: it watches the read end of a pipe whose only
    // writer is the keeper.
    let (exit_read, exit_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| RuntimeError::sys("pipe", e))?;
    let keeper_end = inheritable(&exit_write)?;
    drop(exit_write);
    let mut keeper = Command::new(&exe)
        .arg(KEEPER_ARG)
        .arg(keeper_end.as_raw_fd().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| RuntimeError::io("run", &exe, e))?;
    drop(keeper_end);
    let mut line = String::new();
    if let Some(out) = keeper.stdout.take() {
        let _ = std::io::BufReader::new(out).read_line(&mut line);
    }
    if line.trim() != "ready" {
        let _ = keeper.kill();
        let mut why = String::new();
        if let Some(mut err) = keeper.stderr.take() {
            let _ = err.read_to_string(&mut why);
        }
        let _ = keeper.wait();
        return Err(RuntimeError::Setup(format!(
            "cannot start the rootless network namespace: {}",
            why.trim()
        )));
    }
    drop(keeper.stderr.take());
    let pid = keeper.id();
    // The keeper lives on after this process; whoever ends it reaps nothing (it is
    // reparented), so the Child is just forgotten.
    drop(keeper);
    let slirp_pid = match start_slirp(&slirp, pid, &exit_read) {
        Ok(slirp_pid) => slirp_pid,
        Err(e) => {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            return Err(e);
        }
    };
    drop(exit_read);
    let record = format!(
        "{pid} {}\n{slirp_pid} {}\n",
        process_start(pid).unwrap_or(0),
        process_start(slirp_pid).unwrap_or(0)
    );
    let tmp = state.join("keeper.tmp");
    std::fs::write(&tmp, record).map_err(|e| RuntimeError::io("write", &tmp, e))?;
    std::fs::rename(&tmp, record_path(state))
        .map_err(|e| RuntimeError::io("rename", record_path(state), e))?;
    tracing::debug!(
        keeper = pid,
        slirp = slirp_pid,
        "rootless network namespace started"
    );
    Ok(pid)
}

/// slirp4netns on `tap0` of the keeper's namespace, ready; its PID.
fn start_slirp(binary: &Path, keeper: u32, exit_read: &OwnedFd) -> Result<u32, RuntimeError> {
    let (ready_read, ready_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| RuntimeError::sys("pipe", e))?;
    let ready_for_child = inheritable(&ready_write)?;
    let exit_for_child = inheritable(exit_read)?;
    drop(ready_write);
    // Its own process group: a terminal's signals to the caller's group are not for it.
    let mut command = Command::new(binary);
    crate::network::slirp_arguments(
        &mut command,
        &ready_for_child,
        &exit_for_child,
        &format!("/proc/{keeper}/ns/net"),
    );
    let spawned = command
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    drop((ready_for_child, exit_for_child));
    let mut child = spawned.map_err(|e| RuntimeError::io("run", binary, e))?;
    let mut ready = [0u8; 1];
    if std::fs::File::from(ready_read)
        .read(&mut ready)
        .unwrap_or(0)
        != 1
    {
        let _ = child.kill();
        let why = child
            .wait_with_output()
            .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
            .unwrap_or_default();
        return Err(RuntimeError::Setup(format!(
            "slirp4netns could not connect the rootless network namespace: {why}"
        )));
    }
    drop(child.stderr.take());
    Ok(child.id())
}

/// Stops the keeper (and so slirp4netns) when no user network's bridge is left in its
/// namespace and no other process lives in its user namespace (a container, a supervisor,
/// the API service: they keep that namespace alive anyway, and a keeper started later in
/// another one could not reach their networks). The caller holds the network state lock.
/// `patience`: how long other processes may take to go (a removed container's supervisor
/// and the child deleting its files are finishing when the API service stops).
pub(crate) fn stop_keeper_if_unused(state: &Path, patience: std::time::Duration) {
    let bridges_left = std::fs::read_dir(state)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with("bridge-"));
    if bridges_left {
        return;
    }
    let Ok(text) = std::fs::read_to_string(record_path(state)) else {
        return;
    };
    let helpers: Vec<u32> = text
        .lines()
        .filter(|line| owner_alive(line))
        .filter_map(|line| line.split_whitespace().next()?.parse().ok())
        .collect();
    let Some(keeper) = helpers.first() else {
        let _ = std::fs::remove_file(record_path(state));
        return;
    };
    let deadline = std::time::Instant::now() + patience;
    while others_in_user_namespace(*keeper, &helpers) {
        if std::time::Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // The record goes first: the keeper may be this very process.
    let _ = std::fs::remove_file(record_path(state));
    let me = std::process::id();
    for pid in helpers.iter().filter(|pid| **pid != me) {
        let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
    }
    if helpers.contains(&me) {
        std::process::exit(0);
    }
}

/// Whether a process other than `helpers` and this one (unless it holds the keeper) is in `keeper`'s user namespace.
fn others_in_user_namespace(keeper: u32, helpers: &[u32]) -> bool {
    let Ok(ours) = std::fs::read_link(format!("/proc/{keeper}/ns/user")) else {
        return false;
    };
    let me = if HELD_BY_THIS_PROCESS.load(std::sync::atomic::Ordering::SeqCst) {
        0
    } else {
        std::process::id()
    };
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me && !helpers.contains(pid))
        .any(|pid| std::fs::read_link(format!("/proc/{pid}/ns/user")).is_ok_and(|ns| ns == ours))
}

/// The keeper itself, when this process was started as one (`gcr __gcr-network-keeper FD`,
/// FD the write end slirp4netns watches): makes the network namespace, says `ready` on
/// stdout and lives until nothing needs it. Returns `None` for any other process. Call first in main.
pub fn keeper_main_if_asked() -> Option<u8> {
    let mut args = std::env::args_os().skip(1);
    if args.next()? != KEEPER_ARG {
        return None;
    }
    // FD stays open for the keeper's life (never closed here).
    let _exit_fd = args.next();
    Some(match keeper_main() {
        Ok(never) => match never {},
        Err(e) => {
            eprintln!("{e}");
            1
        }
    })
}

fn keeper_main() -> Result<std::convert::Infallible, RuntimeError> {
    // Out of the caller's session: its terminal's hang-up is not the keeper's end.
    let _ = nix::unistd::setsid();
    nix::sched::unshare(CloneFlags::CLONE_NEWNET)
        .map_err(|e| RuntimeError::sys("create the rootless network namespace", e))?;
    crate::sys::loopback_up().map_err(|e| RuntimeError::sys("bring lo up", e))?;
    println!("ready");
    // Nothing more to say: stdout and stderr go, so no caller waits on them.
    let null = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .map_err(|e| RuntimeError::io("open", Path::new("/dev/null"), e))?;
    let _ = nix::unistd::dup2_stdout(&null);
    let _ = nix::unistd::dup2_stderr(&null);
    for signal in [libc::SIGHUP, libc::SIGINT, libc::SIGPIPE] {
        crate::sys::process::ignore_signal(signal);
    }
    // Every few seconds the keeper asks itself whether anything still needs it: a bridge,
    // or another process in its user namespace (when a container or the API service that
    // used the last network ends, nobody else may be there to stop it).
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3));
        if let Ok(_lock) = crate::network::StateLock::take() {
            stop_keeper_if_unused(&crate::network::state_dir(), std::time::Duration::ZERO);
        }
    }
}
