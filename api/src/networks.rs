//! `/networks/...`: the built-in networks and user networks through gcr-containers (the same
//! functions as `gcr network`). Connecting a running container to a second network is not
//! done yet (501).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::containers::{filter_entries, passes_filters};
use crate::error::{blocking, Answer, Failure};
use crate::Service;

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct CreateBody {
    name: String,
    driver: String,
    internal: bool,
    #[serde(rename = "EnableIPv6")]
    enable_ipv6: bool,
    #[serde(rename = "IPAM")]
    ipam: Option<IpamBody>,
    options: Option<BTreeMap<String, String>>,
    labels: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct IpamBody {
    driver: String,
    config: Option<Vec<IpamConfig>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct IpamConfig {
    subnet: String,
    gateway: String,
    #[serde(rename = "IPRange")]
    ip_range: String,
}

/// Every network's document.
fn all(store: &gcr_storage::Store) -> Result<Vec<Value>, Failure> {
    let mut all = gcr_containers::builtin_networks();
    for record in gcr_containers::networks(store)? {
        all.push(gcr_containers::network_document(store, &record));
    }
    Ok(all)
}

fn is_builtin(name: &str) -> bool {
    gcr_containers::is_builtin_network(name)
}

fn passes(network: &Value, key: &str, value: &str) -> Result<bool, Failure> {
    let text = |k: &str| network[k].as_str().unwrap_or_default().to_string();
    Ok(match key {
        "name" => text("Name").contains(value),
        "id" => text("Id").starts_with(value),
        "driver" => text("Driver") == value,
        "type" => match value {
            "custom" => !is_builtin(&text("Name")),
            "builtin" => is_builtin(&text("Name")),
            _ => {
                return Err(Failure::bad_request(
                    "invalid filter type: use custom or builtin",
                ))
            }
        },
        "scope" => value == "local",
        "label" => match value.split_once('=') {
            Some((k, v)) => network["Labels"][k].as_str() == Some(v),
            None => network["Labels"].get(value).is_some(),
        },
        "dangling" => {
            return Err(Failure::not_implemented(
                "the dangling filter of GET /networks",
            ))
        }
        other => return Err(Failure::bad_request(format!("invalid filter {other:?}"))),
    })
}

/// `GET /networks?filters`.
pub async fn list(
    State(service): State<Arc<Service>>,
    Query(query): Query<HashMap<String, String>>,
) -> Answer {
    blocking(move || {
        let filters = filter_entries(&query)?;
        let store = service.store()?;
        let mut shown = Vec::new();
        for network in all(&store)? {
            if passes_filters(&filters, |key, value| passes(&network, key, value))? {
                shown.push(network);
            }
        }
        Ok(Json(shown).into_response())
    })
    .await
}

/// `GET /networks/{id}`.
pub async fn inspect(
    State(service): State<Arc<Service>>,
    Path(params): Path<HashMap<String, String>>,
) -> Answer {
    blocking(move || {
        let wanted = params.get("id").cloned().unwrap_or_default();
        let store = service.store()?;
        all(&store)?
            .into_iter()
            .find(|n| n["Name"] == wanted.as_str() || n["Id"] == wanted.as_str())
            .map(|n| Json(n).into_response())
            .ok_or_else(|| Failure::not_found(format!("network {wanted} not found")))
    })
    .await
}

/// `POST /networks/create`: 201 with the ID.
pub async fn create(State(service): State<Arc<Service>>, body: Bytes) -> Answer {
    let body: CreateBody = serde_json::from_slice(&body)
        .map_err(|e| Failure::bad_request(format!("invalid network config JSON: {e}")))?;
    if !matches!(body.driver.as_str(), "" | "bridge") {
        return Err(Failure::not_implemented(&format!(
            "network driver {:?} in POST /networks/create (bridge only)",
            body.driver
        )));
    }
    if body.enable_ipv6 {
        return Err(Failure::not_implemented("IPv6 networks (EnableIPv6)"));
    }
    if body.options.as_ref().is_some_and(|o| !o.is_empty()) {
        return Err(Failure::not_implemented(
            "driver Options in POST /networks/create",
        ));
    }
    let ipam = body.ipam.unwrap_or_default();
    if !matches!(ipam.driver.as_str(), "" | "default") {
        return Err(Failure::not_implemented("IPAM drivers other than default"));
    }
    let configs = ipam.config.unwrap_or_default();
    if configs.len() > 1 || configs.iter().any(|c| !c.ip_range.is_empty()) {
        return Err(Failure::not_implemented(
            "several subnets or an IPRange in POST /networks/create",
        ));
    }
    let config = configs.into_iter().next().unwrap_or_default();
    blocking(move || {
        let store = service.store()?;
        let options = gcr_containers::UserNetworkOptions {
            subnet: Some(config.subnet).filter(|s| !s.is_empty()),
            gateway: Some(config.gateway).filter(|g| !g.is_empty()),
            internal: body.internal,
            labels: body.labels.unwrap_or_default(),
        };
        let record = gcr_containers::create_network(&store, &body.name, &options)?;
        Ok((
            StatusCode::CREATED,
            Json(json!({"Id": record.id, "Warning": ""})),
        )
            .into_response())
    })
    .await
}

/// `DELETE /networks/{id}`: 204; a built-in one is refused (403, as Docker).
pub async fn remove(
    State(service): State<Arc<Service>>,
    Path(params): Path<HashMap<String, String>>,
) -> Answer {
    let wanted = params.get("id").cloned().unwrap_or_default();
    if is_builtin(&wanted) {
        return Err(Failure::new(
            StatusCode::FORBIDDEN,
            format!("{wanted} is a pre-defined network and cannot be removed"),
        ));
    }
    blocking(move || {
        let store = service.store()?;
        // Through a worker: rootless, the bridge goes inside the rootless network namespace,
        // which takes a fork the service must not make.
        let record = gcr_containers::find_network(&store, &wanted)?;
        service.in_worker(&gcr_containers::worker::Job::RemoveNetwork {
            network: record.name,
        })?;
        Ok(StatusCode::NO_CONTENT.into_response())
    })
    .await
}

/// `POST /networks/prune`.
pub async fn prune(
    State(service): State<Arc<Service>>,
    Query(query): Query<HashMap<String, String>>,
) -> Answer {
    blocking(move || {
        if !filter_entries(&query)?.is_empty() {
            return Err(Failure::not_implemented("filters on POST /networks/prune"));
        }
        let store = service.store()?;
        let removed = gcr_containers::unused_networks(&store)?;
        for name in &removed {
            service.in_worker(&gcr_containers::worker::Job::RemoveNetwork {
                network: name.clone(),
            })?;
        }
        Ok(Json(json!({ "NetworksDeleted": removed })).into_response())
    })
    .await
}

/// The body of `POST /networks/{id}/connect` and `/disconnect`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct MembershipBody {
    container: String,
    endpoint_config: Option<Value>,
    force: bool,
}

fn membership_body(body: &Bytes) -> Result<MembershipBody, Failure> {
    let body: MembershipBody = serde_json::from_slice(body)
        .map_err(|e| Failure::bad_request(format!("invalid request JSON: {e}")))?;
    if body.container.is_empty() {
        return Err(Failure::bad_request("the request names no Container"));
    }
    Ok(body)
}

/// `POST /networks/{id}/connect`: the container joins the network (at once when it runs,
/// in a worker: joining forks into the runtime).
pub async fn connect(
    State(service): State<Arc<Service>>,
    Path(params): Path<HashMap<String, String>>,
    body: Bytes,
) -> Answer {
    let wanted = params.get("id").cloned().unwrap_or_default();
    let body = membership_body(&body)?;
    if is_builtin(&wanted) {
        return Err(Failure::not_implemented(&format!(
            "connecting a container to the built-in network {wanted}"
        )));
    }
    let endpoint = body.endpoint_config.unwrap_or(Value::Null);
    let (aliases, ip) = crate::create_body::endpoint_request(&endpoint)?;
    blocking(move || {
        let (store, c) = crate::containers::find(&service, &body.container)?;
        let record = gcr_containers::find_network(&store, &wanted)?;
        let job = gcr_containers::worker::Job::Connect {
            container: c.id,
            request: gcr_containers::NetworkRequest {
                network: record.name,
                aliases,
                ip,
            },
        };
        service.in_worker(&job).map_err(|e| match e {
            // Docker's answer to a second connect.
            gcr_containers::ContainerError::State(m) if m.contains("already connected") => {
                Failure::new(StatusCode::FORBIDDEN, m)
            }
            other => other.into(),
        })?;
        Ok(StatusCode::OK.into_response())
    })
    .await
}

/// `POST /networks/{id}/disconnect`.
pub async fn disconnect(
    State(service): State<Arc<Service>>,
    Path(params): Path<HashMap<String, String>>,
    body: Bytes,
) -> Answer {
    let wanted = params.get("id").cloned().unwrap_or_default();
    let body = membership_body(&body)?;
    let _ = body.force;
    if is_builtin(&wanted) {
        return Err(Failure::not_implemented(&format!(
            "disconnecting a container from the built-in network {wanted}"
        )));
    }
    blocking(move || {
        let (store, c) = crate::containers::find(&service, &body.container)?;
        let record = gcr_containers::find_network(&store, &wanted)?;
        service.in_worker(&gcr_containers::worker::Job::Disconnect {
            container: c.id,
            network: record.name,
        })?;
        Ok(StatusCode::OK.into_response())
    })
    .await
}
