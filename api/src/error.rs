//! Errors as the Docker Engine API answers them: a status code and `{"message": ...}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use gcr_containers::ContainerError;

/// A failed request: what the client gets.
#[derive(Debug)]
pub struct Failure {
    pub status: StatusCode,
    pub message: String,
}

pub type Answer<T = Response> = Result<T, Failure>;

impl Failure {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Failure {
        Failure {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Failure {
        Failure::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Failure {
        Failure::new(StatusCode::NOT_FOUND, message)
    }

    pub fn internal(message: impl Into<String>) -> Failure {
        Failure::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    pub fn not_implemented(what: &str) -> Failure {
        Failure::new(
            StatusCode::NOT_IMPLEMENTED,
            format!("gcr system service does not implement {what} yet"),
        )
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        crate::error_response(self.status, self.message)
    }
}

impl From<ContainerError> for Failure {
    fn from(err: ContainerError) -> Failure {
        let status = match &err {
            ContainerError::NotFound(_)
            | ContainerError::Missing(_)
            | ContainerError::NoSuchVolume(_)
            | ContainerError::NoSuchNetwork(_) => StatusCode::NOT_FOUND,
            ContainerError::Ambiguous(_) | ContainerError::Invalid(_) => StatusCode::BAD_REQUEST,
            ContainerError::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
            ContainerError::NameInUse { .. }
            | ContainerError::NotRunning(_)
            | ContainerError::State(_) => StatusCode::CONFLICT,
            ContainerError::Store(store) => return Failure::from_store(store, err.to_string()),
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Failure::new(status, err.to_string())
    }
}

impl From<gcr_storage::StoreError> for Failure {
    fn from(err: gcr_storage::StoreError) -> Failure {
        let message = err.to_string();
        Failure::from_store(&err, message)
    }
}

impl From<gcr_images::ImageError> for Failure {
    fn from(err: gcr_images::ImageError) -> Failure {
        let status = match &err {
            gcr_images::ImageError::NotFound { .. } => StatusCode::NOT_FOUND,
            gcr_images::ImageError::Conflict { .. } => StatusCode::CONFLICT,
            gcr_images::ImageError::Invalid { .. } => StatusCode::BAD_REQUEST,
            gcr_images::ImageError::Store(store) => {
                return Failure::from_store(store, err.to_string())
            }
        };
        Failure::new(status, err.to_string())
    }
}

impl Failure {
    fn from_store(err: &gcr_storage::StoreError, message: String) -> Failure {
        use gcr_storage::StoreError as E;
        let status = match err {
            E::ImageNotFound { .. } | E::NameNotFound { .. } => StatusCode::NOT_FOUND,
            E::AmbiguousImage { .. } | E::InvalidName { .. } => StatusCode::BAD_REQUEST,
            E::ImageInUse { .. } => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Failure::new(status, message)
    }
}

/// Runs blocking library work on tokio's blocking pool.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Answer<T> + Send + 'static,
) -> Answer<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Failure::internal(format!("the request's work ended abnormally: {e}")))?
}
