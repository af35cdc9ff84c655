//! `gcr ps` and `gcr rm`: the containers `gcr run` recorded. There is no daemon: a container is
//! running while the `gcr run` process that owns it lives; its exit status is written when it
//! ends.

use std::os::fd::AsFd as _;
use std::path::Path;

use anyhow::{bail, Context as _};
use clap::Args;
use serde::{Deserialize, Serialize};

use crate::format::{human_age, short_id, table};
use crate::Context;

/// What `gcr run` records about a container (containers/<id>/meta.json).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ContainerMeta {
    pub name: Option<String>,
    pub image: String,
    pub command: Vec<String>,
    pub created: String,
    /// The `gcr run` process that owns the container.
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
}

/// A container port published on the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishedPort {
    pub host_ip: String,
    pub host_port: u16,
    pub container_port: u16,
}

impl std::fmt::Display for PublishedPort {
    /// Docker's `0.0.0.0:8080->80/tcp`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ip = if self.host_ip.contains(':') {
            format!("[{}]", self.host_ip)
        } else {
            self.host_ip.clone()
        };
        write!(f, "{ip}:{}->{}/tcp", self.host_port, self.container_port)
    }
}

/// The runtime's network options for a container.
pub fn network_options(
    choice: crate::run::NetworkChoice,
    ports: &[PublishedPort],
) -> anyhow::Result<gcr_runtime::NetworkOptions> {
    let private = match choice {
        crate::run::NetworkChoice::Private(kind) => Some(kind),
        _ => None,
    };
    let ports = ports
        .iter()
        .map(|p| {
            Ok(gcr_runtime::PortMapping {
                host_ip: p
                    .host_ip
                    .parse()
                    .with_context(|| format!("bad recorded host address {}", p.host_ip))?,
                host_port: p.host_port,
                container_port: p.container_port,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(gcr_runtime::NetworkOptions { private, ports })
}

impl ContainerMeta {
    /// Records this process as the container's owner (`gcr run` or its supervisor).
    pub fn owned_by_this_process(&mut self) {
        self.pid = std::process::id();
        self.pid_start = process_start(self.pid);
    }

    /// Whether the owner recorded is still the same live process.
    fn owner_alive(&self) -> bool {
        process_alive(self.pid, self.pid_start)
    }
}

/// When the process `pid` started (the runtime reads /proc/PID/stat): with the PID it names
/// one process, even after the PID is used again.
pub use gcr_runtime::process_start;

/// Whether `pid` is the process that started at `start` (records without a start time, from
/// older gcr versions, only check that the PID exists).
fn process_alive(pid: u32, start: Option<u64>) -> bool {
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
        Some(start) => process_start(pid) == Some(start),
        None => true,
    }
}

const META: &str = "meta.json";
const EXIT: &str = "exit-status";
const PID: &str = "pid";
const LOG: &str = "container.log";
const SPEC: &str = "config.json";
/// Marks a container made by `gcr create` that has not run yet.
pub const CREATED: &str = "created";
/// Marks a container stopped by hand (`stop`, `kill`): its restart policy leaves it stopped.
pub const STOPPED: &str = "stopped-by-user";

/// Counts a restart in the container's record.
pub fn record_restart(dir: &Path, restarts: u32) {
    let mut meta = meta_of(dir);
    meta.restarts = restarts;
    meta.started = Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true));
    if let Err(err) = write_meta(dir, &meta) {
        tracing::warn!(%err, "cannot record the restart");
    }
}

fn mark_stopped(dir: &Path) {
    let _ = std::fs::write(dir.join(STOPPED), b"");
}

/// Where the runtime records the container's PID 1 while it runs.
pub fn pid_file(dir: &Path) -> std::path::PathBuf {
    dir.join(PID)
}

/// Records the container's OCI runtime spec (`config.json`).
pub fn write_spec(dir: &Path, spec: &gcr_runtime::Spec) -> anyhow::Result<()> {
    let path = dir.join(SPEC);
    let text = serde_json::to_vec(spec)?;
    replace_file(&path, &text).with_context(|| format!("cannot write {}", path.display()))
}

/// Writes a record file whole or not at all: `ps`, `wait` and `inspect` read these while the
/// supervisor rewrites them, and a truncated file would read as a container with no name.
fn replace_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
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

/// The output of a detached container (`gcr run -d`), for `gcr logs`.
pub fn log_file(dir: &Path) -> std::path::PathBuf {
    dir.join(LOG)
}

/// Records the container's metadata (no fsync: it describes a live process).
pub fn write_meta(dir: &Path, meta: &ContainerMeta) -> anyhow::Result<()> {
    let text = serde_json::to_vec(meta)?;
    replace_file(&dir.join(META), &text)
        .with_context(|| format!("cannot write {}", dir.join(META).display()))
}

/// Records the exit status of a kept container.
pub fn write_exit_status(dir: &Path, code: i32) {
    if let Err(err) = replace_file(&dir.join(EXIT), code.to_string().as_bytes()) {
        tracing::warn!(%err, dir = %dir.display(), "cannot record the exit status");
    }
}

#[derive(Debug, Clone)]
struct Container {
    id: String,
    dir: std::path::PathBuf,
    meta: ContainerMeta,
    /// None while running.
    exit: Option<Option<i32>>,
}

impl Container {
    fn running(&self) -> bool {
        self.exit.is_none()
    }

    /// Still running now (re-checked: the record was read a while ago).
    fn alive(&self) -> bool {
        !self.dir.join(EXIT).exists() && self.meta.owner_alive()
    }

    /// The container's PID 1, while it runs.
    fn container_pid(&self) -> Option<nix::unistd::Pid> {
        std::fs::read_to_string(pid_file(&self.dir))
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .filter(|p| *p > 0)
            .map(nix::unistd::Pid::from_raw)
    }

    fn display_name(&self) -> String {
        self.meta.name.clone().unwrap_or_else(|| short_id(&self.id))
    }

    /// Sends `signal` to the container's PID 1. Rootless, a sibling gcr may not signal a
    /// process of another user namespace whose uid differs from its own: then the signal
    /// goes through the container's `gcr run`, which forwards all but SIGKILL and SIGSTOP.
    fn signal(&self, signal: nix::sys::signal::Signal) -> anyhow::Result<()> {
        use nix::sys::signal::kill;
        // Only while the recorded owner is the same process: after a crash its PID (and the
        // container's) may belong to anything.
        if !self.meta.owner_alive() {
            bail!("container {} is not running", self.display_name());
        }
        let supervisor = nix::unistd::Pid::from_raw(self.meta.pid as i32);
        let direct = match self.container_pid() {
            Some(pid) => kill(pid, signal),
            None => Err(nix::errno::Errno::ESRCH),
        };
        match direct {
            Ok(()) => Ok(()),
            Err(_)
                if !matches!(
                    signal,
                    nix::sys::signal::Signal::SIGKILL | nix::sys::signal::Signal::SIGSTOP
                ) =>
            {
                kill(supervisor, signal)
                    .with_context(|| format!("cannot signal container {}", self.display_name()))
            }
            Err(_) => {
                // SIGKILL cannot be forwarded: kill the supervisor, whose death kills the
                // container (parent-death signal); record what it would have recorded.
                kill(supervisor, signal)
                    .with_context(|| format!("cannot kill container {}", self.display_name()))?;
                if wait_gone(&self.meta, std::time::Duration::from_secs(10)) {
                    let _ = std::fs::remove_file(pid_file(&self.dir));
                    write_exit_status(&self.dir, 128 + signal as i32);
                }
                Ok(())
            }
        }
    }

    fn status(&self) -> String {
        match self.exit {
            None => format!(
                "Up {}",
                human_age(Some(
                    self.meta.started.as_ref().unwrap_or(&self.meta.created)
                ))
                .trim_end_matches(" ago")
            ),
            Some(Some(code)) => format!("Exited ({code})"),
            Some(None) if self.dir.join(CREATED).exists() => "Created".to_string(),
            Some(None) => "Exited (unknown)".to_string(),
        }
    }
}

/// How many containers there are, and how many of them run.
pub fn counts(store: &gcr_storage::Store) -> anyhow::Result<(usize, usize)> {
    let all = load(store)?;
    let running = all.iter().filter(|c| c.running()).count();
    Ok((all.len(), running))
}

fn load(store: &gcr_storage::Store) -> anyhow::Result<Vec<Container>> {
    let mut out = Vec::new();
    for id in store.container_ids()? {
        let dir = store.container_dir(&id)?;
        let meta: ContainerMeta = std::fs::read(dir.join(META))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let exit = match std::fs::read_to_string(dir.join(EXIT)) {
            Ok(text) => Some(text.trim().parse().ok()),
            // No status yet: running while its gcr process lives.
            Err(_) if meta.owner_alive() => None,
            Err(_) => Some(None),
        };
        out.push(Container {
            id,
            dir,
            meta,
            exit,
        });
    }
    out.sort_by(|a, b| b.meta.created.cmp(&a.meta.created));
    Ok(out)
}

#[derive(Args, Debug)]
pub struct PsArgs {
    /// Show every container, not only running ones
    #[arg(short, long)]
    all: bool,
    /// Only show container IDs
    #[arg(short, long)]
    quiet: bool,
    /// Show full IDs and commands
    #[arg(long)]
    no_trunc: bool,
    /// Only containers matching: id=, name=, status=created|running|exited, ancestor=IMAGE,
    /// exited=CODE, label=KEY[=VALUE] (repeatable; different keys must all match)
    #[arg(short, long = "filter", value_name = "KEY=VALUE")]
    filter: Vec<String>,
    /// Show the N containers created last (all states)
    #[arg(short = 'n', long = "last", value_name = "N")]
    last: Option<usize>,
    /// Show the container created last (all states)
    #[arg(short, long)]
    latest: bool,
    /// table, json, or a Go template such as '{{.Names}}' or 'table {{.ID}}\t{{.Status}}'
    #[arg(long, default_value = "table")]
    format: String,
}

impl Container {
    /// `created`, `running` or `exited`, as Docker's State.
    fn state(&self) -> &'static str {
        match self.exit {
            None => "running",
            Some(None) if self.dir.join(CREATED).exists() => "created",
            Some(_) => "exited",
        }
    }
}

/// Whether `c` passes every `ps --filter` (values of one key: any may match).
fn passes_filters(c: &Container, filters: &[(String, String)]) -> bool {
    let keys: std::collections::BTreeSet<&str> = filters.iter().map(|(k, _)| k.as_str()).collect();
    keys.into_iter().all(|key| {
        filters
            .iter()
            .filter(|(k, _)| k == key)
            .any(|(_, value)| match key {
                "id" => c.id.starts_with(value.as_str()),
                // A regular expression, as Docker's (`^db$`), tried on the name with and
                // without Docker's leading slash; checked when the filters are parsed.
                "name" => c.meta.name.as_deref().is_some_and(|n| {
                    regex::Regex::new(value)
                        .is_ok_and(|re| re.is_match(n) || re.is_match(&format!("/{n}")))
                }),
                "status" => c.state() == value,
                "ancestor" => {
                    let normal = |n: &str| crate::images::normalize_name(n).ok();
                    let image_id = std::fs::read_to_string(c.dir.join("image")).unwrap_or_default();
                    let id = image_id.trim().trim_start_matches("sha256:");
                    c.meta.image == *value
                        || normal(&c.meta.image).is_some_and(|n| Some(n) == normal(value))
                        || (value.len() >= 4 && id.starts_with(value.trim_start_matches("sha256:")))
                }
                "exited" => matches!(c.exit, Some(Some(code)) if code.to_string() == *value),
                // label=KEY or label=KEY=VALUE
                "label" => match value.split_once('=') {
                    Some((k, v)) => c.meta.labels.get(k).is_some_and(|have| have == v),
                    None => c.meta.labels.contains_key(value.as_str()),
                },
                _ => false,
            })
    })
}

/// The filters given, checked against the keys `ps` knows.
fn parse_filters(given: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    given
        .iter()
        .map(|f| {
            let (key, value) = f
                .split_once('=')
                .with_context(|| format!("invalid filter {f:?}: use KEY=VALUE"))?;
            if !matches!(
                key,
                "id" | "name" | "status" | "ancestor" | "exited" | "label"
            ) {
                bail!("unknown filter {key:?}: use id, name, status, ancestor, exited or label");
            }
            if key == "name" {
                regex::Regex::new(value).with_context(|| {
                    format!("invalid name filter {value:?}: not a regular expression")
                })?;
            }
            if key == "status" && !matches!(value, "created" | "running" | "exited") {
                bail!("invalid status filter {value:?}: use created, running or exited");
            }
            Ok((key.to_string(), value.to_string()))
        })
        .collect()
}

pub fn ps(ctx: &Context, args: PsArgs) -> anyhow::Result<u8> {
    let filters = parse_filters(&args.filter)?;
    let format = crate::template::ListFormat::parse(&args.format)?;
    let store = ctx.open_store()?;
    let last = if args.latest { Some(1) } else { args.last };
    // Filters on state, -n and -l look at stopped containers too, as Docker's.
    let all =
        args.all || last.is_some() || filters.iter().any(|(k, _)| k == "status" || k == "exited");
    let mut shown: Vec<Container> = load(&store)?
        .into_iter()
        .filter(|c| all || c.running())
        .filter(|c| passes_filters(c, &filters))
        .collect();
    if let Some(n) = last {
        shown.truncate(n);
    }
    let id = |c: &Container| {
        if args.no_trunc {
            c.id.clone()
        } else {
            short_id(&c.id)
        }
    };
    if args.quiet {
        for c in &shown {
            println!("{}", id(c));
        }
        return Ok(0);
    }
    let command = |c: &Container| {
        let command = c.meta.command.join(" ");
        let command = if args.no_trunc || command.chars().count() <= 20 {
            command
        } else {
            format!("{}…", command.chars().take(19).collect::<String>())
        };
        format!("{command:?}")
    };
    if !matches!(format, crate::template::ListFormat::Table(None)) {
        let rows: Vec<serde_json::Value> = shown
            .iter()
            .map(|c| {
                serde_json::json!({
                    "ID": id(c),
                    "Image": c.meta.image,
                    "Command": command(c),
                    "CreatedAt": c.meta.created,
                    "RunningFor": human_age(Some(&c.meta.created)),
                    "Status": c.status(),
                    "State": c.state(),
                    "Names": c.meta.name.clone().unwrap_or_default(),
                    "Ports": c.meta.ports.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
                    "Mounts": "",
                    "Labels": c.meta.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
                    "Size": "",
                })
            })
            .collect();
        format.print(&rows, |field| match field {
            "ID" => "CONTAINER ID".into(),
            "RunningFor" => "CREATED".into(),
            "CreatedAt" => "CREATED AT".into(),
            other => other.to_uppercase(),
        })?;
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = shown
        .iter()
        .map(|c| {
            vec![
                id(c),
                c.meta.image.clone(),
                command(c),
                human_age(Some(&c.meta.created)),
                c.status(),
                c.meta
                    .ports
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                c.meta.name.clone().unwrap_or_default(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "CONTAINER ID",
                "IMAGE",
                "COMMAND",
                "CREATED",
                "STATUS",
                "PORTS",
                "NAMES"
            ],
            &rows
        )
    );
    Ok(0)
}

#[derive(Args, Debug)]
pub struct RmArgs {
    /// Kill a running container first
    #[arg(short, long)]
    force: bool,
    /// Also remove the container's anonymous volumes (gcr makes none: accepted for Docker's
    /// habit, named volumes stay)
    #[arg(short, long)]
    volumes: bool,
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

/// The container an ID, unique ID prefix or name means.
fn find<'a>(all: &'a [Container], wanted: &str) -> anyhow::Result<&'a Container> {
    if let Some(c) = all
        .iter()
        .find(|c| c.meta.name.as_deref() == Some(wanted) || c.id == wanted)
    {
        return Ok(c);
    }
    let matches: Vec<&Container> = all.iter().filter(|c| c.id.starts_with(wanted)).collect();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => bail!("no such container: {wanted} (see `gcr ps -a`)"),
        _ => bail!("container ID prefix {wanted} is ambiguous: give more of it"),
    }
}

pub fn rm(ctx: &Context, args: RmArgs) -> anyhow::Result<u8> {
    let store = ctx.open_store()?;
    let all = load(&store)?;
    let mut failed = false;
    for wanted in &args.containers {
        let result = (|| -> anyhow::Result<()> {
            let c = match find(&all, wanted) {
                Ok(c) => c,
                // As Docker: removing what is not there with -f is not an error.
                Err(_) if args.force => return Ok(()),
                Err(e) => return Err(e),
            };
            if c.running() {
                if !args.force {
                    bail!(
                        "container {} is running: stop its `gcr run` (pid {}) or use -f",
                        short_id(&c.id),
                        c.meta.pid
                    );
                }
                // Marked first, so that a restart policy does not run it again; killed at
                // PID 1, the container's `gcr run` sees it end and cleans up (its cgroups);
                // failing that, the supervisor goes and takes the container along.
                mark_stopped(&c.dir);
                if c.alive() {
                    c.signal(nix::sys::signal::Signal::SIGKILL)?;
                }
                if !wait_gone(&c.meta, std::time::Duration::from_secs(10)) && c.meta.owner_alive() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(c.meta.pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                    wait_gone(&c.meta, std::time::Duration::from_secs(10));
                }
            }
            store.unregister_container(&c.id)?;
            println!("{}", c.meta.name.clone().unwrap_or_else(|| c.id.clone()));
            Ok(())
        })();
        if let Err(err) = result {
            eprintln!("error: {}", crate::format::error_chain(&err));
            failed = true;
        }
    }
    Ok(if failed { 1 } else { 0 })
}

/// Refuses a `--name` another container already has, as Docker does.
/// Held while a name is checked and then recorded, so that two `gcr run --name x` at once
/// cannot both take it.
pub struct NameLock(#[allow(dead_code)] nix::fcntl::Flock<std::fs::File>);

impl NameLock {
    pub fn take(store: &gcr_storage::Store) -> anyhow::Result<NameLock> {
        let path = store.root().join("container-names.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map(NameLock)
            .map_err(|(_, e)| anyhow::anyhow!("cannot lock {}: {e}", path.display()))
    }
}

pub fn ensure_name_free(store: &gcr_storage::Store, name: &str) -> anyhow::Result<()> {
    if let Some(c) = load(store)?
        .iter()
        .find(|c| c.meta.name.as_deref() == Some(name))
    {
        bail!(
            "the name {name:?} is already used by container {}: remove it (`gcr rm {name}`) or choose another",
            short_id(&c.id)
        );
    }
    Ok(())
}

/// Removes every container that is not running (for `system prune`); returns their IDs.
pub fn remove_stopped(store: &gcr_storage::Store) -> anyhow::Result<Vec<String>> {
    let mut removed = Vec::new();
    for c in load(store)? {
        if !c.running() {
            store.unregister_container(&c.id)?;
            removed.push(c.id);
        }
    }
    Ok(removed)
}

/// True once process `pid` is gone (or after `timeout`: false).
fn wait_gone(meta: &ContainerMeta, timeout: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while meta.owner_alive() {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    true
}

/// `SIGTERM`, `TERM` or `15`.
pub(crate) fn parse_signal(text: &str) -> anyhow::Result<nix::sys::signal::Signal> {
    use std::str::FromStr as _;
    let upper = text.trim().to_ascii_uppercase();
    let parsed = match upper.parse::<i32>() {
        Ok(n) => nix::sys::signal::Signal::try_from(n).ok(),
        Err(_) => {
            let name = if upper.starts_with("SIG") {
                upper.clone()
            } else {
                format!("SIG{upper}")
            };
            nix::sys::signal::Signal::from_str(&name).ok()
        }
    };
    parsed.with_context(|| {
        format!("unknown signal {text:?}: give a name such as SIGTERM or a number")
    })
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Keep printing new output until the container ends
    #[arg(short, long)]
    follow: bool,
    /// Only the last N lines ("all" for everything)
    #[arg(short = 'n', long, value_name = "N", default_value = "all")]
    tail: String,
    #[arg(value_name = "CONTAINER")]
    container: String,
}

/// `gcr logs`: what a detached container (`gcr run -d`) wrote to stdout and stderr.
pub fn logs(ctx: &Context, args: LogsArgs) -> anyhow::Result<u8> {
    use std::io::{Read as _, Seek as _, Write as _};
    let store = ctx.open_store()?;
    let all = load(&store)?;
    let c = find(&all, &args.container)?;
    let path = log_file(&c.dir);
    let mut file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "container {} has no logs: containers run with --rm or -t in the foreground keep no output",
            c.display_name()
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut text = Vec::new();
    file.read_to_end(&mut text)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let shown: Vec<u8> = match args.tail.as_str() {
        "all" | "-1" => text.clone(),
        n => {
            let n: usize = n
                .parse()
                .with_context(|| format!("invalid --tail {n:?}: give a number or all"))?;
            let lines: Vec<&[u8]> = text.split_inclusive(|b| *b == b'\n').collect();
            lines[lines.len().saturating_sub(n)..].concat()
        }
    };
    let mut out = std::io::stdout().lock();
    out.write_all(&shown)?;
    out.flush()?;
    if !args.follow {
        return Ok(0);
    }
    let mut offset = text.len() as u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let running = c.alive();
        file.seek(std::io::SeekFrom::Start(offset))?;
        let n = file.read(&mut buf)?;
        if n > 0 {
            out.write_all(&buf[..n])?;
            out.flush()?;
            offset += n as u64;
            continue;
        }
        if !running {
            return Ok(0);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

const ATTACHED: &str = "attached.";

/// `attached.PID` in the container's directory while a `gcr attach` reads it.
struct AttachMark(std::path::PathBuf);

impl AttachMark {
    fn new(dir: &Path) -> anyhow::Result<AttachMark> {
        let path = dir.join(format!("{ATTACHED}{}", std::process::id()));
        std::fs::write(&path, b"").with_context(|| format!("cannot write {}", path.display()))?;
        Ok(AttachMark(path))
    }
}

impl Drop for AttachMark {
    fn drop(&mut self) {
        // The supervisor may have moved the directory away (--rm): nothing to remove then.
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Waits (a few seconds at most) until no live `gcr attach` reads the container's files: a
/// container run with --rm is deleted only once they have its last output and exit status.
pub fn wait_for_attached(dir: &Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let attached = || {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|entry| {
                let name = entry.file_name();
                let pid = name.to_str().and_then(|n| n.strip_prefix(ATTACHED));
                pid.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
            })
    };
    while attached() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[derive(Args, Debug)]
pub struct AttachArgs {
    /// Do not attach standard input (gcr's background containers never keep one open)
    #[arg(long)]
    no_stdin: bool,
    /// Forward the signals gcr receives (SIGINT, SIGTERM, ...) to the container
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    sig_proxy: bool,
    #[arg(value_name = "CONTAINER")]
    container: String,
}

/// `gcr attach`: the output of a running background container from now on, with gcr's
/// signals forwarded to it, until it ends; gcr then exits with its status. Such a container
/// has no standard input to attach (`gcr run -d -i` is refused), as Docker's without `-i`.
pub fn attach(ctx: &Context, args: AttachArgs) -> anyhow::Result<u8> {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal};
    use std::io::{Read as _, Seek as _, Write as _};
    let store = ctx.open_store()?;
    let all = load(&store)?;
    let c = find(&all, &args.container)?;
    if !c.alive() {
        bail!(
            "container {} is not running: start it first (gcr start -a {})",
            c.display_name(),
            c.display_name()
        );
    }
    let path = log_file(&c.dir);
    let mut log = std::fs::File::open(&path).with_context(|| {
        format!(
            "container {} has no output to attach to: only containers started in the background keep it",
            c.display_name()
        )
    })?;
    // The directory stays readable through this handle when --rm takes it away at the end;
    // the mark asks the supervisor to wait for this reader before it deletes the files.
    let dir =
        std::fs::File::open(&c.dir).with_context(|| format!("cannot open {}", c.dir.display()))?;
    let _mark = AttachMark::new(&c.dir)?;
    let mut offset = log.seek(std::io::SeekFrom::End(0))?;
    // Forwarded signals are taken from a signalfd between two reads of the log (gcr is
    // single-threaded here, so blocking them for this thread blocks them for the process).
    let signals = if args.sig_proxy {
        let mut set = SigSet::empty();
        for signal in [
            Signal::SIGINT,
            Signal::SIGTERM,
            Signal::SIGHUP,
            Signal::SIGQUIT,
            Signal::SIGUSR1,
            Signal::SIGUSR2,
        ] {
            set.add(signal);
        }
        nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None)
            .context("cannot block signals to forward them")?;
        Some(
            nix::sys::signalfd::SignalFd::with_flags(
                &set,
                nix::sys::signalfd::SfdFlags::SFD_NONBLOCK
                    | nix::sys::signalfd::SfdFlags::SFD_CLOEXEC,
            )
            .context("cannot make a signalfd")?,
        )
    } else {
        None
    };
    let mut out = std::io::stdout().lock();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let running = c.alive();
        if let Some(fd) = &signals {
            while let Ok(Some(info)) = fd.read_signal() {
                if let Ok(signal) = Signal::try_from(info.ssi_signo as i32) {
                    if let Err(err) = c.signal(signal) {
                        eprintln!("warning: {}", crate::format::error_chain(&err));
                    }
                }
            }
        }
        log.seek(std::io::SeekFrom::Start(offset))?;
        let n = log.read(&mut buf)?;
        if n > 0 {
            out.write_all(&buf[..n])?;
            out.flush()?;
            offset += n as u64;
            continue;
        }
        if !running {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let status = format!(
        "/proc/self/fd/{}/{EXIT}",
        std::os::fd::AsRawFd::as_raw_fd(&dir)
    );
    match std::fs::read_to_string(status) {
        Ok(code) => Ok(code
            .trim()
            .parse::<i32>()
            .map_or(crate::EXIT_GCR_FAILED, |c| (c & 0xff) as u8)),
        Err(_) => bail!(
            "container {} ended, but its exit status is gone (removed with --rm)",
            c.display_name()
        ),
    }
}

#[derive(Args, Debug)]
pub struct StopArgs {
    /// Seconds to wait for the container to end before killing it (default: its
    /// --stop-timeout, else 10)
    #[arg(
        short = 't',
        long = "time",
        visible_alias = "timeout",
        value_name = "SECONDS"
    )]
    time: Option<u64>,
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

/// `gcr stop`: the image's STOPSIGNAL (SIGTERM by default), then SIGKILL after the timeout.
pub fn stop(ctx: &Context, args: StopArgs) -> anyhow::Result<u8> {
    let store = ctx.open_store()?;
    let all = load(&store)?;
    each(&args.containers, |wanted| {
        stop_one(find(&all, wanted)?, args.time)?;
        println!("{wanted}");
        Ok(())
    })
}

fn stop_one(c: &Container, time: Option<u64>) -> anyhow::Result<()> {
    let time = time.or(c.meta.stop_timeout).unwrap_or(10);
    if c.alive() {
        mark_stopped(&c.dir);
        let signal = parse_signal(c.meta.stop_signal.as_deref().unwrap_or("SIGTERM"))?;
        c.signal(signal)?;
        if !wait_gone(&c.meta, std::time::Duration::from_secs(time)) {
            c.signal(nix::sys::signal::Signal::SIGKILL)?;
            if !wait_gone(&c.meta, std::time::Duration::from_secs(10)) {
                bail!("container {} did not end after SIGKILL", c.display_name());
            }
        }
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct KillArgs {
    /// Signal to send
    #[arg(short, long, default_value = "SIGKILL")]
    signal: String,
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

/// `gcr kill`: a signal to the container's PID 1.
pub fn kill(ctx: &Context, args: KillArgs) -> anyhow::Result<u8> {
    let store = ctx.open_store()?;
    let all = load(&store)?;
    let signal = parse_signal(&args.signal)?;
    each(&args.containers, |wanted| {
        let c = find(&all, wanted)?;
        if !c.alive() {
            bail!("container {} is not running", c.display_name());
        }
        if matches!(
            signal,
            nix::sys::signal::Signal::SIGKILL | nix::sys::signal::Signal::SIGTERM
        ) {
            mark_stopped(&c.dir);
        }
        c.signal(signal)?;
        println!("{wanted}");
        Ok(())
    })
}

#[derive(Args, Debug)]
pub struct WaitArgs {
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

/// `gcr wait`: blocks until each container ends and prints its exit status.
pub fn wait(ctx: &Context, args: WaitArgs) -> anyhow::Result<u8> {
    let store = ctx.open_store()?;
    let all = load(&store)?;
    each(&args.containers, |wanted| {
        let c = find(&all, wanted)?;
        while c.alive() {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        // The supervisor writes the status just before it exits; a container removed with
        // --rm has none left to read.
        match std::fs::read_to_string(c.dir.join(EXIT)) {
            Ok(code) => println!("{}", code.trim()),
            Err(_) if c.meta.remove => bail!(
                "container {} was removed when it ended (--rm): its exit status is gone",
                c.display_name()
            ),
            Err(_) => println!("-1"),
        }
        Ok(())
    })
}

/// Runs `op` for each name, reporting failures one per line; exit status 1 if any failed.
fn each(names: &[String], mut op: impl FnMut(&str) -> anyhow::Result<()>) -> anyhow::Result<u8> {
    let mut failed = false;
    for name in names {
        if let Err(err) = op(name) {
            eprintln!("error: {}", crate::format::error_chain(&err));
            failed = true;
        }
    }
    Ok(if failed { 1 } else { 0 })
}

#[derive(Args, Debug)]
#[command(disable_help_flag = true)]
pub struct ExecArgs {
    /// Print help
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// Keep standard input open
    #[arg(short, long)]
    interactive: bool,
    /// Allocate a pseudo-terminal
    #[arg(short, long)]
    tty: bool,
    /// Run the command in the background (its output is discarded, as Docker's)
    #[arg(short, long)]
    detach: bool,
    /// Set an environment variable: KEY=VALUE, or KEY to take gcr's own value (repeatable)
    #[arg(short, long, value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Run as this user[:group] (names from the container's /etc/passwd)
    #[arg(short, long, value_name = "USER[:GROUP]")]
    user: Option<String>,
    /// Working directory inside the container
    #[arg(short, long, value_name = "DIR")]
    workdir: Option<String>,
    /// Run the command with every capability, no seccomp filter
    #[arg(long)]
    privileged: bool,
    /// CONTAINER COMMAND [ARG...]
    #[arg(required = true, num_args = 2.., trailing_var_arg = true, value_name = "CONTAINER COMMAND")]
    args: Vec<String>,
}

/// `gcr exec`: a command in a running container's namespaces and cgroups, with its security
/// settings (capabilities, seccomp, no_new_privileges) and environment.
pub fn exec(ctx: &Context, args: ExecArgs) -> anyhow::Result<u8> {
    let store = ctx.open_store()?;
    let all = load(&store)?;
    let (wanted, command) = args.args.split_first().context("no container given")?;
    let c = find(&all, wanted)?;
    if !c.alive() {
        bail!("container {} is not running", c.display_name());
    }
    let pid = c
        .container_pid()
        .with_context(|| format!("container {} has no recorded process yet", c.display_name()))?;
    let path = c.dir.join(SPEC);
    let bytes = std::fs::read(&path).with_context(|| {
        format!(
            "cannot read {} (containers started by an older gcr cannot be exec'd into)",
            path.display()
        )
    })?;
    let mut spec: gcr_runtime::Spec = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not a runtime spec", path.display()))?;
    if args.privileged {
        gcr_runtime::set_privileged(&mut spec);
    }
    let mut process = spec
        .process()
        .clone()
        .context("the container's spec has no process")?;
    let mut env = process.env().clone().unwrap_or_default();
    for entry in &args.env {
        let entry = match entry.split_once('=') {
            Some(_) => entry.clone(),
            None => match std::env::var(entry) {
                Ok(value) => format!("{entry}={value}"),
                Err(_) => continue,
            },
        };
        let key = entry.split('=').next().unwrap_or_default().to_string();
        env.retain(|e| e.split('=').next() != Some(key.as_str()));
        env.push(entry);
    }
    process.set_env(Some(env));
    process.set_args(Some(command.to_vec()));
    if let Some(dir) = &args.workdir {
        if !dir.starts_with('/') {
            bail!("working directory {dir:?} must be an absolute path");
        }
        process.set_cwd(dir.into());
    }
    process.set_terminal(Some(args.tty));
    spec.set_process(Some(process));
    let options = gcr_runtime::ExecOptions {
        tty: args.tty,
        stdin: args.interactive,
        user: args.user.clone().or_else(|| c.meta.user.clone()),
        started_fd: None,
    };
    if args.detach {
        return exec_detached(&spec, pid.as_raw(), options);
    }
    match gcr_runtime::exec_in(&spec, pid.as_raw(), &options) {
        Ok(code) => Ok((code & 0xff) as u8),
        Err(err) => {
            eprintln!("error: {err}");
            Ok(u8::try_from(err.exit_code()).unwrap_or(crate::EXIT_GCR_FAILED))
        }
    }
}

/// `gcr exec -d`: a detached child (new session, output to /dev/null) runs the command and
/// reports through a pipe whether it started.
fn exec_detached(
    spec: &gcr_runtime::Spec,
    container_pid: i32,
    mut options: gcr_runtime::ExecOptions,
) -> anyhow::Result<u8> {
    use std::io::Write as _;
    use std::os::fd::AsRawFd as _;
    if options.stdin || options.tty {
        bail!("gcr exec -d takes no -i or -t: a background command has no terminal or input");
    }
    let (report_read, report_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .context("cannot make a pipe for the background command")?;
    let mut report_read = std::fs::File::from(report_read);
    options.started_fd = Some(report_write.as_raw_fd());
    gcr_runtime::run_detached(move || {
        let mut report = std::fs::File::from(report_write);
        if let Err(err) = gcr_runtime::exec_in(spec, container_pid, &options) {
            let _ = write!(report, "E{} {err}", err.exit_code());
        }
    })
    .context("cannot start the command in the background")?;
    crate::run::await_start(&mut report_read)
        .context("the background gcr ended before the command started")
}

#[derive(Args, Debug)]
pub struct StartArgs {
    /// Stay attached: print the output and return the container's exit status
    #[arg(short, long)]
    attach: bool,
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

/// `gcr start`: runs a stopped container again, on its own upper directory, with the spec it
/// was created with; in the background (its output goes on into `gcr logs`) unless `-a`.
pub fn start(ctx: &Context, args: StartArgs) -> anyhow::Result<u8> {
    let store = ctx.open_store()?;
    let all = load(&store)?;
    if args.attach && args.containers.len() > 1 {
        bail!("gcr start -a takes one container");
    }
    let mut status = 0;
    let result = each(&args.containers, |wanted| {
        let c = find(&all, wanted)?;
        if c.alive() {
            println!("{wanted}");
            return Ok(());
        }
        status = start_one(&store, c, args.attach)?;
        if args.attach {
            return Ok(());
        }
        if status != 0 {
            bail!("container {} did not start", c.display_name());
        }
        println!("{wanted}");
        Ok(())
    })?;
    // With -a the container's status, unless it could not even start (then each's failure).
    Ok(if args.attach && result == 0 {
        status
    } else {
        result.max(status.min(1))
    })
}

fn start_one(store: &gcr_storage::Store, c: &Container, attach: bool) -> anyhow::Result<u8> {
    let image = std::fs::read_to_string(c.dir.join("image")).with_context(|| {
        format!(
            "container {} records no image: only containers of images can be started again",
            c.display_name()
        )
    })?;
    let record = crate::images::find_image(store, image.trim())?;
    let spec_path = c.dir.join(SPEC);
    let spec: gcr_runtime::Spec = serde_json::from_slice(
        &std::fs::read(&spec_path)
            .with_context(|| format!("cannot read {}", spec_path.display()))?,
    )
    .with_context(|| format!("{} is not a runtime spec", spec_path.display()))?;
    let (upper, work) = (c.dir.join("upper"), c.dir.join("work"));
    if work.join("work/incompat/volatile").exists() {
        bail!(
            "container {} was mounted volatile (by an older gcr): its files cannot be trusted again; remove it",
            c.display_name()
        );
    }
    let rootfs = gcr_runtime::RootfsSource::Overlay {
        lower: record
            .layers
            .iter()
            .rev()
            .map(|diff_id| store.layer_dir(diff_id))
            .collect(),
        upper,
        work,
        userxattr: gcr_runtime::userns::rootless_ids().is_some(),
    };
    let mut options = gcr_runtime::RunOptions::new(rootfs, c.id.clone(), &c.dir);
    options.tty = spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    options.init = c.meta.init;
    options.user = c.meta.user.clone();
    options.extra_hosts = c.meta.extra_hosts.clone();
    options.group_add = c.meta.group_add.clone();
    options.dns = gcr_runtime::DnsOptions {
        servers: c.meta.dns.clone(),
        search: c.meta.dns_search.clone(),
        options: c.meta.dns_options.clone(),
    };
    if let Some(name) = &c.meta.network {
        options.network = network_options(crate::run::NetworkChoice::parse(name)?, &c.meta.ports)?;
    }
    options.overlay_volatile = false;
    options.pid_file = Some(pid_file(&c.dir));
    let _ = std::fs::remove_file(c.dir.join(EXIT));
    let _ = std::fs::remove_file(c.dir.join(CREATED));
    let _ = std::fs::remove_file(c.dir.join(STOPPED));
    let keep = !c.meta.remove;
    let mut meta = c.meta.clone();
    meta.owned_by_this_process();
    meta.started = Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true));
    if attach {
        write_meta(&c.dir, &meta)?;
        let policy = crate::run::RestartPolicy::of(&c.meta);
        // As `gcr run` in the foreground: the output goes to the log too.
        let tee = if keep && !options.tty {
            Some(gcr_runtime::OutputTee::start(&log_file(&c.dir))?)
        } else {
            None
        };
        let result = crate::run::supervise(store, &c.id, &c.dir, &spec, &options, keep, policy);
        drop(tee);
        return match result {
            Ok(code) => Ok((code & 0xff) as u8),
            Err(err) => {
                eprintln!("error: {err}");
                Ok(u8::try_from(err.exit_code()).unwrap_or(crate::EXIT_GCR_FAILED))
            }
        };
    }
    let code = crate::run::start_detached(store, &c.id, &c.dir, &spec, options, keep, meta);
    code.map_err(|e| match e {
        crate::run::RunFailure::Runtime(err) => anyhow::anyhow!("{err}"),
        crate::run::RunFailure::Other(err) => err,
    })
}

/// `gcr restart`: stop (if running), then start in the background.
pub fn restart(ctx: &Context, args: StopArgs) -> anyhow::Result<u8> {
    let store = ctx.open_store()?;
    let all = load(&store)?;
    each(&args.containers, |wanted| {
        let c = find(&all, wanted)?;
        stop_one(c, args.time)?;
        // Read again: the stop changed the record.
        let fresh = load(&store)?;
        let c = find(&fresh, &c.id)?;
        if start_one(&store, c, false)? != 0 {
            bail!("container {} did not start again", c.display_name());
        }
        println!("{wanted}");
        Ok(())
    })
}

/// The ID and directory of the container a name, ID or unique ID prefix means.
pub fn resolve(
    store: &gcr_storage::Store,
    wanted: &str,
) -> anyhow::Result<(String, std::path::PathBuf)> {
    let all = load(store)?;
    let c = find(&all, wanted)?;
    Ok((c.id.clone(), c.dir.clone()))
}

/// A container's record (empty when unreadable).
pub fn meta_of(dir: &Path) -> ContainerMeta {
    std::fs::read(dir.join(META))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// The containers (short IDs or names) with a mount of `source` in their spec.
pub fn using_source(store: &gcr_storage::Store, source: &Path) -> anyhow::Result<Vec<String>> {
    let mut users = Vec::new();
    for c in load(store)? {
        let Ok(bytes) = std::fs::read(c.dir.join(SPEC)) else {
            continue;
        };
        let Ok(spec) = serde_json::from_slice::<gcr_runtime::Spec>(&bytes) else {
            continue;
        };
        let uses = spec
            .mounts()
            .iter()
            .flatten()
            .any(|m| m.source().as_deref() == Some(source));
        if uses {
            users.push(c.display_name());
        }
    }
    Ok(users)
}

/// `gcr inspect CONTAINER`: the record in Docker's shape (the fields people script against).
pub fn inspect_container(
    store: &gcr_storage::Store,
    wanted: &str,
) -> anyhow::Result<serde_json::Value> {
    use serde_json::json;
    let all = load(store)?;
    let c = find(&all, wanted)?;
    let spec: Option<gcr_runtime::Spec> = std::fs::read(c.dir.join(SPEC))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let process = spec.as_ref().and_then(|s| s.process().clone());
    let image = std::fs::read_to_string(c.dir.join("image"))
        .map(|t| t.trim().to_string())
        .unwrap_or_default();
    let running = c.alive();
    let exit_code = std::fs::read_to_string(c.dir.join(EXIT))
        .ok()
        .and_then(|t| t.trim().parse::<i32>().ok());
    let pid = if running {
        c.container_pid().map_or(0, |p| p.as_raw())
    } else {
        0
    };
    let address = running
        .then(|| std::fs::read_to_string(c.dir.join("address")).ok())
        .flatten();
    let mounts: Vec<serde_json::Value> = spec
        .as_ref()
        .and_then(|s| s.mounts().clone())
        .unwrap_or_default()
        .iter()
        .filter(|m| {
            m.typ().as_deref() == Some("bind")
                && !m.destination().starts_with("/etc/")
                && m.source().is_some()
        })
        .map(|m| {
            let rw = !m.options().iter().flatten().any(|o| o == "ro");
            // A named volume is a directory of the store's volumes/.
            let volume = m.source().as_ref().and_then(|src| {
                let rest = src.strip_prefix(store.root().join("volumes")).ok()?;
                rest.components()
                    .next()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
            });
            let mut mount = json!({
                "Type": if volume.is_some() { "volume" } else { "bind" },
                "Source": m.source(),
                "Destination": m.destination(),
                "RW": rw,
            });
            if let Some(name) = volume {
                mount["Name"] = json!(name);
            }
            mount
        })
        .collect();
    Ok(json!({
        "Id": c.id,
        "Created": c.meta.created,
        "Path": c.meta.command.first(),
        "Args": c.meta.command.get(1..).unwrap_or(&[]),
        "State": {
            "Status": c.state(),
            "Running": running,
            "Paused": false,
            "Restarting": false,
            "OOMKilled": false,
            "Dead": false,
            "Pid": pid,
            "ExitCode": exit_code.unwrap_or(0),
            "Error": "",
            "StartedAt": c.meta.started.as_ref().unwrap_or(&c.meta.created),
            // When the exit status was recorded (Docker's zero time while it runs).
            "FinishedAt": std::fs::metadata(c.dir.join(EXIT))
                .and_then(|m| m.modified())
                .ok()
                .filter(|_| !running)
                .map(|t| chrono::DateTime::<chrono::Utc>::from(t)
                    .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
                .unwrap_or_else(|| "0001-01-01T00:00:00Z".to_string()),
        },
        "Image": image,
        "Name": format!("/{}", c.meta.name.clone().unwrap_or_default()),
        "Config": {
            "Hostname": spec.as_ref().and_then(|s| s.hostname().clone()),
            "User": c.meta.user.clone().unwrap_or_default(),
            "Env": process.as_ref().and_then(|p| p.env().clone()),
            "Cmd": c.meta.command,
            "Image": c.meta.image,
            "WorkingDir": process.as_ref().map(|p| p.cwd().clone()),
            "Tty": process.as_ref().and_then(|p| p.terminal()).unwrap_or(false),
            "StopSignal": c.meta.stop_signal,
            "StopTimeout": c.meta.stop_timeout,
            "Labels": container_labels(store, &c.meta, &image),
        },
        "RestartCount": c.meta.restarts,
        "HostConfig": {
            "AutoRemove": c.meta.remove,
            "Init": c.meta.init,
            "RestartPolicy": { "Name": c.meta.restart.clone().unwrap_or_else(|| "no".into()) },
            "NetworkMode": network_mode(&c.meta, spec.as_ref()),
            "PortBindings": port_bindings(&c.meta.ports),
        },
        "NetworkSettings": {
            "IPAddress": address.clone().unwrap_or_default(),
            "Ports": port_bindings(&c.meta.ports),
            "Networks": networks_of(&c.meta, spec.as_ref(), address.as_deref()),
        },
        "Mounts": mounts,
        "LogPath": if log_file(&c.dir).exists() { Some(log_file(&c.dir)) } else { None },
    }))
}

/// The image's labels with the container's own (`--label`) over them, as Docker shows them.
fn container_labels(
    store: &gcr_storage::Store,
    meta: &ContainerMeta,
    image_id: &str,
) -> std::collections::BTreeMap<String, String> {
    let mut labels = std::collections::BTreeMap::new();
    if let Ok(record) = crate::images::find_image(store, image_id) {
        let config: Option<serde_json::Value> = store
            .image_config_bytes(&record)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        if let Some(image_labels) = config
            .as_ref()
            .and_then(|c| c["config"]["Labels"].as_object())
        {
            for (k, v) in image_labels {
                labels.insert(k.clone(), v.as_str().unwrap_or_default().to_string());
            }
        }
    }
    labels.extend(meta.labels.clone());
    labels
}

/// `--network` of a container (older records: from its spec).
fn network_mode(meta: &ContainerMeta, spec: Option<&gcr_runtime::Spec>) -> String {
    if let Some(name) = &meta.network {
        return name.clone();
    }
    let own_netns = spec
        .and_then(|s| s.linux().as_ref())
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|n| {
            n.iter()
                .any(|ns| ns.typ() == oci_spec::runtime::LinuxNamespaceType::Network)
        });
    if own_netns { "none" } else { "host" }.to_string()
}

/// Docker's `NetworkSettings.Networks`: the container's network by name, with its address.
fn networks_of(
    meta: &ContainerMeta,
    spec: Option<&gcr_runtime::Spec>,
    address: Option<&str>,
) -> serde_json::Value {
    let mode = network_mode(meta, spec);
    let (gateway, prefix) = match mode.as_str() {
        "bridge" => ("10.88.0.1", 16),
        "slirp4netns" => ("10.0.2.2", 24),
        _ => ("", 0),
    };
    let entry = match address {
        Some(ip) => serde_json::json!({"IPAddress": ip, "Gateway": gateway, "IPPrefixLen": prefix}),
        None => serde_json::json!({"IPAddress": "", "Gateway": "", "IPPrefixLen": 0}),
    };
    serde_json::json!({ mode: entry })
}

/// Docker's `{"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]}`.
fn port_bindings(ports: &[PublishedPort]) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for p in ports {
        let entry = out
            .entry(format!("{}/tcp", p.container_port))
            .or_insert_with(|| serde_json::Value::Array(Vec::new()));
        if let serde_json::Value::Array(list) = entry {
            list.push(
                serde_json::json!({"HostIp": p.host_ip, "HostPort": p.host_port.to_string()}),
            );
        }
    }
    serde_json::Value::Object(out)
}

#[derive(Args, Debug)]
pub struct PortArgs {
    #[arg(value_name = "CONTAINER")]
    container: String,
    /// Only this container port: PORT[/tcp]
    #[arg(value_name = "PRIVATE_PORT[/PROTO]")]
    port: Option<String>,
}

/// `gcr port`: the container's published ports, as Docker prints them.
pub fn port(ctx: &Context, args: PortArgs) -> anyhow::Result<u8> {
    let store = ctx.open_store()?;
    let all = load(&store)?;
    let c = find(&all, &args.container)?;
    let wanted = match &args.port {
        None => None,
        Some(p) => {
            let (number, proto) = p.split_once('/').unwrap_or((p, "tcp"));
            let number: u16 = number
                .parse()
                .with_context(|| format!("invalid port {p:?}: use PORT[/tcp]"))?;
            if proto != "tcp" {
                bail!("no {proto} port is published: gcr publishes tcp ports only");
            }
            Some(number)
        }
    };
    let shown: Vec<&PublishedPort> = c
        .meta
        .ports
        .iter()
        .filter(|p| wanted.is_none_or(|w| w == p.container_port))
        .collect();
    if shown.is_empty() {
        if let Some(w) = wanted {
            bail!("no public port {w}/tcp published for {}", c.display_name());
        }
    }
    for p in shown {
        let host = if p.host_ip.contains(':') {
            format!("[{}]:{}", p.host_ip, p.host_port)
        } else {
            format!("{}:{}", p.host_ip, p.host_port)
        };
        if wanted.is_some() {
            println!("{host}");
        } else {
            println!("{}/tcp -> {host}", p.container_port);
        }
    }
    Ok(0)
}

#[derive(Args, Debug)]
pub struct DiffArgs {
    #[arg(value_name = "CONTAINER")]
    container: String,
}

/// `gcr diff`: the files a container added (A), changed (C) or deleted (D) over its image.
pub fn diff(ctx: &Context, args: DiffArgs) -> anyhow::Result<u8> {
    let store = ctx.open_store()?;
    let all = load(&store)?;
    let c = find(&all, &args.container)?;
    let image = std::fs::read_to_string(c.dir.join("image"))
        .with_context(|| format!("container {} records no image", c.display_name()))?;
    let record = crate::images::find_image(&store, image.trim())?;
    let lower: Vec<std::path::PathBuf> = record.layers.iter().map(|d| store.layer_dir(d)).collect();
    let upper = c.dir.join("upper");
    let changes = gcr_builder::changes_in_upper(&upper, &lower)
        .with_context(|| format!("cannot read {}", upper.display()))?;
    // The mount points of the generated files are gcr's, not the container's changes.
    let generated = ["/etc/hostname", "/etc/hosts", "/etc/resolv.conf"];
    for (kind, path) in changes {
        if !generated.contains(&path.as_str()) {
            println!("{kind} {path}");
        }
    }
    Ok(0)
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Write to this file instead of stdout
    #[arg(short, long, value_name = "FILE")]
    output: Option<std::path::PathBuf>,
    #[arg(value_name = "CONTAINER")]
    container: String,
}

/// `gcr export`: the container's file system (image and changes, without the runtime's
/// /proc, /dev or volumes) as one tar stream, as `docker export` (`gcr import` reads it).
pub fn export(ctx: &Context, args: ExportArgs) -> anyhow::Result<u8> {
    use std::io::IsTerminal as _;
    let out = match &args.output {
        Some(path) => std::fs::File::create(path)
            .with_context(|| format!("cannot create {}", path.display()))?,
        None if std::io::stdout().is_terminal() => {
            bail!("refusing to write a tar archive to a terminal: use -o FILE or redirect stdout")
        }
        None => std::fs::File::from(std::io::stdout().as_fd().try_clone_to_owned()?),
    };
    let store = ctx.open_store()?;
    let all = load(&store)?;
    let c = find(&all, &args.container)?;
    let image = std::fs::read_to_string(c.dir.join("image"))
        .with_context(|| format!("container {} records no image", c.display_name()))?;
    let record = crate::images::find_image(&store, image.trim())?;
    // The container's upper dir as the top lower layer of a throw-away overlay: a running
    // container keeps its own mount, and nothing is written to its files.
    let scratch = tempfile::Builder::new()
        .prefix("export-")
        .tempdir_in(&c.dir)
        .with_context(|| format!("cannot make a work directory in {}", c.dir.display()))?;
    let (upper, work, mountpoint) = (
        scratch.path().join("upper"),
        scratch.path().join("work"),
        scratch.path().join("root"),
    );
    for dir in [&upper, &work, &mountpoint] {
        std::fs::create_dir(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    // Rootless gcr may already run in its user namespace (root there) or not yet.
    let outside_userns = !nix::unistd::geteuid().is_root();
    let rootless = gcr_runtime::userns::is_rootless();
    let rootfs = gcr_runtime::RootfsSource::Overlay {
        lower: std::iter::once(c.dir.join("upper"))
            .chain(record.layers.iter().rev().map(|d| store.layer_dir(d)))
            .collect(),
        upper,
        work,
        userxattr: rootless,
    };
    if outside_userns {
        gcr_runtime::userns::enter_rootless_userns()
            .context("cannot enter the rootless user namespace")?;
    }
    let files = gcr_runtime::ContainerFiles::Stopped {
        rootfs: &rootfs,
        mountpoint: &mountpoint,
    };
    let options = gcr_runtime::CopyOptions {
        contents: true,
        follow_link: false,
    };
    gcr_runtime::copy_out_tar(files, Path::new("/"), options, &out)?;
    Ok(0)
}

#[derive(Args, Debug)]
pub struct CpArgs {
    /// CONTAINER:SRC_PATH or a host path
    #[arg(value_name = "SRC")]
    src: String,
    /// A host path or CONTAINER:DEST_PATH
    #[arg(value_name = "DEST")]
    dest: String,
    /// Follow a symlink that is SRC itself
    #[arg(short = 'L', long)]
    follow_link: bool,
}

/// `PATH/.` (or `.`) names a directory's contents; returns the directory and whether it did.
fn contents_of(path: &str) -> (&str, bool) {
    if path == "." {
        return (".", true);
    }
    match path.strip_suffix("/.") {
        Some("") => ("/", true),
        Some(dir) => (dir, true),
        None => (path, false),
    }
}

/// `CONTAINER:PATH`, or `None` for a host path (`./a:b` is a host path with a colon).
fn container_side(arg: &str) -> Option<(&str, &str)> {
    let (name, path) = arg.split_once(':')?;
    (!name.is_empty() && !name.contains('/') && !name.starts_with('.')).then_some((name, path))
}

/// `gcr cp`: files between a container (running or stopped) and the host.
pub fn cp(ctx: &Context, args: CpArgs) -> anyhow::Result<u8> {
    let store = ctx.open_store()?;
    let all = load(&store)?;
    let (c, container_path, host, out) =
        match (container_side(&args.src), container_side(&args.dest)) {
            (Some((name, path)), None) => (find(&all, name)?, path, args.dest.as_str(), true),
            (None, Some((name, path))) => (find(&all, name)?, path, args.src.as_str(), false),
            (Some(_), Some(_)) => {
                bail!("gcr cp copies between a container and the host, not between two containers")
            }
            (None, None) => bail!(
                "give a container side: gcr cp CONTAINER:SRC DEST or gcr cp SRC CONTAINER:DEST"
            ),
        };
    let (src_path, contents) = if out {
        contents_of(container_path)
    } else {
        contents_of(host)
    };
    let options = gcr_runtime::CopyOptions {
        contents: contents || (!out && host == "-"),
        follow_link: args.follow_link,
    };
    let container_path = if out { src_path } else { container_path };
    let host = if out { host } else { src_path };
    let container_path = if container_path.starts_with('/') {
        std::path::PathBuf::from(container_path)
    } else {
        // Relative to the container's working directory, as Docker.
        let cwd = std::fs::read(c.dir.join(SPEC))
            .ok()
            .and_then(|b| serde_json::from_slice::<gcr_runtime::Spec>(&b).ok())
            .and_then(|s| s.process().clone())
            .map(|p| p.cwd().clone())
            .unwrap_or_else(|| "/".into());
        cwd.join(container_path)
    };
    let running = c.alive().then(|| c.container_pid()).flatten();
    let rootfs;
    let mountpoint = c.dir.join("rootfs");
    let files = match running {
        Some(pid) => gcr_runtime::ContainerFiles::Running(pid.as_raw()),
        None => {
            let image = std::fs::read_to_string(c.dir.join("image"))
                .with_context(|| format!("container {} records no image", c.display_name()))?;
            let record = crate::images::find_image(&store, image.trim())?;
            rootfs = gcr_runtime::RootfsSource::Overlay {
                lower: record
                    .layers
                    .iter()
                    .rev()
                    .map(|diff_id| store.layer_dir(diff_id))
                    .collect(),
                upper: c.dir.join("upper"),
                work: c.dir.join("work"),
                userxattr: !nix::unistd::geteuid().is_root(),
            };
            if !nix::unistd::geteuid().is_root() {
                // Mounting the layers needs gcr's rootless namespace (the store's owners).
                gcr_runtime::userns::enter_rootless_userns()
                    .context("cannot enter the rootless user namespace")?;
            }
            std::fs::create_dir_all(&mountpoint)?;
            gcr_runtime::ContainerFiles::Stopped {
                rootfs: &rootfs,
                mountpoint: &mountpoint,
            }
        }
    };
    if out && host == "-" {
        let stdout = std::fs::File::from(std::io::stdout().as_fd().try_clone_to_owned()?);
        gcr_runtime::copy_out_tar(files, &container_path, options, &stdout)?;
    } else if out {
        // Into an existing directory the source keeps its name (its contents go straight in).
        let host = Path::new(host);
        let target = if host.is_dir() && !options.contents {
            host.join(
                container_path
                    .file_name()
                    .context("the container path names no file")?,
            )
        } else {
            host.to_path_buf()
        };
        if options.contents && target.symlink_metadata().is_ok_and(|m| !m.is_dir()) {
            bail!(
                "cannot copy a directory's contents to {}: it is not a directory",
                target.display()
            );
        }
        gcr_runtime::copy_out(files, &container_path, &target, options)?;
    } else if host == "-" {
        // A tar stream on stdin: unpacked aside first (the tar crate keeps it beneath that
        // directory), then copied in as a directory's contents, owned by the container's root.
        let unpacked = tempfile::tempdir().context("cannot make a temporary directory")?;
        let mut archive = tar::Archive::new(std::io::stdin().lock());
        archive.set_preserve_permissions(true);
        archive
            .unpack(unpacked.path())
            .context("cannot read the tar stream on stdin")?;
        gcr_runtime::copy_in(files, unpacked.path(), &container_path, options)?;
    } else {
        let host = Path::new(host);
        std::fs::symlink_metadata(host)
            .with_context(|| format!("{} does not exist", host.display()))?;
        if options.contents && !host.is_dir() {
            bail!(
                "{}/. names a directory's contents, but {} is not a directory",
                host.display(),
                host.display()
            );
        }
        gcr_runtime::copy_in(files, host, &container_path, options)?;
    }
    Ok(0)
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Do not ask for confirmation (accepted for Docker's habit; gcr does not ask here)
    #[arg(short, long)]
    force: bool,
}

/// `gcr container prune`: every stopped container.
pub fn prune(ctx: &Context, _args: PruneArgs) -> anyhow::Result<u8> {
    let store = ctx.open_store()?;
    for id in remove_stopped(&store)? {
        println!("Deleted container: {id}");
    }
    Ok(0)
}

#[derive(Args, Debug)]
pub struct RenameArgs {
    #[arg(value_name = "CONTAINER")]
    container: String,
    #[arg(value_name = "NEW_NAME")]
    name: String,
}

/// `gcr rename`: a new name, unique as for `--name`.
pub fn rename(ctx: &Context, args: RenameArgs) -> anyhow::Result<u8> {
    let store = ctx.open_store()?;
    let all = load(&store)?;
    let c = find(&all, &args.container)?;
    if args.name.is_empty()
        || !args
            .name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '.' | '-'))
    {
        bail!(
            "invalid name {:?}: use letters, digits, '_', '.' and '-'",
            args.name
        );
    }
    let _names = NameLock::take(&store)?;
    ensure_name_free(&store, &args.name)?;
    let mut meta = c.meta.clone();
    meta.name = Some(args.name.clone());
    write_meta(&c.dir, &meta)?;
    Ok(0)
}

#[derive(Args, Debug)]
pub struct TopArgs {
    #[arg(value_name = "CONTAINER")]
    container: String,
}

/// `gcr top`: the container's processes (those in its PID namespace), as the host sees them.
pub fn top(ctx: &Context, args: TopArgs) -> anyhow::Result<u8> {
    let store = ctx.open_store()?;
    let all = load(&store)?;
    let c = find(&all, &args.container)?;
    let pid = match c.container_pid() {
        Some(pid) if c.alive() => pid,
        _ => bail!("container {} is not running", c.display_name()),
    };
    let ns_of = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/pid")).ok();
    let theirs = ns_of(&pid.to_string()).context("cannot read the container's PID namespace")?;
    let mut rows = Vec::new();
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) || ns_of(&name).as_ref() != Some(&theirs) {
            continue;
        }
        let status = std::fs::read_to_string(format!("/proc/{name}/status")).unwrap_or_default();
        let field = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next())
                .unwrap_or("")
                .to_string()
        };
        let cmdline = std::fs::read(format!("/proc/{name}/cmdline")).unwrap_or_default();
        let cmd = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        rows.push(vec![
            field("Uid:"),
            name.clone(),
            field("PPid:"),
            if cmd.is_empty() { field("Name:") } else { cmd },
        ]);
    }
    rows.sort_by_key(|r| r[1].parse::<u64>().unwrap_or(0));
    print!("{}", table(&["UID", "PID", "PPID", "CMD"], &rows));
    Ok(0)
}

/// Bytes under `dir` (files as allocated on disk, not followed through symlinks).
fn dir_size(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        total += meta.blocks() * 512;
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                stack.extend(entries.flatten().map(|e| e.path()));
            }
        }
    }
    total
}

/// `system df` rows for containers (active: running) and named volumes (active: mounted by a
/// container's spec).
pub fn usage(
    store: &gcr_storage::Store,
) -> anyhow::Result<(gcr_storage::UsageEntry, gcr_storage::UsageEntry)> {
    let mut containers = gcr_storage::UsageEntry::default();
    for c in load(store)? {
        let size = dir_size(&c.dir);
        containers.count += 1;
        containers.size += size;
        if c.alive() {
            containers.active += 1;
        } else {
            containers.reclaimable += size;
        }
    }
    let mut volumes = gcr_storage::UsageEntry::default();
    for name in store.volumes()? {
        let dir = store.volume_dir(&name)?;
        let size = dir_size(&dir);
        volumes.count += 1;
        volumes.size += size;
        if using_source(store, &dir)?.is_empty() {
            volumes.reclaimable += size;
        } else {
            volumes.active += 1;
        }
    }
    Ok((containers, volumes))
}
