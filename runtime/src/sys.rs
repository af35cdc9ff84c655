//! Thin wrappers over the system calls nix does not cover. Every `unsafe` block of the crate's
//! syscall layer that is not a one-off lives here.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;

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

/// The `clone` system call used like fork: returns 0 in the child and the child's pid in the
/// parent. No new stack is needed since the child gets a copy-on-write copy of this one.
///
/// # Safety
/// The caller must be single-threaded, and the child must not return into code that assumes
/// it is the parent (it should end with `_exit` or `execve`).
pub unsafe fn clone_fork(flags: u64) -> Result<libc::pid_t, Errno> {
    let ret = libc::syscall(
        libc::SYS_clone,
        (flags | libc::SIGCHLD as u64) as libc::c_ulong,
        std::ptr::null_mut::<libc::c_void>(),
        std::ptr::null_mut::<libc::c_int>(),
        std::ptr::null_mut::<libc::c_int>(),
        0 as libc::c_ulong,
    );
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(ret as libc::pid_t)
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
    // SAFETY: plain syscall with a NUL-terminated name.
    let ret = unsafe {
        libc::mknodat(
            dirfd,
            name.as_ptr(),
            libc::S_IFCHR | mode,
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

/// Mounts an OverlayFS at `target` through the new mount API, adding each lower dir with its
/// own `lowerdir+` parameter (Linux 6.8+). Unlike mount(2), whose options are limited to one
/// page (about 55 store layers), this takes as many layers as the kernel allows (500).
pub fn mount_overlay_fsconfig(
    target: &CStr,
    lower: &[std::ffi::CString],
    upper: &CStr,
    work: &CStr,
    flags: &[&CStr],
    options: &[(&CStr, &CStr)],
) -> Result<(), (&'static str, Errno)> {
    let mnt = overlay_fsmount(lower, upper, work, flags, options)?;
    move_mount_fd(&mnt, target).map_err(|e| ("move the overlay into place", e))
}

/// Creates an OverlayFS through the new mount API and returns it as a detached mount (not yet
/// anywhere in the file system tree); [`move_mount_fd`] attaches it.
pub fn overlay_fsmount(
    lower: &[std::ffi::CString],
    upper: &CStr,
    work: &CStr,
    flags: &[&CStr],
    options: &[(&CStr, &CStr)],
) -> Result<OwnedFd, (&'static str, Errno)> {
    const FSOPEN_CLOEXEC: libc::c_uint = 1;
    const FSCONFIG_SET_FLAG: libc::c_uint = 0;
    const FSCONFIG_SET_STRING: libc::c_uint = 1;
    const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
    const FSMOUNT_CLOEXEC: libc::c_uint = 1;

    let check =
        |ret: libc::c_long, what: &'static str| -> Result<libc::c_long, (&'static str, Errno)> {
            if ret < 0 {
                Err((what, Errno::last()))
            } else {
                Ok(ret)
            }
        };
    // SAFETY: fsopen takes a NUL-terminated file system name and flags; it returns a new fd.
    let fs = check(
        unsafe { libc::syscall(libc::SYS_fsopen, c"overlay".as_ptr(), FSOPEN_CLOEXEC) },
        "fsopen overlay",
    )?;
    // SAFETY: the kernel returned a new fd that nothing else owns.
    let fs = unsafe { OwnedFd::from_raw_fd(fs as RawFd) };
    let set = |cmd: libc::c_uint, key: Option<&CStr>, value: Option<&CStr>, what: &'static str| {
        // SAFETY: `fs` is an fs context fd; key and value are NUL-terminated strings (or null
        // where the command takes none) that outlive the call.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                cmd,
                key.map_or(std::ptr::null(), CStr::as_ptr),
                value.map_or(std::ptr::null(), CStr::as_ptr),
                0,
            )
        };
        check(ret, what).map(|_| ())
    };
    for dir in lower {
        set(
            FSCONFIG_SET_STRING,
            Some(c"lowerdir+"),
            Some(dir.as_c_str()),
            "add an overlay lower dir (needs Linux 6.8)",
        )?;
    }
    set(
        FSCONFIG_SET_STRING,
        Some(c"upperdir"),
        Some(upper),
        "set the overlay upper dir",
    )?;
    set(
        FSCONFIG_SET_STRING,
        Some(c"workdir"),
        Some(work),
        "set the overlay work dir",
    )?;
    for flag in flags {
        set(FSCONFIG_SET_FLAG, Some(flag), None, "set an overlay option")?;
    }
    for (key, value) in options {
        set(
            FSCONFIG_SET_STRING,
            Some(key),
            Some(value),
            "set an overlay option",
        )?;
    }
    set(FSCONFIG_CMD_CREATE, None, None, "create the overlay")?;
    // SAFETY: `fs` is a configured fs context; fsmount returns a new detached mount fd.
    let mnt = check(
        unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, 0) },
        "fsmount overlay",
    )?;
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(mnt as RawFd) })
}

const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;

/// Attaches a detached mount (from [`overlay_fsmount`], [`clone_tree`] or [`idmapped_tree`])
/// at `target`.
pub fn move_mount_fd(mnt: &OwnedFd, target: &CStr) -> Result<(), Errno> {
    // SAFETY: moves the detached mount (empty path relative to its fd) onto the NUL-terminated
    // target path; both outlive the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mnt.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// Attaches a detached mount on the file or directory `target` refers to (no path lookup).
pub fn move_mount_onto(mnt: &OwnedFd, target: &impl AsRawFd) -> Result<(), Errno> {
    // SAFETY: both fds are open and outlive the call; the empty paths refer to them.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mnt.as_raw_fd(),
            c"".as_ptr(),
            target.as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// A user namespace with the given `uid_map`/`gid_map` (the /proc file formats), as an fd, for
/// idmapped mounts. A short-lived child is cloned into a new user namespace, mapped, and its
/// namespace opened; the namespace lives on through the fd after the child exits.
///
/// # Safety
/// The caller must be single-threaded (see [`clone_fork`]).
pub unsafe fn user_namespace_fd(uid_map: &str, gid_map: &str) -> Result<OwnedFd, (String, Errno)> {
    let (read_end, write_end) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| ("pipe".to_string(), e))?;
    // SAFETY: the caller is single-threaded; the child branch ends in _exit.
    let pid = unsafe { clone_fork(libc::CLONE_NEWUSER as u64) }
        .map_err(|e| ("clone a user namespace".to_string(), e))?;
    if pid == 0 {
        // The child only waits for the pipe to close: read(2) and _exit(2), nothing that may
        // take a lock another thread of the parent held.
        let mut byte = 0u8;
        // SAFETY: reads at most one byte into a live local; then leaves without unwinding.
        unsafe {
            libc::close(write_end.as_raw_fd());
            libc::read(read_end.as_raw_fd(), (&mut byte as *mut u8).cast(), 1);
            libc::_exit(0);
        }
    }
    drop(read_end);
    let result = (|| {
        for (file, map) in [("uid_map", uid_map), ("gid_map", gid_map)] {
            let path = format!("/proc/{pid}/{file}");
            std::fs::write(&path, map).map_err(|e| {
                (
                    format!("write {path}"),
                    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
                )
            })?;
        }
        let path = format!("/proc/{pid}/ns/user");
        std::fs::File::open(&path).map(OwnedFd::from).map_err(|e| {
            (
                format!("open {path}"),
                Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
            )
        })
    })();
    drop(write_end);
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
    result
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// A detached copy of the mount at `path` (with its submounts when `recursive`), as a bind
/// mount that is not attached anywhere yet. The parent opens mount sources this way for a
/// child that, inside its user namespace, may not be allowed to look the paths up.
pub fn clone_tree(path: &CStr, recursive: bool) -> Result<OwnedFd, Errno> {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    let mut flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: open_tree takes a NUL-terminated path that outlives the call; it returns a new fd.
    let ret = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags) };
    if ret < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) })
}

/// A detached recursive copy of the mount tree at `path`, idmapped through `userns`: owners on
/// disk are shown shifted as that namespace maps them (Linux 5.12+; as an OverlayFS layer
/// from 5.19).
pub fn idmapped_tree(path: &CStr, userns: &OwnedFd) -> Result<OwnedFd, (&'static str, Errno)> {
    const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
    let tree = clone_tree(path, true).map_err(|e| ("clone the mount tree", e))?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: `attr` is a valid mount_attr of the size passed; the empty path refers to the
    // tree fd itself (AT_EMPTY_PATH).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if ret < 0 {
        return Err(("idmap the mount", Errno::last()));
    }
    Ok(tree)
}

/// Gives SIGPIPE its default action back (Rust's runtime ignores it, which turns a closed
/// stdout, as in `gcr images | head -1`, into a panic of `println!`): the process then ends
/// quietly like any Unix tool.
pub fn default_sigpipe() {
    // SAFETY: installs the default disposition, no handler code; called at startup before
    // any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Ignores SIGPIPE in this process: a write to a closed pipe then fails with EPIPE instead
/// of ending it (the log copier, which must keep logging when the terminal side goes).
pub fn ignore_sigpipe() {
    // SAFETY: installs the ignore disposition, no handler code; called in a freshly forked
    // single-threaded child.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// Runs `work` in a forked child and waits for it; the child's error comes back as the
/// result (its text through a pipe). For work that must not change this process, such as
/// mounting in a private mount namespace. Call it only from a single-threaded process.
pub fn in_child(
    work: impl FnOnce() -> Result<(), crate::RuntimeError>,
) -> Result<(), crate::RuntimeError> {
    use std::io::{Read, Write};
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| crate::RuntimeError::sys("pipe", e))?;
    // SAFETY: the caller is single-threaded; the child leaves with _exit and never returns.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            drop(read_end);
            let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)) {
                Ok(Ok(())) => 0,
                Ok(Err(e)) => {
                    let _ = std::fs::File::from(write_end).write_all(e.to_string().as_bytes());
                    1
                }
                Err(_) => 2,
            };
            // SAFETY: ends the child without running the parent's cleanup code.
            unsafe { libc::_exit(code) }
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            drop(write_end);
            let mut text = String::new();
            let _ = std::fs::File::from(read_end).read_to_string(&mut text);
            let status = nix::sys::wait::waitpid(child, None)
                .map_err(|e| crate::RuntimeError::sys("wait for the child", e))?;
            match status {
                nix::sys::wait::WaitStatus::Exited(_, 0) => Ok(()),
                _ if !text.is_empty() => Err(crate::RuntimeError::Setup(text)),
                other => Err(crate::RuntimeError::Setup(format!(
                    "the helper process failed ({other:?})"
                ))),
            }
        }
        Err(e) => Err(crate::RuntimeError::sys("fork", e)),
    }
}

/// Runs `work` in a forked child that the caller reaps (or kills) later; returns its PID.
/// Call it only from a single-threaded process (the child may then start threads of its own).
pub fn spawn_child(work: impl FnOnce()) -> Result<nix::unistd::Pid, Errno> {
    // SAFETY: the caller is single-threaded; the child leaves with _exit and never returns.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Child => {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
            // SAFETY: ends the child without running the parent's cleanup code.
            unsafe { libc::_exit(0) }
        }
        nix::unistd::ForkResult::Parent { child } => Ok(child),
    }
}

/// Ignores SIGTERM, SIGINT and SIGHUP in this process (a detached container's supervisor).
/// While a container runs they are blocked and forwarded all the same (a blocked signal is
/// queued even when ignored); the container's process gets default dispositions back.
pub fn ignore_stop_signals() {
    for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        // SAFETY: installs SIG_IGN, no handler code.
        unsafe {
            libc::signal(signal, libc::SIG_IGN);
        }
    }
}
