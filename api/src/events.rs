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

use gcr_storage::Event;

use crate::containers::filter_entries;
use crate::error::{Answer, Failure};
use crate::{stream, Service};

/// A `since`/`until` value (Unix seconds with an optional fraction, or RFC 3339) in
/// nanoseconds since the epoch.
fn time_nanos(key: &str, text: &str) -> Result<i64, Failure> {
    if let Ok(seconds) = text.parse::<f64>() {
        if seconds.is_finite() {
            return Ok((seconds * 1e9) as i64);
        }
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .ok_or_else(|| {
            Failure::bad_request(format!(
                "invalid {key} {text:?}: give Unix seconds or an RFC 3339 time"
            ))
        })
}

/// Docker's event filters: values of one key match any, keys must all match.
struct EventFilters(Vec<(String, String)>);

impl EventFilters {
    fn parse(entries: Vec<String>) -> Result<EventFilters, Failure> {
        let mut pairs = Vec::new();
        for entry in entries {
            let (key, value) = entry.split_once('=').unwrap_or((&entry, ""));
            match key {
                "type" | "event" | "container" | "image" | "volume" | "label" | "scope" => {}
                other => {
                    return Err(Failure::bad_request(format!(
                    "invalid filter {other:?}: use type, event, container, image, volume or label"
                )))
                }
            }
            pairs.push((key.to_string(), value.to_string()));
        }
        Ok(EventFilters(pairs))
    }

    fn one(&self, key: &str, value: &str, event: &Event) -> bool {
        let attrs = &event.actor.attributes;
        let name = attrs.get("name").map(String::as_str).unwrap_or_default();
        match key {
            "type" => event.kind == value,
            "event" => event.action == value,
            "scope" => value == "local",
            "container" => {
                event.kind == "container"
                    && (event.actor.id.starts_with(value) || name == value.trim_start_matches('/'))
            }
            "image" => {
                let image = attrs.get("image").map(String::as_str).unwrap_or(name);
                image == value || image.starts_with(&format!("{value}:")) || event.actor.id == value
            }
            "volume" => event.kind == "volume" && event.actor.id == value,
            _ => match value.split_once('=') {
                Some((k, v)) => attrs.get(k).is_some_and(|have| have == v),
                None => attrs.contains_key(value),
            },
        }
    }

    fn matches(&self, event: &Event) -> bool {
        let keys: std::collections::BTreeSet<&str> =
            self.0.iter().map(|(k, _)| k.as_str()).collect();
        keys.into_iter().all(|key| {
            let mut values = self.0.iter().filter(|(k, _)| k == key);
            // Values of one key: any may match, but every label must (Docker's rule).
            if key == "label" {
                values.all(|(_, v)| self.one(key, v, event))
            } else {
                values.any(|(_, v)| self.one(key, v, event))
            }
        })
    }
}

pub async fn events(
    State(service): State<Arc<Service>>,
    Query(query): Query<HashMap<String, String>>,
) -> Answer {
    let since = query
        .get("since")
        .filter(|s| !s.is_empty())
        .map(|s| time_nanos("since", s))
        .transpose()?;
    let until = query
        .get("until")
        .filter(|s| !s.is_empty())
        .map(|s| time_nanos("until", s))
        .transpose()?;
    let filters = EventFilters::parse(filter_entries(&query)?)?;
    let store = service.store()?;
    // Without `since` only what happens from now on.
    let start = match since {
        Some(_) => 0,
        None => store.events_from(0)?.1,
    };
    let (sender, receiver) = mpsc::channel::<Bytes>(64);
    tokio::task::spawn_blocking(move || {
        let mut offset = start;
        loop {
            let Ok((events, next)) = store.events_from(offset) else {
                return;
            };
            offset = next;
            for event in events {
                let in_window = since.is_none_or(|s| event.time_nano >= s)
                    && until.is_none_or(|u| event.time_nano <= u);
                if in_window && filters.matches(&event) {
                    let value = serde_json::to_value(&event).unwrap_or_default();
                    if sender.blocking_send(stream::json_line(&value)).is_err() {
                        return;
                    }
                }
            }
            let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
            if until.is_some_and(|u| now > u) || sender.is_closed() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    });
    let mut response = stream::body(receiver).into_response();
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}
