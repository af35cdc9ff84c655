//! The build cache on disk: `ROOT/cache/steps/<key>.json` maps a step's cache key to the layer
//! it produced (or none) and when.

use std::path::PathBuf;

use gcr_storage::{Digest, Store};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// A layer of an image being built.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRef {
    pub diff_id: Digest,
    pub blob: Digest,
    pub size: u64,
    pub media_type: String,
}

/// What a step produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CacheEntry {
    pub layer: Option<LayerRef>,
    pub created: String,
}

/// A cache key: sha256 over the parts, each length-prefixed.
pub(crate) fn key(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    hex::encode(h.finalize())
}

fn entry_path(store: &Store, key: &str) -> PathBuf {
    store.cache_dir().join("steps").join(format!("{key}.json"))
}

/// The cached result of `key`, when its layer is still in the store.
pub(crate) fn lookup(store: &Store, key: &str) -> Option<CacheEntry> {
    let bytes = std::fs::read(entry_path(store, key)).ok()?;
    let entry: CacheEntry = serde_json::from_slice(&bytes).ok()?;
    if let Some(layer) = &entry.layer {
        if !store.has_layer(&layer.diff_id) || !store.has_blob(&layer.blob) {
            return None;
        }
    }
    Some(entry)
}

/// Record `entry` for `key` (temporary file + rename). Failures only cost a cache miss later.
pub(crate) fn record(store: &Store, key: &str, entry: &CacheEntry) {
    let path = entry_path(store, key);
    let Some(dir) = path.parent() else { return };
    if let Err(e) = std::fs::create_dir_all(dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot create the cache directory");
        return;
    }
    let tmp = dir.join(format!(".{key}.{}.tmp", std::process::id()));
    let Ok(bytes) = serde_json::to_vec(entry) else {
        return;
    };
    if std::fs::write(&tmp, bytes)
        .and_then(|_| std::fs::rename(&tmp, &path))
        .is_err()
    {
        let _ = std::fs::remove_file(&tmp);
        tracing::warn!(path = %path.display(), "cannot record a cache entry");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_separate_their_parts() {
        assert_ne!(key(&["ab", "c"]), key(&["a", "bc"]));
        assert_eq!(key(&["x", "y"]), key(&["x", "y"]));
        assert_eq!(key(&[]).len(), 64);
    }

    #[test]
    fn entries_whose_layer_is_gone_are_misses() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let empty = CacheEntry {
            layer: None,
            created: "2024-01-01T00:00:00Z".into(),
        };
        record(&store, "k1", &empty);
        assert_eq!(lookup(&store, "k1").unwrap().created, empty.created);
        let missing = CacheEntry {
            layer: Some(LayerRef {
                diff_id: Digest::of(b"no such layer"),
                blob: Digest::of(b"no such blob"),
                size: 1,
                media_type: gcr_storage::OCI_LAYER_GZIP.into(),
            }),
            created: empty.created.clone(),
        };
        record(&store, "k2", &missing);
        assert!(lookup(&store, "k2").is_none());
        assert!(lookup(&store, "never-recorded").is_none());
    }
}
