//! Named volumes as both front ends show and change them: Docker's volume document, labels
//! (kept beside the data as `labels.json`; Compose finds its volumes by them), removal that
//! refuses a volume a container uses, prune.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::error::{ContainerError, Result};
use crate::inspect::using_source;

/// The labels file of a volume whose data directory is `data`.
fn labels_file(data: &std::path::Path) -> std::path::PathBuf {
    data.with_file_name("labels.json")
}

fn no_such_volume(name: &str) -> ContainerError {
    ContainerError::NoSuchVolume(name.to_string())
}

/// Creates volume `name` (nothing happens to one that exists: Docker's create is
/// idempotent) with `labels`; its document.
pub fn create_volume(
    store: &gcr_storage::Store,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> Result<Value> {
    let (data, created) = store.create_volume(name)?;
    if created {
        crate::events::volume_event(store, name, "create");
    }
    if created && !labels.is_empty() {
        let path = labels_file(&data);
        let text = serde_json::to_vec(labels).map_err(|source| ContainerError::Json {
            path: path.clone(),
            source,
        })?;
        std::fs::write(&path, text).map_err(|e| ContainerError::io("write", &path, e))?;
    }
    volume_info(store, name)
}

/// Docker's volume document (`docker volume inspect`), with the containers using it.
pub fn volume_info(store: &gcr_storage::Store, name: &str) -> Result<Value> {
    let data = store.volume_dir(name)?;
    let meta = std::fs::metadata(&data).map_err(|_| no_such_volume(name))?;
    if !meta.is_dir() {
        return Err(no_such_volume(name));
    }
    let labels: BTreeMap<String, String> = std::fs::read(labels_file(&data))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let created = meta
        .modified()
        .map(|t| {
            chrono::DateTime::<chrono::Utc>::from(t)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        })
        .unwrap_or_default();
    Ok(json!({
        "Name": name,
        "Driver": "local",
        "Mountpoint": data,
        "CreatedAt": created,
        "Labels": labels,
        "Scope": "local",
        "Options": {},
        "UsedBy": using_source(store, &data)?,
    }))
}

/// Every volume's document.
pub fn volumes(store: &gcr_storage::Store) -> Result<Vec<Value>> {
    store
        .volumes()?
        .iter()
        .map(|name| volume_info(store, name))
        .collect()
}

/// Removes volume `name`; one a container uses only with `force`.
pub fn remove_volume(store: &gcr_storage::Store, name: &str, force: bool) -> Result<()> {
    let data = store.volume_dir(name)?;
    if !data.is_dir() {
        return Err(no_such_volume(name));
    }
    let users = using_source(store, &data)?;
    if !users.is_empty() && !force {
        return Err(ContainerError::State(format!(
            "volume {name} is in use by container(s) {}: remove them first",
            users.join(", ")
        )));
    }
    store.remove_volume(name)?;
    crate::events::volume_event(store, name, "destroy");
    Ok(())
}

/// Removes every volume no container uses; their names.
pub fn prune_volumes(store: &gcr_storage::Store) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for name in store.volumes()? {
        let data = store.volume_dir(&name)?;
        if using_source(store, &data)?.is_empty() {
            store.remove_volume(&name)?;
            crate::events::volume_event(store, &name, "destroy");
            removed.push(name);
        }
    }
    Ok(removed)
}

/// Removes the anonymous volumes of a removed container (`rm -v`, `--rm`); one another
/// container still uses (`--volumes-from` is not there yet, so only by name) stays.
pub fn remove_anonymous_volumes(store: &gcr_storage::Store, meta: &crate::record::ContainerMeta) {
    for name in &meta.anonymous_volumes {
        if let Err(err) = remove_volume(store, name, false) {
            tracing::debug!(%err, volume = %name, "anonymous volume kept");
        }
    }
}
