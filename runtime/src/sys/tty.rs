//! The pty ioctls: unlock a master, open its peer, take a controlling terminal, window sizes.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use nix::errno::Errno;

/// `TIOCSPTLCK` 0: unlocks the slave of the pty `master`.
pub fn unlock_pty(master: &impl AsFd) -> Result<(), Errno> {
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads an int from the pointer we pass, which lives for the call.
    Errno::result(unsafe { libc::ioctl(master.as_fd().as_raw_fd(), libc::TIOCSPTLCK, &unlock) })
        .map(drop)
}

/// `TIOCGPTPEER`: opens the slave of the pty `master` through the master, without a path
/// lookup (kernel 4.13+), with open flags `flags`.
pub fn open_peer(master: &impl AsFd, flags: libc::c_int) -> Result<OwnedFd, Errno> {
    // SAFETY: the ioctl takes open flags by value and returns a new fd.
    let slave = Errno::result(unsafe {
        libc::ioctl(master.as_fd().as_raw_fd(), libc::TIOCGPTPEER, flags)
    })?;
    // SAFETY: the kernel returned a new fd nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(slave) })
}

/// `TIOCSCTTY`: makes the terminal `fd` the controlling terminal of this session leader.
pub fn set_controlling_terminal(fd: &impl AsFd) -> Result<(), Errno> {
    // SAFETY: TIOCSCTTY takes an int argument by value.
    Errno::result(unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), libc::TIOCSCTTY, 0) }).map(drop)
}

/// `TIOCGWINSZ`: the window size of the terminal `fd`.
pub fn window_size(fd: &impl AsFd) -> Result<libc::winsize, Errno> {
    // SAFETY: winsize is plain old data; all-zero is a valid value.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ fills the winsize we pass, which lives for the call.
    Errno::result(unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), libc::TIOCGWINSZ, &mut ws) })?;
    Ok(ws)
}

/// `TIOCSWINSZ`: sets the window size of the terminal `fd`.
pub fn set_window_size(fd: &impl AsFd, ws: &libc::winsize) -> Result<(), Errno> {
    // SAFETY: TIOCSWINSZ reads the winsize we pass, which lives for the call.
    Errno::result(unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), libc::TIOCSWINSZ, ws) }).map(drop)
}
