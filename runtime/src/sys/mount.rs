//! The new mount API (fsopen/fsconfig/fsmount, open_tree, move_mount, mount_setattr) for
//! overlays of many layers, detached bind mounts and idmapped mounts.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;

use super::process::{clone_fork, exit_now, ForkResult};

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
pub fn user_namespace_fd(uid_map: &str, gid_map: &str) -> Result<OwnedFd, (String, Errno)> {
    let (read_end, write_end) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| ("pipe".to_string(), e))?;
    let pid = match clone_fork(libc::CLONE_NEWUSER as u64)
        .map_err(|e| ("clone a user namespace".to_string(), e))?
    {
        ForkResult::Child => {
            // The child only waits for the pipe to close: close(2), read(2) and _exit(2).
            drop(write_end);
            let _ = nix::unistd::read(&read_end, &mut [0u8; 1]);
            exit_now(0)
        }
        ForkResult::Parent { child } => child,
    };
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
    let _ = nix::sys::wait::waitpid(pid, None);
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
