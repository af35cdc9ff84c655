//! The one error of gcr-oci's commands, worded as runc words them where callers match the
//! text (containerd and Podman look for "does not exist" and "not running").

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("container \"{0}\" does not exist")]
    NotExist(String),
    #[error("container with id exists: {0}")]
    Exists(String),
    #[error("invalid container id {0:?}: use letters, digits and _+-. only")]
    InvalidId(String),
    #[error("{}: {message}", path.display())]
    Config { path: PathBuf, message: String },
    #[error("container {id} is {status}: cannot {action}")]
    WrongState {
        id: String,
        status: &'static str,
        action: &'static str,
    },
    #[error("{0}")]
    Usage(String),
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: the state file is damaged ({message}); `gcr-oci delete --force` removes the container", path.display())]
    Corrupt { path: PathBuf, message: String },
    #[error("{0} is not supported by gcr-oci yet")]
    NotSupported(&'static str),
    #[error(transparent)]
    Runtime(#[from] gcr_runtime::RuntimeError),
}

impl OciError {
    pub fn io(op: &'static str, path: impl AsRef<Path>, source: std::io::Error) -> Self {
        OciError::Io {
            op,
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// The exit status: the container's 126/127 when its command cannot run, else 1 as runc.
    pub fn exit_code(&self) -> i32 {
        match self {
            OciError::Runtime(e) if matches!(e.exit_code(), 126 | 127) => e.exit_code(),
            _ => 1,
        }
    }
}
