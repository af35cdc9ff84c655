//! Creating entries: regular files (sparse, within the layer's byte budget), directories,
//! hardlinks, symlinks, devices and fifos, and OverlayFS whiteouts and opaque markers.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::OwnedFd;

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{
    fchmodat, fstatat, futimens, makedev, mkdirat, mknodat, FchmodatFlags, Mode, SFlag,
};
use nix::unistd::{linkat, mkfifoat, symlinkat};
use xattr::FileExt;

use super::metadata::{xattr_ignorable, Meta};
use super::{
    file_type, io_err, io_err_io, lossy, normalize, os, split_last, UnpackError, Unpacker,
    MAX_LAYER_SIZE_ENV,
};

impl Unpacker<'_> {
    pub(super) fn regular<R: Read>(
        &mut self,
        dir: &OwnedFd,
        last: &[u8],
        entry: &mut tar::Entry<'_, R>,
        meta: &Meta,
        name: &[u8],
    ) -> Result<(), UnpackError> {
        let fd = openat(
            dir,
            os(last),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| io_err("creating", name, e))?;
        let mut file = File::from(fd);
        let budget = self.budget;
        let (written, on_disk) = copy_sparse(entry, &mut file, budget).map_err(|e| match e {
            CopyError::Read(source) => UnpackError::Read { source },
            CopyError::Write(e) => io_err_io("writing", name, e),
            CopyError::Budget => UnpackError::Entry {
                entry: lossy(name),
                reason: format!(
                    "the layer writes more than {budget} bytes, the cap set by {}: refused as a possible decompression bomb (raise {MAX_LAYER_SIZE_ENV} or free disk space)",
                    self.budget_reason
                ),
            },
        })?;
        self.budget -= on_disk;
        self.stats.bytes = self.stats.bytes.saturating_add(written);
        self.set_metadata(&file, meta, name)?;
        futimens(&file, &meta.mtime, &meta.mtime)
            .map_err(|e| io_err("setting times of", name, e))?;
        Ok(())
    }

    pub(super) fn directory(
        &mut self,
        dir: &OwnedFd,
        comps: &[u8],
        meta: &Meta,
        name: &[u8],
    ) -> Result<(), UnpackError> {
        let Some((_, last)) = split_last(comps) else {
            return Ok(());
        };
        let exists = self.make_room(dir, last, name, true)?;
        if !exists {
            mkdirat(dir, os(last), Mode::from_bits_truncate(0o700))
                .map_err(|e| io_err("creating directory", name, e))?;
        }
        // O_NOFOLLOW: if something swapped a symlink in, this fails instead of following it.
        let fd = openat(
            dir,
            os(last),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_err("opening directory", name, e))?;
        let file = File::from(fd);
        self.set_metadata(&file, meta, name)?;
        // Children usually follow their directory: remember it.
        let path_fd = openat(
            &file,
            ".",
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_err("opening directory", name, e))?;
        self.remember(comps.to_vec(), &path_fd, name)
    }

    pub(super) fn symlink(
        &mut self,
        parent: &[u8],
        last: &[u8],
        target: &[u8],
        meta: &Meta,
        name: &[u8],
    ) -> Result<(), UnpackError> {
        if target.is_empty() {
            return Err(UnpackError::Entry {
                entry: lossy(name),
                reason: "symlink with an empty target".to_string(),
            });
        }
        let dir = self.resolve_parent(parent, name)?;
        self.make_room(&dir, last, name, false)?;
        symlinkat(os(target), &dir, os(last)).map_err(|e| io_err("symlink", name, e))?;
        self.lchown(&dir, last, meta, name)?;
        self.set_times_nofollow(&dir, last, meta);
        Ok(())
    }

    pub(super) fn hardlink(
        &mut self,
        parent: &[u8],
        last: &[u8],
        target: &[u8],
        name: &[u8],
    ) -> Result<(), UnpackError> {
        let bad = |reason: String| UnpackError::Entry {
            entry: lossy(name),
            reason,
        };
        let tpath = normalize(target)
            .map_err(|r| bad(format!("hardlink target {:?}: {r}", lossy(target))))?;
        let Some((tparent, tlast)) = split_last(&tpath) else {
            return Err(bad("hardlink with an empty target".to_string()));
        };
        let tdir = self.resolve_dir(tparent, false, name).map_err(|_| {
            bad(format!(
                "hardlink target {:?} is not in this layer",
                lossy(target)
            ))
        })?;
        let tst = match fstatat(&tdir, os(tlast), nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => {
                return Err(bad(format!(
                    "hardlink target {:?} is not in this layer",
                    lossy(target)
                )))
            }
            Err(e) => return Err(io_err("stat hardlink target of", name, e)),
        };
        if file_type(tst) == SFlag::S_IFDIR {
            return Err(bad(format!(
                "hardlink target {:?} is a directory",
                lossy(target)
            )));
        }
        let dir = self.resolve_parent(parent, name)?;
        if let Ok(st) = fstatat(&dir, os(last), nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
            if st.st_ino == tst.st_ino && st.st_dev == tst.st_dev {
                return Ok(());
            }
        }
        self.make_room(&dir, last, name, false)?;
        linkat(
            &tdir,
            os(tlast),
            &dir,
            os(last),
            nix::fcntl::AtFlags::empty(),
        )
        .map_err(|e| io_err("hardlinking", name, e))
    }

    pub(super) fn special<R: Read>(
        &mut self,
        kind: tar::EntryType,
        parent: &[u8],
        last: &[u8],
        entry: &mut tar::Entry<'_, R>,
        meta: &Meta,
        name: &[u8],
    ) -> Result<(), UnpackError> {
        let is_device = kind != tar::EntryType::Fifo;
        if is_device && !self.opts.create_devices {
            tracing::debug!(entry = %lossy(name), "skipping device node: not root in the initial user namespace");
            self.stats.skipped_devices += 1;
            return Ok(());
        }
        let dir = self.resolve_parent(parent, name)?;
        self.make_room(&dir, last, name, false)?;
        let perm = Mode::from_bits_truncate(0o600);
        if is_device {
            let header = entry.header();
            let major = header.device_major().ok().flatten().unwrap_or(0);
            let minor = header.device_minor().ok().flatten().unwrap_or(0);
            let sflag = if kind == tar::EntryType::Char {
                SFlag::S_IFCHR
            } else {
                SFlag::S_IFBLK
            };
            mknodat(
                &dir,
                os(last),
                sflag,
                perm,
                makedev(major.into(), minor.into()),
            )
            .map_err(|e| io_err("creating device", name, e))?;
        } else {
            mkfifoat(&dir, os(last), perm).map_err(|e| io_err("creating fifo", name, e))?;
        }
        self.lchown(&dir, last, meta, name)?;
        // Just created in our private directory and checked not to be a symlink by O_EXCL-like
        // mknod semantics, so following is safe here (fchmodat cannot skip symlinks portably).
        fchmodat(
            &dir,
            os(last),
            Mode::from_bits_truncate(meta.mode),
            FchmodatFlags::FollowSymlink,
        )
        .map_err(|e| io_err("chmod", name, e))?;
        self.set_times_nofollow(&dir, last, meta);
        Ok(())
    }

    pub(super) fn whiteout(
        &mut self,
        parent: &[u8],
        hidden: &[u8],
        name: &[u8],
    ) -> Result<(), UnpackError> {
        let bad = |reason: &str| UnpackError::Entry {
            entry: lossy(name),
            reason: reason.to_string(),
        };
        if hidden == b".wh..opq" {
            let dir = self.resolve_parent(parent, name)?;
            let file = self.reopen_dir(&dir, name)?;
            let mut marked = false;
            for key in ["trusted.overlay.opaque", "user.overlay.opaque"] {
                match file.set_xattr(key, b"y") {
                    Ok(()) => marked = true,
                    Err(e) if xattr_ignorable(&e) => {
                        tracing::debug!(entry = %lossy(name), xattr = key, error = %e, "cannot set opaque marker")
                    }
                    Err(e) => return Err(io_err_io("marking opaque", name, e)),
                }
            }
            if !marked {
                return Err(bad("the filesystem supports neither trusted.* nor user.* xattrs, so an opaque directory cannot be marked"));
            }
            return Ok(());
        }
        if hidden.starts_with(b".wh.") {
            tracing::debug!(entry = %lossy(name), "skipping AUFS metadata entry");
            return Ok(());
        }
        if hidden.is_empty() || hidden == b"." || hidden == b".." {
            return Err(bad("malformed whiteout"));
        }
        let dir = self.resolve_parent(parent, name)?;
        match fstatat(&dir, os(hidden), nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
            // The layer itself has this name: a whiteout only hides lower layers, and the
            // layer's own entry already does that.
            Ok(_) => return Ok(()),
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(io_err("stat", name, e)),
        }
        mknodat(
            &dir,
            os(hidden),
            SFlag::S_IFCHR,
            Mode::empty(),
            makedev(0, 0),
        )
        .map_err(|e| io_err("creating whiteout", name, e))
    }
}

enum CopyError {
    Read(io::Error),
    Write(io::Error),
    /// More than the budget of bytes on disk.
    Budget,
}

/// Copy an entry's data, turning runs of zero blocks into holes, writing at most `budget`
/// bytes. Returns the logical size and the bytes written (holes excluded).
fn copy_sparse(src: &mut dyn Read, dst: &mut File, budget: u64) -> Result<(u64, u64), CopyError> {
    const CHUNK: usize = 64 * 1024;
    let mut buf = vec![0u8; CHUNK];
    let mut total: u64 = 0;
    let mut on_disk: u64 = 0;
    let mut pending_hole = false;
    loop {
        let mut filled = 0;
        while filled < CHUNK {
            match src.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(CopyError::Read(e)),
            }
        }
        if filled == 0 {
            break;
        }
        let chunk = &buf[..filled];
        if filled == CHUNK && chunk.iter().all(|&b| b == 0) {
            dst.seek(SeekFrom::Current(CHUNK as i64))
                .map_err(CopyError::Write)?;
            pending_hole = true;
        } else {
            on_disk += filled as u64;
            if on_disk > budget {
                return Err(CopyError::Budget);
            }
            dst.write_all(chunk).map_err(CopyError::Write)?;
            pending_hole = false;
        }
        total += filled as u64;
        if filled < CHUNK {
            break;
        }
    }
    if pending_hole {
        dst.set_len(total).map_err(CopyError::Write)?;
    }
    Ok((total, on_disk))
}
