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
    /// Runs a command in the running container with the worker's stdio (the front end relays
    /// it); the answer, with the command's exit status, goes to `answer_file`.
    Exec {
        container: String,
        request: crate::exec::ExecRequest,
        answer_file: PathBuf,
    },
    /// Runs a command in the running container in the background.
    ExecDetached {
        container: String,
        request: crate::exec::ExecRequest,
    },
    /// What a path in the container is (answered with its stat).
    ArchiveStat { container: String, path: String },
    /// A path of the container as a tar stream on stdout; the answer goes to `answer_file`.
    ArchiveOut {
        container: String,
        path: String,
        answer_file: PathBuf,
    },
    /// A tar stream on stdin unpacked into a directory of the container.
    ArchiveIn { container: String, path: String },
    /// Connects the container to a user network (at once when it runs).
    Connect {
        container: String,
        request: crate::attachments::NetworkRequest,
    },
    /// Disconnects the container from a user network.
    Disconnect { container: String, network: String },
    /// Runs the container's healthcheck every interval while it runs (started by its
    /// supervisor with each run).
    HealthMonitor { container: String },
    /// Removes a user network (rootless, its bridge is taken down inside the rootless network
    /// namespace, which needs a fork).
    RemoveNetwork { network: String },
}

/// A worker's answer.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
struct Answer {
    error: Option<String>,
    /// What kind of error, for the front end's status code.
    kind: Option<ErrorKind>,
    code: Option<i32>,
    /// The exit status of an exec'd command.
    exit_code: Option<i32>,
    /// What an archive stat found.
    stat: Option<EntryStat>,
}

/// A container entry as an archive stat answers it (Docker's path stat fields).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EntryStat {
    pub name: String,
    pub size: u64,
    /// Go's `os.FileMode` bits, as the docker CLI decodes them.
    pub mode: u32,
    /// RFC 3339.
    pub mtime: String,
    #[serde(rename = "linkTarget")]
    pub link_target: String,
}

impl From<gcr_runtime::EntryStat> for EntryStat {
    fn from(st: gcr_runtime::EntryStat) -> EntryStat {
        let mtime = chrono::DateTime::from_timestamp(st.mtime, 0)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        EntryStat {
            name: st.name,
            size: st.size,
            mode: st.go_mode,
            mtime,
            link_target: st.link_target,
        }
    }
}

impl Answer {
    fn parse(text: &str) -> Option<Answer> {
        text.lines()
            .last()
            .and_then(|line| serde_json::from_str(line).ok())
    }

    fn into_result(self) -> Result<Option<i32>> {
        match self.error {
            None => Ok(self.exit_code),
            Some(message) => Err(match self.kind.unwrap_or(ErrorKind::Other) {
                ErrorKind::NotFound => ContainerError::Missing(message),
                ErrorKind::Unsupported => ContainerError::Unsupported(message),
                ErrorKind::Conflict => ContainerError::State(message),
                ErrorKind::Invalid => ContainerError::Invalid(message),
                ErrorKind::StartFailed | ErrorKind::Other => ContainerError::StartFailed {
                    code: self.code.unwrap_or(125),
                    message,
                },
            }),
        }
    }
}

/// The kinds of [`ContainerError`] a front end tells apart (the Docker API: 404, 409, 400),
/// kept across the process boundary.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum ErrorKind {
    NotFound,
    Conflict,
    Invalid,
    Unsupported,
    StartFailed,
    Other,
}

fn kind_of(err: &ContainerError) -> ErrorKind {
    match err {
        ContainerError::Runtime(e) if e.is_not_found() => ErrorKind::NotFound,
        ContainerError::NotFound(_)
        | ContainerError::Missing(_)
        | ContainerError::NoSuchNetwork(_)
        | ContainerError::NoSuchVolume(_) => ErrorKind::NotFound,
        ContainerError::Unsupported(_) => ErrorKind::Unsupported,
        ContainerError::NameInUse { .. }
        | ContainerError::State(_)
        | ContainerError::NotRunning(_) => ErrorKind::Conflict,
        ContainerError::Invalid(_) | ContainerError::Ambiguous(_) => ErrorKind::Invalid,
        ContainerError::StartFailed { .. } | ContainerError::Runtime(_) => ErrorKind::StartFailed,
        _ => ErrorKind::Other,
    }
}

/// The command that runs `job` in a worker over the store at `root` (a front end that
/// relays the worker's stdio spawns it itself, e.g. as a tokio process).
pub fn command(exe: &Path, root: &Path, job: &Job) -> Result<std::process::Command> {
    let request = serde_json::to_string(job).map_err(|source| ContainerError::Json {
        path: PathBuf::from("the worker's job"),
        source,
    })?;
    let mut command = std::process::Command::new(exe);
    command.arg(WORKER_ARG).arg(root).arg(request);
    Ok(command)
}

/// Runs `job` in a worker over the store at `root`, waiting for its answer. Safe to call
/// from a multi-threaded process (the worker is a new program, not a fork that goes on).
pub fn run_in_worker(exe: &Path, root: &Path, job: &Job) -> Result<()> {
    run_for_answer(exe, root, job).map(|_| ())
}

/// What a path in the container is (see [`Job::ArchiveStat`]).
pub fn archive_stat_in_worker(
    exe: &Path,
    root: &Path,
    container: &str,
    path: &str,
) -> Result<EntryStat> {
    let job = Job::ArchiveStat {
        container: container.to_string(),
        path: path.to_string(),
    };
    let answer = run_for_answer(exe, root, &job)?;
    answer
        .stat
        .ok_or_else(|| ContainerError::State(format!("the worker answered no stat of {path}")))
}

fn run_for_answer(exe: &Path, root: &Path, job: &Job) -> Result<Answer> {
    let output = command(exe, root, job)?
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| ContainerError::io("start the worker", exe, e))?;
    let answer = Answer::parse(&String::from_utf8_lossy(&output.stdout)).ok_or_else(|| {
        ContainerError::State(format!(
            "the gcr worker for {job:?} ended ({}) without an answer",
            output.status
        ))
    })?;
    answer.clone().into_result()?;
    Ok(answer)
}

/// Reads the answer a worker printed (a job whose stdin was a stream).
pub fn parse_answer(text: &str) -> Result<()> {
    let answer = Answer::parse(text)
        .ok_or_else(|| ContainerError::State("the worker ended without an answer".into()))?;
    answer.into_result().map(|_| ())
}

/// The answer a worker whose stdout was a stream left in its answer file (an exec: the
/// command's exit status; an archive: none).
pub fn stream_answer(answer_file: &Path) -> Result<Option<i32>> {
    let text = std::fs::read_to_string(answer_file)
        .map_err(|e| ContainerError::io("read the worker's answer", answer_file, e))?;
    let answer = Answer::parse(&text).ok_or_else(|| {
        ContainerError::State(format!(
            "the worker left no answer in {}",
            answer_file.display()
        ))
    })?;
    answer.into_result()
}

/// The answer an exec worker left in its answer file: the command's exit status.
pub fn exec_answer(answer_file: &Path) -> Result<i32> {
    Ok(stream_answer(answer_file)?.unwrap_or(-1))
}

/// When this process was started as a worker: does the job and returns the exit status
/// for `main`; None otherwise. Call it first thing in `main`, before any thread exists.
pub fn main_if_worker() -> Option<u8> {
    let mut args = std::env::args_os().skip(1);
    if args.next()? != WORKER_ARG {
        return None;
    }
    let root = args.next().map(PathBuf::from);
    let job = args.next().map(|job| {
        serde_json::from_str::<Job>(&job.to_string_lossy()).map_err(|source| ContainerError::Json {
            path: PathBuf::from("the worker's job"),
            source,
        })
    });
    // An exec's or archive's stdout is the stream: its answer goes to a file.
    let answer_file = match &job {
        Some(Ok(Job::Exec { answer_file, .. } | Job::ArchiveOut { answer_file, .. })) => {
            Some(answer_file.clone())
        }
        _ => None,
    };
    let result = match (root, job) {
        (Some(root), Some(job)) => job.and_then(|job| run_job(&root, &job)),
        _ => Err(ContainerError::invalid(format!(
            "{WORKER_ARG} takes the store root and a job"
        ))),
    };
    let answer = match result {
        Ok(answer) => answer,
        Err(err) => Answer {
            error: Some(err.to_string()),
            kind: Some(kind_of(&err)),
            code: Some(err.exit_code()),
            ..Default::default()
        },
    };
    let failed = answer.error.is_some();
    let text = serde_json::to_string(&answer).unwrap_or_default();
    match answer_file {
        Some(path) => {
            let _ = std::fs::write(path, text);
        }
        None => println!("{text}"),
    }
    Some(u8::from(failed))
}

/// Does the job; its answer.
fn run_job(root: &Path, job: &Job) -> Result<Answer> {
    let store = gcr_storage::Store::open(root.to_path_buf())?;
    let answer = Answer::default();
    match job {
        Job::Exec {
            container, request, ..
        } => {
            let c = lookup(&store, container)?;
            let code = crate::exec::exec(&c, request)?;
            Ok(Answer {
                exit_code: Some(code),
                ..answer
            })
        }
        Job::ArchiveStat { container, path } => {
            let c = lookup(&store, container)?;
            let stat = crate::files::archive_stat(&store, &c, path)?;
            Ok(Answer {
                stat: Some(stat.into()),
                ..answer
            })
        }
        Job::ArchiveOut {
            container, path, ..
        } => {
            let c = lookup(&store, container)?;
            let stdout = std::io::stdout();
            let out = std::fs::File::from(
                std::os::fd::AsFd::as_fd(&stdout)
                    .try_clone_to_owned()
                    .map_err(|e| ContainerError::io("write", "stdout", e))?,
            );
            crate::files::archive_out(&store, &c, path, &out)?;
            Ok(answer)
        }
        Job::ArchiveIn { container, path } => {
            let c = lookup(&store, container)?;
            crate::files::archive_in(&store, &c, path, std::io::stdin().lock())?;
            Ok(answer)
        }
        other => run_simple_job(&store, other).map(|()| answer),
    }
}

fn run_simple_job(store: &gcr_storage::Store, job: &Job) -> Result<()> {
    let store = store.clone();
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
        Job::ExecDetached { container, request } => {
            let c = lookup(&store, container)?;
            crate::exec::exec_detached(&c, request)
        }
        Job::Connect { container, request } => {
            let c = lookup(&store, container)?;
            crate::attachments::connect_network(&store, &request.network, &c, request)
        }
        Job::RemoveNetwork { network } => crate::user_networks::remove_network(&store, network),
        Job::HealthMonitor { container } => {
            let exe = std::env::current_exe()
                .map_err(|e| ContainerError::io("find", "the gcr binary", e))?;
            crate::health::monitor(&store, container, &exe)
        }
        Job::Disconnect { container, network } => {
            let c = lookup(&store, container)?;
            crate::attachments::disconnect_network(&store, network, &c)
        }
        _ => Err(ContainerError::invalid("this job needs the worker's stdio")),
    }
}
