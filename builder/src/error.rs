//! The error of [`crate::build`].

use std::path::PathBuf;

/// Why a build failed. Errors about one instruction name the Containerfile and line.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The Containerfile does not parse.
    #[error("{file}: {source}")]
    Parse {
        file: String,
        #[source]
        source: gcr_grammar::ParseError,
    },
    /// An instruction failed.
    #[error("{file}:{line}: {instruction}: {message}")]
    Step {
        file: String,
        line: usize,
        instruction: String,
        message: String,
    },
    /// A RUN command exited with a non-zero status.
    #[error("{file}:{line}: {instruction}: the command exited with status {code}")]
    RunFailed {
        file: String,
        line: usize,
        instruction: String,
        code: i32,
    },
    /// `--target` names no stage.
    #[error("target stage {target:?} could not be found (stages: {stages})")]
    UnknownTarget { target: String, stages: String },
    /// The build context cannot be used.
    #[error("build context {}: {reason}", path.display())]
    Context { path: PathBuf, reason: String },
    /// Bad option given to the build.
    #[error("{0}")]
    Options(String),
    /// A stage built in a worker process failed outside its instructions.
    #[error("stage {stage}: {message}")]
    Worker { stage: String, message: String },
    /// The store failed.
    #[error("{what}: {source}")]
    Store {
        what: String,
        #[source]
        source: gcr_storage::StoreError,
    },
    /// A `--cache-from` source cannot be read.
    #[error("cache {source_ref}: {reason}")]
    CacheImport { source_ref: String, reason: String },
    /// A layer of an imported cache could not be brought into the store.
    #[error("layer {blob} of cache {source_ref}: {reason}")]
    CacheLayer {
        source_ref: String,
        blob: String,
        reason: String,
    },
    /// A file operation of the builder itself failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl BuildError {
    /// The exit code a RUN failure carries, if this is one.
    pub fn run_exit_code(&self) -> Option<i32> {
        match self {
            BuildError::RunFailed { code, .. } => Some(*code),
            _ => None,
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        BuildError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn store(what: impl Into<String>, source: gcr_storage::StoreError) -> Self {
        BuildError::Store {
            what: what.into(),
            source,
        }
    }
}

/// A failure inside one step, before the instruction's position is attached.
#[derive(Debug)]
pub(crate) enum StepFailure {
    Message(String),
    Exit(i32),
}

impl From<String> for StepFailure {
    fn from(message: String) -> Self {
        StepFailure::Message(message)
    }
}

impl From<gcr_storage::StoreError> for StepFailure {
    fn from(err: gcr_storage::StoreError) -> Self {
        StepFailure::Message(err.to_string())
    }
}

impl From<gcr_grammar::ExpandError> for StepFailure {
    fn from(err: gcr_grammar::ExpandError) -> Self {
        StepFailure::Message(err.to_string())
    }
}

pub(crate) type StepResult<T> = Result<T, StepFailure>;

/// `op path: error` as a step failure.
pub(crate) fn io_fail(
    op: &str,
    path: &std::path::Path,
    err: impl std::fmt::Display,
) -> StepFailure {
    StepFailure::Message(format!("{op} {}: {err}", path.display()))
}
