//! Imported cache (`--cache-from`) in the build: a local miss whose key an imported source
//! holds is a hit; its layer is pulled (through the caller's `FetchLayer`) only when a later
//! step mounts the stage or the image is committed. And the steps of the build, for
//! `--cache-to`.

use super::state::State;
use super::Engine;
use crate::cache::{CacheEntry, LayerRef};
use crate::error::{BuildError, StepFailure, StepResult};
use crate::remote_cache::{CacheConfig, CacheStep};

impl Engine<'_> {
    /// The imported result of `key`, from the first `--cache-from` source that has it.
    pub(super) fn imported_entry(&self, key: &str) -> Option<CacheEntry> {
        self.opts.cache_from.iter().find_map(|source| {
            let step = source.steps.get(key)?;
            // A layer we cannot pull is no hit.
            if step.layer.is_some() && self.fetch_layer.is_none() {
                return None;
            }
            Some(CacheEntry {
                layer: step.layer.clone(),
                created: if step.created.is_empty() {
                    self.now()
                } else {
                    step.created.clone()
                },
            })
        })
    }

    /// Makes every layer of `layers` present in the store, pulling those of imported hits
    /// (all of one source in one call, so the caller can pull them in parallel).
    pub(super) fn ensure_layers(&self, layers: &[LayerRef]) -> Result<(), BuildError> {
        let mut wanted: Vec<(String, Vec<LayerRef>)> = Vec::new();
        for layer in layers {
            if self.store.has_layer(&layer.diff_id) && self.store.has_blob(&layer.blob) {
                continue;
            }
            let source = self.opts.cache_from.iter().find(|s| {
                s.steps
                    .values()
                    .any(|st| st.layer.as_ref().is_some_and(|l| l.blob == layer.blob))
            });
            let Some(source) = source.filter(|_| self.fetch_layer.is_some()) else {
                return Err(BuildError::CacheLayer {
                    source_ref: "(none)".into(),
                    blob: layer.blob.to_string(),
                    reason: "the layer is not in the store and no cache source has it".into(),
                });
            };
            self.say(&format!(
                "#0 pulling cached layer {} from {}",
                layer.blob.short(),
                source.source
            ));
            match wanted.iter_mut().find(|(s, _)| *s == source.source) {
                Some((_, list)) => list.push(layer.clone()),
                None => wanted.push((source.source.clone(), vec![layer.clone()])),
            }
        }
        let Some(fetch) = self.fetch_layer else {
            return Ok(());
        };
        for (source, list) in &wanted {
            fetch(source, list).map_err(|reason| BuildError::CacheLayer {
                source_ref: source.clone(),
                blob: list
                    .iter()
                    .map(|l| l.blob.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                reason,
            })?;
            for layer in list {
                if !self.store.has_layer(&layer.diff_id) || !self.store.has_blob(&layer.blob) {
                    return Err(BuildError::CacheLayer {
                        source_ref: source.clone(),
                        blob: layer.blob.to_string(),
                        reason: "the pull did not store it".into(),
                    });
                }
            }
        }
        Ok(())
    }

    /// [`Self::ensure_layers`] for a state about to be mounted.
    pub(super) fn ensure_state(&self, state: &State) -> StepResult<()> {
        self.ensure_layers(&state.layers)
            .map_err(|e| StepFailure::Message(e.to_string()))
    }

    /// Records a layer step (made or reused) for `--cache-to`.
    pub(super) fn note_step(&mut self, state: &State, key: &str, entry: &CacheEntry) {
        if self.cache_steps.iter().any(|s| s.key == key) {
            return;
        }
        self.cache_steps.push(CacheStep {
            key: key.to_string(),
            parent: state.steps.last().cloned(),
            layer: entry.layer.clone(),
            created: entry.created.clone(),
            in_result: false,
        });
    }

    /// The steps of the build, those of `result`'s chain marked.
    pub(super) fn result_steps(&mut self, result: &State) -> Vec<CacheStep> {
        let mut steps = std::mem::take(&mut self.cache_steps);
        for step in &mut steps {
            step.in_result = result.steps.contains(&step.key);
        }
        steps
    }

    /// The inline cache of a result (`--cache-to type=inline`): its chain's cache config.
    pub(super) fn inline_cache(&self, result: &State) -> Option<String> {
        if !self.opts.inline_cache {
            return None;
        }
        let steps: Vec<CacheStep> = self
            .cache_steps
            .iter()
            .map(|s| CacheStep {
                in_result: result.steps.contains(&s.key),
                ..s.clone()
            })
            .collect();
        let config = CacheConfig::from_steps(&steps, false);
        use base64::Engine as _;
        Some(base64::engine::general_purpose::STANDARD.encode(config.to_json()))
    }
}
