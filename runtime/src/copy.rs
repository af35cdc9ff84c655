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

use crate::error::RuntimeError;
use crate::fs::Root;
use crate::plan::RootfsSource;

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

/// What `gcr cp` copies: the entry itself, or (`SRC/.`) the entries of a directory.
#[derive(Debug, Clone, Copy, Default)]
pub struct CopyOptions {
    /// Copy the contents of the source directory, not the directory (`docker cp SRC/. DEST`).
    pub contents: bool,
    /// Follow a symlink that is the source itself (`docker cp -L`).
    pub follow_link: bool,
}

/// Opens the container entry `src` for copying out (an O_PATH fd; the last component followed
/// only on request, and then still inside the root).
fn open_source(root: &Root, src: &Path, options: CopyOptions) -> Result<OwnedFd, RuntimeError> {
    let rel = crate::fs::relative(src)?;
    let flags = libc::O_PATH
        | if options.follow_link {
            0
        } else {
            libc::O_NOFOLLOW
        };
    let fd = root
        .open_in(&rel, flags, 0)
        .map_err(|e| RuntimeError::io("find in the container", src, e.into()))?;
    if options.contents {
        let st = fstat(&fd).map_err(|e| RuntimeError::io("stat", src, e.into()))?;
        if kind(&st) != SFlag::S_IFDIR {
            return Err(RuntimeError::InvalidSpec(format!(
                "{}/. names a directory's contents, but {} is not a directory",
                src.display(),
                src.display()
            )));
        }
    }
    Ok(fd)
}

/// Copies `src` (absolute, in the container) to the host path `dest` (its parent must exist;
/// an existing directory there is merged into, other existing entries are replaced). With
/// `contents`, the entries of the directory `src` go into the directory `dest`. Symlinks are
/// copied as links; owners are not (the files are the caller's).
pub fn copy_out(
    files: ContainerFiles,
    src: &Path,
    dest: &Path,
    options: CopyOptions,
) -> Result<(), RuntimeError> {
    with_root(files, |root| {
        let fd = open_source(root, src, options)?;
        out_entry(&fd, dest).map_err(|e| RuntimeError::io("copy", src, e))
    })
}

/// Writes `src` (absolute, in the container) as a tar stream to `out` (`docker cp SRC -`):
/// named by its last component, or with `contents` the directory's entries by their own
/// names. Owners, modes and modification times are the container's.
pub fn copy_out_tar(
    files: ContainerFiles,
    src: &Path,
    options: CopyOptions,
    out: &File,
) -> Result<(), RuntimeError> {
    with_root(files, |root| {
        let fd = open_source(root, src, options)?;
        let out = out
            .try_clone()
            .map_err(|e| RuntimeError::io("write", Path::new("-"), e))?;
        let mut tar = tar::Builder::new(io::BufWriter::new(out));
        let written = if options.contents {
            tar_children(&mut tar, &fd, Path::new(""))
        } else {
            let name = src.file_name().map(Path::new).unwrap_or(Path::new("."));
            tar_entry(&mut tar, &fd, name)
        };
        written
            .and_then(|()| tar.into_inner())
            .and_then(|mut w| io::Write::flush(&mut w))
            .map_err(|e| RuntimeError::io("copy", src, e))
    })
}

/// What `stat` tells of a container entry (Docker's `X-Docker-Container-Path-Stat`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryStat {
    pub name: String,
    pub size: u64,
    /// The permission bits and the file type as Go's `os.FileMode` packs them.
    pub go_mode: u32,
    /// Seconds since the epoch.
    pub mtime: i64,
    pub link_target: String,
    pub is_dir: bool,
}

/// Go's `os.FileMode` bits for the file types (what the docker CLI decodes).
fn go_mode(st: &FileStat) -> u32 {
    const DIR: u32 = 1 << 31;
    const SYMLINK: u32 = 1 << 27;
    const DEVICE: u32 = 1 << 26;
    const NAMED_PIPE: u32 = 1 << 25;
    const SOCKET: u32 = 1 << 24;
    const SETUID: u32 = 1 << 23;
    const SETGID: u32 = 1 << 22;
    const CHAR_DEVICE: u32 = 1 << 21;
    const STICKY: u32 = 1 << 20;
    let mut mode = st.st_mode & 0o777;
    mode |= match kind(st) {
        SFlag::S_IFDIR => DIR,
        SFlag::S_IFLNK => SYMLINK,
        SFlag::S_IFBLK => DEVICE,
        SFlag::S_IFCHR => DEVICE | CHAR_DEVICE,
        SFlag::S_IFIFO => NAMED_PIPE,
        SFlag::S_IFSOCK => SOCKET,
        _ => 0,
    };
    for (bit, go) in [(0o4000, SETUID), (0o2000, SETGID), (0o1000, STICKY)] {
        if st.st_mode & bit != 0 {
            mode |= go;
        }
    }
    mode
}

/// The entry `path` (absolute, in the container; a symlink itself, not followed). The look
/// may happen in a child (a stopped container's mount, a rootless user namespace), so the
/// answer comes back over a pipe as one line.
pub fn stat_entry(files: ContainerFiles, path: &Path) -> Result<EntryStat, RuntimeError> {
    let (read_end, write_end) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
        .map_err(|e| RuntimeError::sys("make a pipe for stat", e))?;
    let mut write_end = Some(File::from(write_end));
    with_root(files, |root| {
        // A missing entry is an answer, not a failure of the child (whose error would come
        // back as text only).
        let fd = match open_source(root, path, CopyOptions::default()) {
            Err(e) if e.is_not_found() => return Ok(()),
            other => other?,
        };
        let st = fstat(&fd).map_err(|e| RuntimeError::io("stat", path, e.into()))?;
        let link_target = if kind(&st) == SFlag::S_IFLNK {
            nix::fcntl::readlinkat(&fd, "")
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_default()
        } else {
            String::new()
        };
        let line = format!(
            "{} {} {} {}\0{}",
            st.st_size.max(0),
            go_mode(&st),
            st.st_mtime,
            u8::from(kind(&st) == SFlag::S_IFDIR),
            link_target
        );
        if let Some(out) = write_end.as_mut() {
            io::Write::write_all(out, line.as_bytes())
                .map_err(|e| RuntimeError::io("stat", path, e))?;
        }
        Ok(())
    })?;
    drop(write_end);
    let mut text = String::new();
    io::Read::read_to_string(&mut File::from(read_end), &mut text)
        .map_err(|e| RuntimeError::io("stat", path, e))?;
    let (numbers, link_target) = text.split_once('\0').unwrap_or((&text, ""));
    let numbers: Vec<i64> = numbers.split(' ').filter_map(|n| n.parse().ok()).collect();
    let [size, mode, mtime, is_dir] = numbers[..] else {
        return Err(RuntimeError::io(
            "find in the container",
            path,
            io::Error::from(io::ErrorKind::NotFound),
        ));
    };
    let name = path
        .file_name()
        .map_or_else(|| "/".to_string(), |n| n.to_string_lossy().into_owned());
    Ok(EntryStat {
        name,
        size: size as u64,
        go_mode: mode as u32,
        mtime,
        link_target: link_target.to_string(),
        is_dir: is_dir == 1,
    })
}

/// Copies the host path `src` to `dest` (absolute, in the container; its parent directories
/// are created, an existing non-directory there is replaced). Files get owner 0:0 (the
/// container's root), as `docker cp` gives them, and keep their modes. With `contents`, the
/// entries of the host directory `src` go into the directory `dest` (created if missing).
pub fn copy_in(
    files: ContainerFiles,
    src: &Path,
    dest: &Path,
    options: CopyOptions,
) -> Result<(), RuntimeError> {
    with_root(files, |root| {
        let mut rel = crate::fs::relative(dest)?;
        if options.contents {
            if let Ok(fd) = root.open_in(&rel, libc::O_PATH, 0) {
                let st = fstat(&fd).map_err(|e| RuntimeError::io("stat", dest, e.into()))?;
                if kind(&st) != SFlag::S_IFDIR {
                    return Err(RuntimeError::InvalidSpec(format!(
                        "cannot copy a directory's contents to {}: it is not a directory in the container",
                        dest.display()
                    )));
                }
            }
            let dir = root.mkdir_all(&rel)?;
            let dir = reopen_dir(&dir).map_err(|e| RuntimeError::io("open", dest, e))?;
            let entries = std::fs::read_dir(src).map_err(|e| RuntimeError::io("read", src, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| RuntimeError::io("read", src, e))?;
                in_entry(&entry.path(), &dir, &entry.file_name(), false)
                    .map_err(|e| RuntimeError::io("copy", entry.path(), e))?;
            }
            return Ok(());
        }
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
        in_entry(src, &dir, name, options.follow_link).map_err(|e| RuntimeError::io("copy", src, e))
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

/// One entry of the container (an O_PATH fd) to the host path `dest`: a directory merges
/// into an existing one; any other existing entry is replaced.
fn out_entry(fd: &OwnedFd, dest: &Path) -> io::Result<()> {
    let st = fstat(fd)?;
    let existing = std::fs::symlink_metadata(dest).ok();
    let is_dir = kind(&st) == SFlag::S_IFDIR;
    match &existing {
        Some(m) if m.is_dir() && !is_dir => {
            return Err(io::Error::other(format!(
                "{} is a directory; a file cannot replace it",
                dest.display()
            )))
        }
        Some(m) if !m.is_dir() => std::fs::remove_file(dest)?,
        _ => {}
    }
    match kind(&st) {
        SFlag::S_IFLNK => {
            let target = nix::fcntl::readlinkat(fd, "")?;
            std::os::unix::fs::symlink(target, dest)
        }
        SFlag::S_IFDIR => {
            if !existing.is_some_and(|m| m.is_dir()) {
                std::fs::create_dir(dest)?;
            }
            let dir = reopen_dir(fd)?;
            for name in children(&dir)? {
                let child = open_child(&dir, &name)?;
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
        // Devices, FIFOs and sockets are not copied to the host (a host copy of a device node
        // is not wanted); a tar stream carries them.
        _ => Ok(()),
    }
}

/// The names in a directory (an fd of it), sorted; each is opened only when its turn comes,
/// so a large directory does not hold an fd per entry.
fn children(dir: &OwnedFd) -> io::Result<Vec<CString>> {
    let mut out = Vec::new();
    let mut entries = nix::dir::Dir::from_fd(dir.try_clone()?)?;
    for entry in entries.iter() {
        let entry = entry?;
        let name = entry.file_name();
        if name != c"." && name != c".." {
            out.push(name.to_owned());
        }
    }
    out.sort();
    Ok(out)
}

/// The entry `name` of `dir` as an O_PATH fd, not following a symlink.
fn open_child(dir: &OwnedFd, name: &CStr) -> io::Result<OwnedFd> {
    Ok(openat(
        dir,
        name,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?)
}

/// A file's data for a tar entry: exactly the size its header states. A file that shrinks
/// while it is read (a running container writes it) is an error, never a short entry whose
/// missing bytes would let the following data be read as headers.
struct ExactFile {
    file: File,
    remaining: u64,
}

impl io::Read for ExactFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(self.remaining.min(usize::MAX as u64) as usize);
        let n = self.file.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::other(
                "the file shrank while it was being read (it changed during the copy)",
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// One entry of the container (an O_PATH fd) into the tar stream as `name`, with what is
/// beneath it.
fn tar_entry<W: io::Write>(tar: &mut tar::Builder<W>, fd: &OwnedFd, name: &Path) -> io::Result<()> {
    let st = fstat(fd)?;
    let mut header = tar::Header::new_gnu();
    header.set_mode(st.st_mode & 0o7777);
    header.set_uid(u64::from(st.st_uid));
    header.set_gid(u64::from(st.st_gid));
    header.set_mtime(st.st_mtime.max(0) as u64);
    header.set_size(0);
    match kind(&st) {
        SFlag::S_IFLNK => {
            header.set_entry_type(tar::EntryType::Symlink);
            let target = nix::fcntl::readlinkat(fd, "")?;
            tar.append_link(&mut header, name, target)
        }
        SFlag::S_IFDIR => {
            header.set_entry_type(tar::EntryType::Directory);
            tar.append_data(&mut header, name, io::empty())?;
            tar_children(tar, &reopen_dir(fd)?, name)
        }
        SFlag::S_IFREG => {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(st.st_size as u64);
            // The header's size is the one stat saw: a file growing meanwhile is cut there,
            // one shrinking fails the copy.
            let data = ExactFile {
                file: File::from(reopen_file(fd)?),
                remaining: st.st_size as u64,
            };
            tar.append_data(&mut header, name, data)
        }
        other => {
            let entry_type = match other {
                SFlag::S_IFCHR => tar::EntryType::Char,
                SFlag::S_IFBLK => tar::EntryType::Block,
                SFlag::S_IFIFO => tar::EntryType::Fifo,
                // Sockets have no tar form.
                _ => return Ok(()),
            };
            header.set_entry_type(entry_type);
            header.set_device_major(libc::major(st.st_rdev))?;
            header.set_device_minor(libc::minor(st.st_rdev))?;
            tar.append_data(&mut header, name, io::empty())
        }
    }
}

/// The entries of the directory `dir` into the tar stream under `prefix`.
fn tar_children<W: io::Write>(
    tar: &mut tar::Builder<W>,
    dir: &OwnedFd,
    prefix: &Path,
) -> io::Result<()> {
    let dir = reopen_dir(dir)?;
    for name in children(&dir)? {
        let child = open_child(&dir, &name)?;
        tar_entry(
            tar,
            &child,
            &prefix.join(OsStr::from_bytes(name.to_bytes())),
        )?;
    }
    Ok(())
}

/// Reopens an O_PATH fd of a regular file for reading (through /proc/self/fd, which does
/// not resolve any path of the container).
fn reopen_file(fd: &OwnedFd) -> io::Result<OwnedFd> {
    Ok(File::open(format!("/proc/self/fd/{}", fd.as_raw_fd()))?.into())
}

/// The host entry `src` into the container directory `dir` as `name`.
fn in_entry(src: &Path, dir: &OwnedFd, name: &OsStr, follow_link: bool) -> io::Result<()> {
    let meta = if follow_link {
        std::fs::metadata(src)?
    } else {
        std::fs::symlink_metadata(src)?
    };
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
            in_entry(&entry.path(), &sub, &entry.file_name(), false)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    #[test]
    fn a_file_shorter_than_its_header_fails_instead_of_ending_early() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"12345").unwrap();
        let mut exact = ExactFile {
            file: File::open(&path).unwrap(),
            remaining: 10,
        };
        let mut out = Vec::new();
        let err = exact.read_to_end(&mut out).unwrap_err();
        assert!(err.to_string().contains("shrank"), "{err}");
        let mut exact = ExactFile {
            file: File::open(&path).unwrap(),
            remaining: 3,
        };
        let mut out = Vec::new();
        exact.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"123");
    }
}
