//! `/containers/...`: each handler reads the request, calls gcr-containers (on the blocking
//! pool, or in a worker process for what starts a container) and shapes Docker's answer.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use gcr_containers::{Container, ContainerError};

use crate::create_body::CreateBody;
use crate::error::{blocking, Answer, Failure};
use crate::stream::{self, Framing};
use crate::Service;

type Params = Query<HashMap<String, String>>;
type PathParams = Path<HashMap<String, String>>;

/// A query flag as Docker reads them (`1`, `true`, `True`; absent: `default`).
pub(crate) fn flag(query: &HashMap<String, String>, key: &str, default: bool) -> bool {
    match query.get(key).map(|v| v.to_ascii_lowercase()) {
        None => default,
        Some(v) => matches!(v.as_str(), "1" | "true" | "yes"),
    }
}

/// Docker's `filters` query parameter (`{"key":["v1","v2"]}` or the older
/// `{"key":{"v1":true}}`) as `key=value` entries.
pub(crate) fn filter_entries(query: &HashMap<String, String>) -> Result<Vec<String>, Failure> {
    let Some(text) = query.get("filters").filter(|t| !t.is_empty()) else {
        return Ok(Vec::new());
    };
    let parsed: Value = serde_json::from_str(text)
        .map_err(|e| Failure::bad_request(format!("invalid filters {text:?}: {e}")))?;
    let mut out = Vec::new();
    for (key, values) in parsed.as_object().into_iter().flatten() {
        let values: Vec<String> = match values {
            Value::Array(list) => list
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect(),
            Value::Object(map) => map.keys().cloned().collect(),
            _ => {
                return Err(Failure::bad_request(format!(
                    "invalid filter {key}: give a list of values"
                )))
            }
        };
        out.extend(values.into_iter().map(|v| format!("{key}={v}")));
    }
    Ok(out)
}

/// Whether an object passes `key=value` filters as Docker applies them: values of one key
/// match if any does, except labels, which must all; different keys must all pass.
pub(crate) fn passes_filters(
    filters: &[String],
    mut one: impl FnMut(&str, &str) -> Result<bool, Failure>,
) -> Result<bool, Failure> {
    let mut by_key: std::collections::BTreeMap<&str, bool> = Default::default();
    for filter in filters {
        let (key, value) = filter.split_once('=').unwrap_or((filter, ""));
        let pass = one(key, value)?;
        let all_must = key == "label";
        let entry = by_key.entry(key).or_insert(all_must);
        *entry = if all_must {
            *entry && pass
        } else {
            *entry || pass
        };
    }
    Ok(by_key.values().all(|p| *p))
}

fn id_of(params: &HashMap<String, String>) -> String {
    params.get("id").cloned().unwrap_or_default()
}

/// The container a path names, read now.
pub(crate) fn find(service: &Service, wanted: &str) -> Answer<(gcr_storage::Store, Container)> {
    let store = service.store()?;
    let c = gcr_containers::lookup(&store, wanted).map_err(|e| match e {
        ContainerError::NotFound(_) => Failure::not_found(format!("No such container: {wanted}")),
        other => other.into(),
    })?;
    Ok((store, c))
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

fn not_modified() -> Response {
    StatusCode::NOT_MODIFIED.into_response()
}

/// `GET /containers/json?all&limit&filters`.
pub async fn list(State(service): State<Arc<Service>>, Query(query): Params) -> Answer {
    blocking(move || {
        let filters = gcr_containers::Filters::parse(&filter_entries(&query)?)?;
        let store = service.store()?;
        let all = flag(&query, "all", false) || filters.wants_stopped();
        let normalize = |n: &str| gcr_images::normalize_name(n).ok();
        let mut shown: Vec<Value> = gcr_containers::list(&store)?
            .iter()
            .filter(|c| all || c.running())
            .filter(|c| filters.matches(c, &normalize))
            .map(|c| gcr_containers::summary(&store, c))
            .collect();
        if let Some(limit) = query.get("limit").and_then(|l| l.parse::<i64>().ok()) {
            if limit > 0 {
                shown.truncate(limit as usize);
            }
        }
        Ok(Json(shown).into_response())
    })
    .await
}

/// `GET /containers/{id}/json`.
pub async fn inspect(State(service): State<Arc<Service>>, Path(params): PathParams) -> Answer {
    blocking(move || {
        let (store, c) = find(&service, &id_of(&params))?;
        Ok(Json(gcr_containers::inspect(&store, &c)).into_response())
    })
    .await
}

/// `POST /containers/create?name=`: 201 with the new ID; 404 for an image not in the store
/// (the docker CLI then pulls it and asks again).
pub async fn create(
    State(service): State<Arc<Service>>,
    Query(query): Params,
    body: Bytes,
) -> Answer {
    let body: CreateBody = serde_json::from_slice(&body)
        .map_err(|e| Failure::bad_request(format!("invalid container config JSON: {e}")))?;
    body.check_supported()?;
    blocking(move || {
        let store = service.store()?;
        if body.image.is_empty() {
            return Err(Failure::bad_request(
                "no image given: set Image in the container config",
            ));
        }
        let record = gcr_images::find(&store, &body.image).map_err(|e| match e {
            gcr_images::ImageError::NotFound { .. } => {
                Failure::not_found(format!("No such image: {}", body.image))
            }
            other => other.into(),
        })?;
        let source = gcr_containers::ImageSource::Image {
            record: Box::new(record),
            reference: body.image.clone(),
        };
        let requested = body.network_request()?;
        let network_mode = requested.mode.clone();
        let mut options = body.into_options(source, query.get("name").cloned())?;
        if let Some(target) = network_mode.strip_prefix("container:") {
            options.network_container = Some(target.to_string());
        } else if !matches!(network_mode.as_str(), "" | "default" | "bridge") {
            let (network, user_network) = gcr_containers::resolve_network(&store, &network_mode)
                .map_err(|e| match e {
                    gcr_containers::ContainerError::Invalid(_) => {
                        Failure::not_found(format!("network {network_mode} not found"))
                    }
                    other => other.into(),
                })?;
            options.network = network;
            options.user_network = user_network;
        }
        if options.user_network.is_some() {
            options.network_aliases = requested.aliases;
            options.ip = requested.ip;
            options.more_networks = requested.more;
        } else if requested.ip.is_some() || !requested.more.is_empty() {
            return Err(Failure::bad_request(
                "user specified IP address and further networks are supported on user defined networks only",
            ));
        }
        let (launch, notes) = gcr_containers::create(&store, options)?;
        let id = launch.leave_created()?;
        Ok((
            StatusCode::CREATED,
            Json(json!({ "Id": id, "Warnings": notes.warnings })),
        )
            .into_response())
    })
    .await
}

/// `POST /containers/{id}/start`: in a worker (the supervisor must not be a fork of this
/// multi-threaded service); 304 when it runs already.
pub async fn start(State(service): State<Arc<Service>>, Path(params): PathParams) -> Answer {
    blocking(move || {
        let (_, c) = find(&service, &id_of(&params))?;
        if c.alive() {
            return Ok(not_modified());
        }
        service.in_worker(&gcr_containers::worker::Job::Start { container: c.id })?;
        Ok(no_content())
    })
    .await
}

fn timeout_of(query: &HashMap<String, String>) -> Result<Option<u64>, Failure> {
    match query.get("t") {
        None => Ok(None),
        Some(t) => match t.parse::<i64>() {
            Ok(t) if t < 0 => Ok(Some(0)),
            Ok(t) => Ok(Some(t as u64)),
            Err(_) => Err(Failure::bad_request(format!(
                "invalid t {t:?}: give seconds"
            ))),
        },
    }
}

/// `POST /containers/{id}/stop?t=`: 304 when it is not running.
pub async fn stop(
    State(service): State<Arc<Service>>,
    Path(params): PathParams,
    Query(query): Params,
) -> Answer {
    blocking(move || {
        let timeout = timeout_of(&query)?;
        let (store, c) = find(&service, &id_of(&params))?;
        if !c.alive() {
            return Ok(not_modified());
        }
        gcr_containers::stop(&store, &c, timeout)?;
        Ok(no_content())
    })
    .await
}

/// `POST /containers/{id}/restart?t=`.
pub async fn restart(
    State(service): State<Arc<Service>>,
    Path(params): PathParams,
    Query(query): Params,
) -> Answer {
    blocking(move || {
        let timeout = timeout_of(&query)?;
        let (_, c) = find(&service, &id_of(&params))?;
        service.in_worker(&gcr_containers::worker::Job::Restart {
            container: c.id,
            timeout,
        })?;
        Ok(no_content())
    })
    .await
}

/// `POST /containers/{id}/kill?signal=`: 409 when it is not running.
pub async fn kill(
    State(service): State<Arc<Service>>,
    Path(params): PathParams,
    Query(query): Params,
) -> Answer {
    blocking(move || {
        let signal = query.get("signal").map_or("SIGKILL", String::as_str);
        let signal = gcr_containers::parse_signal(signal)
            .map_err(|e| Failure::bad_request(e.to_string()))?;
        let (store, c) = find(&service, &id_of(&params))?;
        gcr_containers::kill(&store, &c, signal)?;
        Ok(no_content())
    })
    .await
}

/// `DELETE /containers/{id}?force&v`.
pub async fn remove(
    State(service): State<Arc<Service>>,
    Path(params): PathParams,
    Query(query): Params,
) -> Answer {
    blocking(move || {
        let (store, c) = find(&service, &id_of(&params))?;
        if c.running() && !flag(&query, "force", false) {
            return Err(Failure::new(
                StatusCode::CONFLICT,
                format!(
                    "You cannot remove a running container {}. Stop the container before attempting removal or force remove",
                    c.id
                ),
            ));
        }
        gcr_containers::remove(&store, &c, flag(&query, "force", false))?;
        if flag(&query, "v", false) {
            gcr_containers::remove_anonymous_volumes(&store, &c.meta);
        }
        Ok(no_content())
    })
    .await
}

/// `POST /containers/{id}/rename?name=`.
pub async fn rename(
    State(service): State<Arc<Service>>,
    Path(params): PathParams,
    Query(query): Params,
) -> Answer {
    blocking(move || {
        let name = query
            .get("name")
            .filter(|n| !n.is_empty())
            .ok_or_else(|| Failure::bad_request("give the new name: ?name=NAME"))?;
        let (store, c) = find(&service, &id_of(&params))?;
        gcr_containers::rename(&store, &c, name.trim_start_matches('/'))?;
        Ok(no_content())
    })
    .await
}

/// `POST /containers/prune`.
pub async fn prune(State(service): State<Arc<Service>>, Query(query): Params) -> Answer {
    blocking(move || {
        if !filter_entries(&query)?.is_empty() {
            return Err(Failure::not_implemented(
                "filters on POST /containers/prune",
            ));
        }
        let store = service.store()?;
        let removed = gcr_containers::remove_stopped(&store)?;
        Ok(Json(json!({"ContainersDeleted": removed, "SpaceReclaimed": 0})).into_response())
    })
    .await
}

/// The `h` and `w` of a resize.
pub(crate) fn terminal_size(query: &HashMap<String, String>) -> Result<(u16, u16), Failure> {
    let number = |key: &str| -> Result<u16, Failure> {
        query
            .get(key)
            .map(String::as_str)
            .unwrap_or("0")
            .parse()
            .map_err(|_| {
                Failure::bad_request(format!(
                    "invalid {key}: give the terminal size in characters"
                ))
            })
    };
    Ok((number("h")?, number("w")?))
}

/// `POST /containers/{id}/resize?h=&w=`: the terminal size of a container run with `-t`.
pub async fn resize(
    State(service): State<Arc<Service>>,
    Path(params): PathParams,
    Query(query): Params,
) -> Answer {
    let (rows, cols) = terminal_size(&query)?;
    blocking(move || {
        let (_, c) = find(&service, &id_of(&params))?;
        gcr_containers::resize(&c, rows, cols)?;
        Ok(StatusCode::OK.into_response())
    })
    .await
}

/// `POST /containers/{id}/pause`: 204 once every process is frozen.
pub async fn pause(State(service): State<Arc<Service>>, Path(params): PathParams) -> Answer {
    on_container(service, params, gcr_containers::pause).await
}

/// `POST /containers/{id}/unpause`.
pub async fn unpause(State(service): State<Arc<Service>>, Path(params): PathParams) -> Answer {
    on_container(service, params, gcr_containers::unpause).await
}

/// Runs `op` on the container the path names (no fork: on the blocking pool); 204.
async fn on_container(
    service: Arc<Service>,
    params: HashMap<String, String>,
    op: fn(&gcr_storage::Store, &Container) -> gcr_containers::Result<()>,
) -> Answer {
    blocking(move || {
        let (store, c) = find(&service, &id_of(&params))?;
        op(&store, &c)?;
        Ok(no_content())
    })
    .await
}

/// `GET /containers/{id}/top`: `ps -ef`'s columns.
pub async fn top(
    State(service): State<Arc<Service>>,
    Path(params): PathParams,
    Query(query): Params,
) -> Answer {
    blocking(move || {
        if query
            .get("ps_args")
            .is_some_and(|a| !a.is_empty() && a != "-ef")
        {
            return Err(Failure::not_implemented(
                "ps_args other than -ef in GET /containers/{id}/top",
            ));
        }
        let (_, c) = find(&service, &id_of(&params))?;
        let processes = gcr_containers::processes(&c)?;
        let rows: Vec<Value> = processes
            .iter()
            .map(|p| json!([p.uid, p.pid.to_string(), p.ppid, p.command]))
            .collect();
        Ok(
            Json(json!({"Titles": ["UID", "PID", "PPID", "CMD"], "Processes": rows}))
                .into_response(),
        )
    })
    .await
}

/// `POST /containers/{id}/wait?condition=not-running|next-exit|removed`: the headers at
/// once (the docker CLI starts the container only once its wait is answered), the exit
/// status in the body when that happened (a `--rm` container's is read before its files go).
pub async fn wait(
    State(service): State<Arc<Service>>,
    Path(params): PathParams,
    Query(query): Params,
) -> Answer {
    let condition = query
        .get("condition")
        .cloned()
        .unwrap_or_else(|| "not-running".into());
    if !matches!(condition.as_str(), "not-running" | "next-exit" | "removed") {
        return Err(Failure::bad_request(format!(
            "invalid condition {condition:?}: use not-running, next-exit or removed"
        )));
    }
    // The reader is made before the answer, so a start that follows is seen.
    let wanted = id_of(&params);
    let (c, mut follower) = blocking(move || {
        let c = find(&service, &wanted)?.1;
        let follower = gcr_containers::Follower::new(&c)?;
        Ok((c, follower))
    })
    .await?;
    let (sender, receiver) = mpsc::channel::<Bytes>(1);
    tokio::task::spawn_blocking(move || {
        // The client going away ends the wait.
        let mut tick = stream::until_closed(&sender);
        let mut outcome = || -> gcr_containers::Result<i32> {
            if (condition != "not-running" || c.alive())
                && !follower.until_running(&mut tick)?
                && condition != "removed"
            {
                return Err(ContainerError::NotFound(c.id.clone()));
            }
            let code = follower.until_ended(&mut tick)?.unwrap_or(-1);
            if condition == "removed" {
                follower.release();
                follower.until_removed(&mut tick)?;
            }
            Ok(code)
        };
        let body = match outcome() {
            Ok(code) => json!({"StatusCode": code, "Error": null}),
            Err(err) => json!({"StatusCode": -1, "Error": {"Message": err.to_string()}}),
        };
        let _ = sender.blocking_send(Bytes::from(body.to_string()));
    });
    let mut response = stream::body(receiver).into_response();
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// Whether the container was created with a terminal (its output is then one raw stream).
fn has_tty(c: &Container) -> bool {
    c.spec()
        .ok()
        .and_then(|s| s.process().as_ref().and_then(|p| p.terminal()))
        .unwrap_or(false)
}

/// `GET /containers/{id}/logs?follow&stdout&stderr&timestamps&tail&since&until&details`.
pub async fn logs(
    State(service): State<Arc<Service>>,
    Path(params): PathParams,
    Query(query): Params,
) -> Answer {
    let (stdout, stderr) = (flag(&query, "stdout", false), flag(&query, "stderr", false));
    if !stdout && !stderr {
        return Err(Failure::bad_request(
            "Bad parameters: you must choose at least one stream",
        ));
    }
    let time = |key: &str| -> Result<Option<String>, Failure> {
        match query
            .get(key)
            .filter(|t| !t.is_empty() && t.as_str() != "0")
        {
            None => Ok(None),
            Some(t) => gcr_containers::logfile::parse_time(key, t)
                .map(Some)
                .map_err(|e| Failure::bad_request(e.to_string())),
        }
    };
    let options = gcr_containers::LogOptions {
        tail: gcr_containers::Tail::parse(query.get("tail").map_or("all", String::as_str))
            .map_err(|e| Failure::bad_request(e.to_string()))?,
        follow: flag(&query, "follow", false),
        since: time("since")?,
        until: time("until")?,
        stdout,
        stderr,
        details: flag(&query, "details", false),
    };
    let timestamps = flag(&query, "timestamps", false);
    let service2 = service.clone();
    let wanted = id_of(&params);
    let c = blocking(move || Ok(find(&service2, &wanted)?.1)).await?;
    let framing = Framing {
        tty: has_tty(&c),
        timestamps,
    };
    // The first read happens before the answer, so an error (no log) is a proper status.
    let (sender, receiver) = mpsc::channel::<Bytes>(64);
    let (ready_send, ready) = tokio::sync::oneshot::channel::<Result<(), Failure>>();
    tokio::task::spawn_blocking(move || {
        let mut ready_send = Some(ready_send);
        let mut sink = stream::record_sink(sender, framing);
        let mut first = |record: &gcr_containers::logfile::LogRecord| {
            if let Some(ready) = ready_send.take() {
                let _ = ready.send(Ok(()));
            }
            sink(record)
        };
        let result = gcr_containers::logs(&c, &options, &mut first);
        if let Some(ready) = ready_send.take() {
            let _ = ready.send(result.map_err(Failure::from));
        }
    });
    ready
        .await
        .map_err(|_| Failure::internal("the log reader ended abnormally"))??;
    let mut response = stream::body(receiver).into_response();
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static(stream::content_type(framing.tty)),
    );
    Ok(response)
}

/// `POST /containers/{id}/attach?stream&stdout&stderr&logs&stdin`: the output from now on
/// (with `logs`, what was written before first), over the hijacked connection. A container
/// not running yet is followed from its start (`docker run` attaches before it starts).
pub async fn attach(
    State(service): State<Arc<Service>>,
    Path(params): PathParams,
    Query(query): Params,
    request: Request,
) -> Answer {
    let with_stdin = flag(&query, "stdin", false);
    let (stdout, stderr) = (flag(&query, "stdout", false), flag(&query, "stderr", false));
    let (logs, follow) = (flag(&query, "logs", false), flag(&query, "stream", false));
    let wanted = id_of(&params);
    // The reader is there before the answer: a start that follows is seen.
    let (c, follower, stdin) = blocking(move || {
        let c = find(&service, &wanted)?.1;
        let follower = gcr_containers::Follower::new(&c)?;
        let stdin = if with_stdin {
            Some(gcr_containers::stdin_writer(&c).map_err(|e| {
                Failure::not_implemented(&format!(
                    "attaching stdin to this container (POST /containers/{{id}}/attach?stdin=1): {e}"
                ))
            })?)
        } else {
            None
        };
        Ok((c, follower, stdin))
    })
    .await?;
    let (started_send, started) = tokio::sync::oneshot::channel::<()>();
    let stdin = stdin.map(|file| stream::StdinSink {
        writer: Box::new(tokio::fs::File::from_std(file)),
        hold_until: Some(started),
    });
    let tty = has_tty(&c);
    let framing = Framing {
        tty,
        timestamps: false,
    };
    let (sender, receiver) = mpsc::channel::<Bytes>(64);
    tokio::task::spawn_blocking(move || {
        let mut sink = stream::record_sink(sender.clone(), framing);
        let mut wanted = |record: &gcr_containers::logfile::LogRecord| {
            let shown = match record.stream {
                gcr_containers::logfile::OutputStream::Stdout => stdout,
                gcr_containers::logfile::OutputStream::Stderr => stderr,
            };
            if shown {
                sink(record)
            } else {
                Ok(())
            }
        };
        if logs {
            let _ = gcr_containers::logs(&c, &Default::default(), &mut wanted);
        }
        if follow {
            let mut tick = stream::until_closed(&sender);
            if follower.until_running(&mut tick).unwrap_or(false) {
                let _ = started_send.send(());
            }
            if let Err(err) = follower.attach(&mut wanted, &mut tick) {
                tracing::debug!(%err, "attach ended");
            }
        }
    });
    Ok(stream::hijack_or_stream(request, receiver, tty, stdin))
}

/// `POST /containers/{id}/update`'s body: Docker's Resources and RestartPolicy (0 or an empty
/// name: not changed, as Docker's clients send them).
#[derive(Debug, serde::Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct UpdateBody {
    memory: i64,
    memory_swap: i64,
    nano_cpus: i64,
    cpu_shares: i64,
    pids_limit: Option<i64>,
    restart_policy: Option<crate::create_body::RestartPolicyBody>,
    cpu_quota: i64,
    cpu_period: i64,
    cpuset_cpus: String,
    cpuset_mems: String,
    blkio_weight: u16,
    memory_reservation: i64,
    kernel_memory: i64,
}

impl UpdateBody {
    fn into_options(self) -> Result<gcr_containers::UpdateOptions, Failure> {
        for (name, set) in [
            ("CpuQuota (use NanoCpus)", self.cpu_quota != 0),
            ("CpuPeriod (use NanoCpus)", self.cpu_period != 0),
            ("CpusetCpus", !self.cpuset_cpus.is_empty()),
            ("CpusetMems", !self.cpuset_mems.is_empty()),
            ("BlkioWeight", self.blkio_weight != 0),
            ("MemoryReservation", self.memory_reservation != 0),
            ("KernelMemory", self.kernel_memory != 0),
        ] {
            if set {
                return Err(Failure::not_implemented(&format!(
                    "{name} in POST /containers/{{id}}/update"
                )));
            }
        }
        let restart = match self.restart_policy {
            Some(p) if !p.name.is_empty() => Some(match (p.name.as_str(), p.maximum_retry_count) {
                ("on-failure", n) if n > 0 => format!("on-failure:{n}"),
                (name, _) => name.to_string(),
            }),
            _ => None,
        };
        Ok(gcr_containers::UpdateOptions {
            memory: Some(self.memory).filter(|m| *m != 0),
            memory_swap: Some(self.memory_swap).filter(|s| *s != 0),
            cpus: Some(self.nano_cpus)
                .filter(|n| *n != 0)
                .map(|n| n as f64 / 1e9),
            cpu_shares: Some(self.cpu_shares)
                .filter(|s| *s != 0)
                .map(|s| u64::try_from(s).unwrap_or(0)),
            pids_limit: self.pids_limit.filter(|p| *p != 0),
            restart,
        })
    }
}

/// `POST /containers/{id}/update`: new limits (in the cgroup files at once when it runs)
/// and restart policy; `{"Warnings": []}`.
pub async fn update(
    State(service): State<Arc<Service>>,
    Path(params): PathParams,
    body: Bytes,
) -> Answer {
    let body: UpdateBody = serde_json::from_slice(&body)
        .map_err(|e| Failure::bad_request(format!("invalid update JSON: {e}")))?;
    let changes = body.into_options()?;
    blocking(move || {
        let (store, c) = find(&service, &id_of(&params))?;
        gcr_containers::update(&store, &c, &changes)?;
        Ok(Json(json!({ "Warnings": [] })).into_response())
    })
    .await
}
