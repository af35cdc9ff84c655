//! `gcr import`: a rootfs archive becomes a one-layer image.

use std::path::Path;

use crate::error::StoreError;
use crate::index::ImageRecord;
use crate::store::Store;

impl Store {
    /// Turn a rootfs archive (tar, tar.gz, tar.zst or zip, detected by magic bytes) into a
    /// one-layer OCI image (gzip layer, config with `rootfs.diff_ids`, history "gcr import",
    /// the host's os/architecture, created now) named `name`.
    pub fn import_archive(&self, archive: &Path, _name: &str) -> Result<ImageRecord, StoreError> {
        Err(StoreError::Archive { path: archive.to_path_buf(), reason: "not implemented yet".into() })
    }
}
