//! A step that makes a layer: its cache key, then the cached layer or the step executed on
//! fresh upper/work dirs over the stage's layers and committed.

use std::path::{Path, PathBuf};
use std::time::Instant;

use gcr_grammar::Instruction;

use super::state::{State, HISTORY_COMMENT};
use super::{short, Engine};
use crate::cache::{self, CacheEntry, LayerRef};
use crate::config::History;
use crate::error::{StepFailure, StepResult};
use crate::fsutil::OverlayMount;

/// Part of every cache key: bump it when a step's result for the same input changes.
const CACHE_VERSION: &str = "gcr-build-cache-2";

impl Engine<'_> {
    /// A metadata-changing step with a possible layer: cache lookup, else `exec` on fresh
    /// upper/work dirs and commit.
    pub(super) fn layer_step(
        &mut self,
        state: &mut State,
        instr: &Instruction,
        progress: &str,
        key_text: &str,
        exec: impl FnOnce(&mut Self, &State, &StepDirs) -> StepResult<()>,
    ) -> StepResult<()> {
        let env_text = state.run_env().join("\n");
        let compression = format!("{:?}", self.opts.compression);
        let key = cache::key(&[
            CACHE_VERSION,
            &state.key,
            "layer",
            key_text,
            &env_text,
            &state.workdir(),
            state.config.user.as_deref().unwrap_or(""),
            &compression,
        ]);
        let n = self.steps.next();
        self.say(&format!("#{n} {progress} {}", short(&instr.raw.original)));
        let started = Instant::now();
        let cached = if self.opts.no_cache {
            None
        } else {
            cache::lookup(self.store, &key).or_else(|| {
                // An imported hit: its layer comes when something needs it; recorded here
                // too, so the next build finds it once the layer is in the store.
                let entry = self.imported_entry(&key)?;
                cache::record(self.store, &key, &entry);
                Some(entry)
            })
        };
        let entry = match cached {
            Some(entry) => {
                self.say(&format!("#{n} CACHED"));
                entry
            }
            None => {
                let dir = self.store.build_dir("build-step")?;
                let dirs = StepDirs::new(dir.path())?;
                exec(self, state, &dirs)?;
                let layer = if crate::commit::is_empty_dir(&dirs.upper) {
                    None
                } else {
                    let commit_started = Instant::now();
                    let committed = crate::commit::commit_upper(
                        self.store,
                        &dirs.upper,
                        self.opts.compression,
                        self.opts.timestamp,
                    )?;
                    // BuildKit reports its export separately; the commit can outweigh the RUN.
                    self.say(&format!(
                        "#{n} exporting layer {} {} {:.1}s done",
                        committed.info.digest.short(),
                        human_size(committed.info.size),
                        commit_started.elapsed().as_secs_f64()
                    ));
                    Some(LayerRef {
                        diff_id: committed.info.diff_id,
                        blob: committed.info.digest,
                        size: committed.info.size,
                        media_type: committed.info.media_type,
                    })
                };
                let entry = CacheEntry {
                    layer,
                    created: self.now(),
                };
                cache::record(self.store, &key, &entry);
                self.say(&format!(
                    "#{n} DONE {:.1}s",
                    started.elapsed().as_secs_f64()
                ));
                entry
            }
        };
        self.note_step(state, &key, &entry);
        state.steps.push(key.clone());
        let empty = entry.layer.is_none();
        if let Some(layer) = entry.layer {
            state.layers.push(layer);
        }
        state.time = entry.created;
        state.key = key;
        state.history.push(History {
            created: Some(state.time.clone()),
            created_by: Some(format!("{} # buildkit", instr.raw.original.trim())),
            comment: Some(HISTORY_COMMENT.into()),
            empty_layer: empty,
        });
        Ok(())
    }

    /// The overlay lower dirs of a state, top layer first; scratch gets the empty dir.
    /// Layers of imported cache hits are pulled first.
    pub(super) fn overlay_lower(&self, state: &State) -> StepResult<Vec<PathBuf>> {
        self.ensure_state(state)?;
        let mut lower = state.lower_dirs(self.store);
        if lower.is_empty() {
            lower.push(self.empty.path().to_path_buf());
        }
        Ok(lower)
    }

    /// Mount the state's layers with the step's upper dir, read-write.
    pub(super) fn mount_rw(&self, state: &State, dirs: &StepDirs) -> StepResult<OverlayMount> {
        OverlayMount::mount(
            &self.overlay_lower(state)?,
            Some((&dirs.upper, &dirs.work)),
            &dirs.merged,
            self.userxattr,
        )
        .map_err(|e| StepFailure::Message(format!("cannot mount the build root: {e}")))
    }

    /// A read-only view of a state's root at `at`.
    pub(super) fn mount_view(&self, state: &State, at: &Path) -> StepResult<OverlayMount> {
        OverlayMount::mount(&self.overlay_lower(state)?, None, at, self.userxattr)
            .map_err(|e| StepFailure::Message(format!("cannot mount a source root: {e}")))
    }
}

/// The upper, work and mount dirs of one step, inside its build dir.
pub(super) struct StepDirs {
    pub(super) base: PathBuf,
    pub(super) upper: PathBuf,
    pub(super) work: PathBuf,
    pub(super) merged: PathBuf,
}

impl StepDirs {
    fn new(base: &Path) -> StepResult<StepDirs> {
        let dirs = StepDirs {
            base: base.to_path_buf(),
            upper: base.join("upper"),
            work: base.join("work"),
            merged: base.join("merged"),
        };
        for d in [&dirs.upper, &dirs.work, &dirs.merged] {
            std::fs::create_dir_all(d).map_err(|e| crate::error::io_fail("creating", d, e))?;
        }
        // The upper dir becomes a layer root: the usual mode of `/`.
        let _ = std::fs::set_permissions(
            &dirs.upper,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        );
        Ok(dirs)
    }
}

/// A size as BuildKit's progress prints it: 512B, 3.2kB, 1.07GB (powers of 1000).
fn human_size(bytes: u64) -> String {
    let b = bytes as f64;
    match bytes {
        0..=999 => format!("{bytes}B"),
        1_000..=999_999 => format!("{:.1}kB", b / 1e3),
        1_000_000..=999_999_999 => format!("{:.1}MB", b / 1e6),
        _ => format!("{:.2}GB", b / 1e9),
    }
}
