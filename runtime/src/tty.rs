//! The container's pty (allocated inside its own devpts) and the host terminal's raw mode.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::termios::{self, SetArg, Termios};

use crate::sys;

/// Opens a new pty pair from the container's `/dev/ptmx` (call after pivot_root, so the pty
/// lives in the container's devpts instance). Returns (master, slave).
pub fn open_pty() -> Result<(OwnedFd, OwnedFd), Errno> {
    let master = nix::fcntl::open(
        "/dev/ptmx",
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_NOCTTY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    sys::tty::unlock_pty(&master)?;
    let slave = sys::tty::open_peer(&master, libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC)?;
    Ok((master, slave))
}

/// Makes `slave` the controlling terminal and stdio of this (new-session) process.
pub fn attach_slave(slave: &OwnedFd) -> Result<(), Errno> {
    sys::tty::set_controlling_terminal(slave)?;
    nix::unistd::dup2_stdin(slave)?;
    nix::unistd::dup2_stdout(slave)?;
    nix::unistd::dup2_stderr(slave)?;
    Ok(())
}

/// Copies the window size of the host terminal on `from` to the pty master.
pub fn copy_winsize(from: BorrowedFd<'_>, master: BorrowedFd<'_>) {
    if let Ok(ws) = sys::tty::window_size(&from) {
        let _ = sys::tty::set_window_size(&master, &ws);
    }
}

/// Puts the host terminal on stdin into raw mode until dropped.
pub struct RawMode {
    saved: Option<Termios>,
}

impl RawMode {
    pub fn enter() -> RawMode {
        let stdin = std::io::stdin();
        let saved = match termios::tcgetattr(stdin.as_fd()) {
            Ok(t) => t,
            Err(_) => return RawMode { saved: None },
        };
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        if termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).is_err() {
            return RawMode { saved: None };
        }
        RawMode { saved: Some(saved) }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, saved);
        }
    }
}
