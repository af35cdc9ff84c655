//! Images and states: the state a base image or scratch gives a stage, and the image the
//! final state becomes.

use gcr_storage::{Digest, ImageRecord};
use serde_json::Value;

use super::state::State;
use super::Engine;
use crate::cache::{self, LayerRef};
use crate::config::{self, History, Platform, RunConfig};
use crate::error::BuildError;

impl Engine<'_> {
    /// The state a base image gives a stage built for `platform` (which the image must be
    /// for: the resolver picked it from an index or pulled it so).
    pub(super) fn image_state(
        &self,
        record: &ImageRecord,
        platform: &Platform,
    ) -> Result<State, String> {
        if !platform.accepts(&record.os, &record.architecture, record.variant.as_deref()) {
            let variant = record
                .variant
                .as_ref()
                .map(|v| format!("/{v}"))
                .unwrap_or_default();
            return Err(format!(
                "image {} is for {}/{}{variant}, not {platform}",
                record
                    .names
                    .first()
                    .map(String::as_str)
                    .unwrap_or(record.id.as_str()),
                record.os,
                record.architecture,
            ));
        }
        let config_bytes = self
            .store
            .image_config_bytes(record)
            .map_err(|e| e.to_string())?;
        let manifest_bytes = self
            .store
            .image_manifest_bytes(record)
            .map_err(|e| e.to_string())?;
        let cfg: Value = serde_json::from_slice(&config_bytes).map_err(|e| e.to_string())?;
        let manifest: Value = serde_json::from_slice(&manifest_bytes).map_err(|e| e.to_string())?;
        let run_config: RunConfig = cfg
            .get("config")
            .cloned()
            .filter(|v| v.is_object())
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| format!("image config of {}: {e}", record.id))?
            .unwrap_or_default();
        let history: Vec<History> = cfg
            .get("history")
            .cloned()
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| format!("image history of {}: {e}", record.id))?
            .unwrap_or_default();
        let descriptors = manifest
            .get("layers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut layers = Vec::new();
        for (i, diff_id) in record.layers.iter().enumerate() {
            let d = descriptors.get(i).cloned().unwrap_or(Value::Null);
            let blob =
                record.layer_blobs.get(i).cloned().ok_or_else(|| {
                    format!("image {} lists fewer layers than diff_ids", record.id)
                })?;
            layers.push(LayerRef {
                diff_id: diff_id.clone(),
                blob,
                size: d.get("size").and_then(Value::as_u64).unwrap_or(0),
                media_type: config::oci_layer_type(
                    d.get("mediaType")
                        .and_then(Value::as_str)
                        .unwrap_or(gcr_storage::OCI_LAYER_GZIP),
                ),
            });
        }
        let created = cfg
            .get("created")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        Ok(State {
            layers,
            config: run_config,
            history,
            key: cache::key(&["image", record.id.as_str()]),
            time: self.fixed_time().unwrap_or(created),
            args: Vec::new(),
            platform: platform.clone(),
            cmd_set: false,
            steps: Vec::new(),
        })
    }

    fn fixed_time(&self) -> Option<String> {
        self.opts.timestamp.map(config::rfc3339)
    }

    pub(super) fn now(&self) -> String {
        self.fixed_time().unwrap_or_else(config::now_rfc3339)
    }

    pub(super) fn scratch_state(&self, platform: &Platform) -> State {
        // The platform is part of the key only for foreign ones: host builds keep their keys.
        let name = platform.to_string();
        let key = if *platform == Platform::host() {
            cache::key(&["scratch"])
        } else {
            cache::key(&["scratch", &name])
        };
        State {
            layers: Vec::new(),
            config: RunConfig::default(),
            history: Vec::new(),
            key,
            time: self.fixed_time().unwrap_or_else(|| config::rfc3339(0)),
            args: Vec::new(),
            platform: platform.clone(),
            cmd_set: false,
            steps: Vec::new(),
        }
    }

    pub(super) fn commit_image(&self, state: &State) -> Result<ImageRecord, BuildError> {
        // The image must have all its layers in the store, imported cache hits included.
        self.ensure_layers(&state.layers)?;
        let inline_cache = self.inline_cache(state);
        let diff_ids: Vec<String> = state
            .layers
            .iter()
            .map(|l| l.diff_id.as_str().to_string())
            .collect();
        let config_bytes = config::render_config(
            &state.time,
            &state.platform,
            &state.config,
            &diff_ids,
            &state.history,
            inline_cache.as_deref(),
        );
        let config_digest = Digest::of(&config_bytes);
        let layers: Vec<config::Descriptor> = state
            .layers
            .iter()
            .map(|l| config::Descriptor {
                media_type: l.media_type.clone(),
                digest: l.blob.as_str().to_string(),
                size: l.size,
            })
            .collect();
        let manifest = config::render_manifest(
            config::Descriptor {
                media_type: gcr_storage::OCI_CONFIG.to_string(),
                digest: config_digest.as_str().to_string(),
                size: config_bytes.len() as u64,
            },
            &layers,
            &self.opts.manifest_annotations,
        );
        self.store
            .commit_image(&self.opts.tags, &manifest, &config_bytes)
            .map_err(|e| BuildError::store("storing the image", e))
    }
}
