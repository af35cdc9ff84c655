//! [`run_container`]: the parent side of a new container. Plans it, clones the child with
//! every namespace flag at once, writes its id maps when it has a user namespace, joins it to
//! its cgroups and network, waits for the exec, then hands over to the [`relay`](crate::relay).

use std::os::fd::OwnedFd;

use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use oci_spec::runtime::Spec;

use crate::channel::{child_error, receive, send, MSG_ERROR, MSG_GO, MSG_PID, MSG_PTY};
use crate::error::RuntimeError;
use crate::fs::write_atomic;
use crate::plan::{Plan, RunOptions};
use crate::relay::{relay, write_all, ExitStatusCode};
use crate::{child, sys};

/// Runs the container described by `spec` on `opts.rootfs` in the foreground and returns its
/// exit status. Must be called from a single-threaded process. Errors: [`RuntimeError`]
/// (`exit_code()` gives 125, or 126/127 when the command cannot be executed or found).
pub fn run_container(spec: &Spec, opts: &RunOptions) -> Result<ExitStatusCode, RuntimeError> {
    ensure_single_threaded("run_container")?;
    let plan = Plan::new(spec, opts)?;
    let result = run_planned(&plan);
    if let Some(cg) = &plan.cgroup {
        // Docker's State.OOMKilled: the kernel killed a process of the container for its
        // memory limit (read before the group goes).
        let marker = plan.opts.state_dir.join(OOM_KILLED_FILE);
        if result.is_ok() && cg.oom_kills() > 0 {
            let _ = write_atomic(&marker, "1");
        } else {
            let _ = std::fs::remove_file(&marker);
        }
        cg.remove();
    }
    result
}

/// Runs `work` in a forked child of this single-threaded process and returns the child's pid
/// at once; the child ends with `work`'s return value as its exit status (101 when it
/// panics), without running the destructors of what it shares with the parent. The caller
/// reaps it. For builds of independent stages side by side: each child may in turn run
/// containers, since it is single-threaded too.
pub fn fork_worker(work: impl FnOnce() -> i32) -> Result<Pid, RuntimeError> {
    ensure_single_threaded("fork_worker")?;
    match sys::process::fork() {
        Ok(sys::process::ForkResult::Child) => {
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).unwrap_or(101);
            sys::process::exit_now(code)
        }
        Ok(sys::process::ForkResult::Parent { child }) => Ok(child),
        Err(e) => Err(RuntimeError::sys("fork", e)),
    }
}

/// Written into the state directory when the OOM killer ended a process of the container.
pub const OOM_KILLED_FILE: &str = "oom-killed";

/// A clone of a multi-threaded process may copy a lock another thread holds (malloc, stdio)
/// and deadlock in the child: `caller` refuses instead of hanging.
pub(crate) fn ensure_single_threaded(caller: &str) -> Result<(), RuntimeError> {
    let threads = std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(1);
    if threads > 1 {
        return Err(RuntimeError::InvalidSpec(format!(
            "{caller} needs a single-threaded process, this one has {threads} threads (shut the async runtime down first)"
        )));
    }
    Ok(())
}

/// The parent/child socket pair, and every signal blocked (the previous mask restored when
/// the guard goes): no signal is lost between the clone and the signalfd, and the child
/// starts with them blocked until just before exec.
pub(crate) fn prepare_fork() -> Result<(OwnedFd, OwnedFd, SigSet, SigmaskGuard), RuntimeError> {
    let (parent_sock, child_sock) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| RuntimeError::sys("socketpair", e))?;
    let all = SigSet::all();
    let mut old_mask = SigSet::empty();
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&all), Some(&mut old_mask))
        .map_err(|e| RuntimeError::sys("block signals", e))?;
    Ok((parent_sock, child_sock, old_mask, SigmaskGuard(old_mask)))
}

fn run_planned(plan: &Plan) -> Result<ExitStatusCode, RuntimeError> {
    let (parent_sock, child_sock, old_mask, restore) = prepare_fork()?;

    // The caller is single-threaded (checked by run_container); the child branch never
    // returns from child::main.
    let pid = match sys::clone_fork(plan.clone_flags) {
        Ok(sys::ForkResult::Child) => {
            drop(parent_sock);
            child::main(plan, child_sock, &old_mask)
        }
        Ok(sys::ForkResult::Parent { child }) => child,
        Err(e) => return Err(RuntimeError::sys("clone the container process", e)),
    };
    drop(child_sock);
    if let Some(path) = &plan.opts.pid_file {
        if let Err(e) = write_atomic(path, &pid.to_string()) {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
            return Err(e);
        }
    }
    let result = supervise(plan, pid, &parent_sock);
    if result.is_err() {
        let _ = kill(pid, Signal::SIGKILL);
        let _ = waitpid(pid, None);
    }
    // Reaped: its PID may be anyone's from now on (a restart policy's wait can be long).
    if let Some(path) = &plan.opts.pid_file {
        let _ = std::fs::remove_file(path);
    }
    drop(restore);
    result
}

/// Blocks every signal until the guard goes (a relay reads them from a signalfd).
pub(crate) fn block_signals() -> Result<SigmaskGuard, RuntimeError> {
    let mut old_mask = SigSet::empty();
    nix::sys::signal::pthread_sigmask(
        SigmaskHow::SIG_SETMASK,
        Some(&SigSet::all()),
        Some(&mut old_mask),
    )
    .map_err(|e| RuntimeError::sys("block signals", e))?;
    Ok(SigmaskGuard(old_mask))
}

pub(crate) struct SigmaskGuard(SigSet);

impl Drop for SigmaskGuard {
    fn drop(&mut self) {
        let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&self.0), None);
    }
}

/// Writes the child's uid and gid maps (an unprivileged caller may map its own gid only with
/// setgroups denied).
pub(crate) fn write_id_maps(plan: &Plan, pid: Pid) -> Result<(), RuntimeError> {
    if !nix::unistd::geteuid().is_root() {
        let path = format!("/proc/{pid}/setgroups");
        std::fs::write(&path, "deny").map_err(|e| RuntimeError::io("write", &path, e))?;
    }
    for (file, content) in [("uid_map", &plan.uid_map), ("gid_map", &plan.gid_map)] {
        let path = format!("/proc/{pid}/{file}");
        std::fs::write(&path, content.as_bytes())
            .map_err(|e| RuntimeError::io("write", &path, e))?;
    }
    Ok(())
}

fn supervise(plan: &Plan, pid: Pid, sock: &OwnedFd) -> Result<ExitStatusCode, RuntimeError> {
    if plan.new_userns {
        write_id_maps(plan, pid)?;
    }
    if let Some(cg) = &plan.cgroup {
        cg.add(pid.as_raw())?;
    }
    // The network is up before the command starts; its helpers stop when the run ends.
    let _network = match &plan.network {
        Some(network) => {
            // `address` in the state directory: what `inspect` shows as the IP address.
            write_atomic(
                &plan.opts.state_dir.join("address"),
                &network.address.to_string(),
            )?;
            for (bridge, address) in network.extra_addresses() {
                write_atomic(
                    &plan.opts.state_dir.join(format!("address.{bridge}")),
                    &address.to_string(),
                )?;
            }
            let hosts = plan
                .etc_files
                .iter()
                .find(|(_, dest)| dest == std::path::Path::new("/etc/hosts"))
                .map(|(path, _)| path.as_path());
            Some(network.attach(pid, &plan.opts.container_id, hosts)?)
        }
        None => None,
    };
    send(sock, &[MSG_GO], None)
        .map_err(|e| RuntimeError::sys("signal the container process", e))?;
    let started = until_exec(sock, pid)?;
    if let Some(fd) = plan.opts.started_fd {
        write_all(fd, b"S");
    }
    relay(plan.opts.stdin, pid, pid, started.master, None)
}

/// What the child side reported up to its exec.
pub(crate) struct Started {
    /// The pty master, with `-t`.
    pub master: Option<OwnedFd>,
    /// `gcr exec`: the process that runs the command (the child reaped is its parent).
    pub command_pid: Option<Pid>,
}

/// Reads the child side's messages until the command is executed (EOF on the socket): the
/// pty, an error (then `reap` is reaped and the error returned), an exec's command pid.
pub(crate) fn until_exec(sock: &OwnedFd, reap: Pid) -> Result<Started, RuntimeError> {
    let mut started = Started {
        master: None,
        command_pid: None,
    };
    while let Some((msg, fd)) = receive(sock)? {
        match msg.first() {
            Some(&MSG_PTY) => started.master = fd,
            Some(&MSG_PID) => {
                started.command_pid = msg
                    .get(1..)
                    .and_then(|b| std::str::from_utf8(b).ok())
                    .and_then(|t| t.parse().ok())
                    .map(Pid::from_raw);
            }
            Some(&MSG_ERROR) => {
                let _ = waitpid(reap, None);
                return Err(child_error(&msg));
            }
            _ => {}
        }
    }
    Ok(started)
}
