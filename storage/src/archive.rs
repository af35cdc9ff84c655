//! `save` and `load`: images to and from image archives.
//!
//! - docker-archive (what `docker save` up to 24 and `podman save` write): `manifest.json`
//!   (`[{Config, RepoTags, Layers}]`), the config as `<hex>.json`, each layer as an
//!   uncompressed `<diff_id hex>.tar` (so its digest is its diff_id), and the legacy
//!   `repositories` file. `docker load` and `podman load` both read it.
//! - oci-archive: a tar of an OCI image layout (`oci-layout`, `index.json` whose entries carry
//!   the name in `org.opencontainers.image.ref.name`, `blobs/sha256/..`), blobs as stored, plus
//!   a `manifest.json` over the same blobs as Docker 25+ writes (Docker up to 24 loads that
//!   part). Loading prefers the OCI layout when both are there.
//!
//! Loading never extracts the archive: it indexes the tar's members (refusing any name that is
//! absolute or climbs with `..`, and links that leave the archive) and reads the members the
//! manifests name, verifying every digest and diff_id; layers go through the store's safe
//! unpacking. Images are named only after all their content is in the store.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::digest::{Digest, Hasher};
use crate::error::StoreError;
use crate::index::{parse_config, parse_manifest, ImageRecord};
use crate::ingest::{codec_for, decoder, sniff, Codec, LayerExpectation};
use crate::store::Store;
use crate::{
    DOCKER_MANIFEST, MAX_DOCUMENT_SIZE, OCI_CONFIG, OCI_LAYER_GZIP, OCI_LAYER_TAR, OCI_LAYER_ZSTD,
    OCI_MANIFEST, REF_NAME_ANNOTATION,
};

/// containerd's (and Docker 25+'s) index.json annotation for the full image name.
const CONTAINERD_NAME_ANNOTATION: &str = "io.containerd.image.name";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Cap on `manifest.json` and `index.json` (they grow with the number of images).
const MAX_INDEX_SIZE: u64 = 16 * 1024 * 1024;
/// Links followed from one member before giving up.
const MAX_LINK_HOPS: usize = 16;

/// The archive formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    DockerArchive,
    OciArchive,
}

/// Everything that can go wrong saving or loading an archive.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("reading archive {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing the archive: {source}")]
    Write {
        #[source]
        source: io::Error,
    },
    #[error("archive {path}: member {name:?} {reason}; refusing the archive")]
    UnsafeMember {
        path: PathBuf,
        name: String,
        reason: &'static str,
    },
    #[error("archive {path} is neither a docker-archive (no manifest.json) nor an oci-archive (no index.json)")]
    UnknownFormat { path: PathBuf },
    #[error("archive {path} has no member {name:?} ({why})")]
    MissingMember {
        path: PathBuf,
        name: String,
        why: String,
    },
    #[error("archive {path}: invalid {what}: {reason}")]
    Invalid {
        path: PathBuf,
        what: String,
        reason: String,
    },
    #[error("archive {path}: {what} does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch {
        path: PathBuf,
        what: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("archive {path}: image name {name:?}: {reason}")]
    BadName {
        path: PathBuf,
        name: String,
        reason: String,
    },
    #[error("saving image {id}: layer {diff_id}: {reason}")]
    SaveLayer {
        id: Digest,
        diff_id: Digest,
        reason: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One image to save and the names to give it in the archive.
#[derive(Debug, Clone)]
pub struct SaveRequest {
    pub record: ImageRecord,
    pub names: Vec<String>,
}

/// One image loaded from an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedImage {
    pub id: Digest,
    pub names: Vec<String>,
}

/// `manifest.json` of a docker-archive: one entry per image.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

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

// ---------------------------------------------------------------------------------------------
// Saving

/// Writes tar members with fixed metadata (owner 0:0, mode 0644, mtime 0), as podman does.
struct TarOut<'a> {
    builder: tar::Builder<&'a mut dyn Write>,
}

impl<'a> TarOut<'a> {
    fn new(out: &'a mut dyn Write) -> TarOut<'a> {
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

    fn bytes(&mut self, name: &str, bytes: &[u8]) -> Result<(), ArchiveError> {
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

    fn finish(mut self) -> Result<(), ArchiveError> {
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

/// Hashes what is read through it.
struct HashingReader<R> {
    inner: R,
    hash: Hasher,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
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
            let file = File::open(&path).map_err(|e| {
                if e.kind() == io::ErrorKind::NotFound {
                    ArchiveError::Store(StoreError::MissingBlob {
                        digest: blob.clone(),
                    })
                } else {
                    ArchiveError::Store(StoreError::io("opening", &path, e))
                }
            })?;
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
        let mut counting = HashingReader {
            inner: open()?,
            hash: Hasher::new(),
        };
        io::copy(&mut counting, &mut io::sink())
            .map_err(|e| fail(format!("decompressing blob {blob}: {e}")))?;
        let size = counting.hash.len();
        let actual = counting.hash.finish();
        if &actual != diff_id {
            return Err(fail(format!(
                "blob {blob} decompresses to {actual}, not the diff_id (run `gcr system check`)"
            )));
        }
        let mut second = HashingReader {
            inner: open()?,
            hash: Hasher::new(),
        };
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
            let (manifest_digest, manifest) = self.oci_manifest_of(record)?;
            let parsed = parse_manifest(&manifest_digest, &manifest)?;
            // As Docker 25+ writes it: a manifest.json over the same blobs, so engines that
            // only know docker-archives (Docker up to 24) load the archive too.
            add_docker_entry(
                &mut docker_entries,
                blob_member(&parsed.config),
                &request.names,
                parsed.layers.iter().map(blob_member).collect(),
            );
            let mut blobs: Vec<Digest> = parsed.layers.clone();
            blobs.push(parsed.config.clone());
            blobs.extend(parsed.source.iter().cloned());
            blobs.push(manifest_digest.clone());
            for blob in blobs {
                if written.contains(&blob) {
                    continue;
                }
                self.write_blob_member(&mut tar, &blob)?;
                written.push(blob);
            }
            let descriptor = |name: Option<&String>| {
                let mut d = json!({
                    "mediaType": OCI_MANIFEST,
                    "digest": manifest_digest.as_str(),
                    "size": manifest.len(),
                });
                if let Some(name) = name {
                    d["annotations"] = json!({
                        REF_NAME_ANNOTATION: name,
                        CONTAINERD_NAME_ANNOTATION: name,
                    });
                }
                d
            };
            if request.names.is_empty() {
                index_entries.push(descriptor(None));
            }
            for name in &request.names {
                index_entries.push(descriptor(Some(name)));
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

    /// Copies a stored blob into `blobs/sha256/<hex>`, verifying its digest on the way.
    fn write_blob_member(&self, tar: &mut TarOut<'_>, blob: &Digest) -> Result<(), ArchiveError> {
        let path = self.blob_path(blob);
        let file = File::open(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                ArchiveError::Store(StoreError::MissingBlob {
                    digest: blob.clone(),
                })
            } else {
                ArchiveError::Store(StoreError::io("opening", &path, e))
            }
        })?;
        let size = file
            .metadata()
            .map_err(|e| StoreError::io("reading", &path, e))?
            .len();
        let mut reader = HashingReader {
            inner: io::BufReader::with_capacity(256 * 1024, file),
            hash: Hasher::new(),
        };
        tar.file(&format!("blobs/sha256/{}", blob.hex()), size, &mut reader)?;
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

// ---------------------------------------------------------------------------------------------
// Loading

/// A member's data in the archive file.
#[derive(Debug, Clone, Copy)]
struct Member {
    offset: u64,
    size: u64,
}

#[derive(Debug, Clone)]
enum Node {
    File(Member),
    /// A symlink or hardlink, its target already made archive-relative.
    Link(String),
}

/// The members of a tar archive by normalised name, without extracting anything.
struct ArchiveIndex {
    path: PathBuf,
    file: File,
    members: HashMap<String, Node>,
}

/// A member name made relative and normalised; `None` when it is absolute or climbs out with
/// `..`.
fn normalize_member(name: &[u8]) -> Result<String, &'static str> {
    if name.starts_with(b"/") {
        return Err("is an absolute path");
    }
    let text = std::str::from_utf8(name).map_err(|_| "is not valid UTF-8")?;
    let mut parts: Vec<&str> = Vec::new();
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err("climbs out of the archive with '..'"),
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

/// A symlink target resolved against the link's directory, staying inside the archive.
fn resolve_link(member: &str, target: &[u8]) -> Result<String, &'static str> {
    if target.starts_with(b"/") {
        return Err("is a symlink to an absolute path");
    }
    let target = std::str::from_utf8(target).map_err(|_| "has a link target that is not UTF-8")?;
    let mut parts: Vec<&str> = member.split('/').collect();
    parts.pop();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err("is a link pointing out of the archive");
                }
            }
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

impl ArchiveIndex {
    fn open(path: &Path) -> Result<ArchiveIndex, ArchiveError> {
        let read_err = |source: io::Error| ArchiveError::Read {
            path: path.to_path_buf(),
            source,
        };
        // The tar crate's messages ("failed to read entire block") do not say what is wrong.
        let tar_err = |source: io::Error| ArchiveError::Read {
            path: path.to_path_buf(),
            source: io::Error::new(
                source.kind(),
                format!("not a tar archive, or a truncated one ({source})"),
            ),
        };
        let file = File::open(path).map_err(read_err)?;
        let mut members = HashMap::new();
        {
            let mut archive = tar::Archive::new(&file);
            for entry in archive.entries_with_seek().map_err(tar_err)? {
                let entry = entry.map_err(tar_err)?;
                let raw = entry.path_bytes().into_owned();
                let unsafe_member = |reason: &'static str| ArchiveError::UnsafeMember {
                    path: path.to_path_buf(),
                    name: String::from_utf8_lossy(&raw).into_owned(),
                    reason,
                };
                let name = normalize_member(&raw).map_err(unsafe_member)?;
                let kind = entry.header().entry_type();
                let node = match kind {
                    tar::EntryType::Regular | tar::EntryType::Continuous => Node::File(Member {
                        offset: entry.raw_file_position(),
                        size: entry.size(),
                    }),
                    tar::EntryType::Symlink => {
                        let target = entry.link_name_bytes().unwrap_or_default();
                        Node::Link(resolve_link(&name, &target).map_err(unsafe_member)?)
                    }
                    tar::EntryType::Link => {
                        let target = entry.link_name_bytes().unwrap_or_default();
                        Node::Link(normalize_member(&target).map_err(unsafe_member)?)
                    }
                    // Directories and anything else are never read.
                    _ => continue,
                };
                members.insert(name, node);
            }
        }
        Ok(ArchiveIndex {
            path: path.to_path_buf(),
            file,
            members,
        })
    }

    fn has(&self, name: &str) -> bool {
        self.members.contains_key(name)
    }

    /// The member `name` (as a manifest names it), following links inside the archive.
    fn member(&self, name: &str, why: &str) -> Result<Member, ArchiveError> {
        let missing = |n: &str| ArchiveError::MissingMember {
            path: self.path.clone(),
            name: n.to_string(),
            why: why.to_string(),
        };
        let mut current =
            normalize_member(name.as_bytes()).map_err(|reason| ArchiveError::UnsafeMember {
                path: self.path.clone(),
                name: name.to_string(),
                reason,
            })?;
        for _ in 0..MAX_LINK_HOPS {
            match self.members.get(&current) {
                Some(Node::File(m)) => return Ok(*m),
                Some(Node::Link(target)) => current = target.clone(),
                None => return Err(missing(&current)),
            }
        }
        Err(ArchiveError::UnsafeMember {
            path: self.path.clone(),
            name: name.to_string(),
            reason: "is a chain of links too long to follow",
        })
    }

    fn reader(&self, member: Member) -> MemberReader<'_> {
        MemberReader {
            file: &self.file,
            pos: member.offset,
            end: member.offset + member.size,
        }
    }

    /// A whole (small) member, refusing more than `limit` bytes.
    fn read_small(&self, name: &str, why: &str, limit: u64) -> Result<Vec<u8>, ArchiveError> {
        let member = self.member(name, why)?;
        if member.size > limit {
            return Err(ArchiveError::Invalid {
                path: self.path.clone(),
                what: format!("member {name:?}"),
                reason: format!("{} bytes, more than the {limit} bytes limit", member.size),
            });
        }
        let mut bytes = Vec::with_capacity(usize::try_from(member.size).unwrap_or(0));
        self.reader(member)
            .read_to_end(&mut bytes)
            .map_err(|source| ArchiveError::Read {
                path: self.path.clone(),
                source,
            })?;
        Ok(bytes)
    }

    /// A small blob from `blobs/<alg>/<hex>`, digest verified.
    fn read_blob(&self, digest: &Digest, what: &str) -> Result<Vec<u8>, ArchiveError> {
        let bytes = self.read_small(&blob_member(digest), what, MAX_DOCUMENT_SIZE)?;
        let actual = Digest::of(&bytes);
        if &actual != digest {
            return Err(ArchiveError::DigestMismatch {
                path: self.path.clone(),
                what: what.to_string(),
                expected: digest.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    fn invalid(&self, what: &str, reason: impl Into<String>) -> ArchiveError {
        ArchiveError::Invalid {
            path: self.path.clone(),
            what: what.to_string(),
            reason: reason.into(),
        }
    }
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

fn blob_member(digest: &Digest) -> String {
    format!("blobs/sha256/{}", digest.hex())
}

/// Reads one member's bytes by position (the archive file is shared, never seeked).
struct MemberReader<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for MemberReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end.saturating_sub(self.pos);
        if left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the archive ends inside a member",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// An image whose content is in the store, waiting to be named.
struct Prepared {
    names: Vec<String>,
    manifest: Vec<u8>,
    config: Vec<u8>,
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
                self.load_archive_stream(&mut decoded, path, normalize)
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
        let tmp = self.tmp_dir("load")?;
        let spooled = tmp.path().join("archive");
        let shown = PathBuf::from("<stdin>");
        let mut file =
            File::create(&spooled).map_err(|e| StoreError::io("creating", &spooled, e))?;
        io::copy(reader, &mut file).map_err(|source| ArchiveError::Read {
            path: shown.clone(),
            source,
        })?;
        drop(file);
        self.load_archive(&spooled, normalize)
            .map_err(|e| rename_path(e, &spooled, &shown))
    }

    fn load_archive_stream(
        &self,
        decoded: &mut dyn Read,
        path: &Path,
        normalize: &dyn Fn(&str) -> Result<String, String>,
    ) -> Result<Vec<LoadedImage>, ArchiveError> {
        let tmp = self.tmp_dir("load")?;
        let spooled = tmp.path().join("archive");
        let mut file =
            File::create(&spooled).map_err(|e| StoreError::io("creating", &spooled, e))?;
        io::copy(decoded, &mut file).map_err(|source| ArchiveError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        drop(file);
        self.load_plain_archive(&spooled, normalize)
            .map_err(|e| rename_path(e, &spooled, path))
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
            let source = parse_manifest(&digest, &image.manifest)?.source;
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
            let record = self.commit_image(&image.names, &image.manifest, &image.config)?;
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
                descriptors.push(json!({
                    "mediaType": expect.media_type,
                    "digest": expect.digest.as_str(),
                    "size": expect.size,
                }));
            }
            let manifest = json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {
                    "mediaType": OCI_CONFIG,
                    "digest": config_digest.as_str(),
                    "size": config.len(),
                },
                "layers": descriptors,
            });
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
                manifest: manifest.to_string().into_bytes(),
                config,
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
        let mut hashing = HashingReader {
            inner: archive.reader(member),
            hash: Hasher::new(),
        };
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
            let (digest, manifest) = self.oci_image_manifest(archive, descriptor)?;
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
            let config = self.ingest_oci_image(archive, &digest, &manifest)?;
            out.push((
                digest,
                Prepared {
                    names: name.into_iter().collect(),
                    manifest,
                    config,
                },
            ));
        }
        Ok(out.into_iter().map(|(_, p)| p).collect())
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
mod tests {
    use super::*;

    #[test]
    fn member_names() {
        assert_eq!(normalize_member(b"./a//b/./c").unwrap(), "a/b/c");
        assert!(normalize_member(b"../x").is_err());
        assert!(normalize_member(b"a/../../x").is_err());
        assert!(normalize_member(b"a/../b").is_err());
        assert!(normalize_member(b"/etc/passwd").is_err());
        assert_eq!(resolve_link("d/layer.tar", b"../x.tar").unwrap(), "x.tar");
        assert!(resolve_link("layer.tar", b"../x.tar").is_err());
        assert!(resolve_link("d/l", b"/etc/shadow").is_err());
        assert_eq!(split_tag("h:5000/a/b:t"), Some(("h:5000/a/b", "t")));
        assert_eq!(split_tag("h:5000/a/b"), None);
        assert_eq!(split_tag("a/b@sha256:00"), None);
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("root")).unwrap();
        (dir, store)
    }

    fn tar_of(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in members {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            // Raw names: the tar crate refuses to write `..` through set_path.
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn hostile_member_names_are_refused_before_anything_is_stored() {
        let (dir, store) = store();
        let archive = dir.path().join("evil.tar");
        std::fs::write(
            &archive,
            tar_of(&[("manifest.json", b"[]"), ("../../escape.tar", b"x")]),
        )
        .unwrap();
        let e = store
            .load_archive(&archive, &|n| Ok(n.to_string()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("climbs out"), "{e}");
        assert!(store.images().unwrap().is_empty());
        assert!(!dir.path().join("escape.tar").exists());
    }

    /// A one-layer image (gzip layer, OCI manifest) named `name`, made in `store`.
    fn make_image(store: &Store, files: &[(&str, &[u8])], name: &str) -> ImageRecord {
        let mut t = crate::testutil::TarBuilder::new();
        for (n, d) in files {
            t.file(n, d);
        }
        let tar = t.finish();
        let mut w = store.layer_writer(crate::Compression::Gzip).unwrap();
        w.write_all(&tar).unwrap();
        let info = w.finish().unwrap();
        store
            .ingest_layer_from_blob(&LayerExpectation {
                digest: info.digest.clone(),
                size: info.size,
                media_type: info.media_type.clone(),
                diff_id: info.diff_id.clone(),
            })
            .unwrap();
        let config = json!({
            "architecture": "amd64", "os": "linux", "config": {},
            "rootfs": {"type": "layers", "diff_ids": [info.diff_id.as_str()]},
        })
        .to_string();
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": Digest::of(config.as_bytes()).as_str(), "size": config.len()},
            "layers": [{"mediaType": info.media_type, "digest": info.digest.as_str(), "size": info.size}],
        })
        .to_string();
        store
            .commit_image(&[name.to_string()], manifest.as_bytes(), config.as_bytes())
            .unwrap()
    }

    #[test]
    fn round_trips_in_both_formats_plain_and_compressed() {
        let (dir, source) = store();
        let record = make_image(&source, &[("hello.txt", b"hello")], "reg.example/a:1");
        let request = SaveRequest {
            record: record.clone(),
            names: vec!["reg.example/a:1".to_string()],
        };
        for format in [ArchiveFormat::DockerArchive, ArchiveFormat::OciArchive] {
            let mut bytes = Vec::new();
            source
                .save_archive(std::slice::from_ref(&request), format, &mut bytes)
                .unwrap();
            for compressed in [false, true] {
                let path = dir.path().join("archive");
                let data = if compressed {
                    crate::testutil::gzip(&bytes)
                } else {
                    bytes.clone()
                };
                std::fs::write(&path, data).unwrap();
                let target =
                    Store::open(dir.path().join(format!("t-{format:?}-{compressed}"))).unwrap();
                let loaded = target.load_archive(&path, &|n| Ok(n.to_string())).unwrap();
                assert_eq!(
                    loaded,
                    vec![LoadedImage {
                        id: record.id.clone(),
                        names: vec!["reg.example/a:1".to_string()]
                    }]
                );
                let got = target.resolve_image("reg.example/a:1").unwrap();
                assert_eq!(got.layers, record.layers);
                let file = target.layer_dir(&got.layers[0]).join("hello.txt");
                assert_eq!(std::fs::read(file).unwrap(), b"hello");
                assert!(target.check(false).unwrap().is_clean());
                // The spooled copy of a compressed archive is gone.
                assert_eq!(std::fs::read_dir(target.tmp_root()).unwrap().count(), 0);
            }
        }
    }

    #[test]
    fn docker_archive_with_gzip_layer_members_loads() {
        let (dir, store) = store();
        let tar = crate::testutil::TarBuilder::new()
            .file("f", b"data")
            .finish();
        let diff_id = Digest::of(&tar);
        let config = json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [diff_id.as_str()]},
        })
        .to_string();
        let manifest =
            json!([{"Config": "c.json", "RepoTags": ["x/y:1"], "Layers": ["l/layer.tar"]}])
                .to_string();
        let mut out = Vec::new();
        {
            let mut t = TarOut::new(&mut out);
            t.bytes("manifest.json", manifest.as_bytes()).unwrap();
            t.bytes("c.json", config.as_bytes()).unwrap();
            t.bytes("l/layer.tar", &crate::testutil::gzip(&tar))
                .unwrap();
            t.finish().unwrap();
        }
        let path = dir.path().join("a.tar");
        std::fs::write(&path, out).unwrap();
        let loaded = store.load_archive(&path, &|n| Ok(n.to_string())).unwrap();
        assert_eq!(loaded[0].id, Digest::of(config.as_bytes()));
        let record = store.resolve_image("x/y:1").unwrap();
        assert_eq!(record.layers, vec![diff_id]);
        assert!(store.check(false).unwrap().is_clean());
    }

    #[test]
    fn unknown_and_empty_archives() {
        let (dir, store) = store();
        let archive = dir.path().join("x.tar");
        std::fs::write(&archive, tar_of(&[("hello", b"x")])).unwrap();
        let e = store
            .load_archive(&archive, &|n| Ok(n.to_string()))
            .unwrap_err();
        assert!(matches!(e, ArchiveError::UnknownFormat { .. }), "{e}");
        std::fs::write(&archive, tar_of(&[("manifest.json", b"[]")])).unwrap();
        let e = store
            .load_archive(&archive, &|n| Ok(n.to_string()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("lists no image"), "{e}");
    }
}
