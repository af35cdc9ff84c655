//! The crate's syscall layer: safe wrappers over the system calls nix does not cover (or
//! covers only as `unsafe fn`). Every `unsafe` block of the crate lives in this module and its
//! submodules (`#![deny(unsafe_code)]` everywhere else), each with a `SAFETY:` comment.
//!
//! - here: `openat2`, `close_range`, capabilities, `prctl`, seccomp, the loopback interface,
//!   `mknodat`, fd passing over a socket;
//! - [`mount`]: the new mount API (overlays of many layers, detached and idmapped mounts);
//! - [`process`]: fork and clone (safe because the crate runs single-threaded: see there),
//!   `_exit`, waiting, signals, raw reads and writes;
//! - [`tty`]: the pty ioctls;
//! - [`bpf`]: loading and attaching cgroup v2 device filters.

use std::ffi::CStr;
use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

pub mod bpf;
pub mod mount;
pub mod process;
pub mod tty;

pub use mount::{
    clone_tree, idmapped_tree, mount_overlay_fsconfig, move_mount_fd, move_mount_onto,
    overlay_fsmount, user_namespace_fd,
};
pub use process::{
    clone_fork, default_sigpipe, exit_now, fork, ignore_sigpipe, ignore_stop_signals, in_child,
    kill_signo, read_raw, reap_any, set_default_action, sigwaitinfo, spawn_child, write_raw,
    ForkResult,
};

/// `openat2(dirfd, path, how)`; `resolve` is a set of `RESOLVE_*` flags.
pub fn openat2(
    dirfd: RawFd,
    path: &CStr,
    flags: i32,
    mode: u32,
    resolve: u64,
) -> Result<OwnedFd, Errno> {
    // SAFETY: open_how is plain old data; all-zero is valid.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.mode = mode as u64;
    how.resolve = resolve;
    loop {
        // SAFETY: `how` is a valid open_how of the size passed, `path` is NUL-terminated and
        // outlives the call.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dirfd,
                path.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if ret >= 0 {
            // SAFETY: the kernel returned a new fd that nothing else owns.
            return Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) });
        }
        let err = Errno::last();
        if err != Errno::EAGAIN && err != Errno::EINTR {
            return Err(err);
        }
    }
}

/// Closes every fd in `first..=last`.
pub fn close_range(first: u32, last: u32) {
    if first > last {
        return;
    }
    // SAFETY: closes fds of this process only; callers own no Rust object over these fds
    // (they are the host fds the container must not inherit).
    let ret = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) };
    if ret != 0 {
        for fd in first..=last.min(65535) {
            // SAFETY: as above.
            unsafe { libc::close(fd as RawFd) };
        }
    }
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Sets this thread's effective, permitted and inheritable capability sets (bit masks).
pub fn capset(effective: u64, permitted: u64, inheritable: u64) -> Result<(), Errno> {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [
        CapData {
            effective: effective as u32,
            permitted: permitted as u32,
            inheritable: inheritable as u32,
        },
        CapData {
            effective: (effective >> 32) as u32,
            permitted: (permitted >> 32) as u32,
            inheritable: (inheritable >> 32) as u32,
        },
    ];
    // SAFETY: header and the two data structs match the kernel's v3 capability ABI.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        )
    };
    Errno::result(ret).map(drop)
}

/// `prctl` with integer arguments.
pub fn prctl(option: i32, arg2: u64, arg3: u64) -> Result<(), Errno> {
    // SAFETY: every option used by this crate takes plain integer arguments.
    let ret = unsafe { libc::prctl(option, arg2 as libc::c_ulong, arg3 as libc::c_ulong, 0, 0) };
    Errno::result(ret).map(drop)
}

/// Installs a classic-BPF seccomp filter on this thread.
pub fn seccomp_install(program: &[libc::sock_filter]) -> Result<(), Errno> {
    let prog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `prog` points at `program`, which outlives the call; the kernel copies it.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0u32,
            &prog as *const libc::sock_fprog,
        )
    };
    Errno::result(ret).map(drop)
}

/// Brings the loopback interface of the current network namespace up.
pub fn loopback_up() -> Result<(), Errno> {
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS fills the flags member of the ifreq we pass.
    let ret = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) };
    Errno::result(ret)?;
    // SAFETY: reading and writing the flags member the kernel just filled.
    unsafe { req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads the ifreq we pass.
    let ret = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) };
    Errno::result(ret).map(drop)
}

/// `mknodat` of a character device.
pub fn mknod_char(
    dirfd: RawFd,
    name: &CStr,
    mode: u32,
    major: u32,
    minor: u32,
) -> Result<(), Errno> {
    mknod_node(dirfd, name, libc::S_IFCHR, mode, major, minor)
}

/// `mknodat` of a node of file type `kind` (`S_IFCHR`, `S_IFBLK`, `S_IFIFO`).
pub fn mknod_node(
    dirfd: RawFd,
    name: &CStr,
    kind: libc::mode_t,
    mode: u32,
    major: u32,
    minor: u32,
) -> Result<(), Errno> {
    // SAFETY: plain syscall with a NUL-terminated name.
    let ret = unsafe {
        libc::mknodat(
            dirfd,
            name.as_ptr(),
            kind | (mode & 0o7777),
            libc::makedev(major, minor),
        )
    };
    Errno::result(ret).map(drop)
}

/// `/proc/self/fd/N` for an fd, the path through which a mount or bind targets exactly the
/// object we resolved instead of a path that could be swapped.
pub fn fd_path(fd: &impl AsRawFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// Receives one message on `sock` into `buf` (`recvmsg(2)`, close-on-exec for passed fds):
/// its length (0 at EOF) and the fd that came with it (SCM_RIGHTS; of several, the last).
pub fn recv_with_fd(
    sock: &impl AsRawFd,
    buf: &mut [u8],
) -> Result<(usize, Option<OwnedFd>), Errno> {
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fd = None;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::ScmRights(fds) = c {
                for raw in fds {
                    // SAFETY: SCM_RIGHTS installed a new fd in this process that nothing
                    // else owns.
                    fd = Some(unsafe { OwnedFd::from_raw_fd(raw) });
                }
            }
        }
    }
    Ok((msg.bytes, fd))
}
