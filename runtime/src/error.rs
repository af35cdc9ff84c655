//! The error of [`crate::run_container`].

use std::path::{Path, PathBuf};

/// Why a container could not be run. [`RuntimeError::exit_code`] gives the exit status
/// Docker uses for it (125 gcr failed, 126 cannot execute, 127 not found).
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("invalid runtime spec: {0}")]
    InvalidSpec(String),
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{op}: {source}")]
    Sys {
        op: String,
        #[source]
        source: nix::errno::Errno,
    },
    /// The container's setup failed inside its namespaces; the text came back from the child.
    #[error("container setup failed: {0}")]
    Setup(String),
    /// The command could not be executed (126) or was not found (127).
    #[error("{message}")]
    Exec { code: i32, message: String },
    /// An OCI hook failed: its stage, its place in that stage's list, its program.
    #[error("{stage} hook #{index} ({}) failed: {message}", path.display())]
    Hook {
        stage: String,
        index: usize,
        path: PathBuf,
        message: String,
    },
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
    #[error(transparent)]
    User(#[from] crate::users::UserError),
}

impl RuntimeError {
    /// The exit status `gcr run` should end with for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            RuntimeError::Exec { code, .. } => *code,
            _ => 125,
        }
    }

    /// Whether a path the operation needed does not exist (e.g. a path in a container).
    pub fn is_not_found(&self) -> bool {
        matches!(self, RuntimeError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        RuntimeError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn sys(op: impl Into<String>, source: nix::errno::Errno) -> Self {
        RuntimeError::Sys {
            op: op.into(),
            source,
        }
    }
}

/// A failed mount of `what` on `dest`.
pub(crate) fn mount_err(what: &str, dest: &Path, e: nix::errno::Errno) -> RuntimeError {
    RuntimeError::sys(format!("mount {what} on {}", dest.display()), e)
}
