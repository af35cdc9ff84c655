//! Saving: images from the store written as a docker-archive or an oci-archive.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};

use serde_json::{json, Value};

use super::{
    blob_member, ArchiveError, ArchiveFormat, DockerEntry, SaveRequest, CONTAINERD_NAME_ANNOTATION,
    OCI_INDEX,
};
use crate::digest::{Digest, HashingReader};
use crate::error::StoreError;
use crate::index::{descriptor, parse_manifest, ImageRecord};
use crate::ingest::{codec_for, decoder, sniff, Codec};
use crate::store::Store;
use crate::{DOCKER_MANIFEST, MAX_DOCUMENT_SIZE, OCI_MANIFEST, REF_NAME_ANNOTATION};

/// Writes tar members with fixed metadata (owner 0:0, mode 0644, mtime 0), as podman does.
pub(super) struct TarOut<'a> {
    builder: tar::Builder<&'a mut dyn Write>,
}

impl<'a> TarOut<'a> {
    pub(super) fn new(out: &'a mut dyn Write) -> TarOut<'a> {
        TarOut {
            builder: tar::Builder::new(out),
        }
    }

    fn file(&mut self, name: &str, size: u64, data: &mut dyn Read) -> Result<(), ArchiveError> {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_size(size);
        let mut exact = ExactReader {
            inner: data,
            left: size,
        };
        self.builder
            .append_data(&mut header, name, &mut exact)
            .map_err(|source| ArchiveError::Write { source })
    }

    pub(super) fn bytes(&mut self, name: &str, bytes: &[u8]) -> Result<(), ArchiveError> {
        self.file(name, bytes.len() as u64, &mut io::Cursor::new(bytes))
    }

    fn dir(&mut self, name: &str) -> Result<(), ArchiveError> {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o755);
        header.set_mtime(0);
        header.set_size(0);
        self.builder
            .append_data(&mut header, name, io::empty())
            .map_err(|source| ArchiveError::Write { source })
    }

    pub(super) fn finish(mut self) -> Result<(), ArchiveError> {
        self.builder
            .finish()
            .map_err(|source| ArchiveError::Write { source })?;
        let out = self
            .builder
            .into_inner()
            .map_err(|source| ArchiveError::Write { source })?;
        out.flush().map_err(|source| ArchiveError::Write { source })
    }
}

/// Yields exactly `left` bytes of `inner`: a source that ends early is an error rather than a
/// short (corrupt) tar member.
struct ExactReader<'a> {
    inner: &'a mut dyn Read,
    left: u64,
}

impl Read for ExactReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the source ended {} bytes early", self.left),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Layer descriptors (digest, media type) of a stored manifest.
fn layer_media_types(digest: &Digest, manifest: &[u8]) -> Result<Vec<String>, StoreError> {
    let v: Value = serde_json::from_slice(manifest).map_err(|e| StoreError::InvalidManifest {
        digest: digest.clone(),
        reason: format!("not JSON: {e}"),
    })?;
    Ok(v.get("layers")
        .and_then(Value::as_array)
        .map(|layers| {
            layers
                .iter()
                .map(|l| {
                    l.get("mediaType")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string()
                })
                .collect()
        })
        .unwrap_or_default())
}

impl Store {
    /// Writes the images to `out` as an archive of `format`.
    pub fn save_archive(
        &self,
        images: &[SaveRequest],
        format: ArchiveFormat,
        out: &mut dyn Write,
    ) -> Result<(), ArchiveError> {
        // Keep garbage collection away from the blobs while they are read.
        let _lease = self.lease()?;
        match format {
            ArchiveFormat::DockerArchive => self.save_docker(images, out),
            ArchiveFormat::OciArchive => self.save_oci(images, out),
        }
    }

    fn save_docker(&self, images: &[SaveRequest], out: &mut dyn Write) -> Result<(), ArchiveError> {
        let mut tar = TarOut::new(out);
        let mut entries: Vec<DockerEntry> = Vec::new();
        let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        let mut written: Vec<String> = Vec::new();
        for request in images {
            let record = &request.record;
            let manifest = self.image_manifest_bytes(record)?;
            let media_types = layer_media_types(&record.manifest_digest, &manifest)?;
            let mut layers = Vec::new();
            for (i, (diff_id, blob)) in record.layers.iter().zip(&record.layer_blobs).enumerate() {
                let name = format!("{}.tar", diff_id.hex());
                if !written.contains(&name) {
                    let media_type = media_types.get(i).map(String::as_str).unwrap_or_default();
                    self.write_uncompressed_layer(
                        &mut tar, &name, record, diff_id, blob, media_type,
                    )?;
                    written.push(name.clone());
                }
                layers.push(name);
            }
            let config_name = format!("{}.json", record.id.hex());
            if !written.contains(&config_name) {
                let config = self.image_config_bytes(record)?;
                tar.bytes(&config_name, &config)?;
                written.push(config_name.clone());
            }
            for name in &request.names {
                if let Some((repo, tag)) = split_tag(name) {
                    if let Some(top) = record.layers.last() {
                        repositories
                            .entry(repo.to_string())
                            .or_default()
                            .insert(tag.to_string(), top.hex().to_string());
                    }
                }
            }
            add_docker_entry(&mut entries, config_name, &request.names, layers);
        }
        let manifest_json = serde_json::to_vec(&entries).map_err(|e| ArchiveError::Write {
            source: io::Error::other(e),
        })?;
        tar.bytes("manifest.json", &manifest_json)?;
        if !repositories.is_empty() {
            let repos = serde_json::to_vec(&repositories).map_err(|e| ArchiveError::Write {
                source: io::Error::other(e),
            })?;
            tar.bytes("repositories", &repos)?;
        }
        tar.finish()
    }

    /// Writes a layer as an uncompressed tar member, checking that it hashes to its diff_id.
    /// A compressed blob is decompressed twice: once to learn the size the member header needs
    /// (and verify the diff_id), once to write it; nothing is staged on disk.
    fn write_uncompressed_layer(
        &self,
        tar: &mut TarOut<'_>,
        name: &str,
        record: &ImageRecord,
        diff_id: &Digest,
        blob: &Digest,
        media_type: &str,
    ) -> Result<(), ArchiveError> {
        let fail = |reason: String| ArchiveError::SaveLayer {
            id: record.id.clone(),
            diff_id: diff_id.clone(),
            reason,
        };
        let path = self.blob_path(blob);
        let open = || -> Result<Box<dyn Read>, ArchiveError> {
            let file = self.open_blob(blob)?;
            let mut file = io::BufReader::with_capacity(256 * 1024, file);
            let codec = match codec_for(media_type, blob)? {
                Codec::Sniff => {
                    let head = io::BufRead::fill_buf(&mut file)
                        .map_err(|e| fail(format!("reading {}: {e}", path.display())))?;
                    sniff(head)
                }
                c => c,
            };
            decoder(codec, file).map_err(|e| fail(format!("decompressing: {e}")))
        };
        let mut counting = HashingReader::new(open()?);
        io::copy(&mut counting, &mut io::sink())
            .map_err(|e| fail(format!("decompressing blob {blob}: {e}")))?;
        let size = counting.hash.len();
        let actual = counting.hash.finish();
        if &actual != diff_id {
            return Err(fail(format!(
                "blob {blob} decompresses to {actual}, not the diff_id (run `gcr system check`)"
            )));
        }
        let mut second = HashingReader::new(open()?);
        tar.file(name, size, &mut second)?;
        if &second.hash.finish() != diff_id {
            return Err(fail(format!("blob {blob} changed while it was saved")));
        }
        Ok(())
    }

    fn save_oci(&self, images: &[SaveRequest], out: &mut dyn Write) -> Result<(), ArchiveError> {
        let mut tar = TarOut::new(out);
        tar.bytes("oci-layout", b"{\"imageLayoutVersion\":\"1.0.0\"}")?;
        tar.dir("blobs/")?;
        tar.dir("blobs/sha256/")?;
        let mut written: Vec<Digest> = Vec::new();
        let mut index_entries: Vec<Value> = Vec::new();
        let mut docker_entries: Vec<DockerEntry> = Vec::new();
        for request in images {
            let record = &request.record;
            let (mut manifest_digest, mut manifest) = self.oci_manifest_of(record)?;
            // A multi-platform image: every platform's image, then its index, which the
            // archive's index.json names.
            for platform in self.platform_images(record)? {
                let (digest, bytes) = self.oci_manifest_of(&platform)?;
                let parsed = parse_manifest(&digest, &bytes)?;
                // As Docker 25+ writes it: a manifest.json over the same blobs, so engines
                // that only know docker-archives (Docker up to 24) load the archive too (the
                // host's platform only: docker-archives hold one image per name).
                if platform.id == record.id {
                    add_docker_entry(
                        &mut docker_entries,
                        blob_member(&parsed.config),
                        &request.names,
                        parsed.layers.iter().map(blob_member).collect(),
                    );
                }
                let mut blobs: Vec<Digest> = parsed.layers.clone();
                blobs.push(parsed.config.clone());
                blobs.extend(parsed.source.iter().cloned());
                blobs.push(digest.clone());
                for blob in blobs {
                    if written.contains(&blob) {
                        continue;
                    }
                    self.write_blob_member(&mut tar, &blob)?;
                    written.push(blob);
                }
            }
            let mut media_type = OCI_MANIFEST;
            if let (Some(digest), Some(bytes)) = (&record.index, self.index_bytes(record)?) {
                if !written.contains(digest) {
                    self.write_blob_member(&mut tar, digest)?;
                    written.push(digest.clone());
                }
                (manifest_digest, manifest) = (digest.clone(), bytes);
                media_type = OCI_INDEX;
            }
            let index_entry = |name: Option<&String>| {
                let mut d = descriptor(media_type, &manifest_digest, manifest.len() as u64);
                if let Some(name) = name {
                    d["annotations"] = json!({
                        REF_NAME_ANNOTATION: name,
                        CONTAINERD_NAME_ANNOTATION: name,
                    });
                }
                d
            };
            if request.names.is_empty() {
                index_entries.push(index_entry(None));
            }
            for name in &request.names {
                index_entries.push(index_entry(Some(name)));
            }
        }
        let index = json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": index_entries,
        });
        tar.bytes("index.json", index.to_string().as_bytes())?;
        let manifest_json =
            serde_json::to_vec(&docker_entries).map_err(|e| ArchiveError::Write {
                source: io::Error::other(e),
            })?;
        tar.bytes("manifest.json", &manifest_json)?;
        tar.finish()
    }

    /// The OCI manifest of an image: its own, or for an image pulled with a Docker schema 2
    /// manifest, the OCI equivalent the store lists it by (which names the original in an
    /// annotation; that blob goes into the archive too).
    fn oci_manifest_of(&self, record: &ImageRecord) -> Result<(Digest, Vec<u8>), ArchiveError> {
        if record.manifest_media_type != DOCKER_MANIFEST {
            let bytes = self.image_manifest_bytes(record)?;
            return Ok((record.manifest_digest.clone(), bytes));
        }
        let index = self.read_index()?;
        for entry in &index.manifests {
            let Ok(bytes) = self.read_blob(&entry.digest, MAX_DOCUMENT_SIZE) else {
                continue;
            };
            let Ok(parsed) = parse_manifest(&entry.digest, &bytes) else {
                continue;
            };
            if parsed.source.as_ref() == Some(&record.manifest_digest) {
                return Ok((entry.digest.clone(), bytes));
            }
        }
        Err(ArchiveError::Store(StoreError::InvalidManifest {
            digest: record.manifest_digest.clone(),
            reason:
                "no OCI equivalent of this Docker manifest in index.json (run `gcr system check`)"
                    .to_string(),
        }))
    }

    /// Opens a stored blob; a missing one is `MissingBlob`.
    fn open_blob(&self, blob: &Digest) -> Result<File, ArchiveError> {
        let path = self.blob_path(blob);
        File::open(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                ArchiveError::Store(StoreError::MissingBlob {
                    digest: blob.clone(),
                })
            } else {
                ArchiveError::Store(StoreError::io("opening", &path, e))
            }
        })
    }

    /// Copies a stored blob into `blobs/sha256/<hex>`, verifying its digest on the way.
    fn write_blob_member(&self, tar: &mut TarOut<'_>, blob: &Digest) -> Result<(), ArchiveError> {
        let path = self.blob_path(blob);
        let file = self.open_blob(blob)?;
        let size = file
            .metadata()
            .map_err(|e| StoreError::io("reading", &path, e))?
            .len();
        let mut reader = HashingReader::new(io::BufReader::with_capacity(256 * 1024, file));
        tar.file(&blob_member(blob), size, &mut reader)?;
        let actual = reader.hash.finish();
        if &actual != blob {
            return Err(ArchiveError::Store(StoreError::DigestMismatch {
                what: path.display().to_string(),
                expected: blob.clone(),
                actual,
            }));
        }
        Ok(())
    }
}

/// `repo:tag` -> (repo, tag); None for digest references or names without a tag.
fn split_tag(name: &str) -> Option<(&str, &str)> {
    if name.contains('@') {
        return None;
    }
    let slash = name.rfind('/').map(|i| i + 1).unwrap_or(0);
    let colon = name[slash..].rfind(':')? + slash;
    Some((&name[..colon], &name[colon + 1..]))
}

/// Adds an image to a docker-archive `manifest.json`, or its names to the entry of the same
/// config. `docker load` takes only `name:tag` in RepoTags; a `name@digest` cannot be one.
fn add_docker_entry(
    entries: &mut Vec<DockerEntry>,
    config: String,
    names: &[String],
    layers: Vec<String>,
) {
    let tagged: Vec<String> = names.iter().filter(|n| !n.contains('@')).cloned().collect();
    match entries.iter_mut().find(|e| e.config == config) {
        Some(entry) => {
            let tags = entry.repo_tags.get_or_insert_with(Vec::new);
            for name in tagged {
                if !tags.contains(&name) {
                    tags.push(name);
                }
            }
        }
        None => entries.push(DockerEntry {
            config,
            repo_tags: (!tagged.is_empty()).then_some(tagged),
            layers,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_split_off_names() {
        assert_eq!(split_tag("h:5000/a/b:t"), Some(("h:5000/a/b", "t")));
        assert_eq!(split_tag("h:5000/a/b"), None);
        assert_eq!(split_tag("a/b@sha256:00"), None);
    }
}
