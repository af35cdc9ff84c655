//! `/containers/{id}/archive` (what `docker cp` uses): `HEAD` and `GET` tell what a path is
//! in `X-Docker-Container-Path-Stat` (base64 JSON), `GET` streams it as tar, `PUT` unpacks a
//! tar into a directory. The files are reached in a worker (a stopped container's overlay is
//! mounted in a child).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::IntoResponse;
use base64::Engine as _;
use futures_util::StreamExt as _;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::mpsc;

use gcr_containers::worker::Job;

use crate::error::{blocking, Answer, Failure};
use crate::Service;

/// The container's full ID, or Docker's 404.
async fn container_id(service: &Arc<Service>, wanted: String) -> Answer<String> {
    let service = service.clone();
    blocking(move || {
        let store = service.store()?;
        gcr_containers::lookup(&store, &wanted)
            .map(|c| c.id)
            .map_err(|e| match e {
                gcr_containers::ContainerError::NotFound(_) => {
                    Failure::not_found(format!("No such container: {wanted}"))
                }
                other => other.into(),
            })
    })
    .await
}

fn path_of(query: &HashMap<String, String>) -> Result<String, Failure> {
    query
        .get("path")
        .filter(|p| !p.is_empty())
        .cloned()
        .ok_or_else(|| Failure::bad_request("give the path: ?path=/PATH"))
}

/// `HEAD`, `GET` and `PUT /containers/{id}/archive?path=`.
pub async fn archive(
    State(service): State<Arc<Service>>,
    Path(params): Path<HashMap<String, String>>,
    Query(query): Query<HashMap<String, String>>,
    method: Method,
    body: Body,
) -> Answer {
    let id = container_id(&service, params.get("id").cloned().unwrap_or_default()).await?;
    let path = path_of(&query)?;
    if method == Method::PUT {
        return put(service, id, path, body).await;
    }
    let service2 = service.clone();
    let (stat_id, stat_path) = (id.clone(), path.clone());
    let stat = blocking(move || {
        gcr_containers::worker::archive_stat_in_worker(
            &service2.worker_exe,
            &service2.store_root,
            &stat_id,
            &stat_path,
        )
        .map_err(|e| match e {
            gcr_containers::ContainerError::NotFound(_)
            | gcr_containers::ContainerError::Missing(_) => Failure::not_found(format!(
                "Could not find the file {stat_path} in container {stat_id}"
            )),
            other => other.into(),
        })
    })
    .await?;
    let header = base64::engine::general_purpose::STANDARD
        .encode(serde_json::to_vec(&stat).unwrap_or_default());
    let header = HeaderValue::from_str(&header)
        .map_err(|e| Failure::internal(format!("cannot encode the path stat: {e}")))?;
    if method == Method::HEAD {
        let mut response = StatusCode::OK.into_response();
        response
            .headers_mut()
            .insert("X-Docker-Container-Path-Stat", header);
        return Ok(response);
    }
    if method != Method::GET {
        return Err(Failure::not_implemented(&format!(
            "{method} /containers/{{id}}/archive"
        )));
    }
    // The tar comes on the worker's stdout; its answer in a file.
    let answer_file = std::env::temp_dir().join(format!(
        "gcr-archive-{}.json",
        gcr_containers::new_container_id()?
    ));
    let job = Job::ArchiveOut {
        container: id,
        path,
        answer_file: answer_file.clone(),
    };
    let mut command = tokio::process::Command::from(service.worker_command(&job)?);
    command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit());
    let mut child = command
        .spawn()
        .map_err(|e| Failure::internal(format!("cannot start the archive worker: {e}")))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| Failure::internal("the archive worker has no stdout"))?;
    let (sender, receiver) = mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt as _;
        let mut stdout = stdout;
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = stdout.read(&mut buf).await {
            if n == 0
                || sender
                    .send(Bytes::copy_from_slice(&buf[..n]))
                    .await
                    .is_err()
            {
                break;
            }
        }
        let _ = child.wait().await;
        if let Err(err) = gcr_containers::worker::stream_answer(&answer_file) {
            tracing::warn!(%err, "copying out of the container failed");
        }
        let _ = std::fs::remove_file(&answer_file);
    });
    let mut response = crate::stream::body(receiver).into_response();
    let headers = response.headers_mut();
    headers.insert("X-Docker-Container-Path-Stat", header);
    headers.insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    Ok(response)
}

/// `PUT`: the body (a tar stream) to the worker's stdin, unpacked into the directory `path`.
async fn put(service: Arc<Service>, id: String, path: String, body: Body) -> Answer {
    let job = Job::ArchiveIn {
        container: id,
        path,
    };
    let mut command = tokio::process::Command::from(service.worker_command(&job)?);
    command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit());
    let mut child = command
        .spawn()
        .map_err(|e| Failure::internal(format!("cannot start the archive worker: {e}")))?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| Failure::internal("the archive worker has no stdin"))?;
    let mut chunks = body.into_data_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk =
            chunk.map_err(|e| Failure::bad_request(format!("cannot read the body: {e}")))?;
        // A worker that stopped reading failed: its answer says why.
        if stdin.write_all(&chunk).await.is_err() {
            break;
        }
    }
    drop(stdin);
    let output = child
        .wait_with_output()
        .await
        .map_err(|e| Failure::internal(format!("the archive worker failed: {e}")))?;
    gcr_containers::worker::parse_answer(&String::from_utf8_lossy(&output.stdout))?;
    Ok(StatusCode::OK.into_response())
}
