//! `/images/...`: lists and documents from gcr-images, pulls and pushes through gcr-registry
//! with Docker's JSON progress lines.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::containers::{filter_entries, flag};
use crate::error::{blocking, Answer, Failure};
use crate::stream;
use crate::Service;

type Params = Query<HashMap<String, String>>;

/// An image a path names, or Docker's 404.
fn find(store: &gcr_storage::Store, name: &str) -> Answer<gcr_storage::ImageRecord> {
    gcr_images::find(store, name).map_err(|e| match e {
        gcr_images::ImageError::NotFound { .. } => {
            Failure::not_found(format!("No such image: {name}"))
        }
        other => other.into(),
    })
}

/// `GET /images/json?all&filters`.
pub async fn list(State(service): State<Arc<Service>>, Query(query): Params) -> Answer {
    blocking(move || {
        let store = service.store()?;
        let filters = filter_entries(&query)?;
        let records = gcr_images::select(&store, gcr_images::list(&store)?, None, &filters)?;
        let list: Vec<Value> = records
            .iter()
            .map(|r| gcr_images::summary(&store, r))
            .collect();
        Ok(Json(list).into_response())
    })
    .await
}

/// Everything under `/images/NAME/...` (a name may hold slashes: `127.0.0.1:5000/app`):
/// `GET json|history`, `POST tag|push`, `DELETE` of the name itself.
pub async fn by_name(
    State(service): State<Arc<Service>>,
    Path(params): Path<HashMap<String, String>>,
    Query(query): Params,
    method: Method,
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
    request: Request,
) -> Answer {
    let rest = params.get("rest").cloned().unwrap_or_default();
    let split = |suffix: &str| rest.strip_suffix(suffix).map(str::to_string);
    match method {
        Method::GET => {
            if let Some(name) = split("/json") {
                return blocking(move || {
                    let store = service.store()?;
                    let record = find(&store, &name)?;
                    Ok(Json(gcr_images::inspect(&store, &record)?).into_response())
                })
                .await;
            }
            if let Some(name) = split("/history") {
                return blocking(move || history(&service, &name)).await;
            }
            if let Some(name) = split("/get") {
                return save(service, vec![name]).await;
            }
        }
        Method::POST => {
            if let Some(name) = split("/tag") {
                return blocking(move || tag(&service, &name, &query)).await;
            }
            if let Some(name) = split("/push") {
                return push(service, name, query, request).await;
            }
        }
        Method::DELETE => {
            let force = flag(&query, "force", false);
            return blocking(move || {
                let store = service.store()?;
                find(&store, &rest)?;
                let removals = gcr_images::remove(&store, &rest, force)?;
                let list: Vec<Value> = removals
                    .iter()
                    .map(|r| match r {
                        gcr_images::Removal::Untagged(name) => {
                            json!({"Untagged": gcr_images::familiar_name(name)})
                        }
                        gcr_images::Removal::Deleted(id) => json!({"Deleted": id}),
                    })
                    .collect();
                Ok(Json(list).into_response())
            })
            .await;
        }
        _ => {}
    }
    Err(Failure::not_implemented(&format!(
        "{method} {}",
        uri.path()
    )))
}

fn history(service: &Service, name: &str) -> Answer {
    let store = service.store()?;
    let record = find(&store, name)?;
    let entries: Vec<Value> = gcr_images::history(&store, &record)?
        .iter()
        .map(|e| {
            let created = chrono::DateTime::parse_from_rfc3339(&e.created)
                .map(|t| t.timestamp())
                .unwrap_or(0);
            json!({"Id": e.id, "Created": created, "CreatedBy": e.created_by,
                   "Tags": e.tags, "Size": e.size, "Comment": e.comment})
        })
        .collect();
    Ok(Json(entries).into_response())
}

/// `POST /images/{name}/tag?repo=&tag=`: 201.
fn tag(service: &Service, name: &str, query: &HashMap<String, String>) -> Answer {
    let repo = query
        .get("repo")
        .filter(|r| !r.is_empty())
        .ok_or_else(|| Failure::bad_request("give the new name: ?repo=REPOSITORY&tag=TAG"))?;
    let target = match query.get("tag").filter(|t| !t.is_empty()) {
        Some(tag) => format!("{repo}:{tag}"),
        None => repo.clone(),
    };
    let store = service.store()?;
    find(&store, name)?;
    gcr_images::tag(&store, name, &target)?;
    Ok(StatusCode::CREATED.into_response())
}

/// The reference `POST /images/create` asks for: `fromImage` with `tag` (a tag or a digest).
fn pull_reference(query: &HashMap<String, String>) -> Result<gcr_registry::Reference, Failure> {
    let image = query
        .get("fromImage")
        .filter(|i| !i.is_empty())
        .ok_or_else(|| Failure::bad_request("give the image: ?fromImage=NAME&tag=TAG"))?;
    let text = match query.get("tag").filter(|t| !t.is_empty()) {
        Some(tag) if tag.contains(':') => format!("{image}@{tag}"),
        Some(tag) => format!("{image}:{tag}"),
        None => image.clone(),
    };
    text.parse()
        .map_err(|e| Failure::bad_request(format!("invalid reference {text:?}: {e}")))
}

/// A Docker progress line for one layer.
fn layer_line(status: &str, digest: &gcr_storage::Digest, detail: Value) -> Value {
    let hex = digest.to_string();
    let short: String = hex.trim_start_matches("sha256:").chars().take(12).collect();
    json!({"status": status, "progressDetail": detail, "id": short})
}

/// An error inside a progress stream, as Docker writes it once the answer has begun.
fn error_line(message: &str) -> Bytes {
    stream::json_line(&json!({"errorDetail": {"message": message}, "error": message}))
}

/// A progress stream answer: JSON lines.
fn progress_response(receiver: mpsc::Receiver<Bytes>) -> Response {
    let mut response = stream::body(receiver).into_response();
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// `POST /images/create?fromImage=&tag=&platform=`: a pull, streamed as Docker's progress
/// lines. A failure before anything was sent (an unknown image) is a proper status (404).
pub async fn create(
    State(service): State<Arc<Service>>,
    Query(query): Params,
    headers: axum::http::HeaderMap,
) -> Answer {
    if query.contains_key("fromSrc") {
        return Err(Failure::not_implemented(
            "POST /images/create?fromSrc (import)",
        ));
    }
    let reference = pull_reference(&query)?;
    let platform = query
        .get("platform")
        .filter(|p| !p.is_empty())
        .map(|p| p.parse())
        .transpose()
        .map_err(|e| Failure::bad_request(format!("invalid platform: {e}")))?;
    let store = service.store()?;
    let options = gcr_registry::PullOptions {
        platform,
        credential: crate::system::registry_auth(&headers)?,
        ..Default::default()
    };
    let (events, mut event_receiver) = mpsc::unbounded_channel();
    let shown = gcr_images::familiar_name(&reference.store_name());
    let pull_reference = reference.clone();
    let pull =
        tokio::spawn(
            async move { gcr_registry::pull(&store, &pull_reference, &options, events).await },
        );
    // Nothing is answered until the manifest is resolved or the pull failed.
    let mut first = None;
    while let Some(event) = event_receiver.recv().await {
        if matches!(event, gcr_registry::PullEvent::Resolved { .. }) {
            first = Some(event);
            break;
        }
    }
    if first.is_none() {
        let result = pull
            .await
            .map_err(|e| Failure::internal(format!("the pull ended abnormally: {e}")))?;
        return match result {
            Err(err) => Err(pull_failure(&err)),
            Ok(_) => Err(Failure::internal(
                "the pull ended without resolving the image",
            )),
        };
    }
    let (sender, receiver) = mpsc::channel::<Bytes>(64);
    let tag = reference.tag().unwrap_or("latest").to_string();
    tokio::spawn(async move {
        let send = |value: Value| {
            let sender = sender.clone();
            async move { sender.send(stream::json_line(&value)).await.is_ok() }
        };
        send(json!({"status": format!("Pulling from {}", reference.repository()), "id": tag}))
            .await;
        let mut downloaded = false;
        while let Some(event) = event_receiver.recv().await {
            use gcr_registry::PullEvent as E;
            downloaded |= matches!(event, E::LayerStarted { .. });
            let line = match &event {
                E::LayerStarted { digest, size } => {
                    layer_line("Downloading", digest, json!({"current": 0, "total": size}))
                }
                E::LayerProgress { digest, bytes_done } => {
                    layer_line("Downloading", digest, json!({"current": bytes_done}))
                }
                E::LayerSkipped { digest } => layer_line("Already exists", digest, json!({})),
                E::LayerDone { digest } => layer_line("Pull complete", digest, json!({})),
                E::Retrying { what, reason, .. } => {
                    json!({"status": format!("Retrying {what}: {reason}")})
                }
                _ => continue,
            };
            if !send(line).await {
                // The client left: the pull goes on to its end, so the store stays whole.
                break;
            }
        }
        match pull.await {
            Ok(Ok(pulled)) => {
                send(json!({"status": format!("Digest: {}", pulled.resolved_digest)})).await;
                let status = if downloaded {
                    format!("Status: Downloaded newer image for {shown}")
                } else {
                    format!("Status: Image is up to date for {shown}")
                };
                send(json!({ "status": status })).await;
            }
            Ok(Err(err)) => {
                let _ = sender.send(error_line(&err.to_string())).await;
            }
            Err(err) => {
                let _ = sender
                    .send(error_line(&format!("the pull ended abnormally: {err}")))
                    .await;
            }
        }
    });
    Ok(progress_response(receiver))
}

fn pull_failure(err: &gcr_registry::PullError) -> Failure {
    let status = match &err.kind {
        gcr_registry::PullErrorKind::ManifestUnknown { .. } => StatusCode::NOT_FOUND,
        gcr_registry::PullErrorKind::NoMatchingPlatform { .. } => StatusCode::NOT_FOUND,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    Failure::new(status, err.to_string())
}

/// `POST /images/{name}/push?tag=`: to the registry the name says, streamed as Docker's
/// progress lines (errors after the start as an error line).
async fn push(
    service: Arc<Service>,
    name: String,
    query: HashMap<String, String>,
    request: Request,
) -> Answer {
    let text = match query.get("tag").filter(|t| !t.is_empty()) {
        Some(tag) => format!("{name}:{tag}"),
        None => name.clone(),
    };
    let destination: gcr_registry::Reference = text
        .parse()
        .map_err(|e| Failure::bad_request(format!("invalid reference {text:?}: {e}")))?;
    let store = service.store()?;
    let record = find(&store, &destination.store_name())?;
    let (events, mut event_receiver) = mpsc::unbounded_channel();
    let (sender, receiver) = mpsc::channel::<Bytes>(64);
    let options = gcr_registry::PushOptions {
        credential: crate::system::registry_auth(request.headers())?,
        ..Default::default()
    };
    let push = tokio::spawn(async move {
        gcr_registry::push(&store, &record, &destination, &options, events).await
    });
    tokio::spawn(async move {
        let tag = text.rsplit(':').next().unwrap_or("latest").to_string();
        let _ = sender
            .send(stream::json_line(&json!({
                "status": format!("The push refers to repository [{}]", name)
            })))
            .await;
        while let Some(event) = event_receiver.recv().await {
            use gcr_registry::PushEvent as E;
            let line = match &event {
                E::BlobExists { digest } => layer_line("Layer already exists", digest, json!({})),
                E::BlobMounted { digest, from } => {
                    layer_line(&format!("Mounted from {from}"), digest, json!({}))
                }
                E::BlobStarted { digest, size } => {
                    layer_line("Pushing", digest, json!({"current": 0, "total": size}))
                }
                E::BlobProgress { digest, bytes_done } => {
                    layer_line("Pushing", digest, json!({"current": bytes_done}))
                }
                E::BlobDone { digest } => layer_line("Pushed", digest, json!({})),
                _ => continue,
            };
            if sender.send(stream::json_line(&line)).await.is_err() {
                break;
            }
        }
        let last = match push.await {
            Ok(Ok(pushed)) => {
                // Docker's two last lines: the summary, then the aux document (which the CLI
                // hands to its callback instead of printing).
                let digest = pushed.manifest_digest.to_string();
                let size = pushed.manifest_size;
                let summary = json!({"status": format!("{tag}: digest: {digest} size: {size}")});
                let _ = sender.send(stream::json_line(&summary)).await;
                stream::json_line(&json!({
                    "progressDetail": {},
                    "aux": {"Tag": tag, "Digest": digest, "Size": size},
                }))
            }
            Ok(Err(err)) => error_line(&err.to_string()),
            Err(err) => error_line(&format!("the push ended abnormally: {err}")),
        };
        let _ = sender.send(last).await;
    });
    Ok(progress_response(receiver))
}

/// A `Write` for blocking code whose bytes become a streamed answer.
struct ChannelWriter(mpsc::Sender<Bytes>);

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Bytes::copy_from_slice(buf))
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `GET /images/get?names=A&names=B` and `GET /images/{name}/get`: a docker-archive of the
/// images (as `docker save`). Unknown names are a 404 before anything is sent.
pub async fn get(
    State(service): State<Arc<Service>>,
    Query(query): Query<Vec<(String, String)>>,
) -> Answer {
    let names: Vec<String> = query
        .into_iter()
        .filter(|(k, _)| k == "names")
        .map(|(_, v)| v)
        .collect();
    save(service, names).await
}

async fn save(service: Arc<Service>, names: Vec<String>) -> Answer {
    if names.is_empty() {
        return Err(Failure::bad_request("give the images: ?names=NAME"));
    }
    let store = service.store()?;
    let requests = {
        let store = store.clone();
        blocking(move || {
            for name in &names {
                find(&store, name)?;
            }
            Ok(gcr_images::save_requests(&store, &names)?)
        })
        .await?
    };
    let (sender, receiver) = mpsc::channel::<Bytes>(16);
    tokio::task::spawn_blocking(move || {
        let mut out = std::io::BufWriter::with_capacity(256 * 1024, ChannelWriter(sender));
        if let Err(err) = store.save_archive(
            &requests,
            gcr_storage::ArchiveFormat::DockerArchive,
            &mut out,
        ) {
            tracing::warn!(%err, "saving images for the API failed");
        }
        let _ = std::io::Write::flush(&mut out);
    });
    let mut response = crate::stream::body(receiver).into_response();
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    Ok(response)
}

/// `POST /images/load?quiet`: a docker-archive or oci-archive in the body, loaded as `docker
/// load` does; answered with `{"stream": "Loaded image: NAME\n"}` lines.
pub async fn load(State(service): State<Arc<Service>>, body: axum::body::Body) -> Answer {
    use futures_util::StreamExt as _;
    use tokio::io::AsyncWriteExt as _;
    let keep = |e: std::io::Error| Failure::internal(format!("cannot keep the archive: {e}"));
    let file = tempfile::NamedTempFile::new().map_err(keep)?;
    let mut out = tokio::fs::File::from_std(file.reopen().map_err(keep)?);
    let mut chunks = body.into_data_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk =
            chunk.map_err(|e| Failure::bad_request(format!("cannot read the archive: {e}")))?;
        out.write_all(&chunk).await.map_err(keep)?;
    }
    out.flush().await.map_err(keep)?;
    drop(out);
    let loaded = blocking(move || {
        let store = service.store()?;
        store
            .load_archive(file.path(), &gcr_images::load_name)
            .map_err(|e| Failure::bad_request(format!("cannot load the archive: {e}")))
    })
    .await?;
    let mut lines = String::new();
    for image in loaded {
        if image.names.is_empty() {
            let line = json!({"stream": format!("Loaded image ID: {}\n", image.id)});
            lines.push_str(&String::from_utf8_lossy(&stream::json_line(&line)));
        }
        for name in image.names {
            let shown = gcr_images::familiar_name(&name);
            lines.push_str(&String::from_utf8_lossy(&stream::json_line(
                &json!({"stream": format!("Loaded image: {shown}\n")}),
            )));
        }
    }
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        lines,
    )
        .into_response())
}
