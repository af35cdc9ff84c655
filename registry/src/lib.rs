//! gcr-registry: image references, credentials, and pulling images from OCI/Docker registries
//! into the store. The only crate that talks HTTP.
//!
//! - [`Reference`]: Docker's parsing and normalisation (`ubuntu` ->
//!   `docker.io/library/ubuntu:latest`); `Display` is the full form,
//!   [`Reference::store_name`] the name a pull stores (`repo@sha256:..` when by digest).
//! - [`pull()`]: manifest or index (platform picked, variant-aware) -> config -> missing layers
//!   streamed in parallel into `Store::ingest_layer` -> `Store::commit_image`, with
//!   [`PullEvent`]s for progress and retries with backoff for transient failures.
//! - [`login()`] / [`logout()`]: verify and save credentials in Docker-compatible auth files
//!   (see [`credentials`] for where they are read from).
//! - [`RegistryClient`]: one registry connection (scheme and TLS choice, certs.d CAs, basic
//!   and bearer-token auth, capped bodies); the base for push.
//! - [`push()`]: blobs the registry lacks (HEAD, cross-repository mount, streamed upload),
//!   the config, then the manifest byte for byte.
#![deny(unsafe_code)]

pub mod cache;
pub mod client;
pub mod credentials;
pub mod fetch;
pub mod login;
pub mod manifest;
pub mod platform;
pub mod pull;
pub mod push;
pub mod reference;
mod retry;
mod transfer;

pub use client::{ClientOptions, RegistryClient, RegistryError};
pub use credentials::{Credential, CredentialsError};
pub use login::{login, login_with, logout, verify_login, LoginError, LoginOutcome};
pub use platform::{Platform, PlatformError};
pub use pull::{pull, PullError, PullErrorKind, PullEvent, PullOptions, PulledImage};
pub use push::{push, PushError, PushErrorKind, PushEvent, PushOptions, PushedImage};
pub use reference::{Reference, ReferenceError};
