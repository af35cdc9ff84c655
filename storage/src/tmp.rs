//! Temporary work directories under `ROOT/tmp` and the flock-based liveness that lets a later
//! process tell a stale entry (its owner died) from a live one.
//!
//! An entry is a directory `tmp/<id>` plus a lock file `tmp/<id>.lock`. The owner creates and
//! flocks the lock file *before* creating the directory and holds the lock until the entry is
//! gone; the kernel drops the lock when the owner dies. A sweeper removes a directory only when
//! it can take that lock itself (or the lock file is missing), so it never deletes a live entry.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use rand::Rng;

use crate::error::{IoContext, StoreError};

/// An exclusive flock on a file, released on drop.
pub(crate) struct FileLock {
    _lock: Flock<File>,
}

/// Opens `path` for locking, creating it if needed.
fn open_lock_file(path: &Path) -> Result<File, StoreError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .ctx("opening lock file", path)
}

/// Open (creating if needed) `path` and flock it, blocking. When `exclusive` is false the lock
/// is shared.
pub(crate) fn lock_file(path: &Path, exclusive: bool) -> Result<FileLock, StoreError> {
    let file = open_lock_file(path)?;
    let arg = if exclusive {
        FlockArg::LockExclusive
    } else {
        FlockArg::LockShared
    };
    let lock = Flock::lock(file, arg)
        .map_err(|(_, errno)| StoreError::io("locking", path, io::Error::from(errno)))?;
    Ok(FileLock { _lock: lock })
}

/// Try to flock `path` without blocking; `Ok(None)` when someone else holds it.
pub(crate) fn try_lock_file(path: &Path, exclusive: bool) -> Result<Option<FileLock>, StoreError> {
    let file = match OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        // Nobody can hold a lock on a file that does not exist; create it and lock.
        Err(e) if e.kind() == io::ErrorKind::NotFound => open_lock_file(path)?,
        Err(e) => return Err(StoreError::io("opening lock file", path, e)),
    };
    let arg = if exclusive {
        FlockArg::LockExclusiveNonblock
    } else {
        FlockArg::LockSharedNonblock
    };
    match Flock::lock(file, arg) {
        Ok(lock) => Ok(Some(FileLock { _lock: lock })),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, errno)) => Err(StoreError::io("locking", path, io::Error::from(errno))),
    }
}

/// A live temporary directory under `ROOT/tmp`, removed on drop unless its content was moved
/// away.
pub(crate) struct TmpDir {
    dir: PathBuf,
    lock_path: PathBuf,
    lock: Option<Flock<File>>,
}

impl TmpDir {
    /// Create a fresh entry `tmp/<purpose>-<random>` in `tmp_root`.
    pub(crate) fn create(tmp_root: &Path, purpose: &str) -> Result<TmpDir, StoreError> {
        loop {
            let id: u64 = rand::rng().random();
            let name = format!("{purpose}-{}-{id:016x}", std::process::id());
            let dir = tmp_root.join(&name);
            let lock_path = tmp_root.join(format!("{name}.lock"));
            let file = match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_CLOEXEC)
                .open(&lock_path)
            {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(StoreError::io("creating", lock_path, e)),
            };
            let lock = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| {
                StoreError::io("locking", &lock_path, io::Error::from(errno))
            })?;
            // A sweeper may have taken and unlinked the file between our create and our lock;
            // then we hold a lock on an orphan inode: start over.
            let ours = lock.metadata().ctx("stat", &lock_path)?;
            match fs::symlink_metadata(&lock_path) {
                Ok(m) if m.ino() == ours.ino() && m.dev() == ours.dev() => {}
                _ => continue,
            }
            match fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(StoreError::io("creating", dir, e)),
            }
            return Ok(TmpDir {
                dir,
                lock_path,
                lock: Some(lock),
            });
        }
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        if let Err(e) = remove_any(&self.dir) {
            tracing::warn!(path = %self.dir.display(), error = %e, "removing temporary directory");
        }
        let _ = fs::remove_file(&self.lock_path);
        self.lock.take();
    }
}

/// Remove a file, symlink or directory tree; a missing path is fine. Never follows symlinks.
pub(crate) fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Remove every entry of `tmp_root` whose owner is gone. Returns the paths removed.
pub(crate) fn sweep(tmp_root: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let mut removed = Vec::new();
    let entries = match fs::read_dir(tmp_root) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(StoreError::io("reading", tmp_root, e)),
    };
    let mut names: Vec<_> = Vec::new();
    for entry in entries {
        let entry = entry.ctx("reading", tmp_root)?;
        names.push(entry.file_name());
    }
    for name in &names {
        let name_str = name.to_string_lossy();
        if name_str.ends_with(".lock") {
            continue;
        }
        let path = tmp_root.join(name);
        let lock_path = tmp_root.join(format!("{name_str}.lock"));
        // A directory without a lock file is dead: the owner creates the lock before the
        // directory. Otherwise it is dead when we can take its lock.
        let held = if lock_path.exists() {
            match try_lock_file(&lock_path, true) {
                Ok(Some(lock)) => Some(Some(lock)),
                Ok(None) => None,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot check temporary entry");
                    None
                }
            }
        } else {
            Some(None)
        };
        let Some(_held) = held else { continue };
        // Failing to delete (e.g. files owned by IDs this process cannot touch) must not make
        // the store unusable: warn and leave it for a later sweep.
        match remove_any(&path) {
            Ok(()) => {
                let _ = fs::remove_file(&lock_path);
                removed.push(path);
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove stale temporary entry")
            }
        }
    }
    // Lock files whose directory is gone and whose owner is gone.
    for name in &names {
        let name_str = name.to_string_lossy();
        let Some(stem) = name_str.strip_suffix(".lock") else {
            continue;
        };
        let dir = tmp_root.join(stem);
        let lock_path = tmp_root.join(name);
        if dir.exists() || !lock_path.exists() {
            continue;
        }
        if let Ok(Some(_held)) = try_lock_file(&lock_path, true) {
            if !dir.exists() {
                let _ = fs::remove_file(&lock_path);
            }
        }
    }
    Ok(removed)
}
