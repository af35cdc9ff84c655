//! The store's error type.

use std::io;
use std::path::PathBuf;

use crate::digest::{Digest, DigestError};
use crate::unpack::UnpackError;

/// Everything that can go wrong in the store. Each variant names the path, digest or name it
/// failed on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A string that should be a digest is not one.
    #[error(transparent)]
    Digest(#[from] DigestError),
    /// Content does not hash to the digest it was stored or announced under.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: Digest,
        actual: Digest,
    },
    /// A blob is shorter or longer than its descriptor says.
    #[error("size mismatch for blob {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    /// The uncompressed layer does not hash to the diff_id in the image config.
    #[error("diff_id mismatch for layer blob {blob}: the config says {expected}, the content is {actual}")]
    DiffIdMismatch {
        blob: Digest,
        expected: Digest,
        actual: Digest,
    },
    /// Content is larger than the limit set for it.
    #[error("{what} is larger than the limit of {limit} bytes")]
    TooLarge { what: String, limit: u64 },
    /// A layer media type gcr cannot unpack.
    #[error(
        "layer {digest} has media type {media_type:?}, which is not a tar layer gcr can unpack"
    )]
    UnsupportedMediaType { digest: Digest, media_type: String },
    /// The compressed stream is corrupt or uses settings refused for safety.
    #[error("decompressing layer {digest}: {source}")]
    Decompress {
        digest: Digest,
        #[source]
        source: io::Error,
    },
    /// Reading the layer's source stream failed.
    #[error("reading layer {digest}: {source}")]
    Read {
        digest: Digest,
        #[source]
        source: io::Error,
    },
    /// The layer tar is malformed or hostile.
    #[error("unpacking layer {layer}: {source}")]
    Unpack {
        layer: Digest,
        #[source]
        source: UnpackError,
    },
    /// A blob the operation needs is not in the store.
    #[error("blob {digest} is not in the store")]
    MissingBlob { digest: Digest },
    /// An unpacked layer the operation needs is not in the store.
    #[error("layer {diff_id} is not unpacked in the store")]
    MissingLayer { diff_id: Digest },
    /// A manifest that cannot be used.
    #[error("invalid manifest {digest}: {reason}")]
    InvalidManifest { digest: Digest, reason: String },
    /// An image config that cannot be used.
    #[error("invalid image config {digest}: {reason}")]
    InvalidConfig { digest: Digest, reason: String },
    /// A JSON file of the store itself cannot be parsed.
    #[error("parsing {path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// No image matches a name, ID or digest.
    #[error("image not known: {reference}")]
    ImageNotFound { reference: String },
    /// An ID prefix matches several images.
    #[error("{reference} matches several images ({candidates}); use more characters of the ID")]
    AmbiguousImage {
        reference: String,
        candidates: String,
    },
    /// An image is used by containers and `force` was not given.
    #[error(
        "image {id} is used by container(s) {containers}; remove them first or force the removal"
    )]
    ImageInUse { id: Digest, containers: String },
    /// An image name or container ID that cannot be stored.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    /// A name that no image carries.
    #[error("no image is named {name}")]
    NameNotFound { name: String },
    /// An archive given to `import` cannot be read.
    #[error("importing {path}: {reason}")]
    Archive { path: PathBuf, reason: String },
}

impl StoreError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> StoreError {
        StoreError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// Attach an operation and a path to an `io::Result`.
pub(crate) trait IoContext<T> {
    fn ctx(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T, StoreError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T, StoreError> {
        self.map_err(|e| StoreError::io(op, path, e))
    }
}

impl<T> IoContext<T> for nix::Result<T> {
    fn ctx(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T, StoreError> {
        self.map_err(|e| StoreError::io(op, path, io::Error::from(e)))
    }
}
