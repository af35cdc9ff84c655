//! HEALTHCHECK as Docker runs it: the image's check (or `--health-*`'s) runs in the container
//! every interval while it runs; after `retries` failures in a row it is unhealthy, one
//! success makes it healthy, and failures in the start period do not count. There is no
//! daemon: while the container runs, its supervisor keeps a monitor process (a worker,
//! [`Job::HealthMonitor`](crate::worker::Job)) that runs each probe as an exec in a further
//! worker and records the result in the container's `health.json`, which `ps` and `inspect`
//! read.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::container::Container;
use crate::error::{ContainerError, Result};
use crate::record;

/// Docker's defaults (daemon/health.go).
const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_START_INTERVAL: Duration = Duration::from_secs(5);
const DEFAULT_RETRIES: u32 = 3;
/// Docker keeps the last five results, each with at most 4 KiB of output.
const KEPT_RESULTS: usize = 5;
const MAX_OUTPUT: usize = 4096;

/// The record file holding the health state.
const HEALTH_FILE: &str = "health.json";

/// A healthcheck as the image config, the API and the container record write it (durations
/// in nanoseconds; 0 means "inherit", then Docker's default).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthConfig {
    /// `["CMD", args...]`, `["CMD-SHELL", command]`, `["NONE"]`, or empty (inherit).
    #[serde(default, deserialize_with = "null_as_default")]
    pub test: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub interval: i64,
    #[serde(default, deserialize_with = "null_as_default")]
    pub timeout: i64,
    #[serde(default, deserialize_with = "null_as_default")]
    pub start_period: i64,
    #[serde(default, deserialize_with = "null_as_default")]
    pub start_interval: i64,
    #[serde(default, deserialize_with = "null_as_default")]
    pub retries: i64,
}

/// Clients send `null` for fields they leave out (docker-compose does).
fn null_as_default<'de, D, T>(deserializer: D) -> std::result::Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

impl HealthConfig {
    /// The image config's `config.Healthcheck`.
    pub fn of_image(config: &serde_json::Value) -> Option<HealthConfig> {
        let value = config.get("config")?.get("Healthcheck")?;
        serde_json::from_value(value.clone()).ok()
    }

    /// Whether it disables the check (`HEALTHCHECK NONE`, `--no-healthcheck`).
    pub fn is_none(&self) -> bool {
        self.test.first().map(String::as_str) == Some("NONE")
    }

    /// `over` on top of the image's check, as Docker merges them: a test and each non-zero
    /// field of `over` win. None when no check is left.
    pub fn merged(
        image: Option<&HealthConfig>,
        over: Option<&HealthConfig>,
    ) -> Option<HealthConfig> {
        let mut merged = image.cloned().unwrap_or_default();
        if let Some(over) = over {
            if !over.test.is_empty() {
                merged.test = over.test.clone();
            }
            for (field, value) in [
                (&mut merged.interval, over.interval),
                (&mut merged.timeout, over.timeout),
                (&mut merged.start_period, over.start_period),
                (&mut merged.start_interval, over.start_interval),
                (&mut merged.retries, over.retries),
            ] {
                if value != 0 {
                    *field = value;
                }
            }
        }
        (!merged.test.is_empty() && !merged.is_none()).then_some(merged)
    }

    /// Checks what a user gave (flags, API): a known test form, no negative durations.
    pub fn validate(&self) -> Result<()> {
        match self.test.first().map(String::as_str) {
            None | Some("NONE") => {}
            Some("CMD") | Some("CMD-SHELL") if self.test.len() > 1 => {}
            Some(other) => {
                return Err(ContainerError::invalid(format!(
                    "invalid healthcheck test {:?}: use [\"CMD\", args...], [\"CMD-SHELL\", command] or [\"NONE\"]{}",
                    self.test,
                    if other == "CMD" || other == "CMD-SHELL" { " with a command" } else { "" }
                )))
            }
        }
        for (name, value, least) in [
            ("interval", self.interval, 1_000_000),
            ("timeout", self.timeout, 1_000_000),
            ("start period", self.start_period, 0),
            ("start interval", self.start_interval, 1_000_000),
        ] {
            if value < 0 || (value != 0 && value < least) {
                return Err(ContainerError::invalid(format!(
                    "healthcheck {name} must be at least 1ms (or 0 for the default)"
                )));
            }
        }
        if self.retries < 0 {
            return Err(ContainerError::invalid(
                "healthcheck retries must not be negative",
            ));
        }
        Ok(())
    }

    fn duration(nanos: i64, default: Duration) -> Duration {
        if nanos > 0 {
            Duration::from_nanos(nanos as u64)
        } else {
            default
        }
    }

    pub fn interval(&self) -> Duration {
        Self::duration(self.interval, DEFAULT_INTERVAL)
    }

    pub fn timeout(&self) -> Duration {
        Self::duration(self.timeout, DEFAULT_TIMEOUT)
    }

    pub fn start_period(&self) -> Duration {
        Self::duration(self.start_period, Duration::ZERO)
    }

    pub fn start_interval(&self) -> Duration {
        Self::duration(self.start_interval, DEFAULT_START_INTERVAL)
    }

    pub fn retries(&self) -> u32 {
        if self.retries > 0 {
            self.retries as u32
        } else {
            DEFAULT_RETRIES
        }
    }

    /// The command a probe runs (CMD-SHELL through /bin/sh -c, as Docker's default shell).
    fn command(&self) -> Vec<String> {
        match self.test.split_first() {
            Some((kind, rest)) if kind == "CMD-SHELL" => {
                vec!["/bin/sh".into(), "-c".into(), rest.join(" ")]
            }
            Some((_, rest)) => rest.to_vec(),
            None => Vec::new(),
        }
    }
}

/// Docker's `State.Health`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthState {
    /// `starting`, `healthy` or `unhealthy`.
    pub status: String,
    pub failing_streak: u32,
    pub log: Vec<ProbeResult>,
}

/// One probe, as Docker's `State.Health.Log` entries.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProbeResult {
    pub start: String,
    pub end: String,
    /// 0 healthy; -1 when it timed out or could not run.
    pub exit_code: i32,
    pub output: String,
}

/// The container's health state, if it has a check and it ever started.
pub fn state(dir: &Path) -> Option<HealthState> {
    let bytes = std::fs::read(dir.join(HEALTH_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Updates the state under a lock of the record (the monitor and `healthcheck run` may both
/// write), returning the new state.
fn update(dir: &Path, change: impl FnOnce(&mut HealthState)) -> Result<HealthState> {
    let lock_path = dir.join(".health.lock");
    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| ContainerError::io("open", &lock_path, e))?;
    let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive).map_err(
        |(_, source)| ContainerError::Sys {
            action: "lock the container's health state",
            source,
        },
    )?;
    let mut health = state(dir).unwrap_or_default();
    change(&mut health);
    let path = dir.join(HEALTH_FILE);
    let text = serde_json::to_vec(&health).map_err(|source| ContainerError::Json {
        path: path.clone(),
        source,
    })?;
    record::replace_file(&path, &text).map_err(|e| ContainerError::io("write", path, e))?;
    Ok(health)
}

/// A (re)started container's health is `starting` again; its earlier results stay.
pub(crate) fn reset(dir: &Path) {
    if let Err(err) = update(dir, |h| {
        h.status = "starting".into();
        h.failing_streak = 0;
    }) {
        tracing::warn!(%err, "cannot reset the container's health state");
    }
}

/// Runs the container's check once and records the result (`gcr healthcheck run`, and each
/// tick of the monitor). `exe` is the gcr binary (probes run in a worker). `counts` is false
/// during the start period: a failure then does not add to the streak.
pub fn check_now(
    store: &gcr_storage::Store,
    c: &Container,
    exe: &Path,
    counts: bool,
) -> Result<HealthState> {
    let config = c.meta.health.clone().ok_or_else(|| {
        ContainerError::invalid(format!(
            "container {} has no healthcheck (give --health-cmd, or use an image with HEALTHCHECK)",
            c.display_name()
        ))
    })?;
    if !c.alive() {
        return Err(ContainerError::NotRunning(c.display_name()));
    }
    let result = probe(store, c, exe, &config)?;
    let healthy = result.exit_code == 0;
    let before = state(&c.dir).map(|h| h.status);
    let after = update(&c.dir, |h| {
        if healthy {
            h.failing_streak = 0;
            h.status = "healthy".into();
        } else if counts {
            h.failing_streak += 1;
            if h.failing_streak >= config.retries() {
                h.status = "unhealthy".into();
            }
        }
        if h.status.is_empty() {
            h.status = "starting".into();
        }
        h.log.push(result);
        let extra = h.log.len().saturating_sub(KEPT_RESULTS);
        h.log.drain(..extra);
    })?;
    if before.as_deref() != Some(after.status.as_str()) && after.status != "starting" {
        let action = format!("health_status: {}", after.status);
        crate::events::container_event(store, &c.id, &c.meta, &action, &[]);
    }
    Ok(after)
}

/// Runs one probe as an exec in a worker, its output (stdout and stderr as one stream, as
/// Docker keeps it) captured.
fn probe(
    store: &gcr_storage::Store,
    c: &Container,
    exe: &Path,
    config: &HealthConfig,
) -> Result<ProbeResult> {
    let start = record::now();
    let timeout = config.timeout();
    let answer_file = c.dir.join(format!(".health-probe.{}", std::process::id()));
    let job = crate::worker::Job::Exec {
        container: c.id.clone(),
        request: crate::exec::ExecRequest {
            command: config.command(),
            timeout_ms: Some(timeout.as_millis().max(1) as u64),
            ..Default::default()
        },
        answer_file: answer_file.clone(),
    };
    let (read_end, write_end) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|source| ContainerError::Sys {
            action: "make a pipe for the healthcheck's output",
            source,
        })?;
    let write_copy = write_end
        .try_clone()
        .map_err(|e| ContainerError::io("duplicate", "the healthcheck's pipe", e))?;
    let began = Instant::now();
    let mut child = crate::worker::command(exe, &store_root(store), &job)?
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::from(write_end))
        .stderr(std::process::Stdio::from(write_copy))
        .spawn()
        .map_err(|e| ContainerError::io("start the healthcheck worker", exe, e))?;
    // Read to the end (all writers gone), keeping the first 4 KiB.
    let mut output = Vec::new();
    let mut reader = std::fs::File::from(read_end);
    let mut buf = [0u8; 8192];
    while let Ok(n) = reader.read(&mut buf) {
        if n == 0 {
            break;
        }
        let room = MAX_OUTPUT.saturating_sub(output.len());
        output.extend_from_slice(&buf[..n.min(room)]);
    }
    let _ = child.wait();
    let elapsed = began.elapsed();
    let answered = crate::worker::exec_answer(&answer_file);
    let _ = std::fs::remove_file(&answer_file);
    let mut output = String::from_utf8_lossy(&output).into_owned();
    let exit_code = match answered {
        Ok(137) if elapsed >= timeout => {
            output = format!("Health check exceeded timeout ({})", go_duration(timeout));
            -1
        }
        Ok(code) => code,
        Err(err) => {
            output = format!("cannot run the healthcheck: {err}");
            -1
        }
    };
    Ok(ProbeResult {
        start,
        end: record::now(),
        exit_code,
        output,
    })
}

fn store_root(store: &gcr_storage::Store) -> PathBuf {
    store.root().to_path_buf()
}

/// Go's way of writing a duration (`30s`, `1m30s`, `500ms`), as Docker's messages show it.
fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (minutes, seconds) = (d.as_secs() / 60, d.as_secs_f64() % 60.0);
    let seconds = format!("{seconds}").trim_end_matches(".0").to_string();
    match minutes {
        0 => format!("{seconds}s"),
        m if m < 60 => format!("{m}m{seconds}s"),
        m => format!("{}h{}m{seconds}s", m / 60, m % 60),
    }
}

/// The monitor's loop (in a worker the supervisor starts with each run of the container):
/// the first probe one interval after the start (the start interval during the start
/// period), then every interval, until the container is no longer running.
pub(crate) fn monitor(store: &gcr_storage::Store, container: &str, exe: &Path) -> Result<()> {
    let began = Instant::now();
    // The supervisor starts the monitor just before the container: wait for it to run.
    let mut c = crate::container::lookup(store, container)?;
    while !c.alive() {
        if began.elapsed() > Duration::from_secs(60) || c.exit_code().is_some() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
        c = crate::container::lookup(store, container)?;
    }
    let config = match c.meta.health.clone() {
        Some(config) => config,
        None => return Ok(()),
    };
    let started = Instant::now();
    loop {
        let in_start_period = started.elapsed() < config.start_period();
        let wait = if in_start_period {
            config.start_interval()
        } else {
            config.interval()
        };
        let until = Instant::now() + wait;
        while Instant::now() < until {
            std::thread::sleep((until - Instant::now()).min(Duration::from_millis(200)));
            if !still_running(store, container) {
                return Ok(());
            }
        }
        let c = match crate::container::lookup(store, container) {
            Ok(c) if c.alive() => c,
            _ => return Ok(()),
        };
        if c.state() == crate::container::State::Paused {
            continue;
        }
        let counts = started.elapsed() >= config.start_period();
        if let Err(err) = check_now(store, &c, exe, counts) {
            tracing::debug!(%err, "healthcheck probe failed to run");
        }
    }
}

fn still_running(store: &gcr_storage::Store, container: &str) -> bool {
    crate::container::lookup(store, container).is_ok_and(|c| c.alive())
}

/// Starts the monitor for a run of the container (a worker of the gcr binary this process
/// runs); None when the container has no check.
pub(crate) fn start_monitor(
    store: &gcr_storage::Store,
    id: &str,
    dir: &Path,
    config: Option<&HealthConfig>,
) -> Option<std::process::Child> {
    config?;
    reset(dir);
    let exe = std::env::current_exe().ok()?;
    let job = crate::worker::Job::HealthMonitor {
        container: id.to_string(),
    };
    let spawned = crate::worker::command(&exe, &store_root(store), &job).and_then(|mut command| {
        command
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| ContainerError::io("start the healthcheck monitor", &exe, e))
    });
    match spawned {
        Ok(child) => Some(child),
        Err(err) => {
            tracing::warn!(%err, "the container's healthcheck will not run");
            None
        }
    }
}

/// Ends a run's monitor.
pub(crate) fn stop_monitor(monitor: Option<std::process::Child>) {
    if let Some(mut child) = monitor {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Docker's `ps` suffix: ` (healthy)`, ` (unhealthy)`, ` (health: starting)`.
pub fn status_suffix(dir: &Path) -> String {
    match state(dir).map(|h| h.status) {
        Some(s) if s == "starting" => " (health: starting)".into(),
        Some(s) if !s.is_empty() => format!(" ({s})"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_images_check_field_by_field() {
        let image = HealthConfig {
            test: vec!["CMD-SHELL".into(), "true".into()],
            interval: 5_000_000_000,
            retries: 2,
            ..Default::default()
        };
        let over = HealthConfig {
            timeout: 1_000_000_000,
            ..Default::default()
        };
        let merged = HealthConfig::merged(Some(&image), Some(&over)).unwrap();
        assert_eq!(merged.test, image.test);
        assert_eq!(merged.interval(), Duration::from_secs(5));
        assert_eq!(merged.timeout(), Duration::from_secs(1));
        assert_eq!(merged.retries(), 2);
        let none = HealthConfig {
            test: vec!["NONE".into()],
            ..Default::default()
        };
        assert_eq!(HealthConfig::merged(Some(&image), Some(&none)), None);
        assert_eq!(HealthConfig::merged(None, None), None);
        assert_eq!(merged.command(), vec!["/bin/sh", "-c", "true"]);
    }

    #[test]
    fn bad_checks_are_refused() {
        let bad = HealthConfig {
            test: vec!["CMD".into()],
            ..Default::default()
        };
        assert!(bad.validate().is_err());
        let negative = HealthConfig {
            test: vec!["CMD", "true"].into_iter().map(String::from).collect(),
            interval: -1,
            ..Default::default()
        };
        assert!(negative.validate().is_err());
        let from_compose: HealthConfig =
            serde_json::from_str(r#"{"Test":["CMD","true"],"Interval":1000000000,"Timeout":null}"#)
                .unwrap();
        assert_eq!(from_compose.timeout, 0);
    }

    #[test]
    fn durations_read_as_go_writes_them() {
        assert_eq!(go_duration(Duration::from_secs(30)), "30s");
        assert_eq!(go_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(go_duration(Duration::from_secs(90)), "1m30s");
    }
}
