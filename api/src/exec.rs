//! `exec`: `POST /containers/{id}/exec` makes an exec instance (kept in the service's memory,
//! as Docker keeps them), `POST /exec/{id}/start` runs it in a worker whose stdio the
//! service relays over the hijacked connection, `GET /exec/{id}/json` tells its exit status.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use tokio::io::AsyncReadExt as _;
use tokio::sync::mpsc;

use gcr_containers::logfile::OutputStream;
use gcr_containers::worker::Job;
use gcr_containers::ExecRequest;

use crate::error::{blocking, Answer, Failure};
use crate::stream;
use crate::Service;

/// One exec instance.
#[derive(Debug, Clone)]
pub struct ExecEntry {
    container: String,
    request: ExecRequest,
    stdout: bool,
    stderr: bool,
    running: bool,
    started: bool,
    exit_code: Option<i32>,
    /// The worker relaying it (its command is among the worker's descendants).
    worker: Option<u32>,
}

impl ExecEntry {
    pub fn finish(&mut self, code: Option<i32>) {
        self.running = false;
        self.exit_code = code;
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct ExecBody {
    attach_stdin: bool,
    attach_stdout: bool,
    attach_stderr: bool,
    tty: bool,
    cmd: Vec<String>,
    env: Option<Vec<String>>,
    working_dir: String,
    user: String,
    privileged: bool,
    detach_keys: String,
    console_size: Option<Vec<u32>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct StartBody {
    detach: bool,
    tty: bool,
}

fn json_body<T: for<'de> Deserialize<'de> + Default>(body: &Bytes) -> Result<T, Failure> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| Failure::bad_request(format!("invalid JSON body: {e}")))
}

fn unknown_exec(id: &str) -> Failure {
    Failure::not_found(format!("No such exec instance: {id}"))
}

/// `POST /containers/{id}/exec`: 201 with the exec's ID; 409 when the container is not
/// running.
pub async fn create(
    State(service): State<Arc<Service>>,
    Path(params): Path<HashMap<String, String>>,
    body: Bytes,
) -> Answer {
    let body: ExecBody = json_body(&body)?;
    if body.cmd.is_empty() {
        return Err(Failure::bad_request("no command given: set Cmd"));
    }
    if !body.detach_keys.is_empty() {
        return Err(Failure::not_implemented(
            "DetachKeys in POST /containers/{id}/exec",
        ));
    }
    let _ = body.console_size;
    let wanted = params.get("id").cloned().unwrap_or_default();
    let service2 = service.clone();
    let c = blocking(move || {
        let store = service2.store()?;
        let c = gcr_containers::lookup(&store, &wanted).map_err(|e| match e {
            gcr_containers::ContainerError::NotFound(_) => {
                Failure::not_found(format!("No such container: {wanted}"))
            }
            other => other.into(),
        })?;
        if !c.alive() {
            return Err(Failure::new(
                StatusCode::CONFLICT,
                format!("Container {} is not running", c.id),
            ));
        }
        Ok(c)
    })
    .await?;
    let id = gcr_containers::new_container_id()?;
    let entry = ExecEntry {
        container: c.id,
        request: ExecRequest {
            command: body.cmd,
            env: body.env.unwrap_or_default(),
            user: Some(body.user).filter(|u| !u.is_empty()),
            workdir: Some(body.working_dir).filter(|w| !w.is_empty()),
            privileged: body.privileged,
            tty: body.tty,
            stdin: body.attach_stdin,
            timeout_ms: None,
        },
        stdout: body.attach_stdout,
        stderr: body.attach_stderr,
        running: false,
        started: false,
        exit_code: None,
        worker: None,
    };
    service.execs().insert(id.clone(), entry);
    Ok((StatusCode::CREATED, Json(json!({ "Id": id }))).into_response())
}

/// `GET /exec/{id}/json`.
pub async fn inspect(
    State(service): State<Arc<Service>>,
    Path(params): Path<HashMap<String, String>>,
) -> Answer {
    let id = params.get("id").cloned().unwrap_or_default();
    let entry = service
        .execs()
        .get(&id)
        .cloned()
        .ok_or_else(|| unknown_exec(&id))?;
    let (entrypoint, arguments) = entry
        .request
        .command
        .split_first()
        .map(|(first, rest)| (first.clone(), rest.to_vec()))
        .unwrap_or_default();
    Ok(Json(json!({
        "ID": id,
        "ContainerID": entry.container,
        "Running": entry.running,
        "ExitCode": entry.exit_code,
        "OpenStdin": entry.request.stdin,
        "OpenStdout": entry.stdout,
        "OpenStderr": entry.stderr,
        "CanRemove": false,
        "DetachKeys": "",
        "Pid": 0,
        "ProcessConfig": {
            "tty": entry.request.tty,
            "entrypoint": entrypoint,
            "arguments": arguments,
            "privileged": entry.request.privileged,
            "user": entry.request.user.clone().unwrap_or_default(),
        },
    }))
    .into_response())
}

/// `POST /exec/{id}/start`: detached, the command runs in the background (200 once it
/// started); else its output (framed unless it has a tty) and, when attached, its input over
/// the hijacked connection, until it ends. The exit status is recorded before the stream ends,
/// so the client's inspect that follows sees it.
pub async fn start(
    State(service): State<Arc<Service>>,
    Path(params): Path<HashMap<String, String>>,
    request: Request,
) -> Answer {
    let id = params.get("id").cloned().unwrap_or_default();
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .map_err(|e| Failure::bad_request(format!("cannot read the body: {e}")))?;
    let start: StartBody = json_body(&bytes)?;
    let request = Request::from_parts(parts, axum::body::Body::empty());
    let entry = {
        let mut execs = service.execs();
        let entry = execs.get_mut(&id).ok_or_else(|| unknown_exec(&id))?;
        if entry.started {
            return Err(Failure::new(
                StatusCode::CONFLICT,
                format!("exec {id} has already been started"),
            ));
        }
        entry.started = true;
        entry.running = true;
        entry.clone()
    };
    let tty = entry.request.tty || start.tty;
    if start.detach {
        let job = Job::ExecDetached {
            container: entry.container.clone(),
            request: entry.request.clone(),
        };
        let service2 = service.clone();
        let result = blocking(move || Ok(service2.in_worker(&job)?)).await;
        service.finish_exec(&id, None);
        result?;
        return Ok(StatusCode::OK.into_response());
    }
    let answer_file = std::env::temp_dir().join(format!("gcr-exec-{id}.json"));
    let job = Job::Exec {
        container: entry.container.clone(),
        request: entry.request.clone(),
        answer_file: answer_file.clone(),
    };
    let mut command = tokio::process::Command::from(service.worker_command(&job)?);
    command
        .stdin(if entry.request.stdin {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(false);
    let mut child = command
        .spawn()
        .map_err(|e| Failure::internal(format!("cannot start the exec worker: {e}")))?;
    if let Some(entry) = service.execs().get_mut(&id) {
        entry.worker = child.id();
    }
    let (sender, receiver) = mpsc::channel::<Bytes>(64);
    let mut pumps = Vec::new();
    if let Some(pipe) = child.stdout.take() {
        pumps.push(pump(
            pipe,
            OutputStream::Stdout,
            entry.stdout,
            tty,
            sender.clone(),
        ));
    }
    if let Some(pipe) = child.stderr.take() {
        // With a tty the command's stderr is the terminal: what comes here is gcr's own.
        pumps.push(pump(
            pipe,
            OutputStream::Stderr,
            entry.stderr || tty,
            tty,
            sender.clone(),
        ));
    }
    let stdin = child.stdin.take().map(|s| stream::StdinSink {
        writer: Box::new(s),
        hold_until: None,
    });
    let service2 = service.clone();
    tokio::spawn(async move {
        for pump in pumps {
            let _ = pump.await;
        }
        let _ = child.wait().await;
        let answer_path = answer_file.clone();
        let code =
            tokio::task::spawn_blocking(move || gcr_containers::worker::exec_answer(&answer_path))
                .await
                .ok();
        let _ = std::fs::remove_file(&answer_file);
        let code = match code {
            Some(Ok(code)) => code,
            Some(Err(err)) => {
                let message = format!("{err}\n");
                let chunk = if tty {
                    message.into_bytes()
                } else {
                    stream::frame(OutputStream::Stderr, message.as_bytes())
                };
                let _ = sender.send(Bytes::from(chunk)).await;
                err.exit_code()
            }
            None => 125,
        };
        service2.finish_exec(&id, Some(code));
        drop(sender);
    });
    Ok(stream::hijack_or_stream(request, receiver, tty, stdin))
}

/// Relays one of the worker's output pipes to the client (framed as `which` unless `tty`);
/// what the client did not ask for is read and dropped.
fn pump(
    mut pipe: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    which: OutputStream,
    wanted: bool,
    tty: bool,
    sender: mpsc::Sender<Bytes>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        while let Ok(n) = pipe.read(&mut buf).await {
            if n == 0 {
                break;
            }
            if !wanted {
                continue;
            }
            let chunk = if tty {
                buf[..n].to_vec()
            } else {
                stream::frame(which, &buf[..n])
            };
            // A client that left stops the relay, not the command (Docker's way).
            let _ = sender.send(Bytes::from(chunk)).await;
        }
    })
}

/// `POST /exec/{id}/resize?h=&w=`: the terminal size of an exec run with a tty (its command
/// is found below the worker that relays it). Before the command has its terminal the
/// answer is 409, which the docker CLI retries; an exec without a tty has none to resize.
pub async fn resize(
    State(service): State<Arc<Service>>,
    Path(params): Path<HashMap<String, String>>,
    Query(query): Query<HashMap<String, String>>,
) -> Answer {
    let id = params.get("id").cloned().unwrap_or_default();
    let (rows, cols) = crate::containers::terminal_size(&query)?;
    let (tty, running, worker) = {
        let execs = service.execs();
        let entry = execs.get(&id).ok_or_else(|| unknown_exec(&id))?;
        (entry.request.tty, entry.running, entry.worker)
    };
    if !tty {
        return Ok(StatusCode::OK.into_response());
    }
    let Some(worker) = worker.filter(|_| running) else {
        return Err(Failure::new(
            StatusCode::CONFLICT,
            format!("exec {id} is not running"),
        ));
    };
    blocking(move || {
        let resized = gcr_containers::resize_exec(worker, rows, cols)?;
        if !resized {
            return Err(Failure::new(
                StatusCode::CONFLICT,
                format!("exec {id} has no terminal yet"),
            ));
        }
        Ok(StatusCode::OK.into_response())
    })
    .await
}
