//! The relay between the host and a running container: forwards signals, copies the pty
//! (stdin to it, its output to stdout) and reaps the container's process into its exit status.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::error::RuntimeError;
use crate::{sys, tty};

/// The container's exit status: its own, or 128+N when killed by signal N.
pub type ExitStatusCode = i32;

/// Until `reap_pid` exits: forwards signals to `target`, copies the pty (and stdin to it when
/// `stdin`), returns the status. At `deadline` (a healthcheck's timeout) `target` is killed.
pub(crate) fn relay(
    stdin: bool,
    target: Pid,
    reap_pid: Pid,
    master: Option<OwnedFd>,
    deadline: Option<std::time::Instant>,
) -> Result<ExitStatusCode, RuntimeError> {
    let pid = target;
    let mut forwarded = SigSet::all();
    for s in [Signal::SIGKILL, Signal::SIGSTOP] {
        forwarded.remove(s);
    }
    let sfd = SignalFd::with_flags(&forwarded, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| RuntimeError::sys("signalfd", e))?;
    let _raw = master.as_ref().map(|_| tty::RawMode::enter());
    let terminal = master.as_ref().and_then(|_| tty::host_terminal());
    let copy_winsize = |m: &OwnedFd| {
        if let Some(t) = &terminal {
            tty::copy_winsize(t.as_fd(), m.as_fd());
        }
    };
    if let Some(m) = &master {
        copy_winsize(m);
        let _ = nix::fcntl::fcntl(
            m,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        );
    }
    let mut stdin_open = master.is_some() && stdin;
    // It may have exited before its SIGCHLD could reach the signalfd (an OCI `run` blocks
    // signals only after `start`).
    let mut status: Option<ExitStatusCode> = reap(reap_pid)?;
    let mut buf = vec![0u8; 16384];
    loop {
        if let Some(code) = status {
            if let Some(m) = &master {
                drain(m, &mut buf);
            }
            return Ok(code);
        }
        let stdin = std::io::stdin();
        let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        if let Some(m) = &master {
            fds.push(PollFd::new(m.as_fd(), PollFlags::POLLIN));
            if stdin_open {
                fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            }
        }
        let timeout = match deadline {
            Some(at) => {
                let left = at.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    // Killed once; its SIGCHLD then ends the wait.
                    let _ = kill(pid, Signal::SIGKILL);
                    PollTimeout::from(100u16)
                } else {
                    PollTimeout::try_from(left.as_millis().max(1) as i64)
                        .unwrap_or(PollTimeout::MAX)
                }
            }
            None => PollTimeout::NONE,
        };
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(RuntimeError::sys("poll", e)),
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        if ready[0] {
            while let Ok(Some(info)) = sfd.read_signal() {
                let signo = info.ssi_signo as i32;
                match Signal::try_from(signo) {
                    Ok(Signal::SIGCHLD) => {}
                    Ok(Signal::SIGWINCH) if master.is_some() => {
                        if let Some(m) = &master {
                            copy_winsize(m);
                        }
                    }
                    Ok(Signal::SIGPIPE) | Ok(Signal::SIGURG) => {}
                    Ok(sig) => {
                        let _ = kill(pid, sig);
                    }
                    Err(_) => {
                        // Real-time signals: forward by number (one the kernel delivered).
                        let _ = sys::kill_signo(pid, signo);
                    }
                }
            }
        }
        if ready[0] || deadline.is_some() {
            status = reap(reap_pid)?;
        }
        if let Some(m) = &master {
            if ready.get(1).copied().unwrap_or(false)
                && !copy_once(m.as_raw_fd(), 1, &mut buf)
                && status.is_none()
            {
                // The container side of the pty is gone; its exit status follows.
                status = Some(wait_exit(reap_pid)?);
            }
            if stdin_open
                && ready.get(2).copied().unwrap_or(false)
                && !copy_once(0, m.as_raw_fd(), &mut buf)
            {
                stdin_open = false;
            }
        }
    }
}

fn decode(ws: WaitStatus) -> Option<ExitStatusCode> {
    match ws {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

fn reap(pid: Pid) -> Result<Option<ExitStatusCode>, RuntimeError> {
    match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
        Ok(ws) => Ok(decode(ws)),
        Err(Errno::EINTR) => Ok(None),
        Err(e) => Err(RuntimeError::sys("wait for the container", e)),
    }
}

fn wait_exit(pid: Pid) -> Result<ExitStatusCode, RuntimeError> {
    loop {
        match waitpid(pid, None) {
            Ok(ws) => {
                if let Some(code) = decode(ws) {
                    return Ok(code);
                }
            }
            Err(Errno::EINTR) => {}
            Err(e) => return Err(RuntimeError::sys("wait for the container", e)),
        }
    }
}

/// Copies one chunk from `from` to `to`; false at EOF or error on `from`.
fn copy_once(from: RawFd, to: RawFd, buf: &mut [u8]) -> bool {
    let n = match sys::read_raw(from, buf) {
        Ok(n) => n,
        Err(e) => return e == Errno::EAGAIN || e == Errno::EINTR,
    };
    if n == 0 {
        return false;
    }
    write_all(to, &buf[..n]);
    true
}

pub(crate) fn write_all(fd: RawFd, mut data: &[u8]) {
    while !data.is_empty() {
        match sys::write_raw(fd, data) {
            Ok(n) => data = &data[n..],
            Err(Errno::EINTR) | Err(Errno::EAGAIN) => continue,
            Err(_) => return,
        }
    }
}

fn drain(master: &OwnedFd, buf: &mut [u8]) {
    while copy_once_strict(master.as_raw_fd(), buf) {}
}

fn copy_once_strict(from: RawFd, buf: &mut [u8]) -> bool {
    match sys::read_raw(from, buf) {
        Ok(n) if n > 0 => {
            write_all(1, &buf[..n]);
            true
        }
        _ => false,
    }
}
