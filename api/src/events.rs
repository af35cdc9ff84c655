//! `GET /events?since&until&filters`: the store's event journal replayed from `since` and
//! followed (until `until`, or until the client leaves), one JSON line per event, filtered
//! as Docker filters them (type, event, container, image, volume, label).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::HeaderValue;
use axum::response::IntoResponse;
use tokio::sync::mpsc;

use crate::containers::filter_entries;
use crate::error::{Answer, Failure};
use crate::{stream, Service};

pub async fn events(
    State(service): State<Arc<Service>>,
    Query(query): Query<HashMap<String, String>>,
) -> Answer {
    let time = |key: &str| -> Result<Option<i64>, Failure> {
        Ok(query
            .get(key)
            .filter(|s| !s.is_empty())
            .map(|s| gcr_containers::event_time(key, s))
            .transpose()?)
    };
    let (since, until) = (time("since")?, time("until")?);
    let filters = gcr_containers::EventFilters::parse(&filter_entries(&query)?)?;
    let store = service.store()?;
    let (sender, receiver) = mpsc::channel::<Bytes>(64);
    tokio::task::spawn_blocking(move || {
        let _ =
            gcr_containers::follow_events(&store, since, until, &filters, |event| match event {
                Some(event) => {
                    let value = serde_json::to_value(event).unwrap_or_default();
                    sender.blocking_send(stream::json_line(&value)).is_ok()
                }
                None => !sender.is_closed(),
            });
    });
    let mut response = stream::body(receiver).into_response();
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}
