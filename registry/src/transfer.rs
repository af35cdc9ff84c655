//! What pull and push share beyond retrying: their options' connection and retry fields, the
//! plumbing of their error kinds, store and file work on blocking threads, and connecting to
//! the registry with the right credential.

use gcr_storage::StoreError;

use crate::client::{ClientOptions, RegistryClient, RegistryError};
use crate::credentials::{self, Credential, CredentialsError};
use crate::reference::Reference;
use crate::retry::{Retry, RetryEvent, Retryable};

/// An error kind of pull or push: retryable, and made from the errors both meet.
pub(crate) trait TransferError:
    Retryable + From<RegistryError> + From<StoreError> + From<CredentialsError>
{
    /// A failure of gcr itself (a blocking task that panicked).
    fn internal(detail: String) -> Self;
}

/// Declares the error kind of a pull or push: its own variants, then those every transfer has
/// (the registry's error, giving up after retries, credentials, the store, gcr itself); with
/// [`Retryable`] (`transient: |e| ...` says which of its errors are worth another attempt; the
/// registry's `Retry-After` is honoured) and [`TransferError`].
macro_rules! transfer_error_kind {
    (
        $(#[$attr:meta])*
        pub enum $kind:ident {
            $($variants:tt)*
        }
        transient: |$e:ident| $transient:expr
    ) => {
        $(#[$attr])*
        #[derive(Debug, thiserror::Error)]
        pub enum $kind {
            $($variants)*
            #[error(transparent)]
            Registry(#[from] crate::client::RegistryError),
            #[error("{last} (gave up after {attempts} attempts)")]
            GaveUp { attempts: u32, last: Box<$kind> },
            #[error(transparent)]
            Credentials(#[from] crate::credentials::CredentialsError),
            #[error(transparent)]
            Store(#[from] gcr_storage::StoreError),
            #[error("internal error: {0}")]
            Internal(String),
        }

        impl crate::retry::Retryable for $kind {
            fn is_transient(&self) -> bool {
                let $e = self;
                $transient
            }

            fn gave_up(attempts: u32, last: Self) -> Self {
                $kind::GaveUp {
                    attempts,
                    last: Box::new(last),
                }
            }

            fn retry_after(&self) -> Option<std::time::Duration> {
                match self {
                    $kind::Registry(e) => e.retry_after(),
                    _ => None,
                }
            }
        }

        impl crate::transfer::TransferError for $kind {
            fn internal(detail: String) -> Self {
                $kind::Internal(detail)
            }
        }
    };
}
pub(crate) use transfer_error_kind;

/// Declares the progress events of a pull or push: its own variants, then `Retrying`, which
/// [`Retry`] reports.
macro_rules! transfer_events {
    (
        $(#[$attr:meta])*
        pub enum $name:ident {
            $($variants:tt)*
        }
    ) => {
        $(#[$attr])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum $name {
            $($variants)*
            /// A transient failure; trying again after `delay`.
            Retrying {
                what: String,
                attempt: u32,
                delay: std::time::Duration,
                reason: String,
            },
        }

        impl crate::retry::RetryEvent for $name {
            fn retrying(
                what: String,
                attempt: u32,
                delay: std::time::Duration,
                reason: String,
            ) -> Self {
                $name::Retrying {
                    what,
                    attempt,
                    delay,
                    reason,
                }
            }
        }
    };
}
pub(crate) use transfer_events;

/// Declares the options of a pull or push: its own fields with their defaults, then the fields
/// every transfer has (TLS, credential, retries); with `Default`, and `client_options()` and
/// `retry()` for the transfer itself.
macro_rules! transfer_options {
    (
        $(#[$attr:meta])*
        pub struct $name:ident {
            $($(#[$field_attr:meta])* pub $field:ident: $ty:ty = $default:expr,)*
        }
    ) => {
        $(#[$attr])*
        #[derive(Debug, Clone)]
        pub struct $name {
            $($(#[$field_attr])* pub $field: $ty,)*
            /// Verify TLS; when false, accept any certificate and fall back to plain HTTP.
            pub tls_verify: bool,
            /// Directories holding `HOST[:PORT]/*.crt` CA certificates (and client certificates).
            pub certs_dirs: Vec<std::path::PathBuf>,
            /// The registry's certificates directly in one directory, instead of `certs_dirs`.
            pub cert_dir: Option<std::path::PathBuf>,
            /// Credentials to use instead of those in the auth files.
            pub credential: Option<crate::credentials::Credential>,
            /// Further attempts after a transient failure (connection, 5xx, 429; for a pull
            /// also a body cut off).
            pub retries: u32,
            /// Delay before the first retry; doubled for each further one.
            pub retry_delay: std::time::Duration,
        }

        impl Default for $name {
            fn default() -> Self {
                $name {
                    $($field: $default,)*
                    tls_verify: true,
                    certs_dirs: crate::client::DEFAULT_CERTS_DIRS
                        .iter()
                        .map(std::path::PathBuf::from)
                        .collect(),
                    cert_dir: None,
                    credential: None,
                    retries: 4,
                    retry_delay: std::time::Duration::from_millis(250),
                }
            }
        }

        impl $name {
            /// How to reach the registry.
            pub(crate) fn client_options(&self) -> crate::client::ClientOptions {
                crate::client::ClientOptions {
                    tls_verify: self.tls_verify,
                    certs_dirs: self.certs_dirs.clone(),
                    cert_dir: self.cert_dir.clone(),
                    ..crate::client::ClientOptions::default()
                }
            }

            /// Connects to the registry of `reference` as these options say (see
            /// [`crate::transfer::connect`]).
            pub(crate) async fn connect<E, Ev>(
                &self,
                reference: &crate::reference::Reference,
                retry: &crate::retry::Retry<'_, Ev>,
            ) -> Result<std::sync::Arc<crate::client::RegistryClient>, E>
            where
                E: crate::transfer::TransferError,
                Ev: crate::retry::RetryEvent,
            {
                let client_opts = self.client_options();
                crate::transfer::connect(reference, self.credential.as_ref(), &client_opts, retry)
                    .await
                    .map(std::sync::Arc::new)
            }

            /// Retries as these options say, reported on `events`.
            pub(crate) fn retry<'a, Ev>(
                &self,
                events: &'a tokio::sync::mpsc::UnboundedSender<Ev>,
            ) -> crate::retry::Retry<'a, Ev> {
                crate::retry::Retry {
                    retries: self.retries,
                    delay: self.retry_delay,
                    events,
                }
            }
        }
    };
}
pub(crate) use transfer_options;

/// Runs `f` (store or file work) on a blocking thread. Called as `blocking::<Kind, _, _>`:
/// the error kind wanted comes first, since `?` cannot infer it.
pub(crate) async fn blocking<E, T, X>(
    f: impl FnOnce() -> Result<T, X> + Send + 'static,
) -> Result<T, E>
where
    E: TransferError + From<X>,
    T: Send + 'static,
    X: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| E::internal(e.to_string()))?
        .map_err(E::from)
}

/// Connects to the registry of `reference` with `credential`, or else the one stored for its
/// registry and repository; connection failures are retried.
pub(crate) async fn connect<E, Ev>(
    reference: &Reference,
    credential: Option<&Credential>,
    client_opts: &ClientOptions,
    retry: &Retry<'_, Ev>,
) -> Result<RegistryClient, E>
where
    E: TransferError,
    Ev: RetryEvent,
{
    let credential = match credential {
        Some(c) => Some(c.clone()),
        None => {
            let registry = reference.registry().to_string();
            let repository = reference.repository().to_string();
            blocking::<E, _, _>(move || credentials::lookup(&registry, Some(&repository))).await?
        }
    };
    retry
        .run("connecting", || {
            let credential = credential.clone();
            async move {
                RegistryClient::connect(reference.registry(), credential, client_opts)
                    .await
                    .map_err(E::from)
            }
        })
        .await
}

/// The `Docker-Content-Digest` header: the digest the registry says it stored or served.
pub(crate) fn content_digest(resp: &reqwest::Response) -> Option<&str> {
    resp.headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
}
