//! The store's event journal (`events.jsonl`): what happened to containers, images and volumes,
//! one JSON line each, in Docker's event shape, so `docker events` (the API's `GET /events`)
//! can replay and follow it with no daemon to remember them. Every gcr process that changes
//! the store appends (O_APPEND: lines of different writers never interleave); the journal
//! keeps the last [`KEEP`] lines or so (trimmed when it grows past twice that).

use std::collections::BTreeMap;
use std::io::{BufRead as _, Write as _};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{Store, StoreError};

/// About how many events the journal keeps.
pub const KEEP: usize = 5000;

/// One event, as Docker's API writes it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Event {
    /// container, image, volume, network.
    #[serde(rename = "Type")]
    pub kind: String,
    /// create, start, die, stop, kill, destroy, rename, pull, tag, untag, delete, ...
    #[serde(rename = "Action")]
    pub action: String,
    #[serde(rename = "Actor")]
    pub actor: Actor,
    pub scope: String,
    /// Seconds since the epoch.
    pub time: i64,
    #[serde(rename = "timeNano")]
    pub time_nano: i64,
    /// Docker's older fields, which some clients still read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Actor {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Attributes")]
    pub attributes: BTreeMap<String, String>,
}

impl Event {
    /// An event of now.
    pub fn new(kind: &str, action: &str, id: &str, attributes: BTreeMap<String, String>) -> Event {
        let now = chrono::Utc::now();
        let time_nano = now
            .timestamp_nanos_opt()
            .unwrap_or(now.timestamp() * 1_000_000_000);
        let legacy = kind == "container" || kind == "image";
        Event {
            from: attributes
                .get("image")
                .cloned()
                .filter(|_| kind == "container"),
            kind: kind.to_string(),
            action: action.to_string(),
            actor: Actor {
                id: id.to_string(),
                attributes,
            },
            scope: "local".to_string(),
            time: now.timestamp(),
            time_nano,
            status: legacy.then(|| action.to_string()),
            id: legacy.then(|| id.to_string()),
        }
    }
}

impl Store {
    pub fn events_path(&self) -> PathBuf {
        self.root().join("events.jsonl")
    }

    /// Appends `event` to the journal. A journal that cannot be written loses the event,
    /// not the operation it reports (the caller goes on; the failure is logged).
    pub fn record_event(&self, event: &Event) {
        let path = self.events_path();
        let mut line = match serde_json::to_vec(event) {
            Ok(line) => line,
            Err(_) => return,
        };
        line.push(b'\n');
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| {
                f.write_all(&line)?;
                f.metadata()
            });
        match written {
            Ok(meta) if meta.len() > (KEEP as u64) * 2 * 400 => self.trim_events(),
            Ok(_) => {}
            Err(err) => tracing::warn!(%err, path = %path.display(), "cannot record an event"),
        }
    }

    /// Keeps the last [`KEEP`] events (written aside and renamed over the journal, under the
    /// store lock so two trimmers do not lose each other's work).
    fn trim_events(&self) {
        let Ok(_lock) = self.lock() else { return };
        let path = self.events_path();
        let Ok(text) = std::fs::read(&path) else {
            return;
        };
        let lines: Vec<&[u8]> = text
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        let kept = lines[lines.len().saturating_sub(KEEP)..].join(&b'\n');
        let mut kept = kept;
        kept.push(b'\n');
        if let Err(err) = self.write_file_atomic(&path, &kept) {
            tracing::warn!(%err, "cannot trim the event journal");
        }
    }

    /// The events in the journal from byte `offset` on (whole lines only) and the offset
    /// after them; a follower calls it again with that offset.
    pub fn events_from(&self, offset: u64) -> Result<(Vec<Event>, u64), StoreError> {
        use std::io::Seek as _;
        let path = self.events_path();
        let mut file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
            Err(e) => return Err(StoreError::io("reading", &path, e)),
        };
        let len = file
            .metadata()
            .map_err(|e| StoreError::io("reading", &path, e))?
            .len();
        // Trimmed meanwhile: start again from the top.
        let offset = if offset > len { 0 } else { offset };
        file.seek(std::io::SeekFrom::Start(offset))
            .map_err(|e| StoreError::io("reading", &path, e))?;
        let mut reader = std::io::BufReader::new(file);
        let mut events = Vec::new();
        let mut at = offset;
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = reader
                .read_until(b'\n', &mut line)
                .map_err(|e| StoreError::io("reading", &path, e))?;
            if n == 0 || !line.ends_with(b"\n") {
                break;
            }
            at += n as u64;
            if let Ok(event) = serde_json::from_slice::<Event>(&line) {
                events.push(event);
            }
        }
        Ok((events, at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_appended_and_read_back_from_an_offset() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        assert_eq!(store.events_from(0).unwrap(), (Vec::new(), 0));
        let attrs = BTreeMap::from([("image".to_string(), "busybox".to_string())]);
        store.record_event(&Event::new("container", "start", "abc", attrs.clone()));
        let (events, offset) = store.events_from(0).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].action, "start");
        assert_eq!(events[0].from.as_deref(), Some("busybox"));
        store.record_event(&Event::new("container", "die", "abc", attrs));
        let (later, _) = store.events_from(offset).unwrap();
        assert_eq!(later.len(), 1);
        assert_eq!(later[0].action, "die");
        // A half-written line waits for its end.
        std::fs::OpenOptions::new()
            .append(true)
            .open(store.events_path())
            .unwrap()
            .write_all(b"{\"Type\":")
            .unwrap();
        assert_eq!(store.events_from(0).unwrap().0.len(), 2);
    }
}
