//! The one error type of the container library.

use std::path::PathBuf;

/// What went wrong with a container; every variant names the container, path or value.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("no such container: {0} (see `gcr ps -a`)")]
    NotFound(String),
    #[error("no such volume: {0} (see `gcr volume ls`)")]
    NoSuchVolume(String),
    #[error("no such network: {0} (see `gcr network ls`)")]
    NoSuchNetwork(String),
    #[error("container ID prefix {0} is ambiguous: give more of it")]
    Ambiguous(String),
    #[error("container {0} is not running")]
    NotRunning(String),
    #[error("the name {name:?} is already used by container {by}: remove it (`gcr rm {name}`) or choose another")]
    NameInUse { name: String, by: String },
    /// A request that cannot be carried out as given (the message names the option or value).
    #[error("{0}")]
    Invalid(String),
    /// A container whose state forbids the operation (the message says what to do).
    #[error("{0}")]
    State(String),
    /// Something that is not there, its message whole (from a worker: the kind of
    /// NotFound, NoSuchNetwork, ... kept across the process boundary).
    #[error("{0}")]
    Missing(String),
    /// Something gcr does not do yet (the message says so and what to do instead).
    #[error("{0}")]
    Unsupported(String),
    /// The container's command did not start: the message and the exit status it gives
    /// (125 gcr failed, 126 cannot execute, 127 not found).
    #[error("{message}")]
    StartFailed { code: i32, message: String },
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot {action} container {name}: {source}")]
    Signal {
        action: &'static str,
        name: String,
        source: nix::errno::Errno,
    },
    #[error("cannot {action}: {source}")]
    Sys {
        action: &'static str,
        source: nix::errno::Errno,
    },
    #[error(transparent)]
    Store(#[from] gcr_storage::StoreError),
    #[error(transparent)]
    Runtime(#[from] gcr_runtime::RuntimeError),
    #[error(transparent)]
    Spec(#[from] gcr_runtime::SpecError),
    #[error("invalid runtime spec: {0}")]
    OciSpec(#[from] oci_spec::OciSpecError),
    #[error(transparent)]
    Userns(#[from] gcr_runtime::userns::UsernsError),
}

impl ContainerError {
    /// The exit status a front end ends with for this error, as Docker: the container's
    /// start failure keeps 126/127, everything else is gcr's failure (125).
    pub fn exit_code(&self) -> i32 {
        match self {
            ContainerError::Runtime(err) => err.exit_code(),
            ContainerError::StartFailed { code, .. } => *code,
            _ => 125,
        }
    }

    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        ContainerError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        ContainerError::Invalid(message.into())
    }
}

pub type Result<T, E = ContainerError> = std::result::Result<T, E>;
