//! `save` and `load`: images to and from image archives.
//!
//! - docker-archive (what `docker save` up to 24 and `podman save` write): `manifest.json`
//!   (`[{Config, RepoTags, Layers}]`), the config as `<hex>.json`, each layer as an
//!   uncompressed `<diff_id hex>.tar` (so its digest is its diff_id), and the legacy
//!   `repositories` file. `docker load` and `podman load` both read it.
//! - oci-archive: a tar of an OCI image layout (`oci-layout`, `index.json` whose entries carry
//!   the name in `org.opencontainers.image.ref.name`, `blobs/sha256/..`), blobs as stored, plus
//!   a `manifest.json` over the same blobs as Docker 25+ writes (Docker up to 24 loads that
//!   part). Loading prefers the OCI layout when both are there.
//!
//! Loading never extracts the archive: it indexes the tar's members (refusing any name that is
//! absolute or climbs with `..`, and links that leave the archive) and reads the members the
//! manifests name, verifying every digest and diff_id; layers go through the store's safe
//! unpacking. Images are named only after all their content is in the store.

mod load;
mod members;
mod save;

use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::StoreError;
use crate::index::{ImageRecord, OCI_INDEX};

/// containerd's (and Docker 25+'s) index.json annotation for the full image name.
const CONTAINERD_NAME_ANNOTATION: &str = "io.containerd.image.name";

/// The archive formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    DockerArchive,
    OciArchive,
}

/// Everything that can go wrong saving or loading an archive.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("reading archive {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing the archive: {source}")]
    Write {
        #[source]
        source: io::Error,
    },
    #[error("archive {path}: member {name:?} {reason}; refusing the archive")]
    UnsafeMember {
        path: PathBuf,
        name: String,
        reason: &'static str,
    },
    #[error("archive {path} is neither a docker-archive (no manifest.json) nor an oci-archive (no index.json)")]
    UnknownFormat { path: PathBuf },
    #[error("archive {path} has no member {name:?} ({why})")]
    MissingMember {
        path: PathBuf,
        name: String,
        why: String,
    },
    #[error("archive {path}: invalid {what}: {reason}")]
    Invalid {
        path: PathBuf,
        what: String,
        reason: String,
    },
    #[error("archive {path}: {what} does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch {
        path: PathBuf,
        what: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("archive {path}: image name {name:?}: {reason}")]
    BadName {
        path: PathBuf,
        name: String,
        reason: String,
    },
    #[error("saving image {id}: layer {diff_id}: {reason}")]
    SaveLayer {
        id: Digest,
        diff_id: Digest,
        reason: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One image to save and the names to give it in the archive.
#[derive(Debug, Clone)]
pub struct SaveRequest {
    pub record: ImageRecord,
    pub names: Vec<String>,
}

/// One image loaded from an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedImage {
    pub id: Digest,
    pub names: Vec<String>,
}

/// `manifest.json` of a docker-archive: one entry per image.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

/// Where a blob lies in an OCI layout: `blobs/sha256/<hex>`.
fn blob_member(digest: &Digest) -> String {
    format!("blobs/sha256/{}", digest.hex())
}
