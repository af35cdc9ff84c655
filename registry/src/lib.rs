//! gcr-registry: image references, credentials, and pulling images from OCI/Docker registries
//! into the store. The only crate that talks HTTP.

pub mod client;
pub mod credentials;
pub mod login;
pub mod manifest;
pub mod platform;
pub mod pull;
pub mod reference;

pub use client::{ClientOptions, RegistryClient, RegistryError};
pub use credentials::{Credential, CredentialsError};
pub use login::{login, logout, LoginError, LoginOutcome};
pub use platform::{Platform, PlatformError};
pub use pull::{pull, PullError, PullErrorKind, PullEvent, PullOptions, PulledImage};
pub use reference::{Reference, ReferenceError};
