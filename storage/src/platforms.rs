//! Multi-platform images: an OCI image index stored under a name.
//!
//! index.json then holds one descriptor of the index (media type OCI index) per name; the
//! index blob lists one image manifest per platform, each stored as any other image's
//! (manifest, config, layers) but without an index.json entry of its own. The store lists
//! such a name once, as the host platform's image (so `run` and `inspect` see the host's),
//! with [`ImageRecord::index`] set; [`Store::platform_images`] gives every platform's.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::digest::Digest;
use crate::error::StoreError;
use crate::index::{
    keep_orphans_unnamed, parse_config, parse_manifest, validate_name, IndexEntry, OCI_INDEX,
};
use crate::store::Store;
use crate::{ImageRecord, MAX_DOCUMENT_SIZE, REF_NAME_ANNOTATION};

/// One platform's manifest of an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IndexChild {
    pub digest: Digest,
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

/// The image manifests an index blob lists (nested indexes and entries without a platform
/// are skipped: gcr never writes them).
pub(crate) fn parse_index(digest: &Digest, bytes: &[u8]) -> Result<Vec<IndexChild>, StoreError> {
    let bad = |reason: String| StoreError::InvalidManifest {
        digest: digest.clone(),
        reason,
    };
    let v: Value = serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
    let manifests = v
        .get("manifests")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("an index without a manifests array".to_string()))?;
    let mut out = Vec::new();
    for m in manifests {
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
        let digest = text(m.get("digest"))
            .ok_or_else(|| bad("an index entry has no digest".to_string()))?
            .parse::<Digest>()
            .map_err(|e| bad(e.to_string()))?;
        let Some(platform) = m.get("platform") else {
            continue;
        };
        out.push(IndexChild {
            digest,
            os: text(platform.get("os")).unwrap_or_default(),
            architecture: text(platform.get("architecture")).unwrap_or_default(),
            variant: text(platform.get("variant")),
        });
    }
    if out.is_empty() {
        return Err(bad("the index lists no platform's image".to_string()));
    }
    Ok(out)
}

/// Whether a blob is an index (rather than an image manifest).
pub(crate) fn is_index(bytes: &[u8]) -> bool {
    serde_json::from_slice::<Value>(bytes).is_ok_and(|v| v.get("manifests").is_some())
}

/// The child the store lists an index by: the host's platform, else the first.
pub(crate) fn host_child(children: &[IndexChild]) -> &IndexChild {
    let arch = crate::import::host_architecture();
    children
        .iter()
        .find(|c| c.os == "linux" && c.architecture == arch)
        .unwrap_or(&children[0])
}

impl Store {
    /// The platforms of a stored index blob (empty when `digest` is not an index).
    pub(crate) fn index_children(&self, digest: &Digest) -> Vec<IndexChild> {
        match self.read_blob(digest, MAX_DOCUMENT_SIZE) {
            Ok(bytes) if is_index(&bytes) => parse_index(digest, &bytes).unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    /// Store an OCI image index over images already in the store (committed unnamed, e.g. by
    /// a build per platform) and point `names` at it. Each child must be a complete image.
    pub fn commit_index(&self, names: &[String], index: &[u8]) -> Result<ImageRecord, StoreError> {
        for name in names {
            validate_name(name)?;
        }
        let digest = Digest::of(index);
        let children = parse_index(&digest, index)?;
        self.put_blob(index)?;
        let _lock = self.lock()?;
        // Checked under the lock: garbage collection also runs under it.
        for child in &children {
            let bytes = self.read_blob(&child.digest, MAX_DOCUMENT_SIZE)?;
            let m = parse_manifest(&child.digest, &bytes)?;
            let config = self.read_blob(&m.config, MAX_DOCUMENT_SIZE)?;
            let cfg = parse_config(&m.config, &config)?;
            self.check_image_content(&m, &cfg)?;
        }
        let mut stored = self.read_index()?;
        let previous = stored.manifests.clone();
        stored
            .manifests
            .retain(|e| e.name().is_none_or(|n| !names.iter().any(|m| m == n)));
        let entry = |name: Option<&String>| IndexEntry {
            media_type: OCI_INDEX.to_string(),
            digest: digest.clone(),
            size: index.len() as u64,
            annotations: name
                .map(|n| BTreeMap::from([(REF_NAME_ANNOTATION.to_string(), n.clone())]))
                .unwrap_or_default(),
        };
        if names.is_empty() {
            stored.manifests.push(entry(None));
        }
        for name in names {
            stored.manifests.push(entry(Some(name)));
        }
        keep_orphans_unnamed(&previous, &mut stored);
        self.write_index(&stored)?;
        self.record_from_entries(&digest, &stored.manifests)
    }

    /// Every platform's image of a multi-platform record (in the index's order, each with
    /// the record's names and `index`); a single-platform record alone.
    pub fn platform_images(&self, record: &ImageRecord) -> Result<Vec<ImageRecord>, StoreError> {
        let Some(index) = &record.index else {
            return Ok(vec![record.clone()]);
        };
        let mut out = Vec::new();
        for child in self.index_children(index) {
            let mut r = self.record_of_manifest(&child.digest)?;
            r.names = record.names.clone();
            r.index = Some(index.clone());
            out.push(r);
        }
        Ok(out)
    }

    /// The bytes of a multi-platform record's index blob.
    pub fn index_bytes(&self, record: &ImageRecord) -> Result<Option<Vec<u8>>, StoreError> {
        record
            .index
            .as_ref()
            .map(|d| self.read_blob(d, MAX_DOCUMENT_SIZE))
            .transpose()
    }
}
