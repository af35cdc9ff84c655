//! Resolving an entry's parent directory beneath the layer root: `openat2(RESOLVE_IN_ROOT)`,
//! else a component-by-component walk with `O_NOFOLLOW` that expands symlinks itself as if the
//! root were `/`; and making room for an entry (removing what is there, never following links).

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstatat, mkdirat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};

use super::{arg, file_type, io_err, io_err_io, lossy, os, UnpackError, Unpacker};

/// Symlinks followed while resolving one path (as the kernel's limit).
const MAX_SYMLINKS: u32 = 40;

impl Unpacker<'_> {
    /// The directory holding entry `parent/...`, created as needed, resolved inside the root.
    pub(super) fn resolve_parent(
        &mut self,
        parent: &[u8],
        name: &[u8],
    ) -> Result<OwnedFd, UnpackError> {
        self.resolve_cached(parent, true, name)
    }

    pub(super) fn resolve_cached(
        &mut self,
        comps: &[u8],
        create: bool,
        name: &[u8],
    ) -> Result<OwnedFd, UnpackError> {
        let key = comps.to_vec();
        if let Some((_, fd)) = self.cache.iter().find(|(k, _)| *k == key) {
            return fd.try_clone().map_err(|e| io_err_io("dup", name, e));
        }
        let fd = self.resolve_dir(comps, create, name)?;
        self.remember(key, &fd, name)?;
        Ok(fd)
    }

    pub(super) fn remember(
        &mut self,
        key: Vec<u8>,
        fd: &OwnedFd,
        name: &[u8],
    ) -> Result<(), UnpackError> {
        const CACHE_SIZE: usize = 16;
        let copy = fd.try_clone().map_err(|e| io_err_io("dup", name, e))?;
        self.cache.insert(0, (key, copy));
        self.cache.truncate(CACHE_SIZE);
        Ok(())
    }

    /// Resolve `comps` inside the root to a directory (O_PATH descriptor). With `create`,
    /// missing directories are made (mode 0755), through symlinks as the kernel would, but never
    /// leaving the root.
    pub(super) fn resolve_dir(
        &self,
        comps: &[u8],
        create: bool,
        name: &[u8],
    ) -> Result<OwnedFd, UnpackError> {
        if comps.len() < 4000 {
            let how = OpenHow::new()
                .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
                .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
            match openat2(&self.root, arg(comps), how) {
                Ok(fd) => return Ok(fd),
                // Missing parts, or no openat2 (old kernel, seccomp): walk by hand.
                Err(
                    Errno::ENOENT | Errno::ENOSYS | Errno::EPERM | Errno::EAGAIN | Errno::EXDEV,
                ) => {}
                Err(e) => return Err(resolve_err(name, comps, e)),
            }
        }
        self.walk(comps, create, name)
    }

    /// Component-by-component resolution with `O_NOFOLLOW`, expanding symlinks ourselves
    /// relative to the root.
    pub(super) fn walk(
        &self,
        comps: &[u8],
        create: bool,
        name: &[u8],
    ) -> Result<OwnedFd, UnpackError> {
        let path_fd = |fd: &OwnedFd, c: &[u8]| {
            openat(
                fd,
                os(c),
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
        };
        let root = path_fd(&self.root, b".").map_err(|e| io_err("opening layer root", name, e))?;
        let mut stack: Vec<OwnedFd> = vec![root];
        let mut queue: std::collections::VecDeque<Vec<u8>> =
            comps.split(|&b| b == b'/').map(<[u8]>::to_vec).collect();
        let mut links = 0u32;
        while let Some(c) = queue.pop_front() {
            match c.as_slice() {
                b"" | b"." => continue,
                b".." => {
                    if stack.len() > 1 {
                        stack.pop();
                    }
                    continue;
                }
                _ => {}
            }
            let cur = stack.last().ok_or_else(|| UnpackError::Entry {
                entry: lossy(name),
                reason: "internal: empty resolution stack".to_string(),
            })?;
            let st = match fstatat(cur, os(&c), nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => Some(st),
                Err(Errno::ENOENT) => None,
                Err(e) => return Err(io_err("stat", name, e)),
            };
            match st.map(file_type) {
                None if create => {
                    mkdirat(cur, os(&c), Mode::from_bits_truncate(0o755))
                        .map_err(|e| io_err("creating parent directory of", name, e))?;
                    let fd = path_fd(cur, &c).map_err(|e| io_err("opening parent of", name, e))?;
                    stack.push(fd);
                }
                None => {
                    return Err(UnpackError::Entry {
                        entry: lossy(name),
                        reason: format!("{:?} does not exist in this layer", lossy(&c)),
                    })
                }
                Some(SFlag::S_IFDIR) => {
                    let fd = path_fd(cur, &c).map_err(|e| io_err("opening parent of", name, e))?;
                    stack.push(fd);
                }
                Some(SFlag::S_IFLNK) => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(UnpackError::Entry {
                            entry: lossy(name),
                            reason: "too many levels of symbolic links".to_string(),
                        });
                    }
                    let target = nix::fcntl::readlinkat(cur, os(&c))
                        .map_err(|e| io_err("reading symlink in", name, e))?;
                    let target = target.as_bytes();
                    if target.starts_with(b"/") {
                        stack.truncate(1);
                    }
                    for t in target.split(|&b| b == b'/').rev() {
                        queue.push_front(t.to_vec());
                    }
                }
                Some(_) => {
                    return Err(UnpackError::Entry {
                        entry: lossy(name),
                        reason: format!("parent {:?} is not a directory", lossy(&c)),
                    })
                }
            }
        }
        stack.pop().ok_or_else(|| UnpackError::Entry {
            entry: lossy(name),
            reason: "internal: empty resolution stack".to_string(),
        })
    }

    /// Open a real (not O_PATH) descriptor for the directory `fd` refers to.
    pub(super) fn reopen_dir(&self, fd: &OwnedFd, name: &[u8]) -> Result<File, UnpackError> {
        let fd = openat(
            fd,
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_err("opening directory", name, e))?;
        Ok(File::from(fd))
    }

    /// Remove whatever is at `dir/last` (keeping a directory when `keep_dir`). Returns whether a
    /// directory is there afterwards.
    pub(super) fn make_room(
        &mut self,
        dir: &OwnedFd,
        last: &[u8],
        name: &[u8],
        keep_dir: bool,
    ) -> Result<bool, UnpackError> {
        let st = match fstatat(dir, os(last), nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => return Ok(false),
            Err(e) => return Err(io_err("stat", name, e)),
        };
        if file_type(st) == SFlag::S_IFDIR {
            if keep_dir {
                return Ok(true);
            }
            // Paths through the removed directory are no longer valid.
            self.cache.clear();
            remove_tree_at(dir, last).map_err(|e| io_err_io("replacing directory", name, e))?;
        } else {
            unlinkat(dir, os(last), UnlinkatFlags::NoRemoveDir)
                .map_err(|e| io_err("replacing", name, e))?;
        }
        Ok(false)
    }
}

fn resolve_err(name: &[u8], path: &[u8], e: Errno) -> UnpackError {
    UnpackError::Entry {
        entry: lossy(name),
        reason: format!(
            "cannot resolve parent {:?} inside the layer: {e}",
            lossy(path)
        ),
    }
}

/// Remove the directory `dir/name` and everything in it, never following symlinks.
fn remove_tree_at(dir: &OwnedFd, name: &[u8]) -> io::Result<()> {
    // An explicit stack instead of recursion: layer trees can be thousands of levels deep.
    let open_dir = |parent: &OwnedFd, n: &[u8]| {
        openat(
            parent,
            os(n),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
    };
    // Only the first subdirectory found is descended into; the parent is listed again when it
    // is done. That keeps one descriptor per level.
    let mut stack: Vec<(OwnedFd, Vec<u8>)> = vec![(dir.try_clone()?, name.to_vec())];
    while let Some((parent, n)) = stack.last() {
        let fd = open_dir(parent, n)?;
        let mut subdir = None;
        let mut listing = nix::dir::Dir::from_fd(fd.try_clone()?)?;
        for ent in listing.iter() {
            let ent = ent?;
            let child = ent.file_name().to_bytes();
            if child == b"." || child == b".." {
                continue;
            }
            let st = fstatat(&fd, child, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)?;
            if file_type(st) == SFlag::S_IFDIR {
                if subdir.is_none() {
                    subdir = Some(child.to_vec());
                }
            } else {
                unlinkat(&fd, child, UnlinkatFlags::NoRemoveDir)?;
            }
        }
        match subdir {
            None => {
                unlinkat(parent, os(n), UnlinkatFlags::RemoveDir)?;
                stack.pop();
            }
            Some(s) => stack.push((fd, s)),
        }
    }
    Ok(())
}
