//! The endpoints. Each one calls the libraries; blocking store work runs on tokio's blocking
//! pool.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::{error_response, Service};

/// `GET|HEAD /_ping`: "OK" (the engine headers say which API version is served).
pub async fn ping() -> Response {
    (
        [
            ("Cache-Control", "no-cache, no-store, must-revalidate"),
            ("Pragma", "no-cache"),
        ],
        "OK",
    )
        .into_response()
}

/// `GET /version`.
pub async fn version() -> Response {
    Json(gcr_containers::engine::version()).into_response()
}

/// `GET /info`.
pub async fn info(State(service): State<Arc<Service>>) -> Response {
    let result = tokio::task::spawn_blocking(move || {
        let store = service.store().map_err(|e| e.to_string())?;
        gcr_containers::engine::info(&store).map_err(|e| e.to_string())
    })
    .await;
    match result {
        Ok(Ok(info)) => Json(info).into_response(),
        Ok(Err(message)) => error_response(StatusCode::INTERNAL_SERVER_ERROR, message),
        Err(e) => error_response(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Every endpoint not done yet: 501 naming it, never a wrong 200.
pub async fn not_implemented(method: Method, uri: Uri) -> Response {
    error_response(
        StatusCode::NOT_IMPLEMENTED,
        format!(
            "gcr system service does not implement {method} {} yet",
            uri.path()
        ),
    )
}
