//! Named volumes (`-v NAME:/path`, `gcr volume ...`): directories under `ROOT/volumes/<name>/
//! _data`, as Docker lays them out, created on first use and kept until removed.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;

use crate::error::{IoContext, StoreError};
use crate::store::Store;

/// Docker's rule for volume names: a letter or digit, then letters, digits, `_`, `.`, `-`.
pub fn valid_volume_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && name.len() <= 255
}

impl Store {
    fn volumes_root(&self) -> PathBuf {
        self.root().join("volumes")
    }

    /// The data directory of volume `name` (whether it exists or not).
    pub fn volume_dir(&self, name: &str) -> Result<PathBuf, StoreError> {
        if !valid_volume_name(name) {
            return Err(StoreError::InvalidName {
                name: name.to_string(),
                reason: "a volume name is a letter or digit followed by letters, digits, '_', '.' or '-'".into(),
            });
        }
        Ok(self.volumes_root().join(name).join("_data"))
    }

    /// Creates volume `name` if it does not exist; returns its data directory and whether it
    /// was created now.
    pub fn create_volume(&self, name: &str) -> Result<(PathBuf, bool), StoreError> {
        let data = self.volume_dir(name)?;
        if data.is_dir() {
            return Ok((data, false));
        }
        let parent = data.parent().unwrap_or(&data).to_path_buf();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&parent)
            .ctx("creating", &parent)?;
        // The data directory is what the container sees: readable as an ordinary directory.
        match fs::DirBuilder::new().mode(0o755).create(&data) {
            Ok(()) => Ok((data, true)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok((data, false)),
            Err(e) => Err(StoreError::io("creating", &data, e)),
        }
    }

    /// The names of every volume, sorted.
    pub fn volumes(&self) -> Result<Vec<String>, StoreError> {
        let root = self.volumes_root();
        let entries = match fs::read_dir(&root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(StoreError::io("reading", &root, e)),
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| valid_volume_name(n))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Deletes volume `name` and its data; missing is an error naming it.
    pub fn remove_volume(&self, name: &str) -> Result<(), StoreError> {
        let data = self.volume_dir(name)?;
        let dir = data.parent().unwrap_or(&data).to_path_buf();
        if !dir.exists() {
            return Err(StoreError::InvalidName {
                name: name.to_string(),
                reason: "no such volume (see `gcr volume ls`)".into(),
            });
        }
        self.discard_path(&dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_docker() {
        for good in ["data", "my_vol.1", "0cache", "a-b"] {
            assert!(valid_volume_name(good), "{good}");
        }
        for bad in ["", "-x", ".x", "a/b", "a b", "..", "_x"] {
            assert!(!valid_volume_name(bad), "{bad}");
        }
    }

    #[test]
    fn create_list_remove() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let (dir, created) = store.create_volume("data").unwrap();
        assert!(created && dir.ends_with("volumes/data/_data") && dir.is_dir());
        assert!(!store.create_volume("data").unwrap().1);
        assert_eq!(store.volumes().unwrap(), ["data"]);
        store.remove_volume("data").unwrap();
        assert!(store.volumes().unwrap().is_empty());
        assert!(store.remove_volume("data").is_err());
        assert!(store.volume_dir("../x").is_err());
    }
}
