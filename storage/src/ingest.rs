//! Layer ingestion: one pass over a compressed layer stream that stores the blob, verifies
//! size, digest and diff_id, and unpacks the tar safely.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use crate::digest::{Digest, Hasher, HashingReader};
use crate::error::{IoContext, StoreError};
use crate::store::{create_blob_file, LayerMeta, Store};
use crate::unpack::{self, UnpackOptions};

/// The zstd window limit: 2^27 = 128 MiB, the largest window zstd's own CLI decodes by default
/// without `--long`. Frames asking for more are refused instead of allocating.
pub const ZSTD_WINDOW_LOG_MAX: u32 = 27;

/// What the manifest and config say about one layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerExpectation {
    /// Digest of the compressed blob (manifest `layers[i].digest`).
    pub digest: Digest,
    /// Size of the compressed blob (manifest `layers[i].size`).
    pub size: u64,
    /// Media type (manifest `layers[i].mediaType`); decides the decompressor.
    pub media_type: String,
    /// Digest of the uncompressed tar (config `rootfs.diff_ids[i]`).
    pub diff_id: Digest,
}

impl LayerExpectation {
    /// The tar a blob decompressed to must be the layer's diff_id.
    fn check_diff_id(&self, diff_id: Digest) -> Result<(), StoreError> {
        if diff_id != self.diff_id {
            return Err(StoreError::DiffIdMismatch {
                blob: self.digest.clone(),
                expected: self.diff_id.clone(),
                actual: diff_id,
            });
        }
        Ok(())
    }
}

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Codec {
    Gzip,
    Zstd,
    Plain,
    /// Decide from the first bytes.
    Sniff,
}

pub(crate) fn codec_for(media_type: &str, digest: &Digest) -> Result<Codec, StoreError> {
    let layer_prefixes = [
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.docker.image.rootfs.diff.tar",
        "application/vnd.docker.image.rootfs.foreign.diff.tar",
    ];
    for prefix in layer_prefixes {
        if let Some(rest) = media_type.strip_prefix(prefix) {
            return match rest {
                "" => Ok(Codec::Plain),
                "+gzip" | ".gzip" => Ok(Codec::Gzip),
                "+zstd" | ".zstd" => Ok(Codec::Zstd),
                _ => Err(StoreError::UnsupportedMediaType {
                    digest: digest.clone(),
                    media_type: media_type.to_string(),
                }),
            };
        }
    }
    match media_type {
        "" | "application/octet-stream" | "application/x-tar" => Ok(Codec::Sniff),
        _ => Err(StoreError::UnsupportedMediaType {
            digest: digest.clone(),
            media_type: media_type.to_string(),
        }),
    }
}

/// Reads the compressed stream: hashes and counts it, copies it into the temporary blob file,
/// reports progress, and refuses to read past the announced size (plus one byte, to notice a
/// longer blob).
struct BlobTee<'a> {
    inner: &'a mut dyn Read,
    /// The temporary blob file; None when the blob is already stored.
    out: Option<BufWriter<File>>,
    hash: Hasher,
    limit: u64,
    progress: Option<&'a mut dyn FnMut(u64)>,
    write_error: Option<io::Error>,
    /// The source ended.
    eof: bool,
}

impl<'a> BlobTee<'a> {
    /// A tee that only hashes and counts, for a blob that is already stored.
    fn new(inner: &'a mut dyn Read, limit: u64) -> BlobTee<'a> {
        BlobTee {
            inner,
            out: None,
            hash: Hasher::new(),
            limit,
            progress: None,
            write_error: None,
            eof: false,
        }
    }
}

impl Read for BlobTee<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let remaining = self.limit.saturating_add(1).saturating_sub(self.hash.len());
        if remaining == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 && want > 0 {
            self.eof = true;
        }
        self.hash.update(&buf[..n]);
        let written = match self.out.as_mut() {
            Some(out) => out.write_all(&buf[..n]),
            None => Ok(()),
        };
        if let Err(e) = written {
            // Keep the error for the caller; the decompressor would otherwise misreport it.
            let kind = e.kind();
            self.write_error = Some(e);
            return Err(io::Error::new(kind, "writing the blob file failed"));
        }
        if let Some(progress) = self.progress.as_mut().filter(|_| n > 0) {
            progress(self.hash.len());
        }
        Ok(n)
    }
}

/// Read the first bytes of a stream without losing them.
fn peek_magic(r: &mut dyn Read) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(4);
    let mut buf = [0u8; 4];
    while head.len() < 4 {
        let n = r.read(&mut buf[..4 - head.len()])?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(head)
}

pub(crate) fn sniff(head: &[u8]) -> Codec {
    if head.starts_with(&[0x1f, 0x8b]) {
        Codec::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Codec::Zstd
    } else {
        Codec::Plain
    }
}

/// A decompressing reader over `r` for `codec` (never `Sniff`).
pub(crate) fn decoder<'a>(codec: Codec, r: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match codec {
        Codec::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
        Codec::Zstd => {
            let mut d = zstd::stream::read::Decoder::new(r)?;
            d.window_log_max(ZSTD_WINDOW_LOG_MAX)?;
            Box::new(d)
        }
        Codec::Plain | Codec::Sniff => Box::new(r),
    })
}

/// Drain a reader to its end.
fn drain(r: &mut dyn Read) -> io::Result<u64> {
    io::copy(r, &mut io::sink())
}

impl Store {
    /// Stream one compressed layer blob into the store.
    ///
    /// In one pass it hashes the blob (digest and size), writes it to a temporary file,
    /// decompresses it (gzip, zstd or none by media type; a generic media type such as
    /// `application/octet-stream` is decided by the magic bytes), hashes the tar (diff_id) and
    /// unpacks it safely into a temporary layer directory. Only when size, digest and diff_id all
    /// match are the blob and the layer renamed into place; otherwise nothing is left behind.
    /// Data after the end of the tar is hashed (the diff_id covers the whole decompressed
    /// stream) but not unpacked.
    ///
    /// `progress` is called with the number of compressed bytes read so far.
    ///
    /// Idempotent, and safe when several processes ingest the same layer at once: the loser of
    /// the final rename discards its copy and succeeds. Returns at once without reading when the
    /// blob and the layer are already present.
    pub fn ingest_layer(
        &self,
        blob: &mut dyn Read,
        expect: &LayerExpectation,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), StoreError> {
        if self.has_blob(&expect.digest)
            && self.has_layer(&expect.diff_id)
            && self.layer_comes_from(&expect.digest, &expect.diff_id)
        {
            return Ok(());
        }
        let codec = codec_for(&expect.media_type, &expect.digest)?;
        let tmp = self.tmp_dir("layer")?;
        let blob_path = tmp.path().join("blob");
        let file = create_blob_file(&blob_path)?;
        let mut tee = BlobTee {
            out: Some(BufWriter::with_capacity(256 * 1024, file)),
            progress: Some(progress),
            ..BlobTee::new(blob, expect.size)
        };
        let unpacked = self.unpack_stream(&mut tee, codec, expect, tmp.path());
        // A failed write of the blob file explains any read error that followed it.
        if let Some(e) = tee.write_error.take() {
            return Err(StoreError::io("writing", &blob_path, e));
        }
        // A blob of the wrong length explains a decompression or tar error better than the
        // error itself ("unexpected end of file").
        if unpacked.is_err()
            && (tee.hash.len() > expect.size || tee.eof)
            && tee.hash.len() != expect.size
        {
            return Err(StoreError::SizeMismatch {
                digest: expect.digest.clone(),
                expected: expect.size,
                actual: tee.hash.len(),
            });
        }
        let (diff_id, meta_size) = unpacked?;
        // Read what the decompressor left (e.g. bytes after the compressed stream) so that the
        // digest covers the whole blob.
        drain(&mut tee).map_err(|source| StoreError::Read {
            digest: expect.digest.clone(),
            source,
        })?;
        let size = tee.hash.len();
        let digest = tee.hash.clone().finish();
        if size != expect.size {
            return Err(StoreError::SizeMismatch {
                digest: expect.digest.clone(),
                expected: expect.size,
                actual: size,
            });
        }
        if digest != expect.digest {
            return Err(StoreError::DigestMismatch {
                what: format!("layer blob (size {size})"),
                expected: expect.digest.clone(),
                actual: digest,
            });
        }
        expect.check_diff_id(diff_id)?;
        let out = tee.out.take().ok_or_else(|| {
            StoreError::io("writing", &blob_path, io::Error::other("blob file missing"))
        })?;
        let file = out.into_inner().map_err(|e| {
            StoreError::io(
                "writing",
                &blob_path,
                io::Error::new(e.error().kind(), e.to_string()),
            )
        })?;
        file.sync_all().ctx("syncing", &blob_path)?;
        drop(file);
        // Blob first: a layer present without its blob would make `check` complain.
        if !self.has_blob(&expect.digest) {
            self.place_blob(&blob_path, &expect.digest)?;
        }
        self.place_layer(
            &tmp.path().join("layer"),
            &LayerMeta {
                diff_id: expect.diff_id.clone(),
                size: meta_size,
            },
        )?;
        self.record_layer_source(&expect.digest, &expect.diff_id)
    }

    /// Unpack the layer from a blob already in the store (e.g. the layer directory was removed
    /// or an earlier ingest stored only the blob). Verifies the blob digest and the diff_id.
    pub fn ingest_layer_from_blob(&self, expect: &LayerExpectation) -> Result<(), StoreError> {
        let path = self.blob_path(&expect.digest);
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::MissingBlob {
                    digest: expect.digest.clone(),
                })
            }
            Err(e) => return Err(StoreError::io("opening", path, e)),
        };
        if self.has_layer(&expect.diff_id) {
            if self.layer_comes_from(&expect.digest, &expect.diff_id) {
                return Ok(());
            }
            // The layer came from another blob (or an older gcr recorded nothing): this blob
            // must be seen to unpack to it, or a registry could name a layer it never served.
            return self.verify_layer_source(&mut file, expect);
        }
        self.ingest_layer_unchecked_blob(&mut file, expect)
    }

    /// `layers/<diff_id>/from/<blob hex>`: marks that this blob was seen to decompress to this
    /// layer. Digests name content, so the pairing stays true even when the blob is deleted.
    fn source_marker(&self, blob: &Digest, diff_id: &Digest) -> PathBuf {
        self.layer_root(diff_id).join("from").join(blob.hex())
    }

    /// Whether `blob` is known to unpack to the stored layer `diff_id`.
    pub fn layer_comes_from(&self, blob: &Digest, diff_id: &Digest) -> bool {
        self.source_marker(blob, diff_id).is_file()
    }

    /// Records that `blob` unpacks to the stored layer `diff_id` (the caller verified it).
    pub fn record_layer_source(&self, blob: &Digest, diff_id: &Digest) -> Result<(), StoreError> {
        let marker = self.source_marker(blob, diff_id);
        if let Some(dir) = marker.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)
                .ctx("creating", dir)?;
        }
        fs::write(&marker, b"").ctx("writing", &marker)
    }

    /// Decompresses `blob` (the stored blob of `expect`) without unpacking it and checks
    /// its digest, size and diff_id; records the pairing when all match.
    pub(crate) fn verify_layer_source(
        &self,
        blob: &mut dyn Read,
        expect: &LayerExpectation,
    ) -> Result<(), StoreError> {
        let mut tee = BlobTee::new(blob, expect.size);
        let read_err = |source: io::Error| StoreError::Read {
            digest: expect.digest.clone(),
            source,
        };
        let head = peek_magic(&mut tee).map_err(read_err)?;
        let codec = match codec_for(&expect.media_type, &expect.digest)? {
            Codec::Sniff => sniff(&head),
            c => c,
        };
        let decompressed = {
            let compressed = io::Cursor::new(head).chain(&mut tee);
            // Hashes the decompressed stream (diff_id).
            let mut diff = HashingReader::new(decoder(codec, compressed).map_err(|source| {
                StoreError::Decompress {
                    digest: expect.digest.clone(),
                    source,
                }
            })?);
            io::copy(&mut diff, &mut io::sink())
                .map_err(|source| StoreError::Decompress {
                    digest: expect.digest.clone(),
                    source,
                })
                .map(|_| diff.hash.finish())?
        };
        drain(&mut tee).map_err(read_err)?;
        self.check_stored_blob(&tee.hash, decompressed, expect)?;
        self.record_layer_source(&expect.digest, &expect.diff_id)
    }

    /// A stored blob read again (`hash` covers all of it, `diff_id` its decompressed tar)
    /// must still be the descriptor's blob and unpack to its diff_id.
    fn check_stored_blob(
        &self,
        hash: &Hasher,
        diff_id: Digest,
        expect: &LayerExpectation,
    ) -> Result<(), StoreError> {
        let digest = hash.clone().finish();
        if digest != expect.digest || hash.len() != expect.size {
            return Err(StoreError::DigestMismatch {
                what: format!("stored blob {}", self.blob_path(&expect.digest).display()),
                expected: expect.digest.clone(),
                actual: digest,
            });
        }
        expect.check_diff_id(diff_id)?;
        Ok(())
    }

    /// Like `ingest_layer`, but the blob is already stored; its copy is verified and dropped.
    fn ingest_layer_unchecked_blob(
        &self,
        blob: &mut dyn Read,
        expect: &LayerExpectation,
    ) -> Result<(), StoreError> {
        let codec = codec_for(&expect.media_type, &expect.digest)?;
        let tmp = self.tmp_dir("layer")?;
        let mut tee = BlobTee::new(blob, expect.size);
        let (diff_id, size) = self.unpack_stream(&mut tee, codec, expect, tmp.path())?;
        drain(&mut tee).map_err(|source| StoreError::Read {
            digest: expect.digest.clone(),
            source,
        })?;
        self.check_stored_blob(&tee.hash, diff_id, expect)?;
        self.place_layer(
            &tmp.path().join("layer"),
            &LayerMeta {
                diff_id: expect.diff_id.clone(),
                size,
            },
        )?;
        self.record_layer_source(&expect.digest, &expect.diff_id)
    }

    /// Decompress and unpack into `work/layer/diff`; returns (diff_id, unpacked bytes).
    fn unpack_stream(
        &self,
        tee: &mut dyn Read,
        codec: Codec,
        expect: &LayerExpectation,
        work: &Path,
    ) -> Result<(Digest, u64), StoreError> {
        let read_err = |source: io::Error| StoreError::Read {
            digest: expect.digest.clone(),
            source,
        };
        let head = peek_magic(tee).map_err(read_err)?;
        let codec = match codec {
            Codec::Sniff => sniff(&head),
            c => c,
        };
        let compressed = io::Cursor::new(head).chain(tee);
        let decoded = decoder(codec, compressed).map_err(|source| StoreError::Decompress {
            digest: expect.digest.clone(),
            source,
        })?;
        // Hashes the decompressed stream (diff_id).
        let mut diff = HashingReader::new(decoded);
        let layer = work.join("layer");
        let diff_dir = layer.join("diff");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&diff_dir)
            .ctx("creating", &diff_dir)?;
        let (read_result, unpacked) = pipeline(&mut diff, &diff_dir);
        if let Err(source) = read_result {
            let source = if codec == Codec::Zstd && source.to_string().contains("too much memory") {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the zstd frame needs a window larger than 2^{ZSTD_WINDOW_LOG_MAX} bytes, refused to bound memory ({source})"
                    ),
                )
            } else {
                source
            };
            return Err(StoreError::Decompress {
                digest: expect.digest.clone(),
                source,
            });
        }
        let stats = match unpacked {
            Ok(stats) => stats,
            Err(source) => {
                return Err(StoreError::Unpack {
                    layer: expect.diff_id.clone(),
                    source,
                })
            }
        };
        Ok((diff.hash.finish(), stats.bytes))
    }
}

/// Size of the chunks handed from the decompressing thread to the unpacking thread.
const CHUNK: usize = 256 * 1024;

/// Decompress and hash in this thread while another thread unpacks, so that on two cores
/// inflating and hashing overlap with the filesystem work. `decoded` is read to its end (the
/// diff_id covers data after the tar) unless unpacking fails, which stops reading at once.
/// Returns (reading result, unpacking result).
fn pipeline(
    decoded: &mut dyn Read,
    diff_dir: &Path,
) -> (
    io::Result<()>,
    Result<unpack::UnpackStats, unpack::UnpackError>,
) {
    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(4);
    let unpack_failed = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let failed = &unpack_failed;
        let worker = scope.spawn(move || {
            let mut reader = ChannelReader {
                rx,
                chunk: Vec::new(),
                pos: 0,
            };
            let result = unpack::unpack(&mut reader, diff_dir, &UnpackOptions::detect());
            if result.is_err() {
                failed.store(true, Ordering::SeqCst);
            }
            result
        });
        let mut sending = true;
        let read_result = loop {
            let mut buf = vec![0u8; CHUNK];
            match decoded.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    buf.truncate(n);
                    if sending && tx.send(buf).is_err() {
                        // The unpacker is done: at the tar's end (keep hashing what follows)
                        // or failed (stop now).
                        sending = false;
                        if unpack_failed.load(Ordering::SeqCst) {
                            break Ok(());
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        drop(tx);
        let unpacked = worker.join().unwrap_or_else(|_| {
            Err(unpack::UnpackError::Read {
                source: io::Error::other("the unpacking thread panicked"),
            })
        });
        (read_result, unpacked)
    })
}

/// The receiving end of [`pipeline`] as a reader; the sender closing is the end of the stream.
struct ChannelReader {
    rx: mpsc::Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.chunk.len() {
            match self.rx.recv() {
                Ok(chunk) => {
                    self.chunk = chunk;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
