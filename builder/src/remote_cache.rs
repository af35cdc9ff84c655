//! Build cache that travels: the step results of a build written as BuildKit's cache config
//! (`application/vnd.buildkit.cacheconfig.v0`: `layers` with parent links and annotations,
//! `records` with digest, input links and results), and such a config read back as cache
//! hits for a later build on another store.
//!
//! The record digests are gcr's own step keys (`sha256:<key>`); BuildKit's keys are its own,
//! so the format is shared, the keys are not. A record without results is a step that made
//! no layer. The network side (registries, image configs) is the caller's: this module only
//! turns steps into a config and a config into [`ImportedCache`].

use std::collections::HashMap;

use gcr_storage::Digest;
use serde::{Deserialize, Serialize};

use crate::cache::LayerRef;
use crate::error::BuildError;

/// Media type of the cache config blob.
pub const CACHE_CONFIG_MEDIA_TYPE: &str = "application/vnd.buildkit.cacheconfig.v0";
/// The image config key of an inline cache (base64 of the cache config JSON).
pub const INLINE_CACHE_KEY: &str = "moby.buildkit.cache.v0";

/// A layer a cached step produced: its blob, diff_id, size and media type.
pub type CacheLayer = LayerRef;

/// One step of a finished build, for `--cache-to`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheStep {
    /// gcr's cache key of the step (64 hex digits).
    pub key: String,
    /// The key of the step before it in the same chain (None: the first on its base).
    pub parent: Option<String>,
    pub layer: Option<CacheLayer>,
    /// When the step's result was made (RFC 3339).
    pub created: String,
    /// The step is in the chain of the exported image (what `mode=min` exports).
    pub in_result: bool,
}

/// BuildKit's cache config document.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CacheConfig {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<ConfigLayer>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub records: Vec<ConfigRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigLayer {
    pub blob: String,
    /// Index of the parent layer, -1 for none.
    #[serde(default = "no_parent")]
    pub parent: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<LayerAnnotations>,
}

fn no_parent() -> i64 {
    -1
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LayerAnnotations {
    #[serde(
        rename = "mediaType",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub media_type: String,
    #[serde(rename = "diffID", default, skip_serializing_if = "String::is_empty")]
    pub diff_id: String,
    #[serde(default)]
    pub size: u64,
    #[serde(
        rename = "createdAt",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigRecord {
    pub digest: String,
    /// Results: each an index into `layers` (BuildKit's JSON name for them is `layers`).
    #[serde(rename = "layers", default, skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<ConfigResult>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<Vec<ConfigInput>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigResult {
    pub layer: usize,
    #[serde(
        rename = "createdAt",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigInput {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub selector: String,
    pub link: usize,
}

impl CacheConfig {
    /// The config of `steps` (`max`: all of them; else those of the result's chain), each
    /// distinct layer once, parents linked along the chains.
    pub fn from_steps(steps: &[CacheStep], max: bool) -> CacheConfig {
        let chosen: Vec<&CacheStep> = steps.iter().filter(|s| max || s.in_result).collect();
        let mut out = CacheConfig::default();
        let mut layer_index: HashMap<Digest, usize> = HashMap::new();
        let mut record_index: HashMap<&str, usize> = HashMap::new();
        // The nearest layer below a step along its chain: the parent of its own layer.
        let by_key: HashMap<&str, &CacheStep> =
            chosen.iter().map(|s| (s.key.as_str(), *s)).collect();
        let layer_below = |step: &CacheStep, layers: &HashMap<Digest, usize>| -> i64 {
            let mut cur = step.parent.as_deref();
            while let Some(k) = cur {
                let Some(s) = by_key.get(k) else { break };
                if let Some(l) = &s.layer {
                    return layers.get(&l.blob).map_or(-1, |i| *i as i64);
                }
                cur = s.parent.as_deref();
            }
            -1
        };
        for step in &chosen {
            let mut results = Vec::new();
            if let Some(layer) = &step.layer {
                let index = match layer_index.get(&layer.blob) {
                    Some(i) => *i,
                    None => {
                        let parent = layer_below(step, &layer_index);
                        out.layers.push(ConfigLayer {
                            blob: layer.blob.as_str().to_string(),
                            parent,
                            annotations: Some(LayerAnnotations {
                                media_type: layer.media_type.clone(),
                                diff_id: layer.diff_id.as_str().to_string(),
                                size: layer.size,
                                created_at: step.created.clone(),
                            }),
                        });
                        layer_index.insert(layer.blob.clone(), out.layers.len() - 1);
                        out.layers.len() - 1
                    }
                };
                results.push(ConfigResult {
                    layer: index,
                    created_at: step.created.clone(),
                });
            }
            let inputs = match step.parent.as_deref().and_then(|p| record_index.get(p)) {
                Some(link) => vec![vec![ConfigInput {
                    selector: String::new(),
                    link: *link,
                }]],
                None => Vec::new(),
            };
            if record_index.contains_key(step.key.as_str()) {
                continue;
            }
            out.records.push(ConfigRecord {
                digest: format!("sha256:{}", step.key),
                results,
                inputs,
            });
            record_index.insert(step.key.as_str(), out.records.len() - 1);
        }
        out
    }

    /// The layer blobs the config names, once each, with their sizes and media types.
    pub fn layer_blobs(&self) -> Vec<CacheLayer> {
        self.layers
            .iter()
            .filter_map(|l| layer_ref(l).ok())
            .collect()
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn parse(bytes: &[u8], source: &str) -> Result<CacheConfig, BuildError> {
        serde_json::from_slice(bytes).map_err(|e| BuildError::CacheImport {
            source_ref: source.to_string(),
            reason: format!("the cache config is not valid JSON: {e}"),
        })
    }
}

fn layer_ref(l: &ConfigLayer) -> Result<LayerRef, String> {
    let a = l
        .annotations
        .as_ref()
        .ok_or_else(|| format!("layer {} has no annotations (diffID, size)", l.blob))?;
    let parse = |s: &str| s.parse::<Digest>().map_err(|e| format!("{s:?}: {e}"));
    Ok(LayerRef {
        blob: parse(&l.blob)?,
        diff_id: parse(&a.diff_id)?,
        size: a.size,
        media_type: if a.media_type.is_empty() {
            gcr_storage::OCI_LAYER_GZIP.to_string()
        } else {
            a.media_type.clone()
        },
    })
}

/// One step result read from a cache source.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedStep {
    pub layer: Option<CacheLayer>,
    pub created: String,
}

/// The records of one `--cache-from` source, by gcr step key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImportedCache {
    /// Where the layers are pulled from (a registry reference).
    pub source: String,
    pub steps: HashMap<String, ImportedStep>,
}

impl ImportedCache {
    /// The records of `config`; layers without a usable descriptor make their records
    /// unusable (skipped), not the whole cache.
    pub fn from_config(source: &str, config: &CacheConfig) -> ImportedCache {
        let layers: Vec<Option<LayerRef>> =
            config.layers.iter().map(|l| layer_ref(l).ok()).collect();
        let mut steps = HashMap::new();
        for record in &config.records {
            let Some(key) = record.digest.strip_prefix("sha256:") else {
                continue;
            };
            let step = match record.results.first() {
                None => ImportedStep {
                    layer: None,
                    created: String::new(),
                },
                Some(r) => match layers.get(r.layer).cloned().flatten() {
                    Some(layer) => ImportedStep {
                        layer: Some(layer),
                        created: r.created_at.clone(),
                    },
                    None => continue,
                },
            };
            steps.insert(key.to_string(), step);
        }
        ImportedCache {
            source: source.to_string(),
            steps,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(n: &str) -> CacheLayer {
        LayerRef {
            diff_id: Digest::of(format!("diff {n}").as_bytes()),
            blob: Digest::of(format!("blob {n}").as_bytes()),
            size: 10,
            media_type: gcr_storage::OCI_LAYER_GZIP.into(),
        }
    }

    fn step(key: &str, parent: Option<&str>, l: Option<&str>, in_result: bool) -> CacheStep {
        CacheStep {
            key: key.into(),
            parent: parent.map(str::to_string),
            layer: l.map(layer),
            created: "2026-01-01T00:00:00Z".into(),
            in_result,
        }
    }

    #[test]
    fn min_keeps_the_result_chain_and_max_every_step() {
        let steps = vec![
            step("a", None, Some("1"), false),
            step("b", Some("a"), None, false),
            step("c", None, Some("2"), true),
            step("d", Some("c"), Some("3"), true),
        ];
        let min = CacheConfig::from_steps(&steps, false);
        assert_eq!(min.records.len(), 2);
        assert_eq!(min.layers.len(), 2);
        assert_eq!(min.layers[1].parent, 0);
        assert_eq!(min.records[1].inputs[0][0].link, 0);
        let max = CacheConfig::from_steps(&steps, true);
        assert_eq!(max.records.len(), 4);
        assert_eq!(max.layers.len(), 3);
        // Read back: every key, the empty step without a layer.
        let json = max.to_json();
        let parsed = CacheConfig::parse(&json, "r").unwrap();
        let imported = ImportedCache::from_config("r", &parsed);
        assert_eq!(imported.steps.len(), 4);
        assert_eq!(imported.steps["b"].layer, None);
        assert_eq!(imported.steps["d"].layer, Some(layer("3")));
        let text = String::from_utf8(json).unwrap();
        assert!(text.contains("\"diffID\""), "{text}");
        assert!(text.contains("\"digest\":\"sha256:a\""), "{text}");
    }
}
