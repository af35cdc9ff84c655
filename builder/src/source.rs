//! COPY and ADD: finding the sources (build context through its ignore file, or another
//! stage's root), hashing them for the cache, and writing them into an image root.
//!
//! * this module: [`SourceTree`], finding the sources of one COPY.
//! * `entry`: what is written ([`Entry`]) and the hash of it for the cache key.
//! * `write`: writing entries into an image root; `chmod`: `--chmod` values.
//! * `archive`: ADD's local archives, recognised and unpacked.

use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use gcr_grammar::IgnoreMatcher;

use crate::fsutil::{self, Confine, ResolveError};

mod archive;
mod chmod;
mod entry;
mod write;

pub(crate) use archive::{archive_kind, decompressed_is_tar, file_head, unpack_archive};
pub(crate) use chmod::Chmod;
pub(crate) use entry::{content_hash, Entry, Kind};
pub(crate) use write::{write_entries, WriteOptions};

/// Where COPY sources are read from.
pub(crate) struct SourceTree {
    pub root: PathBuf,
    pub confine: Confine,
    pub ignore: Option<IgnoreMatcher>,
    /// "build context" or "stage NAME", for messages.
    pub label: String,
    /// Keep the sources' owners (another stage) or use 0:0 (the context).
    pub preserve_owner: bool,
    /// `COPY --exclude` patterns, matched against paths relative to each source.
    pub exclude: Option<IgnoreMatcher>,
    /// `COPY --parents`: keep each source's path below the destination.
    pub parents: bool,
}

/// The sources of one COPY, resolved.
#[derive(Debug, Default)]
pub(crate) struct Collected {
    pub entries: Vec<Entry>,
    /// Number of top-level sources (a match of a file or a directory).
    pub tops: usize,
    /// Some source was a glob or there were several.
    pub multiple: bool,
    /// Top-level sources that are directories.
    pub top_dirs: usize,
}

fn entry_from_meta(
    src: &Path,
    rel: PathBuf,
    meta: &Metadata,
    preserve_owner: bool,
) -> Option<Entry> {
    let ft = meta.file_type();
    let kind = if ft.is_dir() {
        Kind::Dir
    } else if ft.is_file() {
        Kind::File
    } else if ft.is_symlink() {
        Kind::Symlink(fs::read_link(src).ok()?)
    } else if ft.is_fifo() {
        Kind::Fifo
    } else {
        // Devices, sockets and overlay whiteouts are not copied.
        return None;
    };
    let (uid, gid) = if preserve_owner {
        let (u, g) = crate::commit::owner_of(src, meta);
        (u as u32, g as u32)
    } else {
        (0, 0)
    };
    Some(Entry {
        src: Some(src.to_path_buf()),
        data: None,
        rel,
        size: if kind == Kind::File { meta.len() } else { 0 },
        kind,
        mode: meta.mode() & 0o7777,
        uid,
        gid,
        mtime: meta.mtime(),
        link_key: (ft.is_file() && meta.nlink() > 1).then(|| (meta.dev(), meta.ino())),
    })
}

impl SourceTree {
    fn excluded(&self, below: &Path) -> bool {
        match &self.exclude {
            Some(m) => m.matches(&below.to_string_lossy()),
            None => false,
        }
    }

    fn ignored(&self, rel: &Path) -> bool {
        match &self.ignore {
            Some(m) => m.matches(&rel.to_string_lossy()),
            None => false,
        }
    }

    /// Resolve one source as written (may hold globs) to (relative path, host path) pairs.
    fn expand(&self, source: &str) -> Result<Vec<(PathBuf, PathBuf)>, String> {
        let rel = fsutil::clean_relative(source)
            .ok_or_else(|| format!("source {source:?} is outside the {}", self.label))?;
        let mut current: Vec<(PathBuf, PathBuf)> = vec![(PathBuf::new(), self.root.clone())];
        let parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        for part in &parts {
            let mut next = Vec::new();
            for (rel_so_far, _) in &current {
                if fsutil::has_glob(part) {
                    let dir = self.resolve_rel(rel_so_far, source)?;
                    let Ok(list) = fs::read_dir(&dir) else {
                        continue;
                    };
                    let mut names: Vec<String> = list
                        .filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .filter(|n| fsutil::glob_match(part, n))
                        .collect();
                    names.sort();
                    for n in names {
                        let r = rel_so_far.join(&n);
                        if self.ignored(&r) {
                            continue;
                        }
                        let host = self.resolve_rel(&r, source)?;
                        next.push((r, host));
                    }
                } else {
                    let r = rel_so_far.join(part);
                    match fsutil::resolve(&self.root, &r, self.confine) {
                        Ok(host) => next.push((r, host)),
                        Err(ResolveError::NotFound) => {}
                        Err(ResolveError::Escapes) => {
                            return Err(format!(
                                "source {source:?} leads outside the {} through a symlink",
                                self.label
                            ))
                        }
                        Err(e) => return Err(format!("cannot resolve {source:?}: {e}")),
                    }
                }
            }
            current = next;
        }
        current.retain(|(r, _)| r.as_os_str().is_empty() || !self.ignored(r));
        Ok(current)
    }

    fn resolve_rel(&self, rel: &Path, source: &str) -> Result<PathBuf, String> {
        fsutil::resolve(&self.root, rel, self.confine).map_err(|e| match e {
            ResolveError::Escapes => format!(
                "source {source:?} leads outside the {} through a symlink",
                self.label
            ),
            e => format!("cannot resolve {source:?}: {e}"),
        })
    }

    /// Everything below the directory `host` (context-relative `rel`), in walk order, with
    /// paths relative to `host`. Ignored entries are left out.
    fn walk(&self, host: &Path, rel: &Path, below: &Path, out: &mut Vec<Entry>) -> io::Result<()> {
        let mut names: Vec<_> = fs::read_dir(host)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()?;
        names.sort();
        for name in names {
            let child_rel = rel.join(&name);
            let child_host = host.join(&name);
            let child_below = below.join(&name);
            let meta = fs::symlink_metadata(&child_host)?;
            if self.excluded(&child_below) {
                continue;
            }
            if self.ignored(&child_rel) {
                let reinclude = self.ignore.as_ref().is_some_and(|m| m.has_exclusions());
                if meta.is_dir() && reinclude {
                    let mut inner = Vec::new();
                    self.walk(&child_host, &child_rel, &child_below, &mut inner)?;
                    if !inner.is_empty() {
                        if let Some(e) = entry_from_meta(
                            &child_host,
                            child_below.clone(),
                            &meta,
                            self.preserve_owner,
                        ) {
                            out.push(e);
                        }
                        out.extend(inner);
                    }
                }
                continue;
            }
            let Some(entry) =
                entry_from_meta(&child_host, child_below.clone(), &meta, self.preserve_owner)
            else {
                continue;
            };
            let is_dir = entry.kind == Kind::Dir;
            out.push(entry);
            if is_dir {
                self.walk(&child_host, &child_rel, &child_below, out)?;
            }
        }
        Ok(())
    }

    /// Collect the entries of all `sources`. A directory contributes its contents; a file
    /// itself (named by its base name).
    pub(crate) fn collect(&self, sources: &[String]) -> Result<Collected, String> {
        let mut out = Collected {
            multiple: sources.len() > 1 || sources.iter().any(|s| fsutil::has_glob(s)),
            ..Default::default()
        };
        for source in sources {
            let matches = self.expand(source)?;
            if matches.is_empty() {
                return Err(if fsutil::has_glob(source) {
                    format!("no files in the {} match {source:?}", self.label)
                } else {
                    format!("{source:?} not found in the {}", self.label)
                });
            }
            for (rel, host) in matches {
                let meta =
                    fs::metadata(&host).map_err(|e| format!("cannot read {source:?}: {e}"))?;
                out.tops += 1;
                if meta.is_dir() {
                    out.top_dirs += 1;
                    let below = if self.parents {
                        if let Some(e) =
                            entry_from_meta(&host, rel.clone(), &meta, self.preserve_owner)
                        {
                            out.entries.push(e);
                        }
                        rel.clone()
                    } else {
                        PathBuf::new()
                    };
                    self.walk(&host, &rel, &below, &mut out.entries)
                        .map_err(|e| format!("cannot read {source:?}: {e}"))?;
                } else {
                    let base = if self.parents {
                        rel.clone()
                    } else {
                        rel.file_name().map(PathBuf::from).unwrap_or_default()
                    };
                    if self.excluded(Path::new(rel.file_name().unwrap_or_default())) {
                        continue;
                    }
                    if let Some(mut e) = entry_from_meta(&host, base, &meta, self.preserve_owner) {
                        // `fs::metadata` followed a top-level link: record the file itself.
                        e.src = Some(host.clone());
                        out.entries.push(e);
                    }
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn context(dir: &Path, ignore: &str) -> SourceTree {
        SourceTree {
            root: dir.to_path_buf(),
            confine: Confine::Beneath,
            ignore: Some(IgnoreMatcher::from_file_contents(ignore).unwrap()),
            label: "build context".into(),
            preserve_owner: false,
            exclude: None,
            parents: false,
        }
    }

    #[test]
    fn sources_glob_ignore_and_refuse_escapes() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        fs::create_dir_all(d.join("src/sub")).unwrap();
        fs::write(d.join("src/a.txt"), "a").unwrap();
        fs::write(d.join("src/b.log"), "b").unwrap();
        fs::write(d.join("src/sub/c.txt"), "c").unwrap();
        std::os::unix::fs::symlink("/etc", d.join("out")).unwrap();
        let tree = context(d, "*/b.log\n");
        let c = tree.collect(&["src".into()]).unwrap();
        let rels: Vec<String> = c
            .entries
            .iter()
            .map(|e| e.rel.display().to_string())
            .collect();
        assert_eq!(rels, ["a.txt", "sub", "sub/c.txt"]);
        assert_eq!(c.top_dirs, 1);
        let c = tree.collect(&["src/*.txt".into()]).unwrap();
        assert_eq!(c.entries.len(), 1);
        assert!(c.multiple);
        assert!(tree
            .collect(&["src/b.log".into()])
            .unwrap_err()
            .contains("not found"));
        assert!(tree
            .collect(&["../x".into()])
            .unwrap_err()
            .contains("outside"));
        assert!(tree
            .collect(&["out/passwd".into()])
            .unwrap_err()
            .contains("outside"));
        assert!(tree
            .collect(&["nomatch*".into()])
            .unwrap_err()
            .contains("no files"));
    }

    #[test]
    fn content_hash_ignores_mtime_but_not_content_or_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("f");
        fs::write(&f, "one").unwrap();
        let tree = context(tmp.path(), "");
        let hash =
            |t: &SourceTree| content_hash(&t.collect(&["f".into()]).unwrap().entries).unwrap();
        let h1 = hash(&tree);
        let mtime = std::time::UNIX_EPOCH + std::time::Duration::from_secs(12345);
        fs::File::options()
            .write(true)
            .open(&f)
            .and_then(|file| file.set_modified(mtime))
            .unwrap();
        assert_eq!(h1, hash(&tree));
        fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
        let h2 = hash(&tree);
        assert_ne!(h1, h2);
        fs::write(&f, "two").unwrap();
        assert_ne!(h2, hash(&tree));
    }
}
