//! `login` / `logout`: verify credentials against the registry, then keep them in the auth
//! file (or its credential helper).

use std::path::PathBuf;

use crate::client::{ClientOptions, RegistryClient, RegistryError};
use crate::credentials::{self, Credential, CredentialsError};
use crate::reference::{normalize_registry, ReferenceError};

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error(transparent)]
    InvalidRegistry(#[from] ReferenceError),
    #[error("login to {registry} failed: wrong username or password")]
    Rejected { registry: String },
    #[error("login to {registry} failed: {source}")]
    Verify {
        registry: String,
        source: RegistryError,
    },
    #[error("login to {registry}: the username is empty")]
    EmptyUsername { registry: String },
    #[error("{registry}: {source}")]
    Credentials {
        registry: String,
        source: CredentialsError,
    },
}

/// Where credentials were saved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginOutcome {
    /// The registry as normalised (`docker.io`, `host:port`).
    pub registry: String,
    /// The auth file written (or whose credential helper was used).
    pub auth_file: PathBuf,
}

/// Checks `username`/`password` against `registry` (GET /v2/ with basic auth, or a token
/// request in the bearer flow) and saves them. A rejected password is an error and nothing is
/// written. `tls_verify` as for pull; CA certificates from the default certs.d directories.
pub async fn login(
    registry: &str,
    username: &str,
    password: &str,
    tls_verify: bool,
) -> Result<LoginOutcome, LoginError> {
    let opts = ClientOptions {
        tls_verify,
        ..ClientOptions::default()
    };
    login_with(registry, username, password, &opts).await
}

/// Checks `username`/`password` against `registry` without saving them (the Docker API's
/// `POST /auth`: the client keeps its credentials itself); the registry as normalised.
pub async fn verify_login(
    registry: &str,
    username: &str,
    password: &str,
    opts: &ClientOptions,
) -> Result<String, LoginError> {
    let registry = normalize_registry(registry)?;
    if username.is_empty() {
        return Err(LoginError::EmptyUsername { registry });
    }
    let credential = Credential {
        username: username.to_string(),
        password: password.to_string(),
    };
    let client = RegistryClient::connect(&registry, Some(credential), opts)
        .await
        .map_err(|source| LoginError::Verify {
            registry: registry.clone(),
            source,
        })?;
    client
        .verify_credential()
        .await
        .map_err(|source| match source {
            RegistryError::Unauthorized { .. } => LoginError::Rejected {
                registry: registry.clone(),
            },
            source => LoginError::Verify {
                registry: registry.clone(),
                source,
            },
        })?;
    Ok(registry)
}

/// `login` with explicit client options (e.g. other certs.d directories).
pub async fn login_with(
    registry: &str,
    username: &str,
    password: &str,
    opts: &ClientOptions,
) -> Result<LoginOutcome, LoginError> {
    let registry = verify_login(registry, username, password, opts).await?;
    let credential = Credential {
        username: username.to_string(),
        password: password.to_string(),
    };
    let auth_file = tokio::task::spawn_blocking({
        let registry = registry.clone();
        move || credentials::store(&registry, &credential)
    })
    .await
    .map_err(|e| LoginError::Credentials {
        registry: registry.clone(),
        source: CredentialsError::Write {
            path: PathBuf::new(),
            source: std::io::Error::other(e.to_string()),
        },
    })?
    .map_err(|source| LoginError::Credentials {
        registry: registry.clone(),
        source,
    })?;
    Ok(LoginOutcome {
        registry,
        auth_file,
    })
}

/// Removes saved credentials for `registry`; returns whether there were any.
pub fn logout(registry: &str) -> Result<bool, LoginError> {
    let registry = normalize_registry(registry)?;
    credentials::erase(&registry).map_err(|source| LoginError::Credentials { registry, source })
}
