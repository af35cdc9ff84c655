//! The container events this library records in the store's journal (Docker's: create,
//! start, die, kill, stop, destroy, rename), and reading the journal as `docker events` does
//! (times, filters, following), for `gcr events` and the API's `GET /events`.

use std::collections::BTreeMap;

use gcr_storage::Event;

use crate::error::{ContainerError, Result};
use crate::record::ContainerMeta;

/// Records `action` of container `id`: its image, name and labels as attributes (Compose
/// finds its containers' events by label), with `extra` over them.
pub(crate) fn container_event(
    store: &gcr_storage::Store,
    id: &str,
    meta: &ContainerMeta,
    action: &str,
    extra: &[(&str, String)],
) {
    let mut attributes: BTreeMap<String, String> = meta.labels.clone();
    attributes.insert("image".into(), meta.image.clone());
    attributes.insert(
        "name".into(),
        meta.name.clone().unwrap_or_else(|| crate::short_id(id)),
    );
    for (key, value) in extra {
        attributes.insert(key.to_string(), value.clone());
    }
    store.record_event(&gcr_storage::Event::new(
        "container",
        action,
        id,
        attributes,
    ));
}

/// Records `action` of volume `name`.
pub(crate) fn volume_event(store: &gcr_storage::Store, name: &str, action: &str) {
    let attributes = BTreeMap::from([("driver".to_string(), "local".to_string())]);
    store.record_event(&gcr_storage::Event::new("volume", action, name, attributes));
}

/// An events `--since`/`--until` value in nanoseconds since the epoch: Unix seconds (with a
/// fraction), an RFC 3339 time, or a duration back from now (`10m`, `1h30m`, `45s`).
pub fn event_time(key: &str, text: &str) -> Result<i64> {
    if let Ok(seconds) = text.parse::<f64>() {
        if seconds.is_finite() {
            return Ok((seconds * 1e9) as i64);
        }
    }
    if let Some(t) = chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
    {
        return Ok(t);
    }
    if let Some(back) = parse_duration(text) {
        let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
        return Ok(now - back);
    }
    Err(ContainerError::invalid(format!(
        "invalid {key} {text:?}: give Unix seconds, an RFC 3339 time or a duration such as 10m"
    )))
}

/// A Go-style duration (`1h30m`, `45s`, `500ms`) in nanoseconds.
fn parse_duration(text: &str) -> Option<i64> {
    let mut total = 0f64;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += number * scale;
        rest = &rest[unit_len..];
    }
    Some(total as i64)
}

/// Docker's event filters (`type`, `event`, `container`, `image`, `volume`, `network`,
/// `label`, `scope`): values of one key match any (labels: all), keys must all match.
#[derive(Debug, Clone, Default)]
pub struct EventFilters(Vec<(String, String)>);

impl EventFilters {
    /// From `KEY=VALUE` entries.
    pub fn parse(entries: &[String]) -> Result<EventFilters> {
        let mut pairs = Vec::new();
        for entry in entries {
            let (key, value) = entry.split_once('=').unwrap_or((entry, ""));
            match key {
                "type" | "event" | "container" | "image" | "volume" | "network" | "label"
                | "scope" => {}
                other => {
                    return Err(ContainerError::invalid(format!(
                        "invalid filter {other:?}: use type, event, container, image, volume, network or label"
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
                let on_network = attrs.get("container").map(String::as_str);
                (event.kind == "container"
                    && (event.actor.id.starts_with(value) || name == value.trim_start_matches('/')))
                    || on_network.is_some_and(|id| !value.is_empty() && id.starts_with(value))
            }
            "image" => {
                let image = attrs.get("image").map(String::as_str).unwrap_or(name);
                image == value || image.starts_with(&format!("{value}:")) || event.actor.id == value
            }
            "volume" => event.kind == "volume" && event.actor.id == value,
            "network" => {
                event.kind == "network" && (event.actor.id.starts_with(value) || name == value)
            }
            _ => match value.split_once('=') {
                Some((k, v)) => attrs.get(k).is_some_and(|have| have == v),
                None => attrs.contains_key(value),
            },
        }
    }

    /// Whether `event` passes.
    pub fn matches(&self, event: &Event) -> bool {
        let keys: std::collections::BTreeSet<&str> =
            self.0.iter().map(|(k, _)| k.as_str()).collect();
        keys.into_iter().all(|key| {
            let mut values = self.0.iter().filter(|(k, _)| k == key);
            if key == "label" {
                values.all(|(_, v)| self.one(key, v, event))
            } else {
                values.any(|(_, v)| self.one(key, v, event))
            }
        })
    }
}

/// What `events` shows: from `since` (none: only what happens from now on) to `until`
/// (none: follow until `sink` returns false), filtered. Polls the journal every 100 ms;
/// between polls `sink` gets None, so a reader that went away ends the follow too.
pub fn follow_events(
    store: &gcr_storage::Store,
    since: Option<i64>,
    until: Option<i64>,
    filters: &EventFilters,
    mut sink: impl FnMut(Option<&Event>) -> bool,
) -> Result<()> {
    let mut offset = match since {
        Some(_) => 0,
        None => store.events_from(0)?.1,
    };
    loop {
        let (events, next) = store.events_from(offset)?;
        offset = next;
        for event in events {
            let in_window = since.is_none_or(|s| event.time_nano >= s)
                && until.is_none_or(|u| event.time_nano <= u);
            if in_window && filters.matches(&event) && !sink(Some(&event)) {
                return Ok(());
            }
        }
        let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
        if until.is_some_and(|u| now > u) {
            return Ok(());
        }
        if !sink(None) {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_times_and_durations() {
        assert_eq!(event_time("since", "1.5").unwrap(), 1_500_000_000);
        assert_eq!(
            event_time("since", "2026-12-07T00:00:00Z").unwrap(),
            1_796_601_600_000_000_000
        );
        assert_eq!(parse_duration("1h30m"), Some(5_400_000_000_000));
        assert_eq!(parse_duration("500ms"), Some(500_000_000));
        assert_eq!(parse_duration("10x"), None);
        let back = event_time("since", "10m").unwrap();
        let now = chrono::Utc::now().timestamp_nanos_opt().unwrap();
        assert!((now - back - 600_000_000_000).abs() < 5_000_000_000);
        assert!(event_time("since", "yesterday").is_err());
    }

    #[test]
    fn filters_as_docker() {
        let event = Event::new(
            "container",
            "start",
            "abcdef",
            BTreeMap::from([
                ("name".to_string(), "web".to_string()),
                ("image".to_string(), "busybox:latest".to_string()),
                ("a".to_string(), "1".to_string()),
            ]),
        );
        let f = |e: &[&str]| {
            EventFilters::parse(&e.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
        };
        assert!(f(&["type=container", "event=die", "event=start"]).matches(&event));
        assert!(!f(&["type=image"]).matches(&event));
        assert!(f(&["container=web", "image=busybox"]).matches(&event));
        assert!(f(&["container=abc"]).matches(&event));
        assert!(!f(&["label=a=1", "label=b"]).matches(&event));
        assert!(EventFilters::parse(&["color=red".to_string()]).is_err());
    }
}
