//! What COPY and ADD write: one entry (a file, directory, link or fifo, read from a host
//! path or held inline), and the hash of a list of them that goes into the cache key.

use std::io::Read;
use std::path::PathBuf;

use sha2::{Digest as _, Sha256};

use crate::fsutil::open_nofollow;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    Dir,
    File,
    Symlink(PathBuf),
    Fifo,
}

/// One thing to write, relative to the destination.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// Host path to read from (None for inline content).
    pub src: Option<PathBuf>,
    pub data: Option<Vec<u8>>,
    /// Path below the destination; empty means the destination itself.
    pub rel: PathBuf,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub size: u64,
    /// (device, inode) of a source file with several links: copies keep them linked.
    pub link_key: Option<(u64, u64)>,
}

/// A hash of what would be written: names, types, modes, owners, sizes, link targets and
/// contents (not mtimes).
pub(crate) fn content_hash(entries: &[Entry]) -> Result<String, String> {
    let mut h = Sha256::new();
    for e in entries {
        h.update(e.rel.as_os_str().as_encoded_bytes());
        h.update([0]);
        let kind = match &e.kind {
            Kind::Dir => "d".to_string(),
            Kind::File => "f".to_string(),
            Kind::Fifo => "p".to_string(),
            Kind::Symlink(t) => format!("l{}", t.display()),
        };
        h.update(format!("{kind}\0{:o}\0{}:{}\0{}\0", e.mode, e.uid, e.gid, e.size).as_bytes());
        if e.kind == Kind::File {
            if let Some(data) = &e.data {
                h.update(Sha256::digest(data));
            } else if let Some(src) = &e.src {
                let mut file = open_nofollow(src)
                    .map_err(|err| format!("cannot read {}: {err}", src.display()))?;
                let mut fh = Sha256::new();
                let mut buf = vec![0u8; 256 * 1024];
                loop {
                    let n = file
                        .read(&mut buf)
                        .map_err(|err| format!("cannot read {}: {err}", src.display()))?;
                    if n == 0 {
                        break;
                    }
                    fh.update(&buf[..n]);
                }
                h.update(fh.finalize());
            }
        }
    }
    Ok(hex::encode(h.finalize()))
}
