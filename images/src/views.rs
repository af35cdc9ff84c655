//! One image in Docker's shapes: inspect, the `/images/json` summary, history.

use std::collections::BTreeSet;

use gcr_storage::{ImageRecord, Store};
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::{config, familiar_name, repository, Result};

/// Docker's time for "never" (Go's zero time), where a time is required.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// Docker's `RepoTags`: the familiar names that are tags (a name by digest is none).
fn repo_tags(record: &ImageRecord) -> Vec<String> {
    record
        .names
        .iter()
        .filter(|n| !n.contains('@'))
        .map(|n| familiar_name(n))
        .collect()
}

/// Docker's `RepoDigests`: each repository the image is named in, at its manifest digest.
fn repo_digests(record: &ImageRecord) -> Vec<String> {
    record
        .names
        .iter()
        .map(|n| {
            format!(
                "{}@{}",
                familiar_name(repository(n)),
                record.manifest_digest
            )
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// `docker image inspect` (Engine API v1.41 `ImageInspect`), plus gcr's `Digest` (the
/// manifest digest) and `History` (the config's), which `gcr inspect` has always shown.
pub fn inspect(store: &Store, record: &ImageRecord) -> Result<Value> {
    let config = config(store, record)?;
    let text = |key: &str| config.get(key).and_then(Value::as_str).unwrap_or_default();
    let mut out = Map::new();
    out.insert("Id".into(), json!(record.id.to_string()));
    out.insert("Digest".into(), json!(record.manifest_digest.to_string()));
    out.insert("RepoTags".into(), json!(repo_tags(record)));
    out.insert("RepoDigests".into(), json!(repo_digests(record)));
    out.insert("Parent".into(), json!(""));
    out.insert("Comment".into(), json!(text("comment")));
    let created = config
        .get("created")
        .and_then(Value::as_str)
        .unwrap_or(ZERO_TIME);
    out.insert("Created".into(), json!(created));
    out.insert("Container".into(), json!(text("container")));
    out.insert("DockerVersion".into(), json!(text("docker_version")));
    out.insert("Author".into(), json!(text("author")));
    let image_config = config.get("config").cloned().unwrap_or(json!({}));
    out.insert("Config".into(), image_config);
    out.insert("Architecture".into(), json!(record.architecture));
    if let Some(variant) = &record.variant {
        out.insert("Variant".into(), json!(variant));
    }
    out.insert("Os".into(), json!(record.os));
    out.insert("Size".into(), json!(record.size));
    out.insert("VirtualSize".into(), json!(record.size));
    // Each layer is an overlay lower dir; Docker clients only show the name.
    out.insert("GraphDriver".into(), json!({"Name": "overlay", "Data": {}}));
    let layers: Vec<String> = record.layers.iter().map(|l| l.to_string()).collect();
    out.insert("RootFS".into(), json!({"Type": "layers", "Layers": layers}));
    out.insert("Metadata".into(), json!({"LastTagTime": ZERO_TIME}));
    out.insert(
        "History".into(),
        config.get("history").cloned().unwrap_or(Value::Null),
    );
    Ok(Value::Object(out))
}

/// One entry of Docker's `GET /images/json`. Labels come from the config; an unreadable one
/// gives `null` rather than failing the whole list.
pub fn summary(store: &Store, record: &ImageRecord) -> Value {
    let mut tags = repo_tags(record);
    let mut digests = repo_digests(record);
    // Docker (API v1.41) shows an image without names so.
    if tags.is_empty() {
        tags.push("<none>:<none>".to_string());
    }
    if digests.is_empty() {
        digests.push("<none>@<none>".to_string());
    }
    let created = record
        .created
        .as_deref()
        .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
        .map_or(0, |t| t.timestamp());
    let labels = config(store, record)
        .ok()
        .and_then(|c| c.get("config")?.get("Labels").cloned())
        .filter(Value::is_object)
        .unwrap_or(Value::Null);
    json!({
        "Id": record.id.to_string(),
        "ParentId": "",
        "RepoTags": tags,
        "RepoDigests": digests,
        "Created": created,
        "Size": record.size,
        "VirtualSize": record.size,
        "SharedSize": -1,
        "Labels": labels,
        "Containers": -1,
    })
}

/// One step of an image's history, as `docker history` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryEntry {
    /// The image ID on the newest step; `<missing>` on the others, which are no image here.
    pub id: String,
    /// RFC 3339 text as the config has it ("" when it has none).
    pub created: String,
    pub created_by: String,
    /// The layer's size as the manifest gives it (compressed); 0 for steps without a layer.
    pub size: u64,
    pub comment: String,
    /// The image's familiar tags on the newest step, none on the others.
    pub tags: Vec<String>,
}

/// The config's history, newest first. Steps that made a layer take the manifest's layers in
/// order; `empty_layer` steps made none.
pub fn history(store: &Store, record: &ImageRecord) -> Result<Vec<HistoryEntry>> {
    let config = config(store, record)?;
    let steps = config
        .get("history")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let layer_sizes = manifest_layer_sizes(store, record);
    let mut layer_index = 0usize;
    let mut out: Vec<HistoryEntry> = Vec::with_capacity(steps.len());
    for step in &steps {
        let empty = step
            .get("empty_layer")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let size = if empty {
            0
        } else {
            let size = layer_sizes.get(layer_index).copied().unwrap_or(0);
            layer_index += 1;
            size
        };
        let text = |k: &str| {
            step.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        out.push(HistoryEntry {
            id: "<missing>".to_string(),
            created: text("created"),
            created_by: text("created_by"),
            size,
            comment: text("comment"),
            tags: Vec::new(),
        });
    }
    if let Some(top) = out.last_mut() {
        top.id = record.id.to_string();
        top.tags = repo_tags(record);
    }
    out.reverse();
    Ok(out)
}

/// Sizes of the image's layers as its manifest gives them; none when it cannot be read (the
/// history is still worth showing).
fn manifest_layer_sizes(store: &Store, record: &ImageRecord) -> Vec<u64> {
    let Ok(bytes) = store.image_manifest_bytes(record) else {
        return Vec::new();
    };
    let Ok(manifest) = serde_json::from_slice::<Value>(&bytes) else {
        return Vec::new();
    };
    manifest
        .get("layers")
        .and_then(Value::as_array)
        .map(|layers| {
            layers
                .iter()
                .map(|l| l.get("size").and_then(Value::as_u64).unwrap_or(0))
                .collect()
        })
        .unwrap_or_default()
}
