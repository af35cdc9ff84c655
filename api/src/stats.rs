//! `GET /containers/{id}/stats`: Docker's stats documents from gcr-containers' readings
//! (files only: cgroup counters and /proc; nothing forks). `stream=false` answers one
//! document whose `precpu_stats` were read half a second earlier (none with `one-shot`);
//! otherwise one document a second, each with the one before as `precpu_stats`, until the
//! client goes away or the container ends.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue};
use axum::response::IntoResponse;
use axum::Json;
use tokio::sync::mpsc;

use gcr_containers::{Container, Sample};

use crate::containers::{find, flag};
use crate::error::{blocking, Answer};
use crate::{stream, Service};

/// Between the reading of `precpu_stats` and that of `cpu_stats` in a single answer.
const FIRST_INTERVAL: Duration = Duration::from_millis(500);
const INTERVAL: Duration = Duration::from_secs(1);

/// A reading of `c` now; `None` once it does not run.
async fn read(c: &Container) -> Answer<Option<Sample>> {
    let c = c.clone();
    blocking(move || Ok(gcr_containers::sample(&c.current()).ok())).await
}

pub async fn stats(
    State(service): State<Arc<Service>>,
    Path(params): Path<HashMap<String, String>>,
    Query(query): Query<HashMap<String, String>>,
) -> Answer {
    let wanted = params.get("id").cloned().unwrap_or_default();
    let streaming = flag(&query, "stream", true);
    let one_shot = flag(&query, "one-shot", false);
    let c = blocking(move || Ok(find(&service, &wanted)?.1)).await?;
    let mut before = if one_shot { None } else { read(&c).await? };
    if before.is_some() {
        tokio::time::sleep(FIRST_INTERVAL).await;
    }
    let now = read(&c).await?;
    if !streaming || now.is_none() {
        return Ok(Json(gcr_containers::docker_stats(
            &c,
            now.as_ref(),
            before.as_ref(),
        ))
        .into_response());
    }
    let (sender, receiver) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut now = now;
        while let Some(sample) = now {
            let doc = gcr_containers::docker_stats(&c, Some(&sample), before.as_ref());
            if sender.send(stream::json_line(&doc)).await.is_err() {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(INTERVAL) => {}
                _ = sender.closed() => return,
            }
            before = Some(sample);
            // A reading that failed ends the stream as the container's end does.
            now = read(&c).await.unwrap_or_default();
        }
    });
    let mut response = stream::body(receiver).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}
