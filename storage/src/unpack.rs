//! Safe extraction of one layer tar into an empty directory, in OverlayFS on-disk form.

use std::io::{self, Read};
use std::path::Path;

/// Why a layer tar was refused.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The tar stream could not be read (corrupt compression, truncation, I/O).
    #[error("reading the tar stream: {source}")]
    Read {
        #[source]
        source: io::Error,
    },
    /// An entry is hostile or malformed.
    #[error("entry {entry:?}: {reason}")]
    Entry { entry: String, reason: String },
    /// A filesystem operation on an entry failed.
    #[error("{op} {entry:?}: {source}")]
    Io {
        op: &'static str,
        entry: String,
        #[source]
        source: io::Error,
    },
}

/// How to unpack.
#[derive(Debug, Clone)]
pub struct UnpackOptions {
    /// Create block and character devices (only when really root, not in a user namespace).
    pub create_devices: bool,
}

impl UnpackOptions {
    /// Options for this process: devices only when running as root in the initial user
    /// namespace.
    pub fn detect() -> UnpackOptions {
        UnpackOptions {
            create_devices: false,
        }
    }
}

/// What an unpack produced.
#[derive(Debug, Clone, Default)]
pub struct UnpackStats {
    /// Entries applied.
    pub entries: u64,
    /// Bytes of regular-file content written.
    pub bytes: u64,
}

/// Unpack the tar read from `tar` into the existing empty directory `dest`.
pub fn unpack(_tar: &mut dyn Read, _dest: &Path, _opts: &UnpackOptions) -> Result<UnpackStats, UnpackError> {
    Err(UnpackError::Entry { entry: String::new(), reason: "not implemented yet".into() })
}
