//! Writing entries into an image root: directories made with their owner, files copied
//! (hard links kept), links and fifos made, modes, owners and mtimes set.

use std::fs::{self, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::chmod::Chmod;
use super::entry::{Entry, Kind};
use crate::fsutil::{self, open_nofollow, set_owner, Confine, ResolveError};

/// How the entries are written.
pub(crate) struct WriteOptions {
    pub chown: Option<(u32, u32)>,
    pub chmod: Option<Chmod>,
}

/// Write `entries` into the image root `root` at `dest` (absolute in the image). `dest_is_dir`
/// says whether the destination is a directory receiving entries by name.
pub(crate) fn write_entries(
    root: &Path,
    dest: &Path,
    dest_is_dir: bool,
    entries: &[Entry],
    opts: &WriteOptions,
) -> Result<(), String> {
    let dest_rel = fsutil::clean_relative(&dest.to_string_lossy()).unwrap_or_default();
    let dir_owner = opts.chown.unwrap_or((0, 0));
    let mut created = Vec::new();
    let base_dir_rel = if dest_is_dir {
        dest_rel.clone()
    } else {
        dest_rel.parent().map(Path::to_path_buf).unwrap_or_default()
    };
    fsutil::mkdir_in_root(root, &base_dir_rel, dir_owner, &mut created)
        .map_err(|e| format!("cannot create /{}: {e}", base_dir_rel.display()))?;
    let mut linked: std::collections::HashMap<(u64, u64), PathBuf> = Default::default();
    for e in entries {
        // Without a directory destination there is exactly one file: it becomes `dest`.
        let target_rel = if dest_is_dir {
            dest_rel.join(&e.rel)
        } else {
            dest_rel.clone()
        };
        let first = e.link_key.and_then(|k| linked.get(&k)).cloned();
        let written = write_one(root, &target_rel, e, opts, first.as_deref())
            .map_err(|err| format!("cannot write /{}: {err}", target_rel.display()))?;
        if let Some(k) = e.link_key {
            linked.entry(k).or_insert(written);
        }
    }
    Ok(())
}

/// Write one entry at `target_rel`; a file whose source is linked to one already written
/// (`link_to`) becomes a hard link to it. Returns the host path written.
fn write_one(
    root: &Path,
    target_rel: &Path,
    e: &Entry,
    opts: &WriteOptions,
    link_to: Option<&Path>,
) -> io::Result<PathBuf> {
    let host = match fsutil::resolve_parent(root, target_rel, Confine::InRoot) {
        Ok(p) => p,
        Err(ResolveError::NotFound) => {
            let parent = target_rel.parent().unwrap_or(Path::new(""));
            let mut created = Vec::new();
            let dir =
                fsutil::mkdir_in_root(root, parent, opts.chown.unwrap_or((0, 0)), &mut created)?;
            dir.join(target_rel.file_name().unwrap_or_default())
        }
        Err(err) => return Err(io::Error::other(err.to_string())),
    };
    let (uid, gid) = opts.chown.unwrap_or((e.uid, e.gid));
    let mode = match &opts.chmod {
        Some(chmod) => chmod.apply(e.mode, matches!(e.kind, Kind::Dir)),
        None => e.mode,
    };
    let existing = fs::symlink_metadata(&host).ok();
    match &e.kind {
        Kind::Dir => {
            let dir = match existing {
                Some(m) if m.is_dir() => host.clone(),
                Some(m) if m.file_type().is_symlink() => {
                    // A link to a directory in the image: write through it, inside the root.
                    match fsutil::resolve(root, target_rel, Confine::InRoot) {
                        Ok(p) if p.is_dir() => p,
                        _ => {
                            fs::remove_file(&host)?;
                            fs::create_dir(&host)?;
                            host.clone()
                        }
                    }
                }
                Some(_) => {
                    fs::remove_file(&host)?;
                    fs::create_dir(&host)?;
                    host.clone()
                }
                None => {
                    fs::create_dir(&host)?;
                    host.clone()
                }
            };
            set_owner(&dir, uid, gid)?;
            fs::set_permissions(&dir, fs::Permissions::from_mode(mode))?;
            set_mtime(&dir, e.mtime)?;
        }
        Kind::File if link_to.is_some() => {
            remove_non_dir(&host, existing.as_ref())?;
            if let Some(first) = link_to {
                fs::hard_link(first, &host)?;
            }
        }
        Kind::File => {
            remove_non_dir(&host, existing.as_ref())?;
            let mut out = OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW)
                .mode(0o600)
                .open(&host)?;
            if let Some(data) = &e.data {
                io::Write::write_all(&mut out, data)?;
            } else if let Some(src) = &e.src {
                let mut input = open_nofollow(src)?;
                io::copy(&mut input, &mut out)?;
            }
            set_owner(&host, uid, gid)?;
            out.set_permissions(fs::Permissions::from_mode(mode))?;
            out.set_modified(system_time(e.mtime))?;
        }
        Kind::Symlink(target) => {
            remove_non_dir(&host, existing.as_ref())?;
            std::os::unix::fs::symlink(target, &host)?;
            set_owner(&host, uid, gid)?;
            set_mtime(&host, e.mtime)?;
        }
        Kind::Fifo => {
            remove_non_dir(&host, existing.as_ref())?;
            nix::unistd::mkfifo(&host, nix::sys::stat::Mode::from_bits_truncate(mode))?;
            set_owner(&host, uid, gid)?;
        }
    }
    Ok(host)
}

fn remove_non_dir(host: &Path, existing: Option<&Metadata>) -> io::Result<()> {
    match existing {
        Some(m) if m.is_dir() => Err(io::Error::other(
            "a directory is in the way; cannot replace it with a file",
        )),
        Some(_) => fs::remove_file(host),
        None => Ok(()),
    }
}

fn system_time(secs: i64) -> std::time::SystemTime {
    if secs >= 0 {
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs as u64)
    } else {
        std::time::UNIX_EPOCH
    }
}

fn set_mtime(path: &Path, secs: i64) -> io::Result<()> {
    let t = nix::sys::time::TimeSpec::new(secs, 0);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .map_err(io::Error::from)
}
