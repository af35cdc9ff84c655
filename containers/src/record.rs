//! A container's record: the files under the store's `containers/<id>/` and how they are
//! written (whole or not at all) and read back.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{ContainerError, Result};

/// What `gcr run` records about a container (containers/<id>/meta.json).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ContainerMeta {
    pub name: Option<String>,
    pub image: String,
    pub command: Vec<String>,
    pub created: String,
    /// The process that owns the container (its `gcr run` or supervisor).
    pub pid: u32,
    /// When that process started (see `process_start`): a recycled PID does not match it.
    #[serde(default)]
    pub pid_start: Option<u64>,
    /// The image's STOPSIGNAL (`gcr stop` sends it; SIGTERM otherwise).
    #[serde(default)]
    pub stop_signal: Option<String>,
    /// Started with --rm: removed once it has ended.
    #[serde(default)]
    pub remove: bool,
    /// `-u` or the image's USER: `gcr exec` runs as it too.
    #[serde(default)]
    pub user: Option<String>,
    /// Started with --init (`gcr start` starts it the same way).
    #[serde(default)]
    pub init: bool,
    /// When it was last started (`created` if never restarted).
    #[serde(default)]
    pub started: Option<String>,
    /// `--restart` policy (none: no).
    #[serde(default)]
    pub restart: Option<String>,
    /// How often the restart policy ran it again.
    #[serde(default)]
    pub restarts: u32,
    /// `--network` as resolved: bridge, slirp4netns, host or none (older records: none).
    #[serde(default)]
    pub network: Option<String>,
    /// Published ports (`-p`, `-P`).
    #[serde(default)]
    pub ports: Vec<PublishedPort>,
    /// `--add-host` lines (name, address).
    #[serde(default)]
    pub extra_hosts: Vec<(String, String)>,
    /// `--stop-timeout`: what `gcr stop` waits without -t (default 10 s).
    #[serde(default)]
    pub stop_timeout: Option<u64>,
    /// Names it has on its user network beside its name (`--network-alias`).
    #[serde(default)]
    pub network_aliases: Vec<String>,
    /// `--ip`: its address on its user network.
    #[serde(default)]
    pub ip: Option<String>,
    /// Its anonymous volumes (`-v /data`, the image's VOLUMEs): removed with it by `rm -v`
    /// and `--rm`.
    #[serde(default)]
    pub anonymous_volumes: Vec<String>,
    /// Its stdin kept open (`-i`, OpenStdin): `start` runs it so again.
    #[serde(default)]
    pub stdin: bool,
    /// `--label` values.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// `--group-add` values.
    #[serde(default)]
    pub group_add: Vec<String>,
    /// `--dns`, `--dns-search`, `--dns-option`.
    #[serde(default)]
    pub dns: Vec<String>,
    #[serde(default)]
    pub dns_search: Vec<String>,
    #[serde(default)]
    pub dns_options: Vec<String>,
    /// Its volumes and binds as mounted (for `--volumes-from`).
    #[serde(default)]
    pub volumes: Vec<crate::options::Volume>,
    /// Its healthcheck (the image's with `--health-*` over it); None: no check.
    #[serde(default)]
    pub health: Option<crate::health::HealthConfig>,
    /// `--log-driver`, `--log-opt` (older records: json-file, unbounded).
    #[serde(default)]
    pub log_config: Option<crate::logconfig::LogConfig>,
    /// Its cgroup limits as last set (create, `update`): what inspect shows.
    #[serde(default)]
    pub resources: crate::options::Resources,
    /// `--device` mappings.
    #[serde(default)]
    pub devices: Vec<crate::limits::DeviceMapping>,
    /// `--device-cgroup-rule` values, as given.
    #[serde(default)]
    pub device_cgroup_rules: Vec<String>,
    /// `--cgroup-parent`.
    #[serde(default)]
    pub cgroup_parent: Option<String>,
}

/// A container port published on the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishedPort {
    pub host_ip: String,
    pub host_port: u16,
    pub container_port: u16,
    /// `tcp` or `udp` (older records: tcp).
    #[serde(default = "tcp")]
    pub protocol: String,
}

fn tcp() -> String {
    "tcp".to_string()
}

impl PublishedPort {
    pub fn is_udp(&self) -> bool {
        self.protocol == "udp"
    }

    /// Docker's key of the port: `80/tcp`, `53/udp`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.container_port, self.protocol)
    }
}

impl std::fmt::Display for PublishedPort {
    /// Docker's `0.0.0.0:8080->80/tcp`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ip = if self.host_ip.contains(':') {
            format!("[{}]", self.host_ip)
        } else {
            self.host_ip.clone()
        };
        write!(f, "{ip}:{}->{}", self.host_port, self.key())
    }
}

impl ContainerMeta {
    /// Its logging driver and options.
    pub fn log_config(&self) -> crate::logconfig::LogConfig {
        self.log_config.clone().unwrap_or_default()
    }

    /// Records this process as the container's owner (`gcr run` or its supervisor).
    pub fn owned_by_this_process(&mut self) {
        self.pid = std::process::id();
        self.pid_start = gcr_runtime::process_start(self.pid);
    }

    /// Whether the owner recorded is still the same live process.
    pub fn owner_alive(&self) -> bool {
        process_alive(self.pid, self.pid_start)
    }
}

/// Whether `pid` is the process that started at `start` (records without a start time, from
/// older gcr versions, only check that the PID exists).
pub fn process_alive(pid: u32, start: Option<u64>) -> bool {
    if pid == 0 {
        return false;
    }
    // A zombie (killed, not yet reaped by whoever adopted it) is gone for our purposes.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    if matches!(state, None | Some("Z") | Some("X")) {
        return false;
    }
    match start {
        Some(start) => gcr_runtime::process_start(pid) == Some(start),
        None => true,
    }
}

/// True once the owner recorded in `meta` is gone (false after `timeout`).
pub(crate) fn wait_gone(meta: &ContainerMeta, timeout: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while meta.owner_alive() {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    true
}

/// The file names of a record.
pub(crate) const META: &str = "meta.json";
pub(crate) const EXIT: &str = "exit-status";
pub(crate) const PID: &str = "pid";
pub(crate) const LOG: &str = "container.log";
/// With the none driver: the output only attached readers see (`docker run` attaches),
/// capped at [`ATTACH_ONLY_CAP`] in one file, never shown by `logs`.
pub(crate) const ATTACH_ONLY_LOG: &str = "attach.log";
pub(crate) const ATTACH_ONLY_CAP: u64 = 1_000_000;
pub(crate) const SPEC: &str = "config.json";
pub(crate) const IMAGE: &str = "image";
/// The container's address on its private network (written by the runtime).
pub(crate) const ADDRESS: &str = "address";
/// The FIFO an attached client writes the container's stdin into (`attach_stdin`).
pub(crate) const STDIN_FIFO: &str = "stdin";
/// Marks a container made by `gcr create` that has not run yet.
pub(crate) const CREATED: &str = "created";
/// Marks a container stopped by hand (`stop`, `kill`): its restart policy leaves it stopped.
pub(crate) const STOPPED: &str = "stopped-by-user";
/// Marks a container `rm -f` is taking down.
pub(crate) const REMOVING: &str = "removing";
/// Marks a container whose processes are frozen (written by `pause`).
pub(crate) const PAUSED: &str = "paused";

/// The current time as records store it.
pub(crate) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// Where the runtime records the container's PID 1 while it runs.
pub fn pid_file(dir: &Path) -> PathBuf {
    dir.join(PID)
}

/// The container's output (detached, or kept in the foreground), for `gcr logs`.
pub fn log_file(dir: &Path) -> PathBuf {
    dir.join(LOG)
}

/// Where the supervisor writes the container's output and how it rotates it (the log; with
/// the none driver, the attach-only file).
pub(crate) fn output_file(
    dir: &Path,
    meta: &ContainerMeta,
) -> crate::Result<(PathBuf, crate::logconfig::Rotation)> {
    let config = meta.log_config();
    if config.keeps_log() {
        Ok((dir.join(LOG), config.rotation()?))
    } else {
        let rotation = crate::logconfig::Rotation {
            max_size: Some(ATTACH_ONLY_CAP),
            max_files: 1,
        };
        Ok((dir.join(ATTACH_ONLY_LOG), rotation))
    }
}

/// Writes a record file whole or not at all: `ps`, `wait` and `inspect` read these while the
/// supervisor rewrites them, and a truncated file would read as a container with no name.
pub(crate) fn replace_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("record");
    let tmp = path.with_file_name(format!(".{name}.{}", std::process::id()));
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Records the container's OCI runtime spec (`config.json`).
pub fn write_spec(dir: &Path, spec: &gcr_runtime::Spec) -> Result<()> {
    let path = dir.join(SPEC);
    let text = serde_json::to_vec(spec).map_err(|source| ContainerError::Json {
        path: path.clone(),
        source,
    })?;
    replace_file(&path, &text).map_err(|e| ContainerError::io("write", path, e))
}

/// The container's OCI runtime spec as recorded.
pub fn read_spec(dir: &Path) -> Result<gcr_runtime::Spec> {
    let path = dir.join(SPEC);
    let bytes = std::fs::read(&path).map_err(|e| ContainerError::io("read", &path, e))?;
    serde_json::from_slice(&bytes).map_err(|source| ContainerError::Json { path, source })
}

/// Records the container's metadata (no fsync: it describes a live process).
pub fn write_meta(dir: &Path, meta: &ContainerMeta) -> Result<()> {
    let path = dir.join(META);
    let text = serde_json::to_vec(meta).map_err(|source| ContainerError::Json {
        path: path.clone(),
        source,
    })?;
    replace_file(&path, &text).map_err(|e| ContainerError::io("write", path, e))
}

/// A container's metadata (empty when unreadable).
pub fn read_meta(dir: &Path) -> ContainerMeta {
    std::fs::read(dir.join(META))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Records the exit status of a container that ended.
pub(crate) fn write_exit_status(dir: &Path, code: i32) {
    if let Err(err) = replace_file(&dir.join(EXIT), code.to_string().as_bytes()) {
        tracing::warn!(%err, dir = %dir.display(), "cannot record the exit status");
    }
}

/// Counts a restart in the container's record.
pub(crate) fn record_restart(dir: &Path, restarts: u32) {
    let mut meta = read_meta(dir);
    meta.restarts = restarts;
    meta.started = Some(now());
    if let Err(err) = write_meta(dir, &meta) {
        tracing::warn!(%err, "cannot record the restart");
    }
}

/// Sets a marker file of the record (`CREATED`, `STOPPED`, ...).
pub(crate) fn mark(dir: &Path, marker: &str) -> Result<()> {
    let path = dir.join(marker);
    std::fs::write(&path, b"").map_err(|e| ContainerError::io("write", path, e))
}

pub(crate) fn has_mark(dir: &Path, marker: &str) -> bool {
    dir.join(marker).exists()
}

pub(crate) fn clear_mark(dir: &Path, marker: &str) {
    let _ = std::fs::remove_file(dir.join(marker));
}
