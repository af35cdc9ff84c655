//! A container's record under `--root`: `<root>/<id>/state.json` (what `create` made),
//! `config.json` (the spec as created, for exec, update and the poststop hooks) and
//! `exec.fifo` (the start gate; gone once started). Status is derived, never stored: the
//! process alive (same pid, same start time, not a zombie) and the gate still there is
//! created, alive without the gate running (or paused when its cgroup is frozen), otherwise
//! stopped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

use crate::error::OciError;

pub const STATE: &str = "state.json";
pub const CONFIG: &str = "config.json";
pub const FIFO: &str = "exec.fifo";

/// What `create` recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub pid: i32,
    /// The process's start time (/proc/PID/stat field 22): tells a reused pid apart.
    pub pid_start: u64,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    /// RFC 3339.
    pub created: String,
    pub owner: String,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    /// The cgroup path (relative to each hierarchy's root), when one was made.
    pub cgroup: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    Paused,
    Stopped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }
}

/// Container ids as runc accepts them: letters, digits, `_+-.`, not `.` or `..` (an id is a
/// directory name under --root).
pub fn check_id(id: &str) -> Result<(), OciError> {
    let ok = !id.is_empty()
        && id != "."
        && id != ".."
        && id.len() <= 1024
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+-.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(OciError::InvalidId(id.to_string()))
    }
}

/// The state directory of `id` under `root`.
pub fn dir_of(root: &Path, id: &str) -> Result<PathBuf, OciError> {
    check_id(id)?;
    Ok(root.join(id))
}

/// The start time of process `pid`, or `None` when it does not exist or is a zombie.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); field 22 is index 19.
    if fields.first() == Some(&"Z") || fields.first() == Some(&"X") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Writes `content` to `path` through a temporary file and a rename: a reader never sees a
/// half-written file.
pub fn write_atomic(path: &Path, content: &[u8]) -> Result<(), OciError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp{}", std::process::id()));
    std::fs::write(&tmp, content)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            OciError::io("write", path, e)
        })
}

/// One container under --root.
#[derive(Debug, Clone)]
pub struct Container {
    pub dir: PathBuf,
    pub record: Record,
}

impl Container {
    /// Loads `id`; [`OciError::NotExist`] when there is no such container.
    pub fn load(root: &Path, id: &str) -> Result<Container, OciError> {
        let dir = dir_of(root, id)?;
        let path = dir.join(STATE);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(OciError::NotExist(id.to_string()))
            }
            Err(e) => return Err(OciError::io("read", &path, e)),
        };
        let record = serde_json::from_slice(&text).map_err(|e| OciError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        Ok(Container { dir, record })
    }

    pub fn save(&self) -> Result<(), OciError> {
        let text = serde_json::to_vec(&self.record).map_err(|e| OciError::Corrupt {
            path: self.dir.join(STATE),
            message: e.to_string(),
        })?;
        write_atomic(&self.dir.join(STATE), &text)
    }

    /// The spec the container was created with.
    pub fn spec(&self) -> Result<Spec, OciError> {
        let path = self.dir.join(CONFIG);
        Spec::load(&path).map_err(|e| OciError::Config {
            path,
            message: e.to_string(),
        })
    }

    pub fn fifo(&self) -> PathBuf {
        self.dir.join(FIFO)
    }

    /// Whether its first process is still the one `create` made (and not a zombie).
    pub fn alive(&self) -> bool {
        start_time(self.record.pid) == Some(self.record.pid_start)
    }

    pub fn cgroup(&self) -> Option<gcr_runtime::cgroups::Cgroup> {
        self.record
            .cgroup
            .as_deref()
            .map(gcr_runtime::cgroups::Cgroup::at)
    }

    pub fn status(&self) -> Status {
        if !self.alive() {
            return Status::Stopped;
        }
        if self.fifo().exists() {
            return Status::Created;
        }
        if self
            .cgroup()
            .is_some_and(|cg| cg.is_frozen().unwrap_or(false))
        {
            return Status::Paused;
        }
        Status::Running
    }

    /// The OCI state (runtime-spec "State"), with the runc extras callers read.
    pub fn state_json(&self, status: Status) -> serde_json::Value {
        let r = &self.record;
        let pid = if status == Status::Stopped { 0 } else { r.pid };
        serde_json::json!({
            "ociVersion": crate::OCI_VERSION,
            "id": r.id,
            "pid": pid,
            "status": status.as_str(),
            "bundle": r.bundle,
            "rootfs": r.rootfs,
            "created": r.created,
            "owner": r.owner,
            "annotations": r.annotations,
        })
    }

    /// The state the hooks get on stdin.
    pub fn hook_state(&self, status: Status) -> String {
        let mut value = self.state_json(status);
        if let Some(map) = value.as_object_mut() {
            map.remove("rootfs");
            map.remove("created");
            map.remove("owner");
        }
        value.to_string()
    }
}

/// Every container under `root`, by id.
pub fn list(root: &Path) -> Result<Vec<Container>, OciError> {
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(OciError::io("read", root, e)),
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let id = entry.file_name().to_string_lossy().into_owned();
        if let Ok(c) = Container::load(root, &id) {
            out.push(c);
        }
    }
    out.sort_by(|a, b| a.record.id.cmp(&b.record.id));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_directory_names() {
        for ok in ["a", "abc-1.2_3+x", "0123456789abcdef"] {
            assert!(check_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "../x", "a b", "x\0"] {
            assert!(
                matches!(check_id(bad), Err(OciError::InvalidId(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn start_time_tells_processes_apart() {
        let own = start_time(std::process::id() as i32);
        assert!(own.is_some());
        assert_eq!(own, start_time(std::process::id() as i32));
        // Pid 0 has no /proc entry.
        assert_eq!(start_time(0), None);
    }
}
