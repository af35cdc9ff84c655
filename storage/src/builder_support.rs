//! Small helpers for the builder: a work directory under `ROOT/tmp` it can hand to the
//! runtime and mount on, and placing a directory it filled itself as an unpacked layer.

use std::fs;
use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::error::{IoContext, StoreError};
use crate::store::{LayerMeta, Store};
use crate::tmp::TmpDir;

/// A build work directory under `ROOT/tmp`: flocked while alive, removed on drop, swept by the
/// next `Store::open` when its process died.
pub struct BuildDir {
    tmp: TmpDir,
}

impl BuildDir {
    /// The directory.
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }
}

impl Store {
    /// A fresh build work directory `ROOT/tmp/<purpose>-...`.
    pub fn build_dir(&self, purpose: &str) -> Result<BuildDir, StoreError> {
        Ok(BuildDir {
            tmp: self.tmp_dir(purpose)?,
        })
    }

    /// Move `diff_dir` (a directory on the store's filesystem, in OverlayFS on-disk form) into
    /// place as the unpacked layer `diff_id` holding `size` bytes of file content. When the
    /// layer is already stored, `diff_dir` is left where it is and false is returned.
    pub fn place_layer_dir(
        &self,
        diff_dir: &Path,
        diff_id: &Digest,
        size: u64,
    ) -> Result<bool, StoreError> {
        if self.has_layer(diff_id) {
            return Ok(false);
        }
        let tmp = self.tmp_dir("built-layer")?;
        let target: PathBuf = tmp.path().join("diff");
        fs::rename(diff_dir, &target).ctx("moving the layer directory", diff_dir)?;
        let meta = LayerMeta {
            diff_id: diff_id.clone(),
            size,
        };
        let placed = self.place_layer(tmp.path(), &meta)?;
        drop(tmp);
        Ok(placed)
    }
}
