//! `POST /auth` (a login checked against the registry, kept by the client), the
//! `X-Registry-Auth` credentials of pulls and pushes, and `GET /system/df`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::Json;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{blocking, Answer, Failure};
use crate::Service;

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct AuthConfig {
    username: String,
    password: String,
    serveraddress: String,
    identitytoken: String,
}

/// The credential a client sends with a pull or push (`X-Registry-Auth`: base64url JSON),
/// if any; a malformed header is a 400.
pub fn registry_auth(headers: &HeaderMap) -> Result<Option<gcr_registry::Credential>, Failure> {
    let Some(value) = headers.get("X-Registry-Auth") else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default().trim();
    if text.is_empty() || text == "e30=" || text == "e30" {
        return Ok(None);
    }
    let bytes = base64::engine::general_purpose::URL_SAFE
        .decode(text)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text))
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(text))
        .map_err(|e| Failure::bad_request(format!("invalid X-Registry-Auth header: {e}")))?;
    let config: AuthConfig = serde_json::from_slice(&bytes)
        .map_err(|e| Failure::bad_request(format!("invalid X-Registry-Auth header: {e}")))?;
    if !config.identitytoken.is_empty() {
        return Err(Failure::not_implemented(
            "identity tokens in X-Registry-Auth (give a user name and password)",
        ));
    }
    Ok(
        (!config.username.is_empty()).then_some(gcr_registry::Credential {
            username: config.username,
            password: config.password,
        }),
    )
}

/// `POST /auth`: the credentials checked against the registry (not saved: the client keeps
/// them, as with Docker).
pub async fn auth(body: Bytes) -> Answer {
    let config: AuthConfig = serde_json::from_slice(&body)
        .map_err(|e| Failure::bad_request(format!("invalid auth config JSON: {e}")))?;
    if !config.identitytoken.is_empty() {
        return Err(Failure::not_implemented("identity tokens in POST /auth"));
    }
    let server = if config.serveraddress.is_empty() {
        "docker.io".to_string()
    } else {
        config.serveraddress.clone()
    };
    let server = server
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .trim_end_matches("/v1")
        .to_string();
    let options = gcr_registry::ClientOptions::default();
    match gcr_registry::verify_login(&server, &config.username, &config.password, &options).await {
        Ok(_) => {
            Ok(Json(json!({"Status": "Login Succeeded", "IdentityToken": ""})).into_response())
        }
        Err(err @ gcr_registry::LoginError::Rejected { .. }) => Err(Failure::new(
            axum::http::StatusCode::UNAUTHORIZED,
            err.to_string(),
        )),
        Err(err) => Err(Failure::internal(err.to_string())),
    }
}

/// `GET /system/df`: images, containers and volumes with their sizes.
pub async fn df(State(service): State<Arc<Service>>) -> Answer {
    blocking(move || {
        let store = service.store()?;
        let usage = store.disk_usage()?;
        let images: Vec<Value> = gcr_images::list(&store)?
            .iter()
            .map(|r| gcr_images::summary(&store, r))
            .collect();
        let containers: Vec<Value> = gcr_containers::list(&store)?
            .iter()
            .map(|c| {
                let mut entry = gcr_containers::summary(&store, c);
                entry["SizeRw"] = json!(gcr_containers::size_of(c));
                entry["SizeRootFs"] = json!(0);
                entry
            })
            .collect();
        let volumes: Vec<Value> = gcr_containers::volumes(&store)?
            .into_iter()
            .map(|mut v| {
                let users = v["UsedBy"].as_array().map_or(0, Vec::len);
                let size = v["Mountpoint"]
                    .as_str()
                    .map_or(0, |p| gcr_containers::dir_size(std::path::Path::new(p)));
                v["UsageData"] = json!({"Size": size, "RefCount": users});
                v
            })
            .collect();
        Ok(Json(json!({
            "LayersSize": usage.images.size,
            "Images": images,
            "Containers": containers,
            "Volumes": volumes,
            "BuildCache": [],
        }))
        .into_response())
    })
    .await
}
