//! `/volumes/...`: named volumes through gcr-containers (the same functions as `gcr volume`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::containers::{filter_entries, flag, passes_filters};
use crate::error::{blocking, Answer, Failure};
use crate::Service;

type Params = Query<HashMap<String, String>>;

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct CreateBody {
    name: String,
    driver: String,
    driver_opts: Option<BTreeMap<String, String>>,
    labels: Option<BTreeMap<String, String>>,
}

/// Whether a volume document passes one `key=value` filter (name, label, dangling).
fn passes(volume: &Value, filter: &str) -> Result<bool, Failure> {
    let (key, value) = filter.split_once('=').unwrap_or((filter, ""));
    Ok(match key {
        "name" => volume["Name"].as_str().is_some_and(|n| n.contains(value)),
        "label" => {
            let labels = &volume["Labels"];
            match value.split_once('=') {
                Some((k, v)) => labels[k].as_str() == Some(v),
                None => labels.get(value).is_some(),
            }
        }
        "dangling" => {
            let unused = volume["UsedBy"].as_array().is_none_or(|u| u.is_empty());
            unused == matches!(value, "true" | "1")
        }
        "driver" => value == "local",
        other => {
            return Err(Failure::bad_request(format!(
                "invalid filter {other:?}: use name, label, dangling or driver"
            )))
        }
    })
}

/// `GET /volumes?filters`. Filters of one key: any value matches; of several keys: all.
pub async fn list(State(service): State<Arc<Service>>, Query(query): Params) -> Answer {
    blocking(move || {
        let filters = filter_entries(&query)?;
        let store = service.store()?;
        let mut shown = Vec::new();
        for volume in gcr_containers::volumes(&store)? {
            if passes_filters(&filters, |key, value| {
                passes(&volume, &format!("{key}={value}"))
            })? {
                shown.push(volume);
            }
        }
        Ok(Json(json!({"Volumes": shown, "Warnings": []})).into_response())
    })
    .await
}

/// `POST /volumes/create`: 201 with the document (an existing volume is answered as is).
pub async fn create(State(service): State<Arc<Service>>, body: Bytes) -> Answer {
    let body: CreateBody = if body.iter().all(u8::is_ascii_whitespace) {
        CreateBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| Failure::bad_request(format!("invalid volume config JSON: {e}")))?
    };
    if !matches!(body.driver.as_str(), "" | "local") {
        return Err(Failure::not_implemented(&format!(
            "volume driver {:?} in POST /volumes/create (local only)",
            body.driver
        )));
    }
    if body.driver_opts.as_ref().is_some_and(|o| !o.is_empty()) {
        return Err(Failure::not_implemented(
            "DriverOpts in POST /volumes/create",
        ));
    }
    blocking(move || {
        let name = if body.name.is_empty() {
            gcr_containers::new_container_id()?
        } else {
            body.name
        };
        let store = service.store()?;
        let labels = body.labels.unwrap_or_default();
        let volume = gcr_containers::create_volume(&store, &name, &labels)?;
        Ok((StatusCode::CREATED, Json(volume)).into_response())
    })
    .await
}

/// `GET /volumes/{name}`.
pub async fn inspect(
    State(service): State<Arc<Service>>,
    Path(params): Path<HashMap<String, String>>,
) -> Answer {
    blocking(move || {
        let name = params.get("name").cloned().unwrap_or_default();
        let store = service.store()?;
        Ok(Json(gcr_containers::volume_info(&store, &name)?).into_response())
    })
    .await
}

/// `DELETE /volumes/{name}?force`: 204; 409 while a container uses it.
pub async fn remove(
    State(service): State<Arc<Service>>,
    Path(params): Path<HashMap<String, String>>,
    Query(query): Params,
) -> Answer {
    blocking(move || {
        let name = params.get("name").cloned().unwrap_or_default();
        let store = service.store()?;
        gcr_containers::remove_volume(&store, &name, flag(&query, "force", false))?;
        Ok(StatusCode::NO_CONTENT.into_response())
    })
    .await
}

/// `POST /volumes/prune`.
pub async fn prune(State(service): State<Arc<Service>>, Query(query): Params) -> Answer {
    blocking(move || {
        if !filter_entries(&query)?.is_empty() {
            return Err(Failure::not_implemented("filters on POST /volumes/prune"));
        }
        let store = service.store()?;
        let removed = gcr_containers::prune_volumes(&store)?;
        Ok(Json(json!({"VolumesDeleted": removed, "SpaceReclaimed": 0})).into_response())
    })
    .await
}
