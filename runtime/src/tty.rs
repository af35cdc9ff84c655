//! The container's pty (allocated inside its own devpts) and the host terminal's raw mode.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

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

/// The terminal whose size the container's pty follows: gcr's stdout, or, when stdout is
/// not one (a foreground `-t` container's log tee took it), gcr's controlling terminal.
pub fn host_terminal() -> Option<OwnedFd> {
    let stdout = std::io::stdout();
    if nix::unistd::isatty(stdout.as_fd()).unwrap_or(false) {
        return stdout.as_fd().try_clone_to_owned().ok();
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open("/dev/tty")
        .ok()
        .map(OwnedFd::from)
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

/// Sets the window size of the terminal of the process tree under `root` (the first
/// process, `root` included, whose stdin is a terminal: a container's PID 1, or the command
/// an exec worker started), which also sends SIGWINCH to its foreground group. False when
/// no process of the tree has a terminal (it runs without one, or has not set it up yet).
pub fn resize_terminal(root: u32, rows: u16, cols: u16) -> Result<bool, crate::RuntimeError> {
    let mut queue = std::collections::VecDeque::from([root]);
    let mut seen = 0;
    while let Some(pid) = queue.pop_front() {
        seen += 1;
        if seen > 256 {
            break;
        }
        let stdin = format!("/proc/{pid}/fd/0");
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(&stdin);
        if let Ok(terminal) = opened {
            if nix::unistd::isatty(&terminal).unwrap_or(false) {
                let ws = libc::winsize {
                    ws_row: rows,
                    ws_col: cols,
                    ws_xpixel: 0,
                    ws_ypixel: 0,
                };
                sys::tty::set_window_size(&terminal, &ws)
                    .map_err(|e| crate::RuntimeError::sys("set the terminal size", e))?;
                return Ok(true);
            }
        }
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Ok(children) = std::fs::read_to_string(task.path().join("children")) {
                queue.extend(
                    children
                        .split_whitespace()
                        .filter_map(|c| c.parse::<u32>().ok()),
                );
            }
        }
    }
    Ok(false)
}
