//! How lists show a container (`gcr ps`, the Docker API's `GET /containers/json`): Docker's
//! status text and list entry.

use serde_json::{json, Value};

use crate::container::{Container, State};
use crate::inspect::{labels, network_mode};

/// Docker's wording of a duration (its `units.HumanDuration`): `Less than a second`,
/// `5 seconds`, `About a minute`, `3 hours`, `2 weeks`.
pub fn human_duration(seconds: i64) -> String {
    let plural = |n: i64, unit: &str| {
        if n == 1 {
            format!("1 {unit}")
        } else {
            format!("{n} {unit}s")
        }
    };
    let (minute, hour, day) = (60, 3600, 86_400);
    match seconds {
        s if s < 1 => "Less than a second".to_string(),
        s if s < minute => plural(s, "second"),
        s if s < 2 * minute => "About a minute".to_string(),
        s if s < hour => plural(s / minute, "minute"),
        s if s < 2 * hour => "About an hour".to_string(),
        s if s < 2 * day => plural(s / hour, "hour"),
        s if s < 14 * day => plural(s / day, "day"),
        s if s < 90 * day => plural(s / (7 * day), "week"),
        s if s < 730 * day => plural(s / (30 * day), "month"),
        s => plural(s / (365 * day), "year"),
    }
}

/// Seconds from an RFC 3339 time to now (0 when unreadable or in the future).
fn seconds_since(time: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(time)
        .map(|t| (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds())
        .unwrap_or(0)
        .max(0)
}

/// Docker's STATUS: `Up 5 minutes`, `Up 2 hours (Paused)`, `Exited (0) 3 seconds ago`,
/// `Created`, `Removal In Progress`.
pub fn status_text(c: &Container) -> String {
    match c.state() {
        State::Running | State::Paused => {
            let since = c.meta.started.as_ref().unwrap_or(&c.meta.created);
            let up = format!("Up {}", human_duration(seconds_since(since)));
            if c.state() == State::Paused {
                format!("{up} (Paused)")
            } else if c.meta.health.is_some() {
                format!("{up}{}", crate::health::status_suffix(&c.dir))
            } else {
                up
            }
        }
        State::Removing => "Removal In Progress".to_string(),
        State::Created => "Created".to_string(),
        State::Exited => {
            let code = c
                .exit_code()
                .map_or_else(|| "unknown".to_string(), |code| code.to_string());
            match c.finished_at() {
                Some(at) => {
                    let ago = at.elapsed().map_or(0, |d| d.as_secs() as i64);
                    format!("Exited ({code}) {} ago", human_duration(ago))
                }
                None => format!("Exited ({code})"),
            }
        }
    }
}

/// Docker's entry of a container list (`GET /containers/json`).
pub fn summary(store: &gcr_storage::Store, c: &Container) -> Value {
    let created = chrono::DateTime::parse_from_rfc3339(&c.meta.created)
        .map(|t| t.timestamp())
        .unwrap_or(0);
    let ports: Vec<Value> = c
        .meta
        .ports
        .iter()
        .map(|p| {
            json!({"IP": p.host_ip, "PrivatePort": p.container_port,
                   "PublicPort": p.host_port, "Type": p.protocol})
        })
        .collect();
    let spec = c.spec().ok();
    let mode = network_mode(&c.meta, spec.as_ref());
    json!({
        "Id": c.id,
        "Names": [format!("/{}", c.meta.name.clone().unwrap_or_else(|| crate::short_id(&c.id)))],
        "Image": c.meta.image,
        "ImageID": c.image_id().unwrap_or_default(),
        "Command": c.meta.command.join(" "),
        "Created": created,
        "Ports": ports,
        "Labels": labels(store, c),
        "State": c.state().as_str(),
        "Status": status_text(c),
        "HostConfig": {"NetworkMode": mode},
        "NetworkSettings": {"Networks": {mode.clone(): {"IPAddress": c.address().unwrap_or_default()}}},
        "Mounts": [],
    })
}

#[cfg(test)]
mod tests {
    use super::human_duration;

    #[test]
    fn durations_read_as_dockers() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(1), "1 second");
        assert_eq!(human_duration(59), "59 seconds");
        assert_eq!(human_duration(90), "About a minute");
        assert_eq!(human_duration(600), "10 minutes");
        assert_eq!(human_duration(4000), "About an hour");
        assert_eq!(human_duration(3 * 3600), "3 hours");
        assert_eq!(human_duration(3 * 86_400), "3 days");
        assert_eq!(human_duration(21 * 86_400), "3 weeks");
    }
}
