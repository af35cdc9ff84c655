//! gcr-storage: everything under the store root.
//!
//! The root is an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/<hex>`) that
//! skopeo and umoci can read, plus gcr's own directories:
//!
//! ```text
//! oci-layout, index.json   OCI image layout; one index.json descriptor per image name
//! blobs/sha256/<hex>       manifests, configs, compressed layers
//! layers/<diff-id hex>/    diff/ (the OverlayFS lower dir) and meta.json (written last)
//! containers/<id>/         image (the image ID the container uses) and the runtime's files
//! cache/                   build cache
//! tmp/                     in-flight work; each entry is flocked by its owner, swept when stale
//! lock                     flock serialising index.json changes and garbage collection
//! gc.lock                  shared "lease" held by pulls/builds so GC leaves their new content alone
//! ```
//!
//! The crate is synchronous and knows nothing of HTTP or processes.
#![deny(unsafe_code)]

mod archive;
mod builder_support;
pub mod compression;
mod digest;
mod ephemeral;
mod error;
mod events;
mod gc;
mod import;
mod index;
mod ingest;
mod layer_writer;
mod parallel_gzip;
mod platforms;
mod store;
mod tmp;
pub mod unpack;
mod volumes;

#[cfg(test)]
mod store_tests;
#[cfg(test)]
mod testutil;
#[cfg(test)]
mod unpack_tests;

pub use archive::{ArchiveError, ArchiveFormat, LoadedImage, SaveRequest};
pub use builder_support::BuildDir;
pub use digest::{Digest, DigestError, Hasher};
pub use ephemeral::SetAside;
pub use error::StoreError;
pub use events::{Actor, Event};
pub use gc::{CheckReport, DiskUsage, Problem, PruneReport, UsageEntry};
pub use index::{ImageRecord, RemovedImage};
pub use ingest::LayerExpectation;
pub use layer_writer::{Compression, LayerInfo, LayerWriter};
pub use store::{Lease, Store, StoreLock};
pub use volumes::valid_volume_name;

/// Media type of an OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of a Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Media type of an OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Media type of an OCI gzip layer.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Media type of an OCI zstd layer.
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// Media type of an OCI uncompressed layer.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// The index.json annotation carrying an image's name.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// Upper bound for manifests and configs read from the store (as for the registry: 4 MiB).
pub const MAX_DOCUMENT_SIZE: u64 = 4 * 1024 * 1024;

/// The OCI media type for a layer media type (Docker's types name the same bytes).
pub fn oci_layer_media_type(media_type: &str) -> String {
    match media_type {
        "application/vnd.docker.image.rootfs.diff.tar.gzip" => OCI_LAYER_GZIP.into(),
        "application/vnd.docker.image.rootfs.diff.tar" => OCI_LAYER_TAR.into(),
        "application/vnd.docker.image.rootfs.diff.tar.zstd" => OCI_LAYER_ZSTD.into(),
        other => other.to_string(),
    }
}
