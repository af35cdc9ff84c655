//! A stage's image as it is built: layers, config, history, cache key and ARGs in scope.

use std::path::PathBuf;

use gcr_storage::Store;

use crate::cache::LayerRef;
use crate::config::{History, Platform, RunConfig};

/// PATH where the image sets none.
pub(super) const DEFAULT_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The comment of every history entry, as BuildKit writes it.
pub(super) const HISTORY_COMMENT: &str = "buildkit.dockerfile.v0";

/// A stage's image as it is built (serialisable: a stage built by a worker process comes
/// back as JSON).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct State {
    pub(super) layers: Vec<LayerRef>,
    pub(super) config: RunConfig,
    pub(super) history: Vec<History>,
    /// Cache key of everything so far.
    pub(super) key: String,
    /// `created` of the latest step.
    pub(super) time: String,
    /// ARGs in scope: name -> value (None: declared without a value).
    pub(super) args: Vec<(String, Option<String>)>,
    pub(super) platform: Platform,
    /// CMD was set in this stage (ENTRYPOINT then keeps it).
    pub(super) cmd_set: bool,
    /// Keys of the layer steps this state is made of, oldest first (across `FROM stage`).
    pub(super) steps: Vec<String>,
}

impl State {
    /// Variables for expansion: ARGs, then ENV (which wins).
    pub(super) fn expansion_env(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .args
            .iter()
            .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
            .collect();
        out.extend(self.config.env_pairs());
        out
    }

    /// The environment of a RUN: ENV plus ARGs that ENV does not override, PATH by default.
    pub(super) fn run_env(&self) -> Vec<String> {
        let env = self.config.env_list();
        let mut out = env.clone();
        let has = |k: &str| {
            env.iter()
                .any(|e| e.split_once('=').map(|(a, _)| a).unwrap_or(e) == k)
        };
        for (k, v) in &self.args {
            if let Some(v) = v {
                if !has(k) {
                    out.push(format!("{k}={v}"));
                }
            }
        }
        if !has("PATH") {
            out.insert(0, format!("PATH={DEFAULT_PATH}"));
        }
        out
    }

    pub(super) fn lower_dirs(&self, store: &Store) -> Vec<PathBuf> {
        let diff_ids: Vec<_> = self.layers.iter().map(|l| l.diff_id.clone()).collect();
        gcr_containers::lower_dirs(store, &diff_ids)
    }

    pub(super) fn workdir(&self) -> String {
        self.config
            .working_dir
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".to_string())
    }

    pub(super) fn shell(&self) -> Vec<String> {
        self.config
            .shell
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| vec!["/bin/sh".to_string(), "-c".to_string()])
    }
}
