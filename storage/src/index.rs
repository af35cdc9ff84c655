//! Image records: `index.json` (names), manifests and configs.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::digest::Digest;
use crate::error::{IoContext, StoreError};
use crate::store::Store;
use crate::{DOCKER_MANIFEST, MAX_DOCUMENT_SIZE, OCI_MANIFEST, REF_NAME_ANNOTATION};

/// Media type of an OCI image index.
pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// One image in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageRecord {
    /// Image ID: the digest of the config blob.
    pub id: Digest,
    /// Digest of the manifest blob.
    pub manifest_digest: Digest,
    /// Media type of the manifest (OCI or Docker schema 2).
    pub manifest_media_type: String,
    /// Every name pointing at this image, sorted.
    pub names: Vec<String>,
    /// `created` from the config, as written there (RFC 3339).
    pub created: Option<String>,
    /// Sum of the unpacked sizes of the layers, in bytes.
    pub size: u64,
    /// The layers' diff_ids (config `rootfs.diff_ids`), bottom first.
    pub layers: Vec<Digest>,
    /// The layers' blob digests (manifest `layers`), bottom first.
    pub layer_blobs: Vec<Digest>,
    /// Config `architecture`.
    pub architecture: String,
    /// Config `os`.
    pub os: String,
    /// Config `variant`, if any.
    pub variant: Option<String>,
    /// For a multi-platform name: the digest of its OCI index (the record is the host
    /// platform's image of it; `Store::platform_images` lists them all).
    pub index: Option<Digest>,
}

/// What `remove_image` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RemovedImage {
    /// Names that were removed ("Untagged: ...").
    pub untagged: Vec<String>,
    /// Blobs and layers deleted ("Deleted: ..."): the image ID first, then layer diff_ids.
    pub deleted: Vec<Digest>,
}

/// index.json as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Index {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default)]
    pub manifests: Vec<IndexEntry>,
}

/// One descriptor of index.json.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct IndexEntry {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl IndexEntry {
    pub(crate) fn name(&self) -> Option<&str> {
        self.annotations
            .get(REF_NAME_ANNOTATION)
            .map(String::as_str)
    }
}

/// Annotation of a manifest gcr converted from Docker schema 2 to OCI: the digest of the
/// original manifest (kept as a blob; it is the digest registries know).
pub(crate) const SOURCE_MANIFEST_ANNOTATION: &str = "dev.gcr.source-manifest";

/// The parts of a manifest the store needs.
#[derive(Debug, Clone)]
pub(crate) struct ParsedManifest {
    pub media_type: String,
    pub config: Digest,
    pub layers: Vec<Digest>,
    /// For a manifest converted from Docker schema 2: the original manifest.
    pub source: Option<Digest>,
}

impl ParsedManifest {
    /// Blobs this manifest needs besides itself and its config.
    pub(crate) fn blobs(&self) -> Vec<Digest> {
        self.layers
            .iter()
            .chain(self.source.iter())
            .cloned()
            .collect()
    }
}

/// The parts of a config the store needs.
#[derive(Debug, Clone)]
pub(crate) struct ParsedConfig {
    pub diff_ids: Vec<Digest>,
    pub created: Option<String>,
    pub architecture: String,
    pub os: String,
    pub variant: Option<String>,
}

pub(crate) fn parse_manifest(digest: &Digest, bytes: &[u8]) -> Result<ParsedManifest, StoreError> {
    let bad = |reason: String| StoreError::InvalidManifest {
        digest: digest.clone(),
        reason,
    };
    let v: Value = serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
    if v.get("manifests").is_some() {
        return Err(bad("it is an index, not an image manifest".to_string()));
    }
    if v.get("schemaVersion").and_then(Value::as_u64) != Some(2) {
        return Err(bad("schemaVersion is not 2".to_string()));
    }
    let media_type = match v.get("mediaType").and_then(Value::as_str) {
        None => OCI_MANIFEST.to_string(),
        Some(t) if t == OCI_MANIFEST || t == DOCKER_MANIFEST => t.to_string(),
        Some(t) => return Err(bad(format!("unsupported mediaType {t:?}"))),
    };
    let config = v
        .get("config")
        .and_then(|c| c.get("digest"))
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no config digest".to_string()))?
        .parse::<Digest>()
        .map_err(|e| bad(e.to_string()))?;
    let layers = layers_of(&v)
        .map_err(bad)?
        .iter()
        .map(|l| {
            l.get("digest")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("a layer has no digest".to_string()))?
                .parse::<Digest>()
                .map_err(|e| bad(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let source = match v
        .get("annotations")
        .and_then(|a| a.get(SOURCE_MANIFEST_ANNOTATION))
    {
        None => None,
        Some(d) => Some(
            d.as_str()
                .ok_or_else(|| bad(format!("{SOURCE_MANIFEST_ANNOTATION} is not a string")))?
                .parse::<Digest>()
                .map_err(|e| bad(e.to_string()))?,
        ),
    };
    Ok(ParsedManifest {
        media_type,
        config,
        layers,
        source,
    })
}

/// The `layers` array of a manifest.
fn layers_of(manifest: &Value) -> Result<&[Value], String> {
    manifest
        .get("layers")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .ok_or_else(|| "no layers array".to_string())
}

/// A content descriptor: `{mediaType, digest, size}`.
pub(crate) fn descriptor(media_type: &str, digest: &Digest, size: u64) -> Value {
    serde_json::json!({
        "mediaType": media_type,
        "digest": digest.as_str(),
        "size": size,
    })
}

/// The OCI manifest of an image gcr assembles itself (import, a docker-archive load): the
/// config blob `config` and the layer descriptors `layers`.
pub(crate) fn oci_manifest(config: &[u8], layers: Vec<Value>) -> Vec<u8> {
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(crate::OCI_CONFIG, &Digest::of(config), config.len() as u64),
        "layers": layers,
    });
    manifest.to_string().into_bytes()
}

/// The OCI equivalent of a Docker schema 2 manifest (same config and layer blobs), so that
/// OCI-layout readers (skopeo, umoci) see the image. The original digest goes into an
/// annotation.
fn oci_from_docker(digest: &Digest, manifest: &[u8]) -> Result<Vec<u8>, StoreError> {
    let bad = |reason: String| StoreError::InvalidManifest {
        digest: digest.clone(),
        reason,
    };
    let v: Value = serde_json::from_slice(manifest).map_err(|e| bad(format!("not JSON: {e}")))?;
    let oci_descriptor = |d: &Value, media_type: String| -> Result<Value, StoreError> {
        let mut out = serde_json::Map::new();
        out.insert("mediaType".to_string(), Value::String(media_type));
        for key in ["digest", "size", "urls", "annotations"] {
            if let Some(x) = d.get(key) {
                out.insert(key.to_string(), x.clone());
            }
        }
        if out.get("size").and_then(Value::as_u64).is_none() {
            return Err(bad("a descriptor has no size".to_string()));
        }
        Ok(Value::Object(out))
    };
    let config = oci_descriptor(
        v.get("config")
            .ok_or_else(|| bad("no config".to_string()))?,
        crate::OCI_CONFIG.to_string(),
    )?;
    let layers = layers_of(&v)
        .map_err(bad)?
        .iter()
        .map(|l| {
            let media_type = l
                .get("mediaType")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let oci = match media_type {
                "application/vnd.docker.image.rootfs.diff.tar.gzip" => crate::OCI_LAYER_GZIP,
                "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
                    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
                }
                "application/vnd.docker.image.rootfs.diff.tar" => crate::OCI_LAYER_TAR,
                other => other,
            };
            oci_descriptor(l, oci.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let oci = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config,
        "layers": layers,
        "annotations": { SOURCE_MANIFEST_ANNOTATION: digest.as_str() },
    });
    Ok(oci.to_string().into_bytes())
}

pub(crate) fn parse_config(digest: &Digest, bytes: &[u8]) -> Result<ParsedConfig, StoreError> {
    let bad = |reason: String| StoreError::InvalidConfig {
        digest: digest.clone(),
        reason,
    };
    let v: Value = serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
    let diff_ids = v
        .get("rootfs")
        .and_then(|r| r.get("diff_ids"))
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no rootfs.diff_ids".to_string()))?
        .iter()
        .map(|d| {
            d.as_str()
                .ok_or_else(|| bad("a diff_id is not a string".to_string()))?
                .parse::<Digest>()
                .map_err(|e| bad(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let text = |key: &str| v.get(key).and_then(Value::as_str).map(str::to_string);
    Ok(ParsedConfig {
        diff_ids,
        created: text("created"),
        architecture: text("architecture").unwrap_or_default(),
        os: text("os").unwrap_or_default(),
        variant: text("variant"),
    })
}

/// Check an image name before it goes into index.json.
pub(crate) fn validate_name(name: &str) -> Result<(), StoreError> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.len() > 4096 {
        Some("longer than 4096 bytes")
    } else if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        Some("contains whitespace or control characters")
    } else {
        None
    };
    match reason {
        Some(r) => Err(StoreError::InvalidName {
            name: name.to_string(),
            reason: r.to_string(),
        }),
        None => Ok(()),
    }
}

impl Store {
    pub(crate) fn read_index(&self) -> Result<Index, StoreError> {
        let path = self.index_path();
        let bytes = fs::read(&path).ctx("reading", &path)?;
        serde_json::from_slice(&bytes).map_err(|source| StoreError::Json { path, source })
    }

    /// Write index.json atomically. Callers hold the store lock.
    pub(crate) fn write_index(&self, index: &Index) -> Result<(), StoreError> {
        let path = self.index_path();
        let mut index = index.clone();
        index.schema_version = 2;
        index.media_type = Some(OCI_INDEX.to_string());
        // One unnamed entry per image at most, and none for images that also have a name or
        // that a stored index holds (they are listed through it).
        let mut named: BTreeSet<Digest> = index
            .manifests
            .iter()
            .filter(|e| e.name().is_some())
            .map(|e| e.digest.clone())
            .collect();
        for e in index.manifests.iter().filter(|e| e.media_type == OCI_INDEX) {
            named.extend(self.index_children(&e.digest).into_iter().map(|c| c.digest));
        }
        let mut seen_unnamed = BTreeSet::new();
        index.manifests.retain(|e| {
            e.name().is_some()
                || (!named.contains(&e.digest) && seen_unnamed.insert(e.digest.clone()))
        });
        let bytes = serde_json::to_vec_pretty(&index).map_err(|source| StoreError::Json {
            path: path.clone(),
            source,
        })?;
        self.write_file_atomic(&path, &bytes)
    }

    /// Store an image: verifies every layer (blob and unpacked) is present, writes the config
    /// and manifest blobs, then under the store lock points each name at it in index.json. A
    /// name that pointed at another image moves to this one. With no names the image is stored
    /// unnamed (dangling).
    pub fn commit_image(
        &self,
        names: &[String],
        manifest: &[u8],
        config: &[u8],
    ) -> Result<ImageRecord, StoreError> {
        for name in names {
            validate_name(name)?;
        }
        let manifest_digest = Digest::of(manifest);
        let config_digest = Digest::of(config);
        let parsed = parse_manifest(&manifest_digest, manifest)?;
        if parsed.config != config_digest {
            return Err(StoreError::DigestMismatch {
                what: format!("config of manifest {manifest_digest}"),
                expected: parsed.config,
                actual: config_digest,
            });
        }
        let cfg = parse_config(&config_digest, config)?;
        if cfg.diff_ids.len() != parsed.layers.len() {
            return Err(StoreError::InvalidManifest {
                digest: manifest_digest,
                reason: format!(
                    "{} layers but the config lists {} diff_ids",
                    parsed.layers.len(),
                    cfg.diff_ids.len()
                ),
            });
        }
        self.put_blob(config)?;
        self.put_blob(manifest)?;
        // Docker manifests are listed through an OCI equivalent; the original stays a blob.
        let (manifest_digest, manifest, parsed) = if parsed.media_type == DOCKER_MANIFEST {
            let oci = oci_from_docker(&manifest_digest, manifest)?;
            let digest = self.put_blob(&oci)?;
            let parsed = parse_manifest(&digest, &oci)?;
            (digest, std::borrow::Cow::Owned(oci), parsed)
        } else {
            (
                manifest_digest,
                std::borrow::Cow::Borrowed(manifest),
                parsed,
            )
        };
        let _lock = self.lock()?;
        // Checked under the lock: garbage collection also runs under it.
        self.check_image_content(&parsed, &cfg)?;
        let mut index = self.read_index()?;
        let previous = index.manifests.clone();
        index
            .manifests
            .retain(|e| e.name().is_none_or(|n| !names.iter().any(|m| m == n)));
        let entry = |name: Option<&String>| IndexEntry {
            media_type: parsed.media_type.clone(),
            digest: manifest_digest.clone(),
            size: manifest.len() as u64,
            annotations: name
                .map(|n| BTreeMap::from([(REF_NAME_ANNOTATION.to_string(), n.clone())]))
                .unwrap_or_default(),
        };
        if names.is_empty() {
            index.manifests.push(entry(None));
        }
        for name in names {
            index.manifests.push(entry(Some(name)));
        }
        // Images that just lost their last name stay, unnamed.
        keep_orphans_unnamed(&previous, &mut index);
        self.write_index(&index)?;
        self.record_from_entries(&manifest_digest, &index.manifests)
    }

    pub(crate) fn check_image_content(
        &self,
        manifest: &ParsedManifest,
        config: &ParsedConfig,
    ) -> Result<(), StoreError> {
        for blob in &manifest.layers {
            if !self.has_blob(blob) {
                return Err(StoreError::MissingBlob {
                    digest: blob.clone(),
                });
            }
        }
        for diff_id in &config.diff_ids {
            if !self.has_layer(diff_id) {
                return Err(StoreError::MissingLayer {
                    diff_id: diff_id.clone(),
                });
            }
        }
        Ok(())
    }

    /// Build the record of one manifest (or index: its host platform's image) from the
    /// index entries that point at it.
    pub(crate) fn record_from_entries(
        &self,
        manifest_digest: &Digest,
        entries: &[IndexEntry],
    ) -> Result<ImageRecord, StoreError> {
        let mut names: Vec<String> = entries
            .iter()
            .filter(|e| &e.digest == manifest_digest)
            .filter_map(|e| e.name().map(str::to_string))
            .collect();
        names.sort();
        names.dedup();
        let bytes = self.read_blob(manifest_digest, MAX_DOCUMENT_SIZE)?;
        let mut record = if crate::platforms::is_index(&bytes) {
            let children = crate::platforms::parse_index(manifest_digest, &bytes)?;
            let child = crate::platforms::host_child(&children);
            let mut r = self.record_of_manifest(&child.digest)?;
            r.index = Some(manifest_digest.clone());
            r
        } else {
            self.record_of_manifest(manifest_digest)?
        };
        record.names = names;
        Ok(record)
    }

    /// The record of one image manifest, without names.
    pub(crate) fn record_of_manifest(
        &self,
        manifest_digest: &Digest,
    ) -> Result<ImageRecord, StoreError> {
        let manifest = self.read_blob(manifest_digest, MAX_DOCUMENT_SIZE)?;
        let parsed = parse_manifest(manifest_digest, &manifest)?;
        let config = self.read_blob(&parsed.config, MAX_DOCUMENT_SIZE)?;
        let cfg = parse_config(&parsed.config, &config)?;
        let names = Vec::new();
        let size = cfg.diff_ids.iter().map(|d| self.layer_size(d)).sum();
        let (manifest_digest, manifest_media_type) = match &parsed.source {
            Some(source) => (source.clone(), DOCKER_MANIFEST.to_string()),
            None => (manifest_digest.clone(), parsed.media_type.clone()),
        };
        Ok(ImageRecord {
            id: parsed.config,
            manifest_digest,
            manifest_media_type,
            names,
            created: cfg.created,
            size,
            layers: cfg.diff_ids,
            layer_blobs: parsed.layers,
            architecture: cfg.architecture,
            os: cfg.os,
            variant: cfg.variant,
            index: None,
        })
    }

    /// Every image in the store, newest first. Images whose manifest or config cannot be read
    /// are skipped with a warning (`check` reports them).
    pub fn images(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let index = self.read_index()?;
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for entry in &index.manifests {
            if !seen.insert(entry.digest.clone()) {
                continue;
            }
            match self.record_from_entries(&entry.digest, &index.manifests) {
                Ok(r) => out.push(r),
                Err(e) => {
                    tracing::warn!(manifest = %entry.digest, error = %e, "skipping broken image; run `gcr system check`")
                }
            }
        }
        out.sort_by(|a, b| b.created.cmp(&a.created).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Find an image by full name, image ID (`sha256:...` or bare hex), manifest digest, or a
    /// unique prefix (3 or more hex characters) of the ID.
    pub fn resolve_image(&self, name_or_id: &str) -> Result<ImageRecord, StoreError> {
        let images = self.images()?;
        if let Some(r) = images
            .iter()
            .find(|r| r.names.iter().any(|n| n == name_or_id))
        {
            return Ok(r.clone());
        }
        let hex = name_or_id.strip_prefix("sha256:").unwrap_or(name_or_id);
        if let Ok(d) = Digest::from_hex(hex) {
            if let Some(r) = images
                .iter()
                .find(|r| r.id == d)
                .or_else(|| images.iter().find(|r| r.manifest_digest == d))
                .or_else(|| images.iter().find(|r| r.index.as_ref() == Some(&d)))
            {
                return Ok(r.clone());
            }
        }
        let is_hex_prefix = hex.len() >= 3
            && hex.len() < 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if is_hex_prefix {
            let mut ids: Vec<&ImageRecord> = images
                .iter()
                .filter(|r| r.id.hex().starts_with(hex))
                .collect();
            ids.dedup_by(|a, b| a.id == b.id);
            match ids.len() {
                0 => {}
                1 => return Ok(ids[0].clone()),
                _ => {
                    return Err(StoreError::AmbiguousImage {
                        reference: name_or_id.to_string(),
                        candidates: ids
                            .iter()
                            .map(|r| r.id.short().to_string())
                            .collect::<Vec<_>>()
                            .join(", "),
                    })
                }
            }
        }
        Err(StoreError::ImageNotFound {
            reference: name_or_id.to_string(),
        })
    }

    /// The config blob of an image (verified, at most 4 MiB).
    pub fn image_config_bytes(&self, rec: &ImageRecord) -> Result<Vec<u8>, StoreError> {
        self.read_blob(&rec.id, MAX_DOCUMENT_SIZE)
    }

    /// The manifest blob of an image (verified, at most 4 MiB).
    pub fn image_manifest_bytes(&self, rec: &ImageRecord) -> Result<Vec<u8>, StoreError> {
        self.read_blob(&rec.manifest_digest, MAX_DOCUMENT_SIZE)
    }

    /// Point `name` at the image with ID `id` (moving it from any other image).
    pub fn tag(&self, id: &Digest, name: &str) -> Result<(), StoreError> {
        validate_name(name)?;
        let _lock = self.lock()?;
        let mut index = self.read_index()?;
        let target =
            self.manifest_for_id(&index, id)?
                .ok_or_else(|| StoreError::ImageNotFound {
                    reference: id.to_string(),
                })?;
        let previous = index.manifests.clone();
        index.manifests.retain(|e| e.name() != Some(name));
        index.manifests.push(IndexEntry {
            annotations: BTreeMap::from([(REF_NAME_ANNOTATION.to_string(), name.to_string())]),
            ..target
        });
        keep_orphans_unnamed(&previous, &mut index);
        self.write_index(&index)
    }

    /// Remove a name; the image stays (unnamed if that was its last name).
    pub fn untag(&self, name: &str) -> Result<(), StoreError> {
        let _lock = self.lock()?;
        let mut index = self.read_index()?;
        let previous = index.manifests.clone();
        let before = index.manifests.len();
        index.manifests.retain(|e| e.name() != Some(name));
        if index.manifests.len() == before {
            return Err(StoreError::NameNotFound {
                name: name.to_string(),
            });
        }
        keep_orphans_unnamed(&previous, &mut index);
        self.write_index(&index)
    }

    /// The index entry (any) of the manifest whose config is `id`.
    fn manifest_for_id(
        &self,
        index: &Index,
        id: &Digest,
    ) -> Result<Option<IndexEntry>, StoreError> {
        for entry in &index.manifests {
            if &entry.digest == id {
                return Ok(Some(entry.clone()));
            }
            let Ok(bytes) = self.read_blob(&entry.digest, MAX_DOCUMENT_SIZE) else {
                continue;
            };
            if let Ok(m) = parse_manifest(&entry.digest, &bytes) {
                if &m.config == id {
                    return Ok(Some(entry.clone()));
                }
            }
            // A multi-platform image is found by its host platform's image ID.
            if entry.media_type == OCI_INDEX {
                if let Ok(r) = self.record_from_entries(&entry.digest, &[]) {
                    if &r.id == id {
                        return Ok(Some(entry.clone()));
                    }
                }
            }
        }
        Ok(None)
    }

    /// The config digest of each manifest in the index, the platforms' manifests of stored
    /// indexes included (unreadable ones omitted).
    pub(crate) fn index_images(
        &self,
        index: &Index,
    ) -> BTreeMap<Digest, (Digest, ParsedManifest, Option<ParsedConfig>)> {
        let mut out = BTreeMap::new();
        let mut digests: Vec<Digest> = Vec::new();
        for entry in &index.manifests {
            digests.push(entry.digest.clone());
            if entry.media_type == OCI_INDEX {
                digests.extend(
                    self.index_children(&entry.digest)
                        .into_iter()
                        .map(|c| c.digest),
                );
            }
        }
        for digest in digests {
            if out.contains_key(&digest) {
                continue;
            }
            let Ok(bytes) = self.read_blob(&digest, MAX_DOCUMENT_SIZE) else {
                continue;
            };
            let Ok(m) = parse_manifest(&digest, &bytes) else {
                continue;
            };
            let cfg = self
                .read_blob(&m.config, MAX_DOCUMENT_SIZE)
                .ok()
                .and_then(|c| parse_config(&m.config, &c).ok());
            out.insert(digest, (m.config.clone(), m, cfg));
        }
        out
    }

    /// Remove the image with ID `id`: all its names and its index entries, then every blob and
    /// layer no other image uses. Refuses when containers use it, unless `force`.
    pub fn remove_image(&self, id: &Digest, force: bool) -> Result<RemovedImage, StoreError> {
        let users = self.containers_using(id)?;
        if !users.is_empty() && !force {
            return Err(StoreError::ImageInUse {
                id: id.clone(),
                containers: users.join(", "),
            });
        }
        let _lock = self.lock()?;
        let mut index = self.read_index()?;
        let images = self.index_images(&index);
        let mut doomed: BTreeSet<Digest> = images
            .iter()
            .filter(|(manifest, (config, _, _))| config == id || *manifest == id)
            .map(|(manifest, _)| manifest.clone())
            .collect();
        // A multi-platform image goes whole: by its index digest or any platform's image.
        let mut doomed_indexes = Vec::new();
        for e in index.manifests.iter().filter(|e| e.media_type == OCI_INDEX) {
            let children = self.index_children(&e.digest);
            if &e.digest == id || children.iter().any(|c| doomed.contains(&c.digest)) {
                doomed_indexes.push((e.digest.clone(), children));
            }
        }
        for (digest, children) in &doomed_indexes {
            doomed.insert(digest.clone());
            doomed.extend(children.iter().map(|c| c.digest.clone()));
        }
        if doomed.is_empty() {
            return Err(StoreError::ImageNotFound {
                reference: id.to_string(),
            });
        }
        let mut removed = RemovedImage::default();
        for e in &index.manifests {
            if doomed.contains(&e.digest) {
                if let Some(n) = e.name() {
                    removed.untagged.push(n.to_string());
                }
            }
        }
        index.manifests.retain(|e| !doomed.contains(&e.digest));
        self.write_index(&index)?;
        removed.deleted.push(id.clone());
        // Delete what only the removed image used, unless a pull or build holds a lease: it
        // may be about to commit an image sharing those layers. Then `prune` reclaims it later.
        let Some(_gc) = self.try_gc_lease()? else {
            tracing::debug!(image = %id, "a pull or build is running; leaving content for prune");
            return Ok(removed);
        };
        let kept = self.index_images(&index);
        let mut keep_blobs = BTreeSet::new();
        let mut keep_layers = BTreeSet::new();
        for (manifest, (config, m, cfg)) in &kept {
            keep_blobs.insert(manifest.clone());
            keep_blobs.insert(config.clone());
            keep_blobs.extend(m.blobs());
            if let Some(cfg) = cfg {
                keep_layers.extend(cfg.diff_ids.iter().cloned());
            }
        }
        for (digest, _) in &doomed_indexes {
            if !keep_blobs.contains(digest) && !kept.contains_key(digest) {
                self.discard_path(&self.blob_path(digest))?;
            }
        }
        for manifest in &doomed {
            let Some((config, m, cfg)) = images.get(manifest) else {
                continue;
            };
            let blobs = [manifest.clone(), config.clone()]
                .into_iter()
                .chain(m.blobs());
            for blob in blobs {
                if !keep_blobs.contains(&blob) {
                    self.discard_path(&self.blob_path(&blob))?;
                }
            }
            if let Some(cfg) = cfg {
                for diff_id in &cfg.diff_ids {
                    if !keep_layers.contains(diff_id) {
                        self.discard_path(&self.layer_root(diff_id))?;
                        removed.deleted.push(diff_id.clone());
                    }
                }
            }
        }
        removed.untagged.sort();
        Ok(removed)
    }
}

/// After names were removed from `index`, images that lost every entry stay as unnamed entries.
pub(crate) fn keep_orphans_unnamed(previous: &[IndexEntry], index: &mut Index) {
    let mut orphans: Vec<IndexEntry> = Vec::new();
    for e in previous {
        let present = index.manifests.iter().any(|f| f.digest == e.digest)
            || orphans.iter().any(|f| f.digest == e.digest);
        if !present {
            let mut e = e.clone();
            e.annotations.clear();
            orphans.push(e);
        }
    }
    index.manifests.extend(orphans);
}
