//! Writing a layer: tar bytes in, compressed blob out, blob digest and diff_id in one pass.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use crate::digest::{Digest, Hasher};
use crate::error::{IoContext, StoreError};
use crate::store::{create_blob_file, Store};
use crate::tmp::TmpDir;
use crate::{OCI_LAYER_GZIP, OCI_LAYER_TAR, OCI_LAYER_ZSTD};

/// Compression of a layer blob written by [`LayerWriter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// gzip (the most compatible).
    Gzip,
    /// zstd.
    Zstd,
    /// Uncompressed tar.
    None,
}

impl Compression {
    /// The OCI layer media type for this compression.
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::Gzip => OCI_LAYER_GZIP,
            Compression::Zstd => OCI_LAYER_ZSTD,
            Compression::None => OCI_LAYER_TAR,
        }
    }
}

/// A finished layer blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    /// Digest of the compressed blob (for the manifest).
    pub digest: Digest,
    /// Size of the compressed blob.
    pub size: u64,
    /// Digest of the uncompressed tar (for the config's `rootfs.diff_ids`).
    pub diff_id: Digest,
    /// Media type of the blob.
    pub media_type: String,
}

/// Hashes and counts what passes through to `inner`.
struct HashingWriter<W> {
    inner: W,
    hash: Hasher,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

type BlobOut = HashingWriter<BufWriter<File>>;

enum Encoder {
    Gzip(crate::parallel_gzip::ParallelGzip<BlobOut>),
    Zstd(zstd::stream::write::Encoder<'static, BlobOut>),
    None(BlobOut),
}

/// Receives an uncompressed layer tar through [`Write`], compresses it into a temporary file
/// under `ROOT/tmp`, and computes the blob digest and the diff_id in the same pass.
/// [`LayerWriter::finish`] moves the blob into the store. Dropping it unfinished leaves nothing.
pub struct LayerWriter {
    store: Store,
    tmp: TmpDir,
    path: PathBuf,
    compression: Compression,
    diff: Hasher,
    encoder: Option<Encoder>,
}

impl Store {
    /// Start writing a layer blob with `compression`.
    pub fn layer_writer(&self, compression: Compression) -> Result<LayerWriter, StoreError> {
        let tmp = self.tmp_dir("write")?;
        let path = tmp.path().join("blob");
        let file = create_blob_file(&path)?;
        let out = HashingWriter {
            inner: BufWriter::with_capacity(256 * 1024, file),
            hash: Hasher::new(),
        };
        let encoder = match compression {
            Compression::Gzip => Encoder::Gzip(crate::parallel_gzip::ParallelGzip::new(out)),
            Compression::Zstd => Encoder::Zstd(
                zstd::stream::write::Encoder::new(out, 3).ctx("starting zstd for", &path)?,
            ),
            Compression::None => Encoder::None(out),
        };
        Ok(LayerWriter {
            store: self.clone(),
            tmp,
            path,
            compression,
            diff: Hasher::new(),
            encoder: Some(encoder),
        })
    }
}

impl Write for LayerWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = match self.encoder.as_mut() {
            Some(Encoder::Gzip(e)) => e.write(buf)?,
            Some(Encoder::Zstd(e)) => e.write(buf)?,
            Some(Encoder::None(e)) => e.write(buf)?,
            None => return Err(io::Error::other("layer writer already finished")),
        };
        self.diff.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.encoder.as_mut() {
            Some(Encoder::Gzip(e)) => e.flush(),
            Some(Encoder::Zstd(e)) => e.flush(),
            Some(Encoder::None(e)) => e.flush(),
            None => Ok(()),
        }
    }
}

impl LayerWriter {
    /// Uncompressed bytes written so far.
    pub fn uncompressed_len(&self) -> u64 {
        self.diff.len()
    }

    /// Finish compression, sync the file and move the blob into the store.
    pub fn finish(mut self) -> Result<LayerInfo, StoreError> {
        let encoder = self.encoder.take().ok_or_else(|| {
            StoreError::io("finishing", &self.path, io::Error::other("finished twice"))
        })?;
        let out = match encoder {
            Encoder::Gzip(e) => e.finish().ctx("compressing", &self.path)?,
            Encoder::Zstd(e) => e.finish().ctx("compressing", &self.path)?,
            Encoder::None(e) => e,
        };
        let digest = out.hash.clone().finish();
        let size = out.hash.len();
        let file = out.inner.into_inner().map_err(|e| {
            StoreError::io(
                "writing",
                &self.path,
                io::Error::new(e.error().kind(), e.to_string()),
            )
        })?;
        file.sync_all().ctx("syncing", &self.path)?;
        drop(file);
        if !self.store.has_blob(&digest) {
            self.store.place_blob(&self.path, &digest)?;
        }
        drop(self.tmp);
        Ok(LayerInfo {
            digest,
            size,
            diff_id: self.diff.finish(),
            media_type: self.compression.media_type().to_string(),
        })
    }
}
