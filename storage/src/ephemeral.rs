//! Records of short-lived (`--rm`) containers, kept cheap on the hot path of `gcr run`.
//!
//! A `--rm` container's record does not need to survive a crash: if the machine dies, the
//! container is gone and the record is garbage for `check --repair`. So it is written without
//! fsync, and its directory is removed after the container exits by whoever holds the
//! [`SetAside`] handle, possibly a detached child process, so the caller can exit at once.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};

use crate::digest::Digest;
use crate::error::StoreError;
use crate::store::Store;
use crate::tmp::TmpDir;

/// A container directory moved into `tmp/`: invisible to the store, deleted on drop. The
/// entry's lock stays held as long as this handle (or a forked copy of its descriptor) lives,
/// so `Store::open` never sweeps it while the deletion runs.
pub struct SetAside {
    tmp: TmpDir,
}

impl SetAside {
    /// Deletes the directory now (the same as dropping the handle).
    pub fn remove(self) {
        drop(self.tmp);
    }
}

impl Store {
    /// Like [`Store::register_container`], without fsync: for containers removed when they
    /// exit. The record appears complete or not at all (written beside, then renamed).
    pub fn register_ephemeral_container(&self, id: &str, image: &Digest) -> Result<(), StoreError> {
        let dir = self.container_dir(id)?;
        let io_err =
            |op: &'static str, path: &std::path::Path, e: io::Error| StoreError::io(op, path, e);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| io_err("creating", &dir, e))?;
        let part = dir.join("image.part");
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&part)
            .map_err(|e| io_err("creating", &part, e))?;
        file.write_all(image.as_str().as_bytes())
            .map_err(|e| io_err("writing", &part, e))?;
        let record = dir.join("image");
        fs::rename(&part, &record).map_err(|e| io_err("renaming into", &record, e))
    }

    /// The IDs of every container directory, sorted.
    pub fn container_ids(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.containers()?.into_iter().map(|(id, _)| id).collect())
    }

    /// Moves container `id`'s directory out of `containers/` into a locked `tmp/` entry and
    /// returns the handle that deletes it. `None` when there is no such directory.
    pub fn set_aside_container(&self, id: &str) -> Result<Option<SetAside>, StoreError> {
        let dir = self.container_dir(id)?;
        if fs::symlink_metadata(&dir).is_err() {
            return Ok(None);
        }
        let tmp = self.tmp_dir("delete")?;
        let aside = tmp.path().join("x");
        match fs::rename(&dir, &aside) {
            Ok(()) => Ok(Some(SetAside { tmp })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io("moving aside", &dir, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ephemeral_records_protect_the_image_and_set_aside_removes_them() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let image = Digest::of(b"config");
        let id = "ab".repeat(32);
        store.register_ephemeral_container(&id, &image).unwrap();
        assert_eq!(store.containers_using(&image).unwrap(), vec![id.clone()]);
        let aside = store.set_aside_container(&id).unwrap().expect("dir exists");
        // Moved out at once: no longer a container, not yet deleted.
        assert!(store.containers_using(&image).unwrap().is_empty());
        assert_eq!(fs::read_dir(root.path().join("tmp")).unwrap().count(), 2);
        aside.remove();
        assert_eq!(fs::read_dir(root.path().join("tmp")).unwrap().count(), 0);
        assert!(store.set_aside_container(&id).unwrap().is_none());
    }
}
