//! The create/start split of an OCI runtime (gcr-oci): [`create_container`] sets the
//! container up and leaves its process waiting at a start gate (a FIFO), then returns, so the
//! runtime's own process does not stay behind; [`start_container`] opens the gate and returns
//! once the command has been executed.
//!
//! The gate: the child holds the FIFO open read-write (the open never waits) and reads one
//! line, the state JSON the startContainer hooks get. `start` opens it for reading first,
//! then writes the line through a second, write-only open; once that is closed, the only
//! writer left is the child's fd, which its exec closes (close-on-exec): the reader then sees
//! POLLHUP. A container that died at the gate looks the same, so `start` checks the process.

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use oci_spec::runtime::{ContainerState, Spec};

use crate::channel::{
    child_error, receive, send, MSG_ERROR, MSG_GO, MSG_HOOKS, MSG_NAMESPACES, MSG_PTY, MSG_READY,
};
use crate::error::RuntimeError;
use crate::launch::prepare_fork;
use crate::plan::{Plan, RunOptions};
use crate::{hooks, sys};

/// What `create` made: the container's first process, waiting at its gate.
#[derive(Debug)]
pub struct Created {
    /// Its pid as this process sees it.
    pub pid: i32,
    /// With a terminal and no console socket (`run` in the foreground): the pty master.
    pub master: Option<OwnedFd>,
    /// Its cgroup's path (see [`crate::cgroups::oci_path`]); `None` when none could be made
    /// (rootless without delegation).
    pub cgroup: Option<String>,
}

/// Sets up the container of `spec` (namespaces, cgroup at `linux.cgroupsPath`, mounts,
/// prestart/createRuntime/createContainer hooks) and leaves its process waiting before its
/// exec. `opts.oci` must be set. Must be called from a single-threaded process. On error
/// the process is killed and its cgroup removed.
pub fn create_container(spec: &Spec, opts: &RunOptions) -> Result<Created, RuntimeError> {
    let Some(oci) = &opts.oci else {
        return Err(RuntimeError::InvalidSpec(
            "create_container needs RunOptions::oci".into(),
        ));
    };
    crate::launch::ensure_single_threaded("create_container")?;
    let plan = Plan::new(spec, opts)?;
    let cgroup = plan.cgroup.as_ref().map(|_| {
        let linux = spec.linux().as_ref();
        crate::cgroups::oci_path(
            linux.and_then(|l| l.cgroups_path().as_deref()),
            &opts.container_id,
        )
    });
    let result = create_planned(&plan, oci, cgroup);
    if result.is_err() {
        if let Some(cg) = &plan.cgroup {
            cg.remove();
        }
    }
    result
}

fn create_planned(
    plan: &Plan,
    oci: &crate::plan::OciLaunch,
    cgroup: Option<String>,
) -> Result<Created, RuntimeError> {
    let (parent_sock, child_sock, old_mask, restore) = prepare_fork()?;
    // A pid namespace given by path applies to the children of whoever joins it: this
    // process joins it for the clone and goes back to its own right after.
    let pid_join = plan
        .joins
        .iter()
        .find(|(flag, _)| *flag == nix::sched::CloneFlags::CLONE_NEWPID);
    let own_pidns = match pid_join {
        Some((flag, fd)) => {
            let own = std::fs::File::open("/proc/self/ns/pid")
                .map_err(|e| RuntimeError::io("open", "/proc/self/ns/pid", e))?;
            nix::sched::setns(fd.as_fd(), *flag)
                .map_err(|e| RuntimeError::sys("join the pid namespace", e))?;
            Some(own)
        }
        None => None,
    };
    // Single-threaded (checked by create_container); the child never returns.
    let forked = sys::clone_fork(plan.clone_flags);
    if let Some(own) = &own_pidns {
        let _ = nix::sched::setns(own.as_fd(), nix::sched::CloneFlags::CLONE_NEWPID);
    }
    let pid = match forked {
        Ok(sys::ForkResult::Child) => {
            drop(parent_sock);
            crate::child::main(plan, child_sock, &old_mask)
        }
        Ok(sys::ForkResult::Parent { child }) => child,
        Err(e) => return Err(RuntimeError::sys("clone the container process", e)),
    };
    drop(child_sock);
    let result = set_up(plan, oci, pid, &parent_sock);
    if result.is_err() {
        let _ = kill(pid, Signal::SIGKILL);
        let _ = waitpid(pid, None);
    }
    drop(restore);
    result.map(|master| Created {
        pid: pid.as_raw(),
        master,
        cgroup,
    })
}

fn state_json(oci: &crate::plan::OciLaunch, pid: Pid, status: ContainerState) -> String {
    let mut state = oci.state.clone();
    state.set_pid(Some(pid.as_raw()));
    state.set_status(status);
    serde_json::to_string(&state).unwrap_or_default()
}

/// The parent's part of `create`, message by message, until the child waits at its gate.
fn set_up(
    plan: &Plan,
    oci: &crate::plan::OciLaunch,
    pid: Pid,
    sock: &OwnedFd,
) -> Result<Option<OwnedFd>, RuntimeError> {
    let mut kept_master = None;
    let go = |payload: &[u8]| {
        let mut msg = vec![MSG_GO];
        msg.extend_from_slice(payload);
        send(sock, &msg, None).map_err(|e| RuntimeError::sys("signal the container process", e))
    };
    let mut maps_written = false;
    let write_maps = |plan: &Plan| -> Result<(), RuntimeError> {
        if plan.new_userns || plan.unshare_flags & libc::CLONE_NEWUSER as u64 != 0 {
            crate::launch::write_id_maps(plan, pid)?;
        }
        if let Some(cg) = &plan.cgroup {
            cg.add(pid.as_raw())?;
        }
        Ok(())
    };
    // With namespaces to join, the child makes its user namespace after the joins and says
    // so; without, it has it from the clone.
    if plan.joins.is_empty() {
        write_maps(plan)?;
        maps_written = true;
        go(b"")?;
    }
    loop {
        let Some((msg, fd)) = receive(sock)? else {
            let _ = waitpid(pid, None);
            return Err(RuntimeError::Setup(
                "the container process exited during create".into(),
            ));
        };
        match msg.first() {
            Some(&MSG_NAMESPACES) if !maps_written => {
                write_maps(plan)?;
                maps_written = true;
                go(b"")?;
            }
            Some(&MSG_HOOKS) => {
                let state = state_json(oci, pid, ContainerState::Creating);
                if let Some(h) = &plan.hooks {
                    // prestart (the older hook) sees the container as created, as runc's
                    // callers and the runtime-tools suite expect.
                    #[allow(deprecated)]
                    let prestart = h.prestart().clone().unwrap_or_default();
                    let created = state_json(oci, pid, ContainerState::Created);
                    hooks::run_hooks("prestart", &prestart, &created)?;
                    hooks::run_hooks(
                        "createRuntime",
                        h.create_runtime().as_deref().unwrap_or(&[]),
                        &state,
                    )?;
                }
                go(state.as_bytes())?;
            }
            Some(&MSG_PTY) => {
                let master = fd.ok_or_else(|| {
                    RuntimeError::Setup("the container sent no pty with its message".into())
                })?;
                match &oci.console_socket {
                    Some(socket) => send_console(Some(socket), &master)?,
                    None => kept_master = Some(master),
                }
            }
            Some(&MSG_READY) => return Ok(kept_master),
            Some(&MSG_ERROR) => {
                let _ = waitpid(pid, None);
                return Err(child_error(&msg));
            }
            _ => {}
        }
    }
}

/// Sends the pty master to the caller's `--console-socket`, as runc does: one message whose
/// data is a name and whose SCM_RIGHTS carries the fd.
pub fn send_console(socket: Option<&Path>, master: &OwnedFd) -> Result<(), RuntimeError> {
    let Some(path) = socket else {
        return Err(RuntimeError::InvalidSpec(
            "process.terminal is set but no --console-socket was given".into(),
        ));
    };
    let stream = UnixStream::connect(path)
        .map_err(|e| RuntimeError::io("connect to the console socket", path, e))?;
    let stream = OwnedFd::from(stream);
    send(&stream, b"/dev/ptmx", Some(master.as_raw_fd()))
        .map_err(|e| RuntimeError::sys(format!("send the pty to {}", path.display()), e))
}

/// What `delete` must undo for a container without a mount namespace of its own: the mounts
/// it made in the caller's namespace, under its rootfs, deepest first. (With a namespace of
/// its own they went with its processes.)
pub fn remove_mounts_under(rootfs: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<std::path::PathBuf> = info
        .lines()
        .filter_map(|line| line.split_whitespace().nth(4))
        .map(|p| std::path::PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p.starts_with(rootfs))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for point in points {
        let _ = nix::mount::umount2(&point, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// mountinfo writes space, tab, newline and backslash as \ooo.
fn unescape_mountinfo(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() && text.is_char_boundary(i + 4) {
            if let Ok(v) = u8::from_str_radix(&text[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `run` in the foreground: waits for the started container's process (a child of this
/// one) while forwarding signals to it and relaying its pty, and returns its exit status.
pub fn wait_container(
    pid: i32,
    master: Option<OwnedFd>,
) -> Result<crate::relay::ExitStatusCode, RuntimeError> {
    let restore = crate::launch::block_signals()?;
    // With signals blocked from here, a SIGCHLD that comes later waits in the signalfd;
    // an exit before it, the relay's first reap sees.
    let target = Pid::from_raw(pid);
    let result = crate::relay::relay(true, target, target, master, None);
    drop(restore);
    result
}

/// Releases a created container: writes `state_json` (one line) into its gate and returns
/// once the command has been executed. `pid` is the container's process, checked after.
pub fn start_container(exec_fifo: &Path, pid: i32, state_json: &str) -> Result<(), RuntimeError> {
    let reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(exec_fifo)
        .map_err(|e| RuntimeError::io("open the start gate", exec_fifo, e))?;
    let mut writer = match std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(exec_fifo)
    {
        Ok(w) => w,
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
            return Err(RuntimeError::Setup(
                "the container's process is no longer waiting to start (it exited)".into(),
            ))
        }
        Err(e) => return Err(RuntimeError::io("open the start gate", exec_fifo, e)),
    };
    let mut line = state_json.replace('\n', " ");
    line.push('\n');
    writer
        .write_all(line.as_bytes())
        .map_err(|e| RuntimeError::io("write the start gate", exec_fifo, e))?;
    drop(writer);
    let target = Pid::from_raw(pid);
    loop {
        let mut fds = [PollFd::new(reader.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(100u16)) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(RuntimeError::sys("wait for the container's exec", e)),
        }
        let revents = fds[0].revents().unwrap_or(PollFlags::empty());
        if revents.contains(PollFlags::POLLHUP) {
            break;
        }
        if revents.contains(PollFlags::POLLIN) {
            // The line is still unread: the child has not reached its read yet.
            std::thread::sleep(Duration::from_millis(1));
        }
        if kill(target, None).is_err() {
            break;
        }
    }
    // Whether the command ran or its process died after the gate (a startContainer hook or
    // the exec failed, said on the container's stderr), its exit status now belongs to its
    // parent (the caller's subreaper), as with runc.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo("/end\\"), "/end\\");
    }
}
