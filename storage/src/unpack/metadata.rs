//! Entry metadata: owner (recorded in `user.gcr.owner` when it cannot be set), mode, xattrs
//! (the reserved ones dropped), times (directories' applied last).

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fchmod, futimens, Mode, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, Gid, Uid};
use xattr::FileExt;

use super::{io_err, io_err_io, lossy, os, split_last, UnpackError, Unpacker, OWNER_XATTR};

/// Is `e` the errno of a missing permission to chown (a single-ID user namespace, an unmapped
/// ID)?
fn chown_refused(e: Errno) -> bool {
    matches!(e, Errno::EPERM | Errno::EINVAL)
}

pub(super) fn xattr_ignorable(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error().map(Errno::from_raw),
        Some(Errno::ENOTSUP) | Some(Errno::EPERM) | Some(Errno::EACCES)
    )
}

/// Xattrs an image may not set: overlay's own (they would change what the mount shows), gcr's
/// owner record, and SELinux labels (the host's policy decides those).
fn xattr_allowed(name: &[u8]) -> bool {
    !(name.starts_with(b"trusted.overlay.")
        || name.starts_with(b"user.overlay.")
        || name.starts_with(b"user.gcr.")
        || name == b"security.selinux")
}

/// Metadata of one entry.
pub(super) struct Meta {
    pub(super) uid: u64,
    pub(super) gid: u64,
    pub(super) mode: u32,
    pub(super) mtime: TimeSpec,
    pub(super) xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Unpacker<'_> {
    pub(super) fn meta<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        name: &[u8],
    ) -> Result<Meta, UnpackError> {
        let header = entry.header();
        let bad = |what: &str, e: io::Error| UnpackError::Entry {
            entry: lossy(name),
            reason: format!("bad {what} field: {e}"),
        };
        let uid = header.uid().map_err(|e| bad("uid", e))?;
        let gid = header.gid().map_err(|e| bad("gid", e))?;
        let mode = header.mode().map_err(|e| bad("mode", e))? & 0o7777;
        let mut mtime = TimeSpec::new(
            i64::try_from(header.mtime().map_err(|e| bad("mtime", e))?).unwrap_or(0),
            0,
        );
        let mut xattrs = Vec::new();
        if let Some(pax) = entry
            .pax_extensions()
            .map_err(|source| UnpackError::Read { source })?
        {
            for ext in pax {
                let ext = ext.map_err(|source| UnpackError::Read { source })?;
                let key = ext.key_bytes();
                if let Some(xname) = key.strip_prefix(b"SCHILY.xattr.") {
                    if xattr_allowed(xname) {
                        xattrs.push((xname.to_vec(), ext.value_bytes().to_vec()));
                    } else {
                        tracing::debug!(entry = %lossy(name), xattr = %lossy(xname), "dropping reserved xattr from image");
                    }
                } else if key == b"mtime" {
                    if let Some(t) = parse_pax_time(ext.value_bytes()) {
                        mtime = t;
                    }
                }
            }
        }
        Ok(Meta {
            uid,
            gid,
            mode,
            mtime,
            xattrs,
        })
    }

    /// chown (or record the owner), then chmod (chown clears setuid bits), then xattrs.
    pub(super) fn set_metadata(
        &self,
        file: &File,
        meta: &Meta,
        name: &[u8],
    ) -> Result<(), UnpackError> {
        match fchown(
            file,
            Some(Uid::from_raw(id32(meta.uid))),
            Some(Gid::from_raw(id32(meta.gid))),
        ) {
            Ok(()) => {}
            Err(e) if chown_refused(e) => {
                let owner = format!("{}:{}", meta.uid, meta.gid);
                if let Err(e) = file.set_xattr(OWNER_XATTR, owner.as_bytes()) {
                    tracing::debug!(entry = %lossy(name), error = %e, "cannot record owner");
                }
            }
            Err(e) => return Err(io_err("chown", name, e)),
        }
        fchmod(file, Mode::from_bits_truncate(meta.mode)).map_err(|e| io_err("chmod", name, e))?;
        for (key, value) in &meta.xattrs {
            if let Err(e) = file.set_xattr(os(key), value) {
                if xattr_ignorable(&e) {
                    tracing::debug!(entry = %lossy(name), xattr = %lossy(key), error = %e, "xattr not applied");
                } else {
                    return Err(io_err_io("setting xattr on", name, e));
                }
            }
        }
        Ok(())
    }

    pub(super) fn lchown(
        &self,
        dir: &OwnedFd,
        last: &[u8],
        meta: &Meta,
        name: &[u8],
    ) -> Result<(), UnpackError> {
        match fchownat(
            dir,
            os(last),
            Some(Uid::from_raw(id32(meta.uid))),
            Some(Gid::from_raw(id32(meta.gid))),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(()) => Ok(()),
            Err(e) if chown_refused(e) => {
                // user.* xattrs are not allowed on symlinks and device nodes.
                tracing::debug!(entry = %lossy(name), uid = meta.uid, gid = meta.gid, "owner cannot be set or recorded");
                Ok(())
            }
            Err(e) => Err(io_err("chown", name, e)),
        }
    }

    /// The times of `dir/last` itself (a symlink is not followed); best effort, as not every
    /// file system can set them on every kind of entry.
    pub(super) fn set_times_nofollow(&self, dir: &OwnedFd, last: &[u8], meta: &Meta) {
        let _ = nix::sys::stat::utimensat(
            dir,
            os(last),
            &meta.mtime,
            &meta.mtime,
            UtimensatFlags::NoFollowSymlink,
        );
    }

    /// Apply the deferred directory mtimes, in entry order so that the cache finds each
    /// directory's parent.
    pub(super) fn finish(&mut self) {
        self.cache.clear();
        let times = std::mem::take(&mut self.dir_times);
        for (path, mtime) in &times {
            let result = match split_last(path) {
                None => futimens(&self.root, mtime, mtime),
                Some((parent, last)) => {
                    let Ok(dir) = self.resolve_cached(parent, false, b"") else {
                        continue;
                    };
                    if let Ok(fd) = openat(
                        &dir,
                        os(last),
                        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                        Mode::empty(),
                    ) {
                        let _ = self.remember(path.clone(), &fd, b"");
                    }
                    nix::sys::stat::utimensat(
                        &dir,
                        os(last),
                        mtime,
                        mtime,
                        UtimensatFlags::NoFollowSymlink,
                    )
                }
            };
            if let Err(e) = result {
                tracing::debug!(dir = %lossy(path), error = %e, "cannot set directory mtime");
            }
        }
    }
}

/// Tar IDs are 64-bit; anything beyond u32 cannot exist on Linux and is clamped to
/// "nobody"-like u32::MAX - 1, which chown will refuse (then it is recorded).
fn id32(id: u64) -> u32 {
    u32::try_from(id).unwrap_or(u32::MAX - 1)
}

fn parse_pax_time(v: &[u8]) -> Option<TimeSpec> {
    let s = std::str::from_utf8(v).ok()?;
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().ok()?;
    let mut nanos: i64 = 0;
    if !frac.is_empty() {
        let digits: String = frac.chars().take(9).collect();
        let padded = format!("{digits:0<9}");
        nanos = padded.parse().ok()?;
        if secs < 0 && nanos > 0 {
            return Some(TimeSpec::new(secs.checked_sub(1)?, 1_000_000_000 - nanos));
        }
    }
    Some(TimeSpec::new(secs, nanos))
}
