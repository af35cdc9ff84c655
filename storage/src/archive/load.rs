//! Loading: the images of a docker-archive or oci-archive, verified and stored, named last.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::members::{normalize_member, ArchiveIndex, Member};
use super::{
    blob_member, ArchiveError, DockerEntry, LoadedImage, CONTAINERD_NAME_ANNOTATION, OCI_INDEX,
};
use crate::digest::{Digest, HashingReader};
use crate::error::StoreError;
use crate::index::{descriptor, oci_manifest, parse_config, parse_manifest};
use crate::ingest::{decoder, sniff, Codec, LayerExpectation};
use crate::store::Store;
use crate::{
    MAX_DOCUMENT_SIZE, OCI_LAYER_GZIP, OCI_LAYER_TAR, OCI_LAYER_ZSTD, REF_NAME_ANNOTATION,
};

const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Cap on `manifest.json` and `index.json` (they grow with the number of images).
const MAX_INDEX_SIZE: u64 = 16 * 1024 * 1024;

/// An `index.json` descriptor.
#[derive(Debug, Clone, Deserialize)]
struct IndexDescriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    size: i64,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    platform: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct IndexDocument {
    #[serde(default)]
    manifests: Vec<IndexDescriptor>,
}

/// An image whose content is in the store, waiting to be named.
struct Prepared {
    names: Vec<String>,
    /// The image manifest, or the index of a multi-platform image.
    manifest: Vec<u8>,
    /// The image's config (empty for an index).
    config: Vec<u8>,
    /// An index's images: (manifest, config) of each platform.
    platforms: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Store {
    /// Loads every image of a docker-archive or oci-archive (detected by content; gzip or zstd
    /// compressed archives are decompressed into the store's tmp first). `normalize` turns a
    /// name found in the archive into the stored form, or says why it cannot be used.
    pub fn load_archive(
        &self,
        path: &Path,
        normalize: &dyn Fn(&str) -> Result<String, String>,
    ) -> Result<Vec<LoadedImage>, ArchiveError> {
        let read_err = |source: io::Error| ArchiveError::Read {
            path: path.to_path_buf(),
            source,
        };
        let mut file = File::open(path).map_err(read_err)?;
        if !file.metadata().map_err(read_err)?.is_file() {
            // A pipe or device (`-i /dev/stdin`) can be read only once: spool it.
            return self
                .load_archive_reader(&mut file, normalize)
                .map_err(|e| rename_path(e, Path::new("<stdin>"), path));
        }
        let mut head = Vec::new();
        (&mut file)
            .take(4)
            .read_to_end(&mut head)
            .map_err(read_err)?;
        match sniff(&head) {
            Codec::Plain | Codec::Sniff => self.load_plain_archive(path, normalize),
            codec => {
                let file = File::open(path).map_err(read_err)?;
                let mut decoded = decoder(codec, io::BufReader::new(file)).map_err(read_err)?;
                self.load_spooled(&mut decoded, path, |spooled| {
                    self.load_plain_archive(spooled, normalize)
                })
            }
        }
    }

    /// Like [`Store::load_archive`] for an archive arriving on a stream (standard input): it is
    /// copied into the store's tmp first (a tar's members come in any order).
    pub fn load_archive_reader(
        &self,
        reader: &mut dyn Read,
        normalize: &dyn Fn(&str) -> Result<String, String>,
    ) -> Result<Vec<LoadedImage>, ArchiveError> {
        self.load_spooled(reader, Path::new("<stdin>"), |spooled| {
            self.load_archive(spooled, normalize)
        })
    }

    /// Copies `reader` (what the user knows as `shown`) into the store's tmp, then loads the
    /// copy with `load`; errors about the copy name `shown` instead.
    fn load_spooled(
        &self,
        reader: &mut dyn Read,
        shown: &Path,
        load: impl FnOnce(&Path) -> Result<Vec<LoadedImage>, ArchiveError>,
    ) -> Result<Vec<LoadedImage>, ArchiveError> {
        let tmp = self.tmp_dir("load")?;
        let spooled = tmp.path().join("archive");
        let mut file =
            File::create(&spooled).map_err(|e| StoreError::io("creating", &spooled, e))?;
        io::copy(reader, &mut file).map_err(|source| ArchiveError::Read {
            path: shown.to_path_buf(),
            source,
        })?;
        drop(file);
        load(&spooled).map_err(|e| rename_path(e, &spooled, shown))
    }

    fn load_plain_archive(
        &self,
        path: &Path,
        normalize: &dyn Fn(&str) -> Result<String, String>,
    ) -> Result<Vec<LoadedImage>, ArchiveError> {
        let archive = ArchiveIndex::open(path)?;
        let _lease = self.lease()?;
        // An OCI layout wins over a manifest.json beside it (Docker 25+ and gcr write both):
        // it keeps the manifests as they were, digests included.
        let prepared = if archive.has("oci-layout") && archive.has("index.json") {
            self.prepare_oci(&archive, normalize)?
        } else if archive.has("manifest.json") {
            self.prepare_docker(&archive, normalize)?
        } else if archive.has("index.json") {
            self.prepare_oci(&archive, normalize)?
        } else {
            return Err(ArchiveError::UnknownFormat {
                path: path.to_path_buf(),
            });
        };
        // A name with a digest must be the digest of what it names (as after a pull).
        for image in &prepared {
            let digest = Digest::of(&image.manifest);
            let source = if image.platforms.is_empty() {
                parse_manifest(&digest, &image.manifest)?.source
            } else {
                None
            };
            for name in &image.names {
                if let Some((_, named)) = name.split_once('@') {
                    if named != digest.as_str()
                        && Some(named) != source.as_ref().map(|d| d.as_str())
                    {
                        return Err(ArchiveError::BadName {
                            path: path.to_path_buf(),
                            name: name.clone(),
                            reason: format!("the image it names has manifest {digest}"),
                        });
                    }
                }
            }
        }
        // Names last: every image's content is stored before any name points at it.
        let mut loaded = Vec::new();
        for image in prepared {
            let record = if image.platforms.is_empty() {
                self.commit_image(&image.names, &image.manifest, &image.config)?
            } else {
                for (manifest, config) in &image.platforms {
                    self.commit_image(&[], manifest, config)?;
                }
                self.commit_index(&image.names, &image.manifest)?
            };
            loaded.push(LoadedImage {
                id: record.id,
                names: image.names,
            });
        }
        Ok(loaded)
    }

    fn prepare_docker(
        &self,
        archive: &ArchiveIndex,
        normalize: &dyn Fn(&str) -> Result<String, String>,
    ) -> Result<Vec<Prepared>, ArchiveError> {
        let bytes =
            archive.read_small("manifest.json", "the archive's manifest", MAX_INDEX_SIZE)?;
        let entries: Vec<DockerEntry> = serde_json::from_slice(&bytes)
            .map_err(|e| archive.invalid("manifest.json", e.to_string()))?;
        if entries.is_empty() {
            return Err(archive.invalid("manifest.json", "it lists no image"));
        }
        // Every name manifest.json gives is checked before anything is read or stored.
        for entry in &entries {
            for name in std::iter::once(&entry.config).chain(&entry.layers) {
                normalize_member(name.as_bytes()).map_err(|reason| ArchiveError::UnsafeMember {
                    path: archive.path.clone(),
                    name: name.clone(),
                    reason,
                })?;
            }
        }
        let mut out = Vec::new();
        for entry in entries {
            let config = archive.read_small(
                &entry.config,
                "the Config of manifest.json",
                MAX_DOCUMENT_SIZE,
            )?;
            let config_digest = Digest::of(&config);
            let parsed = parse_config(&config_digest, &config)?;
            if parsed.diff_ids.len() != entry.layers.len() {
                return Err(archive.invalid(
                    "manifest.json",
                    format!(
                        "{} lists {} layers but its config has {} diff_ids",
                        entry.config,
                        entry.layers.len(),
                        parsed.diff_ids.len()
                    ),
                ));
            }
            let mut descriptors = Vec::new();
            for (layer_name, diff_id) in entry.layers.iter().zip(&parsed.diff_ids) {
                let member = archive.member(layer_name, "a layer of manifest.json")?;
                let expect = self.docker_layer_expectation(archive, member, diff_id)?;
                self.ingest_layer(&mut archive.reader(member), &expect, &mut |_| {})
                    .map_err(|e| layer_error(archive, layer_name, e))?;
                descriptors.push(descriptor(&expect.media_type, &expect.digest, expect.size));
            }
            let manifest = oci_manifest(&config, descriptors);
            let mut names = Vec::new();
            for tag in entry.repo_tags.unwrap_or_default() {
                let name = normalize(&tag).map_err(|reason| ArchiveError::BadName {
                    path: archive.path.clone(),
                    name: tag.clone(),
                    reason,
                })?;
                if !names.contains(&name) {
                    names.push(name);
                }
            }
            out.push(Prepared {
                names,
                manifest,
                config,
                platforms: Vec::new(),
            });
        }
        Ok(out)
    }

    /// What a docker-archive layer member is: an uncompressed tar (its digest is the diff_id,
    /// checked while it is ingested) or, as some tools write, a gzip or zstd blob (hashed first).
    fn docker_layer_expectation(
        &self,
        archive: &ArchiveIndex,
        member: Member,
        diff_id: &Digest,
    ) -> Result<LayerExpectation, ArchiveError> {
        let read_err = |source: io::Error| ArchiveError::Read {
            path: archive.path.clone(),
            source,
        };
        let mut head = Vec::new();
        archive
            .reader(member)
            .take(4)
            .read_to_end(&mut head)
            .map_err(read_err)?;
        let media_type = match sniff(&head) {
            Codec::Gzip => OCI_LAYER_GZIP,
            Codec::Zstd => OCI_LAYER_ZSTD,
            _ => {
                return Ok(LayerExpectation {
                    digest: diff_id.clone(),
                    size: member.size,
                    media_type: OCI_LAYER_TAR.to_string(),
                    diff_id: diff_id.clone(),
                })
            }
        };
        let mut hashing = HashingReader::new(archive.reader(member));
        io::copy(&mut hashing, &mut io::sink()).map_err(read_err)?;
        Ok(LayerExpectation {
            digest: hashing.hash.finish(),
            size: member.size,
            media_type: media_type.to_string(),
            diff_id: diff_id.clone(),
        })
    }

    fn prepare_oci(
        &self,
        archive: &ArchiveIndex,
        normalize: &dyn Fn(&str) -> Result<String, String>,
    ) -> Result<Vec<Prepared>, ArchiveError> {
        let bytes = archive.read_small("index.json", "the OCI layout's index", MAX_INDEX_SIZE)?;
        let index: IndexDocument = serde_json::from_slice(&bytes)
            .map_err(|e| archive.invalid("index.json", e.to_string()))?;
        if index.manifests.is_empty() {
            return Err(archive.invalid("index.json", "it lists no image"));
        }
        // One image per manifest digest, with every name that points at it.
        let mut out: Vec<(Digest, Prepared)> = Vec::new();
        for descriptor in &index.manifests {
            let whole = self.whole_index(archive, descriptor)?;
            let (digest, manifest) = match &whole {
                Some((digest, bytes, _)) => (digest.clone(), bytes.clone()),
                None => self.oci_image_manifest(archive, descriptor)?,
            };
            let name = descriptor
                .annotations
                .get(CONTAINERD_NAME_ANNOTATION)
                .or_else(|| descriptor.annotations.get(REF_NAME_ANNOTATION))
                // A bare tag ("latest", as Docker 25+ writes next to the full name) names
                // nothing on its own.
                .filter(|n| n.contains('/') || n.contains(':') || n.contains('.'))
                .map(|n| {
                    normalize(n).map_err(|reason| ArchiveError::BadName {
                        path: archive.path.clone(),
                        name: n.clone(),
                        reason,
                    })
                })
                .transpose()?;
            if let Some((_, prepared)) = out.iter_mut().find(|(d, _)| *d == digest) {
                if let Some(name) = name {
                    if !prepared.names.contains(&name) {
                        prepared.names.push(name);
                    }
                }
                continue;
            }
            let (config, platforms) = match whole {
                Some((_, _, children)) => {
                    let mut platforms = Vec::new();
                    for (child, bytes) in children {
                        let config = self.ingest_oci_image(archive, &child, &bytes)?;
                        platforms.push((bytes, config));
                    }
                    (Vec::new(), platforms)
                }
                None => (
                    self.ingest_oci_image(archive, &digest, &manifest)?,
                    Vec::new(),
                ),
            };
            out.push((
                digest,
                Prepared {
                    names: name.into_iter().collect(),
                    manifest,
                    config,
                    platforms,
                },
            ));
        }
        Ok(out.into_iter().map(|(_, p)| p).collect())
    }

    /// A multi-platform image to load whole, as `gcr save` and `docker buildx` write one: a
    /// descriptor of an index whose every entry is a linux image manifest in the archive.
    /// Returns the index and its images' manifests. None for anything else (an image
    /// manifest, or an index with attestations or with platforms left out of the archive: its
    /// host image alone is loaded, as before).
    #[allow(clippy::type_complexity)]
    fn whole_index(
        &self,
        archive: &ArchiveIndex,
        descriptor: &IndexDescriptor,
    ) -> Result<Option<(Digest, Vec<u8>, Vec<(Digest, Vec<u8>)>)>, ArchiveError> {
        let digest = parse_descriptor_digest(archive, &descriptor.digest)?;
        let bytes = archive.read_blob(&digest, &format!("manifest {digest}"))?;
        check_size(archive, &digest, descriptor.size, bytes.len())?;
        let Ok(nested) = serde_json::from_slice::<IndexDocument>(&bytes) else {
            return Ok(None);
        };
        if nested.manifests.is_empty() {
            return Ok(None);
        }
        let mut children = Vec::new();
        for child in &nested.manifests {
            let os = child
                .platform
                .as_ref()
                .and_then(|p| p.get("os"))
                .and_then(Value::as_str);
            let Ok(child_digest) = child.digest.parse::<Digest>() else {
                return Ok(None);
            };
            if os != Some("linux") || !archive.has(&blob_member(&child_digest)) {
                return Ok(None);
            }
            let child_bytes =
                archive.read_blob(&child_digest, &format!("manifest {child_digest}"))?;
            check_size(archive, &child_digest, child.size, child_bytes.len())?;
            let is_image = serde_json::from_slice::<Value>(&child_bytes)
                .ok()
                .is_some_and(|v| v.get("manifests").is_none() && v.get("layers").is_some());
            if !is_image {
                return Ok(None);
            }
            let Ok(parsed) = parse_manifest(&child_digest, &child_bytes) else {
                return Ok(None);
            };
            let all_there = archive.has(&blob_member(&parsed.config))
                && parsed.layers.iter().all(|l| archive.has(&blob_member(l)));
            if !all_there {
                return Ok(None);
            }
            children.push((child_digest, child_bytes));
        }
        Ok(Some((digest, bytes, children)))
    }

    /// The image manifest an index.json descriptor leads to: itself, or for a nested index the
    /// entry for this host's platform (or its only entry).
    fn oci_image_manifest(
        &self,
        archive: &ArchiveIndex,
        descriptor: &IndexDescriptor,
    ) -> Result<(Digest, Vec<u8>), ArchiveError> {
        let digest = parse_descriptor_digest(archive, &descriptor.digest)?;
        let bytes = archive.read_blob(&digest, &format!("manifest {digest}"))?;
        check_size(archive, &digest, descriptor.size, bytes.len())?;
        let is_index = descriptor.media_type == OCI_INDEX
            || descriptor.media_type == DOCKER_MANIFEST_LIST
            || serde_json::from_slice::<Value>(&bytes)
                .ok()
                .is_some_and(|v| v.get("manifests").is_some());
        if !is_index {
            return Ok((digest, bytes));
        }
        let nested: IndexDocument = serde_json::from_slice(&bytes)
            .map_err(|e| archive.invalid(&format!("index {digest}"), e.to_string()))?;
        let arch = crate::import::host_architecture();
        let chosen = nested
            .manifests
            .iter()
            .find(|d| {
                d.platform.as_ref().is_some_and(|p| {
                    p.get("architecture").and_then(Value::as_str) == Some(arch)
                        && p.get("os").and_then(Value::as_str) == Some("linux")
                })
            })
            .or(if nested.manifests.len() == 1 {
                nested.manifests.first()
            } else {
                None
            })
            .ok_or_else(|| {
                archive.invalid(
                    &format!("index {digest}"),
                    format!("no image for linux/{arch} in it"),
                )
            })?;
        let child = parse_descriptor_digest(archive, &chosen.digest)?;
        let child_bytes = archive.read_blob(&child, &format!("manifest {child}"))?;
        check_size(archive, &child, chosen.size, child_bytes.len())?;
        if serde_json::from_slice::<Value>(&child_bytes)
            .ok()
            .is_some_and(|v| v.get("manifests").is_some())
        {
            return Err(archive.invalid(
                &format!("index {digest}"),
                "an index inside an index inside index.json is not supported",
            ));
        }
        Ok((child, child_bytes))
    }

    /// Stores the layers (verified by the store), the config and any source manifest of one
    /// OCI image; returns the config.
    fn ingest_oci_image(
        &self,
        archive: &ArchiveIndex,
        digest: &Digest,
        manifest: &[u8],
    ) -> Result<Vec<u8>, ArchiveError> {
        let parsed = parse_manifest(digest, manifest)?;
        let config = archive.read_blob(&parsed.config, &format!("config {}", parsed.config))?;
        let cfg = parse_config(&parsed.config, &config)?;
        if cfg.diff_ids.len() != parsed.layers.len() {
            return Err(archive.invalid(
                &format!("manifest {digest}"),
                format!(
                    "{} layers but the config has {} diff_ids",
                    parsed.layers.len(),
                    cfg.diff_ids.len()
                ),
            ));
        }
        let v: Value = serde_json::from_slice(manifest)
            .map_err(|e| archive.invalid(&format!("manifest {digest}"), e.to_string()))?;
        let layers = v
            .get("layers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for ((layer, blob), diff_id) in layers.iter().zip(&parsed.layers).zip(&cfg.diff_ids) {
            let size = layer.get("size").and_then(Value::as_u64).ok_or_else(|| {
                archive.invalid(&format!("manifest {digest}"), "a layer has no size")
            })?;
            let media_type = layer
                .get("mediaType")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let name = blob_member(blob);
            let member = archive.member(&name, &format!("layer of manifest {digest}"))?;
            let expect = LayerExpectation {
                digest: blob.clone(),
                size,
                media_type,
                diff_id: diff_id.clone(),
            };
            self.ingest_layer(&mut archive.reader(member), &expect, &mut |_| {})
                .map_err(|e| layer_error(archive, &name, e))?;
        }
        if let Some(source) = &parsed.source {
            let bytes = archive.read_blob(source, &format!("source manifest {source}"))?;
            self.put_blob(&bytes)?;
        }
        Ok(config)
    }
}

fn parse_descriptor_digest(archive: &ArchiveIndex, digest: &str) -> Result<Digest, ArchiveError> {
    digest
        .parse()
        .map_err(|e: crate::DigestError| archive.invalid("index.json", e.to_string()))
}

fn check_size(
    archive: &ArchiveIndex,
    digest: &Digest,
    declared: i64,
    actual: usize,
) -> Result<(), ArchiveError> {
    if u64::try_from(declared).ok() != Some(actual as u64) {
        return Err(archive.invalid(
            &format!("descriptor of {digest}"),
            format!("it says {declared} bytes, the blob has {actual}"),
        ));
    }
    Ok(())
}

/// A store error about a layer, said with the member it came from.
fn layer_error(archive: &ArchiveIndex, member: &str, e: StoreError) -> ArchiveError {
    archive.invalid(&format!("layer {member:?}"), e.to_string())
}

/// Errors about the spooled copy name what the user gave instead.
fn rename_path(e: ArchiveError, spooled: &Path, shown: &Path) -> ArchiveError {
    let fix = |p: PathBuf| if p == spooled { shown.to_path_buf() } else { p };
    match e {
        ArchiveError::Read { path, source } => ArchiveError::Read {
            path: fix(path),
            source,
        },
        ArchiveError::UnsafeMember { path, name, reason } => ArchiveError::UnsafeMember {
            path: fix(path),
            name,
            reason,
        },
        ArchiveError::UnknownFormat { path } => ArchiveError::UnknownFormat { path: fix(path) },
        ArchiveError::MissingMember { path, name, why } => ArchiveError::MissingMember {
            path: fix(path),
            name,
            why,
        },
        ArchiveError::Invalid { path, what, reason } => ArchiveError::Invalid {
            path: fix(path),
            what,
            reason,
        },
        ArchiveError::DigestMismatch {
            path,
            what,
            expected,
            actual,
        } => ArchiveError::DigestMismatch {
            path: fix(path),
            what,
            expected,
            actual,
        },
        ArchiveError::BadName { path, name, reason } => ArchiveError::BadName {
            path: fix(path),
            name,
            reason,
        },
        other => other,
    }
}

#[cfg(test)]
#[path = "load_tests.rs"]
mod tests;
