//! `gcr import`: a rootfs archive becomes a one-layer image.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use serde_json::json;

use crate::compression::ArchiveCompression;
use crate::error::{IoContext, StoreError};
use crate::index::{descriptor, oci_manifest, validate_name, ImageRecord};
use crate::ingest::LayerExpectation;
use crate::layer_writer::{Compression, LayerInfo};
use crate::store::Store;

/// The kinds of archive `import` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArchiveKind {
    Tar(ArchiveCompression),
    Zip,
}

fn detect(head: &[u8]) -> ArchiveKind {
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        ArchiveKind::Zip
    } else {
        ArchiveKind::Tar(ArchiveCompression::sniff(head))
    }
}

/// The OCI name of the host architecture.
pub(crate) fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    }
}

impl Store {
    /// Turn a rootfs archive (tar, tar.gz, tar.zst, tar.bz2, tar.xz or zip, detected by magic
    /// bytes) into a one-layer OCI image (gzip layer, config with `rootfs.diff_ids`, history
    /// "gcr import", the host's os/architecture, created now) named `name`. The archive's entries are
    /// unpacked with the same safe extraction as pulled layers.
    pub fn import_archive(&self, archive: &Path, name: &str) -> Result<ImageRecord, StoreError> {
        validate_name(name)?;
        let fail = |reason: String| StoreError::Archive {
            path: archive.to_path_buf(),
            reason,
        };
        let mut file = File::open(archive).ctx("opening", archive)?;
        let mut head = [0u8; 6];
        let mut got = 0;
        while got < head.len() {
            match file.read(&mut head[got..]).ctx("reading", archive)? {
                0 => break,
                n => got += n,
            }
        }
        if got == 0 {
            return Err(fail("the file is empty".to_string()));
        }
        file.seek(SeekFrom::Start(0)).ctx("reading", archive)?;
        let _lease = self.lease()?;
        let info = match detect(&head[..got]) {
            ArchiveKind::Zip => self.zip_to_layer(file, archive)?,
            ArchiveKind::Tar(compression) => {
                let mut tar = compression
                    .decoder(io::BufReader::new(file))
                    .map_err(|e| fail(format!("cannot decompress: {e}")))?;
                let mut writer = self.layer_writer(Compression::Gzip)?;
                io::copy(&mut tar, &mut writer)
                    .map_err(|e| fail(format!("cannot decompress: {e}")))?;
                writer.finish()?
            }
        };
        let expect = LayerExpectation {
            digest: info.digest.clone(),
            size: info.size,
            media_type: info.media_type.clone(),
            diff_id: info.diff_id.clone(),
        };
        if let Err(e) = self.ingest_layer_from_blob(&expect) {
            return Err(fail(format!("not a usable rootfs archive: {e}")));
        }
        let (manifest, config) = import_documents(&info);
        self.commit_image(&[name.to_string()], &manifest, &config)
    }

    /// Convert a zip archive into a tar layer blob.
    fn zip_to_layer(&self, file: File, archive: &Path) -> Result<LayerInfo, StoreError> {
        let fail = |reason: String| StoreError::Archive {
            path: archive.to_path_buf(),
            reason,
        };
        let mut zip = zip::ZipArchive::new(file).map_err(|e| fail(format!("bad zip: {e}")))?;
        let mut writer = self.layer_writer(Compression::Gzip)?;
        {
            let mut builder = tar::Builder::new(&mut writer);
            builder.mode(tar::HeaderMode::Complete);
            for i in 0..zip.len() {
                let mut entry = zip
                    .by_index(i)
                    .map_err(|e| fail(format!("bad zip entry {i}: {e}")))?;
                let raw_name = entry.name_raw().to_vec();
                let shown = String::from_utf8_lossy(&raw_name).into_owned();
                let name = safe_relative_name(&raw_name)
                    .ok_or_else(|| fail(format!("entry {shown:?} escapes the archive root")))?;
                if name.is_empty() {
                    continue;
                }
                let path = Path::new(OsStr::from_bytes(&name));
                let unix_mode = entry.unix_mode();
                let mtime = entry.last_modified().map(zip_time).unwrap_or(0);
                let mut header = tar::Header::new_gnu();
                header.set_uid(0);
                header.set_gid(0);
                header.set_mtime(mtime);
                let io_fail = |e: io::Error| fail(format!("entry {shown:?}: {e}"));
                if entry.is_dir() {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_mode(unix_mode.unwrap_or(0o755) & 0o7777);
                    header.set_size(0);
                    builder
                        .append_data(&mut header, path, io::empty())
                        .map_err(io_fail)?;
                } else if entry.is_symlink() {
                    let mut target = Vec::new();
                    (&mut entry)
                        .take(4096)
                        .read_to_end(&mut target)
                        .map_err(io_fail)?;
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_mode(0o777);
                    header.set_size(0);
                    builder
                        .append_link(&mut header, path, Path::new(OsStr::from_bytes(&target)))
                        .map_err(io_fail)?;
                } else {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_mode(unix_mode.unwrap_or(0o644) & 0o7777);
                    header.set_size(entry.size());
                    // Exactly the declared size: more bytes would be read as tar headers of
                    // entries the zip does not have (a parser mismatch, checklist E9).
                    let exact = ExactSize {
                        inner: &mut entry,
                        remaining: header.size().unwrap_or(0),
                    };
                    builder
                        .append_data(&mut header, path, exact)
                        .map_err(io_fail)?;
                }
            }
            builder
                .finish()
                .map_err(|e| fail(format!("writing the layer: {e}")))?;
        }
        writer.finish()
    }
}

/// Reads exactly `remaining` bytes from `inner`, failing when it holds more or fewer.
struct ExactSize<R> {
    inner: R,
    remaining: u64,
}

impl<R: Read> Read for ExactSize<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::other(
                    "the data is longer than the size the zip declares",
                )),
            };
        }
        let want = buf
            .len()
            .min(self.remaining.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 && want > 0 {
            return Err(io::Error::other(
                "the data is shorter than the size the zip declares",
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// A zip entry name made relative, or None when it has a `..` component.
fn safe_relative_name(name: &[u8]) -> Option<Vec<u8>> {
    let mut out: Vec<u8> = Vec::with_capacity(name.len());
    for c in name.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return None,
            c => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(c);
            }
        }
    }
    Some(out)
}

fn zip_time(t: zip::DateTime) -> u64 {
    chrono::NaiveDate::from_ymd_opt(t.year().into(), t.month().into(), t.day().into())
        .and_then(|d| d.and_hms_opt(t.hour().into(), t.minute().into(), t.second().into()))
        .map(|dt| dt.and_utc().timestamp())
        .and_then(|s| u64::try_from(s).ok())
        .unwrap_or(0)
}

/// The manifest and config of an imported one-layer image.
fn import_documents(layer: &LayerInfo) -> (Vec<u8>, Vec<u8>) {
    let created = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let config = json!({
        "created": created,
        "architecture": host_architecture(),
        "os": "linux",
        "config": {},
        "rootfs": { "type": "layers", "diff_ids": [layer.diff_id.as_str()] },
        "history": [ { "created": created, "created_by": "gcr import" } ],
    });
    let config = config.to_string().into_bytes();
    let layer = descriptor(&layer.media_type, &layer.digest, layer.size);
    (oci_manifest(&config, vec![layer]), config)
}
