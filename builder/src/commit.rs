//! Committing an upper dir as a layer: one walk in name order writes the tar (overlay
//! whiteouts and opaque markers turned into `.wh.` entries) through the store's
//! [`gcr_storage::LayerWriter`], which compresses and hashes blob and diff_id in the same pass.
//! The upper dir itself then becomes the unpacked layer.

use std::collections::HashMap;
use std::fs::{self, File, Metadata};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use gcr_storage::{Compression, LayerInfo, Store};

use crate::error::{io_fail, StepFailure, StepResult};

/// Xattrs that describe the overlay or gcr's bookkeeping, never image content.
fn internal_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.")
        || name.starts_with(b"user.overlay.")
        || name.starts_with(b"user.gcr.")
        || name == b"security.selinux"
}

fn is_opaque(path: &Path) -> bool {
    ["trusted.overlay.opaque", "user.overlay.opaque"]
        .iter()
        .any(|name| matches!(xattr::get(path, name), Ok(Some(v)) if v == b"y"))
}

/// The owner to record: the `user.gcr.owner` xattr (an owner the store could not set) or the
/// file's own.
pub(crate) fn owner_of(path: &Path, meta: &Metadata) -> (u64, u64) {
    if let Ok(Some(v)) = xattr::get(path, gcr_storage::unpack::OWNER_XATTR) {
        if let Some((u, g)) = std::str::from_utf8(&v).ok().and_then(|s| s.split_once(':')) {
            if let (Ok(u), Ok(g)) = (u.parse(), g.parse()) {
                return (u, g);
            }
        }
    }
    (u64::from(meta.uid()), u64::from(meta.gid()))
}

/// `gcr diff`: what an overlay upper dir changes over its lower layers (any order), as Docker
/// lists it: `A` added, `C` changed, `D` deleted, sorted by path. Everything beneath an added
/// or opaque directory is added.
pub fn changes_in_upper(upper: &Path, lower: &[PathBuf]) -> io::Result<Vec<(char, String)>> {
    let mut out = Vec::new();
    changes_below(upper, Path::new(""), lower, false, &mut out)?;
    out.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(out)
}

fn changes_below(
    dir: &Path,
    rel: &Path,
    lower: &[PathBuf],
    all_new: bool,
    out: &mut Vec<(char, String)>,
) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let rel = rel.join(entry.file_name());
        let meta = fs::symlink_metadata(&path)?;
        let shown = format!("/{}", rel.display());
        // An overlay whiteout: a character device 0:0.
        if meta.file_type().is_char_device() && meta.rdev() == 0 {
            out.push(('D', shown));
            continue;
        }
        let existed = !all_new
            && lower
                .iter()
                .any(|l| fs::symlink_metadata(l.join(&rel)).is_ok());
        out.push((if existed { 'C' } else { 'A' }, shown));
        if meta.is_dir() {
            let fresh = all_new || !existed || is_opaque(&path);
            changes_below(&path, &rel, lower, fresh, out)?;
        }
    }
    Ok(())
}

/// True when the upper dir holds no change at all.
pub(crate) fn is_empty_dir(dir: &Path) -> bool {
    fs::read_dir(dir)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true)
}

struct Walk<'a, W: Write> {
    tar: tar::Builder<W>,
    clamp: Option<i64>,
    links: HashMap<(u64, u64), String>,
    size: u64,
    root: &'a Path,
}

impl<W: Write> Walk<'_, W> {
    fn mtime(&self, meta: &Metadata) -> u64 {
        let t = meta.mtime();
        let t = match self.clamp {
            Some(c) if t > c => c,
            _ => t,
        };
        t.max(0) as u64
    }

    fn header(&self, path: &Path, meta: &Metadata, kind: tar::EntryType) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(meta.mode() & 0o7777);
        let (uid, gid) = owner_of(path, meta);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_mtime(self.mtime(meta));
        h.set_size(0);
        h
    }

    fn xattrs(&mut self, path: &Path) -> io::Result<()> {
        let Ok(names) = xattr::list(path) else {
            return Ok(());
        };
        let mut records: Vec<(String, Vec<u8>)> = Vec::new();
        for name in names {
            let bytes = name.as_bytes();
            if internal_xattr(bytes) {
                continue;
            }
            if let Ok(Some(value)) = xattr::get(path, &name) {
                records.push((
                    format!("SCHILY.xattr.{}", String::from_utf8_lossy(bytes)),
                    value,
                ));
            }
        }
        if records.is_empty() {
            return Ok(());
        }
        records.sort();
        self.tar
            .append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
    }

    fn entry(&mut self, path: &Path, name: &str) -> io::Result<()> {
        let meta = fs::symlink_metadata(path)?;
        let ft = meta.file_type();
        if ft.is_char_device() && meta.rdev() == 0 {
            // An overlay whiteout: `.wh.NAME` in the tar, kept as is on disk.
            let (dir, base) = match name.rsplit_once('/') {
                Some((d, b)) => (format!("{d}/"), b),
                None => (String::new(), name),
            };
            let mut h = self.header(path, &meta, tar::EntryType::Regular);
            h.set_mode(0);
            return self
                .tar
                .append_data(&mut h, format!("{dir}.wh.{base}"), io::empty());
        }
        if ft.is_dir() {
            self.xattrs(path)?;
            let mut h = self.header(path, &meta, tar::EntryType::Directory);
            self.tar
                .append_data(&mut h, format!("{name}/"), io::empty())?;
            if is_opaque(path) {
                let mut w = self.header(path, &meta, tar::EntryType::Regular);
                w.set_mode(0);
                self.tar
                    .append_data(&mut w, format!("{name}/.wh..wh..opq"), io::empty())?;
            }
            let mut children: Vec<_> = fs::read_dir(path)?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<io::Result<_>>()?;
            children.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            for child in children {
                let child_name = format!("{name}/{}", child.to_string_lossy());
                self.entry(&path.join(&child), &child_name)?;
            }
            return Ok(());
        }
        if ft.is_file() && meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = self.links.get(&key) {
                let mut h = self.header(path, &meta, tar::EntryType::Link);
                let first = first.clone();
                return self.tar.append_link(&mut h, name, first);
            }
            self.links.insert(key, name.to_string());
        }
        self.xattrs(path)?;
        if ft.is_file() {
            let mut h = self.header(path, &meta, tar::EntryType::Regular);
            h.set_size(meta.len());
            self.size += meta.len();
            let file = File::open(path)?;
            self.tar.append_data(&mut h, name, file)
        } else if ft.is_symlink() {
            let target = fs::read_link(path)?;
            let mut h = self.header(path, &meta, tar::EntryType::Symlink);
            self.tar.append_link(&mut h, name, target)
        } else if ft.is_fifo() {
            let mut h = self.header(path, &meta, tar::EntryType::Fifo);
            self.tar.append_data(&mut h, name, io::empty())
        } else if ft.is_char_device() || ft.is_block_device() {
            let kind = if ft.is_char_device() {
                tar::EntryType::Char
            } else {
                tar::EntryType::Block
            };
            let mut h = self.header(path, &meta, kind);
            let rdev = meta.rdev();
            h.set_device_major(nix::sys::stat::major(rdev) as u32)?;
            h.set_device_minor(nix::sys::stat::minor(rdev) as u32)?;
            self.tar.append_data(&mut h, name, io::empty())
        } else {
            // Sockets do not belong in layers.
            tracing::debug!(path = %self.root.join(name).display(), "skipping socket");
            Ok(())
        }
    }
}

/// What committing an upper dir produced.
pub(crate) struct Committed {
    pub info: LayerInfo,
}

/// Tar `upper` into a new layer blob and move `upper` into place as the unpacked layer.
pub(crate) fn commit_upper(
    store: &Store,
    upper: &Path,
    compression: Compression,
    clamp: Option<i64>,
) -> StepResult<Committed> {
    let (info, size) = tar_upper(store, upper, compression, clamp)?;
    store
        .place_layer_dir(upper, &info.diff_id, size)
        .map_err(StepFailure::from)?;
    // The blob was written from this tree: a pull of the same pair needs no check.
    store
        .record_layer_source(&info.digest, &info.diff_id)
        .map_err(StepFailure::from)?;
    Ok(Committed { info })
}

/// A layer blob of the changes in an overlay upper dir that stays where it is (a running or
/// stopped container's, for `gcr commit`); `None` when it holds no change. The caller unpacks
/// the blob into the store (`Store::ingest_layer_from_blob`).
pub fn layer_from_upper(
    store: &Store,
    upper: &Path,
    compression: Compression,
) -> Result<Option<LayerInfo>, crate::BuildError> {
    if is_empty_dir(upper) {
        return Ok(None);
    }
    tar_upper(store, upper, compression, None)
        .map(|(info, _)| Some(info))
        .map_err(|e| {
            crate::BuildError::Options(match e {
                StepFailure::Message(message) => {
                    format!("committing {}: {message}", upper.display())
                }
                StepFailure::Exit(code) => {
                    format!("committing {}: status {code}", upper.display())
                }
            })
        })
}

/// The walk and the blob: the layer's info and the bytes of its content.
fn tar_upper(
    store: &Store,
    upper: &Path,
    compression: Compression,
    clamp: Option<i64>,
) -> StepResult<(LayerInfo, u64)> {
    let writer = store.layer_writer(compression)?;
    let mut walk = Walk {
        tar: tar::Builder::new(writer),
        clamp,
        links: HashMap::new(),
        size: 0,
        root: upper,
    };
    walk.tar.mode(tar::HeaderMode::Complete);
    let mut children: Vec<_> = fs::read_dir(upper)
        .map_err(|e| io_fail("reading", upper, e))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()
        .map_err(|e| io_fail("reading", upper, e))?;
    children.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    for child in children {
        let name = child.to_string_lossy().into_owned();
        walk.entry(&upper.join(&child), &name)
            .map_err(|e| io_fail("adding to the layer", &upper.join(&child), e))?;
    }
    let size = walk.size;
    let writer = walk
        .tar
        .into_inner()
        .map_err(|e| io_fail("finishing the layer tar of", upper, e))?;
    let info = writer.finish()?;
    Ok((info, size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn entries(store: &Store, info: &LayerInfo) -> Vec<(String, tar::EntryType, u64, u64)> {
        let file = File::open(store.blob_path(&info.digest)).unwrap();
        let mut archive = tar::Archive::new(flate2::read::MultiGzDecoder::new(file));
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    h.entry_type(),
                    h.mtime().unwrap(),
                    h.uid().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn upper_dir_becomes_a_layer_with_whiteouts_in_tar_form() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path().join("store")).unwrap();
        let work = store.build_dir("test").unwrap();
        let upper = work.path().join("upper");
        fs::create_dir_all(upper.join("dir/opaque")).unwrap();
        fs::write(upper.join("dir/file"), b"data").unwrap();
        fs::hard_link(upper.join("dir/file"), upper.join("dir/hard")).unwrap();
        std::os::unix::fs::symlink("file", upper.join("dir/link")).unwrap();
        fs::set_permissions(upper.join("dir/file"), fs::Permissions::from_mode(0o4755)).unwrap();
        xattr::set(upper.join("dir/opaque"), "user.overlay.opaque", b"y").unwrap();
        xattr::set(upper.join("dir/file"), "user.gcr.owner", b"1234:5678").unwrap();
        let is_root = nix::unistd::geteuid().is_root();
        if is_root {
            nix::sys::stat::mknod(
                &upper.join("dir/gone"),
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::empty(),
                0,
            )
            .unwrap();
        }
        let committed = commit_upper(&store, &upper, Compression::Gzip, Some(1000)).unwrap();
        let info = committed.info;
        assert!(store.has_layer(&info.diff_id));
        assert!(!upper.exists(), "the upper dir moved into the store");
        let layer = store.layer_dir(&info.diff_id);
        assert_eq!(fs::read(layer.join("dir/file")).unwrap(), b"data");
        let list = entries(&store, &info);
        let names: Vec<&str> = list.iter().map(|(n, ..)| n.as_str()).collect();
        let mut expected = vec!["dir/", "dir/file"];
        if is_root {
            expected.push("dir/.wh.gone");
        }
        expected.extend([
            "dir/hard",
            "dir/link",
            "dir/opaque/",
            "dir/opaque/.wh..wh..opq",
        ]);
        assert_eq!(names, expected);
        for (name, kind, mtime, uid) in &list {
            assert!(*mtime <= 1000, "{name} mtime not clamped");
            match name.as_str() {
                "dir/hard" => assert_eq!(*kind, tar::EntryType::Link),
                "dir/link" => assert_eq!(*kind, tar::EntryType::Symlink),
                "dir/file" => assert_eq!(*uid, 1234, "recorded owner used"),
                _ => {}
            }
        }
        // Same input, same digests.
        let upper2 = work.path().join("upper2");
        fs::create_dir_all(upper2.join("a")).unwrap();
        fs::write(upper2.join("a/f"), b"x").unwrap();
        let one = commit_upper(&store, &upper2, Compression::Zstd, Some(5)).unwrap();
        fs::create_dir_all(upper2.join("a")).unwrap();
        fs::write(upper2.join("a/f"), b"x").unwrap();
        let two = commit_upper(&store, &upper2, Compression::Zstd, Some(5)).unwrap();
        assert_eq!(one.info.digest, two.info.digest);
        assert_eq!(one.info.media_type, gcr_storage::OCI_LAYER_ZSTD);
    }
}
