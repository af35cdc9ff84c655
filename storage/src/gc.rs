//! Consistency checks, disk usage and garbage collection.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::Serialize;

use crate::digest::{Digest, Hasher};
use crate::error::{IoContext, StoreError};
use crate::index::{parse_config, parse_manifest, Index};
use crate::store::Store;
use crate::{tmp, MAX_DOCUMENT_SIZE};

/// One problem `check` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// What kind of object: "blob", "layer", "image" or "index".
    pub kind: &'static str,
    /// The digest, name or path concerned.
    pub subject: String,
    /// What is wrong.
    pub detail: String,
    /// True when `repair` removed it.
    pub repaired: bool,
}

/// The result of `check`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    /// Blobs whose digest was verified.
    pub blobs_checked: u64,
    /// Layer directories checked.
    pub layers_checked: u64,
    /// Images checked.
    pub images_checked: u64,
    /// Everything found broken.
    pub problems: Vec<Problem>,
}

impl CheckReport {
    /// True when nothing is broken.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// One line of `gcr system df`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UsageEntry {
    /// How many objects.
    pub count: u64,
    /// How many are in use (images used by containers; running containers are not known here).
    pub active: u64,
    /// Bytes on disk.
    pub size: u64,
    /// Bytes that `prune -a` would free.
    pub reclaimable: u64,
}

/// The result of `disk_usage`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DiskUsage {
    /// Images: blobs and unpacked layers.
    pub images: UsageEntry,
    /// Container directories.
    pub containers: UsageEntry,
    /// The build cache: `ROOT/cache` plus layers and blobs no image references.
    pub build_cache: UsageEntry,
}

/// The result of `prune`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    /// Image IDs removed.
    pub images: Vec<Digest>,
    /// Names removed with them.
    pub untagged: Vec<String>,
    /// Unreferenced blobs removed.
    pub blobs: u64,
    /// Unreferenced layers removed.
    pub layers: u64,
    /// Stale temporary entries removed.
    pub tmp: u64,
    /// Bytes freed.
    pub reclaimed: u64,
}

/// Everything the images in the index reference.
#[derive(Default)]
struct References {
    blobs: BTreeSet<Digest>,
    layers: BTreeSet<Digest>,
}

impl Store {
    /// Verify the store: every blob's digest, every layer directory's completeness, every
    /// image's manifest, config, layer blobs and unpacked layers. With `repair`, broken blobs,
    /// layers and the images (names) that need them are removed. Stale temporary entries are
    /// swept by `open` and not reported.
    pub fn check(&self, repair: bool) -> Result<CheckReport, StoreError> {
        let _lock = self.lock()?;
        let mut report = CheckReport::default();
        let mut bad_blobs = BTreeSet::new();
        let mut bad_layers = BTreeSet::new();
        // A broken entry of blobs/ or layers/: reported, and with `repair` discarded.
        let broken = |report: &mut CheckReport,
                      kind: &'static str,
                      subject: String,
                      path: &Path,
                      detail: String| {
            let repaired = repair && self.discard_path(path).is_ok();
            report.problems.push(Problem {
                kind,
                subject,
                detail,
                repaired,
            });
        };

        for (name, path) in list_dir(&self.blobs_dir())? {
            report.blobs_checked += 1;
            let detail = match Digest::from_hex(&name) {
                Err(_) => Some("not named by a sha256 digest".to_string()),
                Ok(d) => match hash_file(&path) {
                    Ok(actual) if actual == d => None,
                    Ok(actual) => {
                        bad_blobs.insert(d);
                        Some(format!("content hashes to {actual}"))
                    }
                    Err(e) => {
                        bad_blobs.insert(d);
                        Some(format!("cannot be read: {e}"))
                    }
                },
            };
            if let Some(detail) = detail {
                broken(&mut report, "blob", name, &path, detail);
            }
        }

        for (name, path) in list_dir(&self.layers_root())? {
            report.layers_checked += 1;
            let detail = match Digest::from_hex(&name) {
                Err(_) => Some("not named by a sha256 digest".to_string()),
                Ok(d) => {
                    let problem = match self.layer_meta(&d) {
                        Err(_) => Some("incomplete: no readable meta.json".to_string()),
                        Ok(meta) if meta.diff_id != d => {
                            Some(format!("meta.json names {}", meta.diff_id))
                        }
                        Ok(_) if !self.layer_dir(&d).is_dir() => {
                            Some("incomplete: no diff directory".to_string())
                        }
                        Ok(_) => None,
                    };
                    if problem.is_some() {
                        bad_layers.insert(d);
                    }
                    problem
                }
            };
            if let Some(detail) = detail {
                broken(&mut report, "layer", name, &path, detail);
            }
        }

        let mut index = match self.read_index() {
            Ok(index) => index,
            Err(e) => {
                let mut repaired = false;
                if repair {
                    let backup = self.root().join(format!(
                        "index.json.corrupt-{}",
                        chrono::Utc::now().format("%Y%m%dT%H%M%S")
                    ));
                    repaired = fs::rename(self.index_path(), &backup).is_ok()
                        && self
                            .write_index(&Index {
                                schema_version: 2,
                                media_type: None,
                                manifests: Vec::new(),
                            })
                            .is_ok();
                }
                report.problems.push(Problem {
                    kind: "index",
                    subject: self.index_path().display().to_string(),
                    detail: format!("{e}; images cannot be listed"),
                    repaired,
                });
                return Ok(report);
            }
        };
        let mut broken_manifests: BTreeMap<Digest, String> = BTreeMap::new();
        let mut seen = BTreeSet::new();
        for entry in &index.manifests {
            if !seen.insert(entry.digest.clone()) {
                continue;
            }
            report.images_checked += 1;
            // A multi-platform image is broken when any of its platforms' images is.
            let children = self.index_children(&entry.digest);
            let problem = if entry.media_type == crate::index::OCI_INDEX && children.is_empty() {
                Some(format!("index blob {} is missing or corrupt", entry.digest))
            } else if children.is_empty() {
                self.image_problem(&entry.digest, &bad_blobs, &bad_layers)
            } else {
                children.iter().find_map(|c| {
                    self.image_problem(&c.digest, &bad_blobs, &bad_layers)
                        .map(|why| format!("platform {}/{}: {why}", c.os, c.architecture))
                })
            };
            if let Some(why) = problem {
                broken_manifests.insert(entry.digest.clone(), why);
            }
        }
        if !broken_manifests.is_empty() {
            let names_of = |d: &Digest| -> Vec<String> {
                index
                    .manifests
                    .iter()
                    .filter(|e| &e.digest == d)
                    .filter_map(|e| e.annotations.get(crate::REF_NAME_ANNOTATION).cloned())
                    .collect()
            };
            let subjects: Vec<(Digest, String, String)> = broken_manifests
                .iter()
                .map(|(d, why)| {
                    let names = names_of(d);
                    let subject = if names.is_empty() {
                        d.to_string()
                    } else {
                        format!("{} ({})", names.join(", "), d)
                    };
                    (d.clone(), subject, why.clone())
                })
                .collect();
            let mut repaired = false;
            if repair {
                index
                    .manifests
                    .retain(|e| !broken_manifests.contains_key(&e.digest));
                repaired = self.write_index(&index).is_ok();
            }
            for (_, subject, detail) in subjects {
                report.problems.push(Problem {
                    kind: "image",
                    subject,
                    detail,
                    repaired,
                });
            }
        }
        Ok(report)
    }

    /// Why the image with this manifest is broken, if it is.
    fn image_problem(
        &self,
        manifest: &Digest,
        bad_blobs: &BTreeSet<Digest>,
        bad_layers: &BTreeSet<Digest>,
    ) -> Option<String> {
        let usable_blob = |d: &Digest| self.has_blob(d) && !bad_blobs.contains(d);
        if !usable_blob(manifest) {
            return Some(format!("manifest blob {manifest} is missing or corrupt"));
        }
        let bytes = match self.read_blob(manifest, MAX_DOCUMENT_SIZE) {
            Ok(b) => b,
            Err(e) => return Some(e.to_string()),
        };
        let m = match parse_manifest(manifest, &bytes) {
            Ok(m) => m,
            Err(e) => return Some(e.to_string()),
        };
        if !usable_blob(&m.config) {
            return Some(format!("config blob {} is missing or corrupt", m.config));
        }
        let config = match self.read_blob(&m.config, MAX_DOCUMENT_SIZE) {
            Ok(b) => b,
            Err(e) => return Some(e.to_string()),
        };
        let cfg = match parse_config(&m.config, &config) {
            Ok(c) => c,
            Err(e) => return Some(e.to_string()),
        };
        for blob in &m.blobs() {
            if !usable_blob(blob) {
                return Some(format!("layer blob {blob} is missing or corrupt"));
            }
        }
        for diff_id in &cfg.diff_ids {
            if !self.has_layer(diff_id) || bad_layers.contains(diff_id) {
                return Some(format!("unpacked layer {diff_id} is missing or incomplete"));
            }
        }
        // Each blob must be the one its layer was unpacked from (checked once, then recorded):
        // a registry may pair a manifest's blob with the diff_id of another stored layer.
        for (blob, diff_id) in m.layers.iter().zip(&cfg.diff_ids) {
            if self.layer_comes_from(blob, diff_id) {
                continue;
            }
            let verified = fs::File::open(self.blob_path(blob))
                .and_then(|f| f.metadata().map(|meta| (f, meta.len())))
                .map_err(|e| e.to_string())
                .and_then(|(mut file, size)| {
                    let expect = crate::ingest::LayerExpectation {
                        digest: blob.clone(),
                        size,
                        media_type: String::new(),
                        diff_id: diff_id.clone(),
                    };
                    self.verify_layer_source(&mut file, &expect)
                        .map_err(|e| e.to_string())
                });
            if let Err(why) = verified {
                return Some(format!(
                    "layer blob {blob} is not the layer {diff_id} it is paired with: {why}"
                ));
            }
        }
        None
    }

    /// Everything referenced by the images of `index`.
    fn references(&self, index: &Index) -> References {
        let mut refs = References::default();
        for (manifest, (config, m, cfg)) in self.index_images(index) {
            refs.blobs.insert(manifest);
            refs.blobs.insert(config);
            refs.blobs.extend(m.blobs());
            if let Some(cfg) = cfg {
                refs.layers.extend(cfg.diff_ids);
            }
        }
        // Manifests that could not be parsed still keep their own blob.
        for e in &index.manifests {
            refs.blobs.insert(e.digest.clone());
        }
        refs
    }

    /// Sizes for `gcr system df`.
    pub fn disk_usage(&self) -> Result<DiskUsage, StoreError> {
        let index = self.read_index()?;
        let images = self.index_images(&index);
        let containers = self.containers()?;
        let used_ids: BTreeSet<Digest> = containers.iter().filter_map(|(_, i)| i.clone()).collect();

        let blob_size = |d: &Digest| {
            fs::metadata(self.blob_path(d))
                .map(|m| m.len())
                .unwrap_or(0)
        };
        let mut all = References::default();
        let mut active = References::default();
        let mut active_count = 0;
        let mut ids = BTreeSet::new();
        for (manifest, (config, m, cfg)) in &images {
            ids.insert(config.clone());
            let in_use = used_ids.contains(config);
            if in_use {
                active_count += 1;
            }
            let targets: Vec<&mut References> = if in_use {
                vec![&mut all, &mut active]
            } else {
                vec![&mut all]
            };
            for refs in targets {
                refs.blobs.insert(manifest.clone());
                refs.blobs.insert(config.clone());
                refs.blobs.extend(m.blobs());
                if let Some(cfg) = cfg {
                    refs.layers.extend(cfg.diff_ids.iter().cloned());
                }
            }
        }
        let size_of = |r: &References| -> u64 {
            r.blobs.iter().map(blob_size).sum::<u64>()
                + r.layers.iter().map(|d| self.layer_size(d)).sum::<u64>()
        };
        let total = size_of(&all);
        let images_usage = UsageEntry {
            count: ids.len() as u64,
            active: active_count.min(ids.len() as u64),
            size: total,
            reclaimable: total.saturating_sub(size_of(&active)),
        };
        let containers_size = du(&self.containers_root());
        // Layers and blobs no image references (build steps, interrupted pulls) count as build
        // cache, as Docker counts them: `prune` frees them.
        let mut cache_entries = list_dir(&self.cache_dir())?.len() as u64;
        let mut cache_size = du(&self.cache_dir());
        let referenced = self.references(&index);
        for (name, path) in list_dir(&self.blobs_dir())? {
            if !Digest::from_hex(&name).is_ok_and(|d| referenced.blobs.contains(&d)) {
                cache_size += fs::symlink_metadata(&path).map(|m| m.len()).unwrap_or(0);
            }
        }
        for (name, _) in list_dir(&self.layers_root())? {
            if let Ok(d) = Digest::from_hex(&name) {
                if !referenced.layers.contains(&d) {
                    cache_entries += 1;
                    cache_size += self.layer_size(&d);
                }
            }
        }
        Ok(DiskUsage {
            images: images_usage,
            containers: UsageEntry {
                count: containers.len() as u64,
                active: 0,
                size: containers_size,
                reclaimable: containers_size,
            },
            build_cache: UsageEntry {
                count: cache_entries,
                active: 0,
                size: cache_size,
                reclaimable: cache_size,
            },
        })
    }

    /// Remove dangling (unnamed) images, then blobs and layers no image references, and stale
    /// temporary entries; with `all`, also every image no container uses. Images used by
    /// containers are never removed. Unreferenced content is kept while a pull or build holds a
    /// [`crate::Lease`].
    pub fn prune(&self, all: bool) -> Result<PruneReport, StoreError> {
        let mut report = PruneReport::default();
        let _lock = self.lock()?;
        let mut index = self.read_index()?;
        let images = self.index_images(&index);
        let used: BTreeSet<Digest> = self
            .containers()?
            .into_iter()
            .filter_map(|(_, i)| i)
            .collect();
        let mut named: BTreeSet<Digest> = index
            .manifests
            .iter()
            .filter(|e| e.annotations.contains_key(crate::REF_NAME_ANNOTATION))
            .map(|e| e.digest.clone())
            .collect();
        // The platforms of a named index are named through it; an index goes when all of
        // its platforms' images do.
        let indexes: Vec<(Digest, Vec<Digest>)> = index
            .manifests
            .iter()
            .filter(|e| e.media_type == crate::index::OCI_INDEX)
            .map(|e| {
                let children = self.index_children(&e.digest);
                (
                    e.digest.clone(),
                    children.into_iter().map(|c| c.digest).collect(),
                )
            })
            .collect();
        for (digest, children) in &indexes {
            if named.contains(digest) {
                named.extend(children.iter().cloned());
            }
        }
        let mut doomed: BTreeSet<Digest> = images
            .iter()
            .filter(|(manifest, (config, _, _))| {
                !used.contains(config) && (all || !named.contains(*manifest))
            })
            .map(|(manifest, _)| manifest.clone())
            .collect();
        for (digest, children) in &indexes {
            if !children.is_empty() && children.iter().all(|c| doomed.contains(c)) {
                doomed.insert(digest.clone());
            }
        }
        if !doomed.is_empty() {
            for e in &index.manifests {
                if doomed.contains(&e.digest) {
                    if let Some(n) = e.annotations.get(crate::REF_NAME_ANNOTATION) {
                        report.untagged.push(n.clone());
                    }
                }
            }
            let mut ids: BTreeSet<Digest> = BTreeSet::new();
            for d in &doomed {
                if let Some((config, _, _)) = images.get(d) {
                    ids.insert(config.clone());
                }
            }
            report.images = ids.into_iter().collect();
            index.manifests.retain(|e| !doomed.contains(&e.digest));
            self.write_index(&index)?;
        }
        if let Some(_gc) = self.try_gc_lease()? {
            let refs = self.references(&index);
            for (name, path) in list_dir(&self.blobs_dir())? {
                let keep = Digest::from_hex(&name).is_ok_and(|d| refs.blobs.contains(&d));
                if !keep {
                    let size = fs::symlink_metadata(&path).map(|m| m.len()).unwrap_or(0);
                    self.discard_path(&path)?;
                    report.blobs += 1;
                    report.reclaimed += size;
                }
            }
            for (name, path) in list_dir(&self.layers_root())? {
                let digest = Digest::from_hex(&name).ok();
                let keep = digest.as_ref().is_some_and(|d| refs.layers.contains(d));
                if !keep {
                    let size = digest.map(|d| self.layer_size(&d)).unwrap_or(0);
                    self.discard_path(&path)?;
                    report.layers += 1;
                    report.reclaimed += size;
                }
            }
        } else {
            tracing::info!("a pull or build is running: unreferenced blobs and layers are kept");
        }
        report.tmp = tmp::sweep(&self.tmp_root())?.len() as u64;
        report.untagged.sort();
        Ok(report)
    }
}

/// (name, path) of every entry of a directory; a missing directory is empty.
fn list_dir(dir: &Path) -> Result<Vec<(String, std::path::PathBuf)>, StoreError> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(StoreError::io("reading", dir, e)),
    };
    for entry in entries {
        let entry = entry.ctx("reading", dir)?;
        out.push((
            entry.file_name().to_string_lossy().into_owned(),
            entry.path(),
        ));
    }
    out.sort();
    Ok(out)
}

fn hash_file(path: &Path) -> io::Result<Digest> {
    let mut file = File::open(path)?;
    let mut hasher = HashWriter(Hasher::new());
    io::copy(&mut file, &mut hasher)?;
    Ok(hasher.0.finish())
}

struct HashWriter(Hasher);

impl io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Apparent size of the regular files under `root` (hardlinks once), never following
/// symlinks; unreadable parts are skipped.
fn du(root: &Path) -> u64 {
    let mut total = 0;
    let mut seen = HashSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(m) = entry.metadata() else { continue };
            if m.is_dir() {
                stack.push(entry.path());
            } else if m.is_file() && (m.nlink() == 1 || seen.insert((m.dev(), m.ino()))) {
                total += m.len();
            }
        }
    }
    total
}
