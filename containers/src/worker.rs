//! The process model of a long-lived, multi-threaded front end (the Docker API service): it
//! must never fork into the runtime itself (a forked copy of a multi-threaded process may
//! only exec), so what starts container processes runs in a worker: a fresh, single-threaded
//! copy of the gcr binary started with [`WORKER_ARG`], which calls this library's functions
//! exactly as the command line does and answers with one JSON line on its stdout. Podman's
//! service does the same with conmon. The binary's `main` calls [`main_if_worker`] first.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::container::lookup;
use crate::error::{ContainerError, Result};
use crate::lifecycle::{prepare_start, restart};

/// The first argument that makes the gcr binary a worker.
pub const WORKER_ARG: &str = "__gcr-container-worker";

/// What a worker does.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "job", rename_all = "snake_case")]
pub enum Job {
    /// Starts a created or stopped container in the background (its supervisor outlives the
    /// worker).
    Start { container: String },
    /// Stops (if running) and starts it again in the background.
    Restart {
        container: String,
        timeout: Option<u64>,
    },
}

/// A worker's answer.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
struct Answer {
    error: Option<String>,
    /// What kind of error, for the front end's status code.
    kind: Option<ErrorKind>,
    code: Option<i32>,
}

/// The kinds of [`ContainerError`] a front end tells apart (the Docker API: 404, 409, 400),
/// kept across the process boundary.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum ErrorKind {
    NotFound,
    Conflict,
    Invalid,
    StartFailed,
    Other,
}

fn kind_of(err: &ContainerError) -> ErrorKind {
    match err {
        ContainerError::NotFound(_) => ErrorKind::NotFound,
        ContainerError::NameInUse { .. }
        | ContainerError::State(_)
        | ContainerError::NotRunning(_) => ErrorKind::Conflict,
        ContainerError::Invalid(_) | ContainerError::Ambiguous(_) => ErrorKind::Invalid,
        ContainerError::StartFailed { .. } | ContainerError::Runtime(_) => ErrorKind::StartFailed,
        _ => ErrorKind::Other,
    }
}

/// Runs `job` in a worker over the store at `root`, waiting for its answer. Safe to call
/// from a multi-threaded process (the worker is a new program, not a fork that goes on).
pub fn run_in_worker(exe: &Path, root: &Path, job: &Job) -> Result<()> {
    let request = serde_json::to_string(job).map_err(|source| ContainerError::Json {
        path: PathBuf::from("the worker's job"),
        source,
    })?;
    let output = std::process::Command::new(exe)
        .arg(WORKER_ARG)
        .arg(root)
        .arg(request)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| ContainerError::io("start the worker", exe, e))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let answer: Answer = text
        .lines()
        .last()
        .and_then(|line| serde_json::from_str(line).ok())
        .ok_or_else(|| {
            ContainerError::State(format!(
                "the gcr worker for {job:?} ended ({}) without an answer",
                output.status
            ))
        })?;
    match answer.error {
        None => Ok(()),
        Some(message) => Err(match answer.kind.unwrap_or(ErrorKind::Other) {
            ErrorKind::NotFound => ContainerError::NotFound(message),
            ErrorKind::Conflict => ContainerError::State(message),
            ErrorKind::Invalid => ContainerError::Invalid(message),
            ErrorKind::StartFailed | ErrorKind::Other => ContainerError::StartFailed {
                code: answer.code.unwrap_or(125),
                message,
            },
        }),
    }
}

/// When this process was started as a worker: does the job and returns the exit status
/// for `main`; None otherwise. Call it first thing in `main`, before any thread exists.
pub fn main_if_worker() -> Option<u8> {
    let mut args = std::env::args_os().skip(1);
    if args.next()? != WORKER_ARG {
        return None;
    }
    let root = args.next().map(PathBuf::from);
    let job = args.next();
    let result = match (root, job) {
        (Some(root), Some(job)) => serde_json::from_str::<Job>(&job.to_string_lossy())
            .map_err(|source| ContainerError::Json {
                path: PathBuf::from("the worker's job"),
                source,
            })
            .and_then(|job| run_job(&root, &job)),
        _ => Err(ContainerError::invalid(format!(
            "{WORKER_ARG} takes the store root and a job"
        ))),
    };
    let answer = match &result {
        Ok(()) => Answer::default(),
        Err(err) => Answer {
            error: Some(err.to_string()),
            kind: Some(kind_of(err)),
            code: Some(err.exit_code()),
        },
    };
    println!("{}", serde_json::to_string(&answer).unwrap_or_default());
    Some(u8::from(result.is_err()))
}

fn run_job(root: &Path, job: &Job) -> Result<()> {
    let store = gcr_storage::Store::open(root.to_path_buf())?;
    match job {
        Job::Start { container } => {
            let c = lookup(&store, container)?;
            if c.alive() {
                return Ok(());
            }
            prepare_start(&store, &c)?.start_detached()
        }
        Job::Restart { container, timeout } => {
            let c = lookup(&store, container)?;
            restart(&store, &c, *timeout)
        }
    }
}
