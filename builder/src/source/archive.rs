//! ADD's local archives: a tar, plain or compressed, recognised by its first bytes and
//! unpacked safely.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use gcr_storage::compression::ArchiveCompression;

/// Whether `bytes` start like an archive ADD unpacks: tar (possibly gzip/zstd/bzip2/xz
/// compressed). Only gzip, zstd and plain tar are unpacked; others are reported.
pub(crate) fn archive_kind(head: &[u8]) -> Option<ArchiveCompression> {
    match ArchiveCompression::sniff(head) {
        ArchiveCompression::None if head.len() >= 262 && &head[257..262] == b"ustar" => {
            Some(ArchiveCompression::None)
        }
        ArchiveCompression::None => None,
        compressed => Some(compressed),
    }
}

/// The first 512 bytes of a file.
pub(crate) fn file_head(path: &Path) -> io::Result<Vec<u8>> {
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; 512];
    let mut n = 0;
    while n < buf.len() {
        let r = f.read(&mut buf[n..])?;
        if r == 0 {
            break;
        }
        n += r;
    }
    buf.truncate(n);
    Ok(buf)
}

/// For gzip/zstd, check that the decompressed stream is a tar before unpacking it (ADD copies
/// a compressed non-tar file as is).
pub(crate) fn decompressed_is_tar(path: &Path, kind: ArchiveCompression) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    let Ok(mut reader) = kind.decoder(file) else {
        return false;
    };
    let mut head = vec![0u8; 512];
    let mut n = 0;
    while n < head.len() {
        match reader.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(r) => n += r,
            Err(_) => return false,
        }
    }
    n >= 262 && &head[257..262] == b"ustar"
}

/// Unpack a (possibly compressed) tar safely into the empty directory `into`.
pub(crate) fn unpack_archive(
    path: &Path,
    kind: ArchiveCompression,
    into: &Path,
) -> Result<(), String> {
    let file = File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut reader = kind
        .decoder(file)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    gcr_storage::unpack::unpack(
        &mut reader,
        into,
        &gcr_storage::unpack::UnpackOptions::detect(),
    )
    .map(|_| ())
    .map_err(|e| format!("cannot unpack {}: {e}", path.display()))
}
