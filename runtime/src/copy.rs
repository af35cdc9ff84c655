//! `gcr cp`: files between the host and a container, with every path inside the container
//! resolved beneath its root (openat2 RESOLVE_IN_ROOT for the given path, then one component
//! at a time from directory fds with O_NOFOLLOW), so no symlink in the container leads out.
//! A running container is reached through /proc/PID/root; a stopped one's overlay is mounted
//! in a private mount namespace of a short-lived child.

use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fchmod, fstat, mkdirat, FileStat, Mode, SFlag};

use crate::container::RootfsSource;
use crate::error::RuntimeError;
use crate::fs::Root;

/// Where the container's files are.
pub enum ContainerFiles<'a> {
    /// A running container: its PID 1.
    Running(i32),
    /// A stopped container: its layers and upper dir, mounted at `mountpoint` for the copy.
    Stopped {
        rootfs: &'a RootfsSource,
        mountpoint: &'a Path,
    },
}

/// Copies `src` (absolute, in the container) to the host path `dest` (which must not exist;
/// its parent must). Symlinks are copied as links; owners are not (the files are the caller's).
pub fn copy_out(files: ContainerFiles, src: &Path, dest: &Path) -> Result<(), RuntimeError> {
    with_root(files, |root| {
        let rel = crate::fs::relative(src)?;
        let fd = root
            .open_in(&rel, libc::O_PATH | libc::O_NOFOLLOW, 0)
            .map_err(|e| RuntimeError::io("find in the container", src, e.into()))?;
        out_entry(&fd, dest).map_err(|e| RuntimeError::io("copy", src, e))
    })
}

/// Copies the host path `src` to `dest` (absolute, in the container; its parent directories
/// are created, an existing non-directory there is replaced). Files get owner 0:0 (the
/// container's root), as `docker cp` gives them, and keep their modes.
pub fn copy_in(files: ContainerFiles, src: &Path, dest: &Path) -> Result<(), RuntimeError> {
    with_root(files, |root| {
        let mut rel = crate::fs::relative(dest)?;
        // As `docker cp`: into an existing directory (or one named with a final `/`), the
        // source keeps its name.
        let into_dir = dest.as_os_str().as_bytes().ends_with(b"/")
            || root
                .open_in(&rel, libc::O_PATH | libc::O_DIRECTORY, 0)
                .is_ok();
        if into_dir {
            let base = src.file_name().ok_or_else(|| {
                RuntimeError::InvalidSpec(format!("{} names no file", src.display()))
            })?;
            rel.push(base);
        }
        let parent = rel.parent().unwrap_or(Path::new(""));
        let name = rel.file_name().ok_or_else(|| {
            RuntimeError::InvalidSpec(format!("{} names no file in the container", dest.display()))
        })?;
        let dir = root.mkdir_all(parent)?;
        let dir = reopen_dir(&dir).map_err(|e| RuntimeError::io("open", dest, e))?;
        in_entry(src, &dir, name).map_err(|e| RuntimeError::io("copy", src, e))
    })
}

/// Runs `work` with the container's root: directly for a running container, in a child with
/// its own mount namespace for a stopped one.
fn with_root(
    files: ContainerFiles,
    work: impl FnOnce(&Root) -> Result<(), RuntimeError>,
) -> Result<(), RuntimeError> {
    match files {
        ContainerFiles::Running(pid) => {
            let theirs = format!("/proc/{pid}/ns/user");
            let same_userns = match (
                nix::sys::stat::stat(theirs.as_str()),
                nix::sys::stat::stat("/proc/self/ns/user"),
            ) {
                (Ok(a), Ok(b)) => a.st_ino == b.st_ino && a.st_dev == b.st_dev,
                _ => true,
            };
            if same_userns {
                let root = Root::open(Path::new(&format!("/proc/{pid}/root")))?;
                return work(&root);
            }
            // Rootless: the container's user namespace, which this user owns, gives the
            // access (and the ownership of what is written) its root has; /proc/PID/root is
            // closed to any other namespace.
            let userns =
                File::open(&theirs).map_err(|e| RuntimeError::io("open", Path::new(&theirs), e))?;
            crate::sys::in_child(|| {
                nix::sched::setns(userns.as_fd(), nix::sched::CloneFlags::CLONE_NEWUSER)
                    .map_err(|e| RuntimeError::sys("join the container's user namespace", e))?;
                let root = Root::open(Path::new(&format!("/proc/{pid}/root")))?;
                work(&root)
            })
        }
        ContainerFiles::Stopped { rootfs, mountpoint } => crate::sys::in_child(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
                .map_err(|e| RuntimeError::sys("unshare the mount namespace", e))?;
            nix::mount::mount(
                None::<&str>,
                "/",
                None::<&str>,
                nix::mount::MsFlags::MS_SLAVE | nix::mount::MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|e| RuntimeError::sys("make / a slave mount", e))?;
            crate::mounts::mount_overlay_at(rootfs, mountpoint)?;
            let root = Root::open(mountpoint)?;
            work(&root)
        }),
    }
}

fn reopen_dir(fd: &OwnedFd) -> io::Result<OwnedFd> {
    Ok(openat(
        fd,
        c".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?)
}

fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

/// One entry of the container (an O_PATH fd, not followed) to the host path `dest`.
fn out_entry(fd: &OwnedFd, dest: &Path) -> io::Result<()> {
    let st = fstat(fd)?;
    match kind(&st) {
        SFlag::S_IFLNK => {
            let target = nix::fcntl::readlinkat(fd, "")?;
            std::os::unix::fs::symlink(target, dest)
        }
        SFlag::S_IFDIR => {
            std::fs::create_dir(dest)?;
            let dir = reopen_dir(fd)?;
            let mut entries = nix::dir::Dir::from_fd(dir.try_clone()?)?;
            for entry in entries.iter() {
                let entry = entry?;
                let name = entry.file_name();
                if name == c"." || name == c".." {
                    continue;
                }
                let child = openat(
                    &dir,
                    name,
                    OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )?;
                out_entry(&child, &dest.join(OsStr::from_bytes(name.to_bytes())))?;
            }
            std::fs::set_permissions(dest, std::fs::Permissions::from_mode(st.st_mode & 0o7777))
        }
        SFlag::S_IFREG => {
            let mut from = File::from(reopen_file(fd)?);
            let mut to = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(dest)?;
            io::copy(&mut from, &mut to)?;
            to.set_permissions(std::fs::Permissions::from_mode(st.st_mode & 0o7777))
        }
        // Devices, FIFOs and sockets are not copied (Docker's archive would carry them; a
        // host copy of a device node is not wanted).
        _ => Ok(()),
    }
}

/// Reopens an O_PATH fd of a regular file for reading (through /proc/self/fd, which does
/// not resolve any path of the container).
fn reopen_file(fd: &OwnedFd) -> io::Result<OwnedFd> {
    Ok(File::open(format!("/proc/self/fd/{}", fd.as_raw_fd()))?.into())
}

/// The host entry `src` into the container directory `dir` as `name`.
fn in_entry(src: &Path, dir: &OwnedFd, name: &OsStr) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(src)?;
    let cname = CString::new(name.as_bytes()).map_err(|_| io::Error::from(Errno::EINVAL))?;
    let existing = openat(
        dir,
        cname.as_c_str(),
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ok()
    .and_then(|fd| fstat(&fd).ok());
    if meta.is_dir() {
        match existing.map(|st| kind(&st)) {
            Some(SFlag::S_IFDIR) => {}
            Some(_) => {
                unlink(dir, &cname)?;
                mkdirat(dir, cname.as_c_str(), Mode::from_bits_truncate(0o700))?;
            }
            None => mkdirat(dir, cname.as_c_str(), Mode::from_bits_truncate(0o700))?,
        }
        let sub = openat(
            dir,
            cname.as_c_str(),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        for entry in std::fs::read_dir(src)? {
            let entry = entry?;
            in_entry(&entry.path(), &sub, &entry.file_name())?;
        }
        nix::unistd::fchown(&sub, Some(0.into()), Some(0.into()))?;
        fchmod(&sub, Mode::from_bits_truncate(meta.mode() & 0o7777))?;
        return Ok(());
    }
    if let Some(st) = existing {
        if kind(&st) == SFlag::S_IFDIR {
            return Err(io::Error::other(format!(
                "{} is a directory in the container; a file cannot replace it",
                name.to_string_lossy()
            )));
        }
        unlink(dir, &cname)?;
    }
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(src)?;
        nix::unistd::symlinkat(&target, dir, cname.as_c_str())?;
        let _ = nix::unistd::fchownat(
            dir,
            cname.as_c_str(),
            Some(0.into()),
            Some(0.into()),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        );
        return Ok(());
    }
    if !meta.is_file() {
        return Ok(());
    }
    let to = openat(
        dir,
        cname.as_c_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )?;
    let mut to = File::from(to);
    io::copy(&mut File::open(src)?, &mut to)?;
    nix::unistd::fchown(to.as_fd(), Some(0.into()), Some(0.into()))?;
    fchmod(to.as_fd(), Mode::from_bits_truncate(meta.mode() & 0o7777))?;
    Ok(())
}

/// Removes the non-directory `name` from `dir`.
fn unlink(dir: &OwnedFd, name: &CStr) -> io::Result<()> {
    Ok(nix::unistd::unlinkat(
        dir,
        name,
        nix::unistd::UnlinkatFlags::NoRemoveDir,
    )?)
}
