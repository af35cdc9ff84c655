//! COPY and ADD steps.

use std::path::{Path, PathBuf};

use gcr_grammar::{CopyInstruction, CopySource, Instruction};

use super::state::State;
use super::{heredoc_text, Engine};
use crate::error::{StepFailure, StepResult};
use crate::fsutil::{self, Confine};
use crate::source::{self, Collected, Entry, Kind, SourceTree, WriteOptions};

impl Engine<'_> {
    pub(super) fn resolve_chown(&self, root: &Path, spec: &str) -> StepResult<(u32, u32)> {
        // As BuildKit: a numeric user gets the same number as group, a named one the primary
        // group of its /etc/passwd entry; an empty user is 0; `root` needs no passwd file.
        let (user, group) = match spec.split_once(':') {
            Some((u, g)) if !g.is_empty() => (u, Some(g)),
            Some((u, _)) => (u, None),
            None => (spec, None),
        };
        let (uid, primary_gid) = if user.is_empty() {
            (0, 0)
        } else if let Ok(n) = user.parse::<u32>() {
            (n, n)
        } else {
            match gcr_runtime::users::resolve_user(root, user) {
                Ok(found) => (found.uid, found.gid),
                Err(_) if user == "root" => (0, 0),
                Err(e) => return Err(format!("--chown={spec}: {e}").into()),
            }
        };
        let gid = match group {
            None => primary_gid,
            Some(g) => match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => match gcr_runtime::users::resolve_user(root, &format!("0:{g}")) {
                    Ok(found) => found.gid,
                    Err(_) if g == "root" => 0,
                    Err(e) => return Err(format!("--chown={spec}: {e}").into()),
                },
            },
        };
        Ok((uid, gid))
    }

    /// `ADD <url>`: the download as an inline file named after the URL's last path segment,
    /// mode 0600 and the `Last-Modified` time as BuildKit gives it, checked against
    /// `--checksum` when given.
    fn fetch_entry(&self, url: &str, checksum: Option<&str>, now_secs: i64) -> StepResult<Entry> {
        let fetch = self.fetch.ok_or_else(|| {
            format!("ADD of a URL ({url}) needs the network, which this build cannot use")
        })?;
        let (data, last_modified) = fetch(url)?;
        if let Some(expected) = checksum {
            let Some(hex) = expected.strip_prefix("sha256:") else {
                return Err(format!("--checksum={expected}: use sha256:<hex>").into());
            };
            let actual = gcr_storage::Digest::of(&data);
            if actual.hex() != hex.to_ascii_lowercase() {
                return Err(format!(
                    "ADD {url}: checksum mismatch: expected sha256:{hex}, got {actual}"
                )
                .into());
            }
        }
        let path_part = url
            .split(['?', '#'])
            .next()
            .unwrap_or(url)
            .splitn(4, '/')
            .nth(3)
            .unwrap_or("");
        let name = path_part
            .rsplit('/')
            .find(|s| !s.is_empty() && *s != "." && *s != "..")
            .unwrap_or("__unnamed__")
            .to_string();
        Ok(Entry {
            src: None,
            size: data.len() as u64,
            data: Some(data),
            rel: PathBuf::from(name),
            kind: Kind::File,
            mode: 0o600,
            uid: 0,
            gid: 0,
            mtime: last_modified.unwrap_or(now_secs),
            link_key: None,
        })
    }

    pub(super) fn copy_instruction(
        &mut self,
        stage: usize,
        state: &mut State,
        instr: &Instruction,
        c: &CopyInstruction,
        is_add: bool,
        progress: &str,
    ) -> StepResult<()> {
        let what = if is_add { "ADD" } else { "COPY" };
        if c.checksum.is_some() && !is_add {
            return Err(format!("{what} has no --checksum: it is an ADD flag").into());
        }
        let exclude = if c.exclude.is_empty() {
            None
        } else {
            let mut patterns = Vec::new();
            for p in &c.exclude {
                patterns.push(self.expand(state, p)?);
            }
            Some(
                gcr_grammar::IgnoreMatcher::new(&patterns)
                    .map_err(|e| format!("--exclude: {e}"))?,
            )
        };
        let dest_raw = self.expand(state, &c.destination)?;
        let dest_abs = if dest_raw.starts_with('/') {
            dest_raw.clone()
        } else {
            let wd = state.workdir();
            format!("{}/{}", wd.trim_end_matches('/'), dest_raw)
        };
        let dest_slash = dest_raw.ends_with('/') || dest_raw.ends_with("/.") || dest_raw == ".";
        let chmod = match &c.chmod {
            Some(m) => {
                let m = self.expand(state, m)?;
                Some(crate::source::Chmod::parse(&m)?)
            }
            None => None,
        };
        let chown = match &c.chown {
            Some(o) => Some(self.expand(state, o)?),
            None => None,
        };
        // Sources: expanded paths or inline heredoc files.
        let mut paths = Vec::new();
        let mut inline: Vec<Entry> = Vec::new();
        let mut git_sources = Vec::new();
        let now_secs = self
            .opts
            .timestamp
            .unwrap_or_else(|| chrono::Utc::now().timestamp());
        for s in &c.sources {
            match s {
                CopySource::Path(p) => {
                    let p = self.expand(state, p)?;
                    let remote = p.contains("://") || p.starts_with("git@");
                    if remote && !is_add {
                        return Err(format!("{what} cannot copy from a URL ({p}): use ADD").into());
                    }
                    if crate::git::is_git_url(&p) {
                        git_sources.push(crate::git::GitSource::parse(&p)?);
                        continue;
                    }
                    if remote && (p.starts_with("http://") || p.starts_with("https://")) {
                        inline.push(self.fetch_entry(&p, c.checksum.as_deref(), now_secs)?);
                        continue;
                    }
                    if remote {
                        return Err(
                            format!("ADD of a remote source ({p}) is not supported yet").into()
                        );
                    }
                    if c.checksum.is_some() {
                        return Err(
                            format!("ADD --checksum is only for URL sources, not {p}").into()
                        );
                    }
                    paths.push(p);
                }
                CopySource::Heredoc(h) => {
                    let mut content = heredoc_text(h);
                    if h.expand {
                        content = self.expand(state, &content)?;
                    }
                    inline.push(Entry {
                        src: None,
                        size: content.len() as u64,
                        data: Some(content.into_bytes()),
                        rel: PathBuf::from(&h.name),
                        kind: Kind::File,
                        mode: 0o644,
                        uid: 0,
                        gid: 0,
                        mtime: now_secs,
                        link_key: None,
                    });
                }
            }
        }
        if !git_sources.is_empty()
            && (git_sources.len() > 1
                || !paths.is_empty()
                || !inline.is_empty()
                || c.from.is_some())
        {
            return Err(
                "ADD of a git repository takes it as its only source (no --from)"
                    .to_string()
                    .into(),
            );
        }
        if c.keep_git_dir && git_sources.is_empty() {
            return Err("ADD --keep-git-dir is only for git sources"
                .to_string()
                .into());
        }
        // Where from: the context, another stage / image (mounted read-only), or a git
        // checkout.
        let git_dir;
        let context_dir = match &c.from {
            Some(from) => self.context_dir(&self.expand(state, from)?, stage),
            None => None,
        };
        // A stage or image source is known by its key (as BuildKit's definition keys it), so
        // a hit needs none of its layers; it is mounted and read on a miss only.
        let mut deferred_from: Option<&String> = None;
        let (tree, from_key) = match (&c.from, git_sources.first(), &context_dir) {
            (None, Some(git), _) => {
                git_dir = self.store.build_dir("build-git")?;
                let checkout = crate::git::checkout(git, git_dir.path(), c.keep_git_dir)
                    .map_err(StepFailure::Message)?;
                paths.push(".".to_string());
                (
                    Some(SourceTree {
                        root: checkout.root,
                        confine: Confine::InRoot,
                        ignore: None,
                        label: format!("git {}", git.url),
                        preserve_owner: false,
                        exclude: exclude.clone(),
                        parents: false,
                    }),
                    format!("git {}", checkout.commit),
                )
            }
            (None, None, _) => {
                let ctx = self
                    .context
                    .as_ref()
                    .ok_or_else(|| "the build context is not open".to_string())?;
                (
                    Some(SourceTree {
                        root: ctx.root.clone(),
                        confine: ctx.confine,
                        ignore: ctx.ignore.clone(),
                        label: ctx.label.clone(),
                        preserve_owner: false,
                        exclude: exclude.clone(),
                        parents: c.parents,
                    }),
                    String::new(),
                )
            }
            (Some(_), _, Some((name, dir))) => (
                Some(SourceTree {
                    root: dir.clone(),
                    confine: Confine::Beneath,
                    ignore: None,
                    label: format!("build context {name}"),
                    preserve_owner: false,
                    exclude: exclude.clone(),
                    parents: c.parents,
                }),
                format!("context {name}"),
            ),
            (Some(from), _, None) => {
                let (from_state, _) = self.source_state(stage, state, from)?;
                deferred_from = Some(from);
                (None, from_state.key.clone())
            }
        };
        let gather = |tree: &SourceTree| -> StepResult<Vec<(String, Collected)>> {
            let mut collected = Vec::new();
            for p in &paths {
                collected.push((
                    p.clone(),
                    tree.collect(std::slice::from_ref(p))
                        .map_err(StepFailure::Message)?,
                ));
            }
            Ok(collected)
        };
        let early = match &tree {
            Some(tree) => Some(gather(tree)?),
            None => None,
        };
        // A git source is known by its commit (as BuildKit keys it): a kept .git differs
        // with every fetch; a stage or image by its key.
        let hash = match &early {
            _ if !git_sources.is_empty() => {
                format!("{from_key} keep_git_dir={}", c.keep_git_dir)
            }
            Some(collected) => {
                let mut all: Vec<Entry> = inline.clone();
                for (_, col) in collected {
                    all.extend(col.entries.iter().cloned());
                }
                source::content_hash(&all).map_err(StepFailure::Message)?
            }
            None => format!("of {from_key}"),
        };
        let unpack = is_add && c.unpack != Some(false);
        let key_text = format!(
            "{what}\n{}\nfrom={from_key}\nchown={chown:?}\nchmod={chmod:?}\ndest={dest_abs}\nsources={}\nunpack={unpack}\n",
            instr.raw.original.trim(),
            hash
        );
        self.layer_step(state, instr, progress, &key_text, |eng, st, dirs| {
            let from_dir;
            let _from_mount;
            let collected = match (early, deferred_from) {
                (Some(collected), _) => collected,
                (None, Some(from)) => {
                    let (from_state, label) = eng.source_state(stage, st, from)?;
                    from_dir = eng.store.build_dir("build-from")?;
                    let at = from_dir.path().join("root");
                    _from_mount = eng.mount_view(&from_state, &at)?;
                    gather(&SourceTree {
                        root: at,
                        confine: Confine::InRoot,
                        ignore: None,
                        label,
                        preserve_owner: true,
                        exclude: exclude.clone(),
                        parents: c.parents,
                    })?
                }
                (None, None) => return Err("a COPY without sources".to_string().into()),
            };
            let single_dir_source = inline.is_empty()
                && collected.len() == 1
                && collected[0].1.tops == 1
                && collected[0].1.top_dirs == 1;
            let multiple = paths.len() + inline.len() > 1
                || collected.iter().any(|(_, c)| c.multiple || c.tops > 1);
            let mount = eng.mount_rw(st, dirs)?;
            let root = mount.path().to_path_buf();
            let chown_ids = match &chown {
                Some(spec) => Some(eng.resolve_chown(&root, spec)?),
                None => None,
            };
            let dest_rel = fsutil::clean_relative(&dest_abs).unwrap_or_default();
            let dest_exists_dir = fsutil::resolve(&root, &dest_rel, Confine::InRoot)
                .map(|p| p.is_dir())
                .unwrap_or(false);
            let dest_is_dir =
                dest_slash || multiple || dest_exists_dir || single_dir_source || c.parents;
            if multiple && !dest_slash && !dest_exists_dir {
                return Err(format!(
                    "when using {what} with more than one source file, the destination must be a directory and end with a /"
                )
                .into());
            }
            let wopts = WriteOptions {
                chown: chown_ids,
                chmod,
            };
            let dest_path = PathBuf::from(&dest_abs);
            if !inline.is_empty() {
                source::write_entries(&root, &dest_path, dest_is_dir, &inline, &wopts)
                    .map_err(StepFailure::Message)?;
            }
            for (p, col) in &collected {
                // ADD unpacks a local archive given as a single file.
                if unpack && c.from.is_none() && col.entries.len() == 1 && col.entries[0].kind == Kind::File {
                    if let Some(src) = &col.entries[0].src {
                        let head = source::file_head(src).map_err(|e| format!("cannot read {p}: {e}"))?;
                        if let Some(kind) = source::archive_kind(&head) {
                            if source::decompressed_is_tar(src, kind) {
                                let tmp = eng.store.build_dir("build-add")?;
                                let into = tmp.path().join("x");
                                std::fs::create_dir(&into).map_err(|e| crate::error::io_fail("creating", &into, e))?;
                                source::unpack_archive(src, kind, &into).map_err(StepFailure::Message)?;
                                let t = SourceTree {
                                    root: into.clone(),
                                    confine: Confine::InRoot,
                                    ignore: None,
                                    label: format!("archive {p}"),
                                    preserve_owner: true,
                                    exclude: None,
                                    parents: false,
                                };
                                let inner = t.collect(&[".".to_string()]).map_err(StepFailure::Message)?;
                                source::write_entries(&root, &dest_path, true, &inner.entries, &wopts)
                                    .map_err(StepFailure::Message)?;
                                continue;
                            }
                        }
                    }
                }
                source::write_entries(&root, &dest_path, dest_is_dir, &col.entries, &wopts)
                    .map_err(StepFailure::Message)?;
            }
            drop(mount);
            Ok(())
        })
    }
}
