//! `gcr run`: turns an image (or a plain rootfs directory) and the command line into an OCI
//! runtime spec and hands it to the runtime crate.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use clap::Args;
use serde_json::Value;

use crate::Context;

#[derive(Args, Debug)]
#[command(disable_help_flag = true)]
pub struct RunArgs {
    /// Print help (`-h` is --hostname, as in Docker)
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// Keep standard input open
    #[arg(short, long)]
    interactive: bool,
    /// Allocate a pseudo-terminal
    #[arg(short, long)]
    tty: bool,
    /// Remove the container when it exits
    #[arg(long)]
    rm: bool,
    /// Run in the background: print the container ID; the output goes to `gcr logs`
    #[arg(short, long)]
    detach: bool,
    /// `gcr create`: prepare the container, do not run it.
    #[arg(skip)]
    create_only: bool,
    /// Run it again when it ends: no, always, unless-stopped or on-failure[:MAX] (while its
    /// gcr supervises it; gcr has no daemon to start containers at boot)
    #[arg(long, value_name = "POLICY", default_value = "no")]
    restart: String,
    /// Container name
    #[arg(long)]
    name: Option<String>,
    /// Set an environment variable: KEY=VALUE, or KEY to take it from gcr's environment
    #[arg(short, long = "env", value_name = "KEY[=VALUE]")]
    env: Vec<String>,
    /// Read environment variables from a file (KEY=VALUE lines)
    #[arg(long = "env-file", value_name = "FILE")]
    env_file: Vec<PathBuf>,
    /// Working directory inside the container
    #[arg(short, long, value_name = "DIR")]
    workdir: Option<String>,
    /// User to run as: name|uid[:group|gid]
    #[arg(short, long, value_name = "USER[:GROUP]")]
    user: Option<String>,
    /// Override the image's ENTRYPOINT
    #[arg(long, value_name = "COMMAND")]
    entrypoint: Option<String>,
    /// Container host name
    #[arg(short = 'h', long, value_name = "NAME")]
    hostname: Option<String>,
    /// Add a line to /etc/hosts: NAME:IP (IP may be host-gateway, the host as the container
    /// reaches it)
    #[arg(long = "add-host", value_name = "NAME:IP")]
    add_host: Vec<String>,
    /// DNS server for /etc/resolv.conf (repeatable; replaces the host's)
    #[arg(long = "dns", value_name = "IP")]
    dns: Vec<String>,
    /// DNS search domain (repeatable)
    #[arg(long = "dns-search", value_name = "DOMAIN")]
    dns_search: Vec<String>,
    /// resolv.conf option, e.g. ndots:2 (repeatable)
    #[arg(long = "dns-option", alias = "dns-opt", value_name = "OPTION")]
    dns_option: Vec<String>,
    /// Bind mount a volume: SRC:DST[:ro|rw]
    #[arg(short, long = "volume", value_name = "SRC:DST[:OPTS]")]
    volume: Vec<String>,
    /// PID namespace: private (default) or host (see the host's processes)
    #[arg(long = "pid", value_name = "MODE")]
    pid_mode: Option<String>,
    /// IPC namespace: private (default) or host
    #[arg(long = "ipc", value_name = "MODE")]
    ipc_mode: Option<String>,
    /// Mount as Docker's --mount: type=bind|volume|tmpfs,source=SRC,target=DST[,readonly]
    /// [,volume-nocopy][,tmpfs-size=BYTES][,tmpfs-mode=OCTAL]
    #[arg(long = "mount", value_name = "KEY=VALUE,...")]
    mount: Vec<String>,
    /// Set a label on the container: KEY=VALUE (repeatable)
    #[arg(short = 'l', long = "label", value_name = "KEY=VALUE")]
    label: Vec<String>,
    /// When to pull the image: missing (default), always, never
    #[arg(long, default_value = "missing", value_name = "POLICY")]
    pull: String,
    /// Signal `gcr stop` sends (default: the image's STOPSIGNAL, else SIGTERM)
    #[arg(long = "stop-signal", value_name = "SIGNAL")]
    stop_signal: Option<String>,
    /// Seconds `gcr stop` waits before SIGKILL (default 10)
    #[arg(long = "stop-timeout", value_name = "SECONDS")]
    stop_timeout: Option<u64>,
    /// Add a supplementary group (name from the container's /etc/group, or a number)
    #[arg(long = "group-add", value_name = "GROUP")]
    group_add: Vec<String>,
    /// Resource limit: NAME=SOFT[:HARD], e.g. nofile=1024:2048 (repeatable)
    #[arg(long = "ulimit", value_name = "NAME=SOFT[:HARD]")]
    ulimit: Vec<String>,
    /// Size of /dev/shm, e.g. 256m (default 64m)
    #[arg(long = "shm-size", value_name = "SIZE")]
    shm_size: Option<String>,
    /// Write the container ID to this file
    #[arg(long = "cidfile", value_name = "FILE")]
    cidfile: Option<PathBuf>,
    /// Mount a tmpfs: DST[:OPTIONS]
    #[arg(long, value_name = "DST[:OPTS]")]
    tmpfs: Vec<String>,
    /// Mount the container's root filesystem read-only
    #[arg(long)]
    read_only: bool,
    /// Network: private (the default: the gcr0 bridge with NAT as root, slirp4netns
    /// rootless), host, none; bridge or slirp4netns name the private kind
    #[arg(long, alias = "net", default_value = "private", value_name = "MODE")]
    network: String,
    /// Publish a container port on the host: [IP:][HOST_PORT:]CONTAINER_PORT[/tcp], ranges
    /// as 8000-8009:8000-8009; without HOST_PORT a free one is picked (see `gcr port`)
    #[arg(short = 'p', long = "publish", value_name = "PORTS")]
    publish: Vec<String>,
    /// Publish every port the image EXPOSEs on free host ports
    #[arg(short = 'P', long = "publish-all")]
    publish_all: bool,
    /// Give the container every capability and no seccomp filter or masked paths
    #[arg(long)]
    privileged: bool,
    /// Add a Linux capability
    #[arg(long = "cap-add", value_name = "CAP")]
    cap_add: Vec<String>,
    /// Drop a Linux capability
    #[arg(long = "cap-drop", value_name = "CAP")]
    cap_drop: Vec<String>,
    /// Security options: seccomp=unconfined|FILE, no-new-privileges
    #[arg(long = "security-opt", value_name = "OPT")]
    security_opt: Vec<String>,
    /// Memory limit: N[b|k|m|g]
    #[arg(short, long, value_name = "SIZE")]
    memory: Option<String>,
    /// Largest number of processes (-1: unlimited)
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pids_limit: Option<i64>,
    /// CPUs the container may use, e.g. 0.5 or 2
    #[arg(long, value_name = "N")]
    cpus: Option<f64>,
    /// Relative CPU weight (cgroup v1 shares)
    #[arg(short = 'c', long, value_name = "N")]
    cpu_shares: Option<u64>,
    /// Run a small init as PID 1 that reaps zombies and forwards signals
    #[arg(long)]
    init: bool,
    /// User namespace (as root): host (default), auto[:size=N] or private (a new one with a
    /// free range of the "containers" entries in /etc/subuid and /etc/subgid)
    #[arg(long, value_name = "MODE")]
    userns: Option<String>,
    /// As root: run in a new user namespace mapping CONTAINER_ID to HOST_ID for SIZE ids
    #[arg(long, value_name = "CONTAINER_ID:HOST_ID:SIZE")]
    uidmap: Vec<String>,
    /// Like --uidmap for group ids (default: the same as --uidmap)
    #[arg(long, value_name = "CONTAINER_ID:HOST_ID:SIZE")]
    gidmap: Vec<String>,
    /// Use a directory as the root filesystem instead of an image
    #[arg(long, value_name = "DIR")]
    rootfs: Option<PathBuf>,
    /// Platform to pull when the image is missing
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    platform: Option<String>,
    /// IMAGE [COMMAND [ARG...]] (with --rootfs: COMMAND [ARG...])
    #[arg(
        trailing_var_arg = true,
        required = true,
        value_name = "IMAGE [COMMAND [ARG...]]"
    )]
    args: Vec<String>,
}

/// The parts of an image config that decide what runs and how.
#[derive(Debug, Default, Clone)]
pub struct ImageProcess {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    /// The image's STOPSIGNAL, for `gcr stop`.
    pub stop_signal: String,
    /// EXPOSEd ports (`80/tcp`), for -P.
    pub exposed_ports: Vec<String>,
}

impl ImageProcess {
    pub fn from_config(config: &Value) -> ImageProcess {
        let section = config.get("config").cloned().unwrap_or(Value::Null);
        let strings = |key: &str| -> Vec<String> {
            section
                .get(key)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let text = |key: &str| {
            section
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        ImageProcess {
            entrypoint: strings("Entrypoint"),
            cmd: strings("Cmd"),
            env: strings("Env"),
            working_dir: text("WorkingDir"),
            user: text("User"),
            stop_signal: text("StopSignal"),
            exposed_ports: section
                .get("ExposedPorts")
                .and_then(Value::as_object)
                .map(|ports| ports.keys().cloned().collect())
                .unwrap_or_default(),
        }
    }
}

/// Docker's rule: `--entrypoint` replaces the image's ENTRYPOINT and drops its CMD; arguments
/// after the image replace CMD.
pub fn process_args(
    image: &ImageProcess,
    entrypoint: Option<&str>,
    command: &[String],
) -> Vec<String> {
    let (entry, default_cmd) = match entrypoint {
        Some("") => (Vec::new(), Vec::new()),
        Some(e) => (vec![e.to_string()], Vec::new()),
        None => (image.entrypoint.clone(), image.cmd.clone()),
    };
    let cmd = if command.is_empty() {
        default_cmd
    } else {
        command.to_vec()
    };
    entry.into_iter().chain(cmd).collect()
}

/// Merges environment lists: later entries override earlier ones with the same key.
pub fn merge_env(base: &[String], overrides: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for entry in base.iter().chain(overrides) {
        let key = entry.split('=').next().unwrap_or(entry);
        out.retain(|e| e.split('=').next().unwrap_or(e) != key);
        out.push(entry.clone());
    }
    out
}

/// `-e` and `--env-file` values as KEY=VALUE; a bare KEY takes gcr's own value or is dropped.
fn command_line_env(args: &RunArgs) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for file in &args.env_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read --env-file {}", file.display()))?;
        for line in text.lines() {
            let line = line.trim_start();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            push_env(&mut out, line);
        }
    }
    for entry in &args.env {
        push_env(&mut out, entry);
    }
    Ok(out)
}

fn push_env(out: &mut Vec<String>, entry: &str) {
    if entry.contains('=') {
        out.push(entry.to_string());
    } else if let Ok(value) = std::env::var(entry) {
        out.push(format!("{entry}={value}"));
    }
}

/// A `-v SRC:DST[:OPTS]` volume with its source made absolute and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Volume {
    pub source: PathBuf,
    pub destination: String,
    pub read_only: bool,
    /// A named volume (its name), created in the store when first used.
    pub named: Option<String>,
    /// `nocopy`: a new named volume stays empty instead of getting the image's files.
    pub no_copy: bool,
}

/// Docker's restart policies, applied by the container's supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum RestartPolicy {
    #[default]
    No,
    /// `always` and `unless-stopped` (they differ only when a daemon restarts).
    Always,
    /// Restart after a non-zero exit, at most `max` times (0: no limit).
    OnFailure { max: u32 },
}

impl RestartPolicy {
    pub(crate) fn parse(text: &str) -> anyhow::Result<RestartPolicy> {
        Ok(match text {
            "no" | "" => RestartPolicy::No,
            "always" | "unless-stopped" => RestartPolicy::Always,
            "on-failure" => RestartPolicy::OnFailure { max: 0 },
            other => match other.strip_prefix("on-failure:").map(str::parse::<u32>) {
                Some(Ok(max)) => RestartPolicy::OnFailure { max },
                _ => bail!(
                    "invalid --restart {other:?}: use no, always, unless-stopped or on-failure[:MAX]"
                ),
            },
        })
    }

    /// The policy a container was created with (an unreadable one counts as `no`).
    pub(crate) fn of(meta: &crate::containers::ContainerMeta) -> RestartPolicy {
        RestartPolicy::parse(meta.restart.as_deref().unwrap_or("no")).unwrap_or_default()
    }

    fn wants(self, code: i32, restarts: u32) -> bool {
        match self {
            RestartPolicy::No => false,
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure { max } => code != 0 && (max == 0 || restarts < max),
        }
    }
}

/// What `--network` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NetworkChoice {
    Host,
    None,
    Private(gcr_runtime::PrivateNetwork),
}

impl NetworkChoice {
    pub(crate) fn parse(name: &str) -> anyhow::Result<NetworkChoice> {
        use gcr_runtime::PrivateNetwork::{Bridge, Slirp};
        // Only root can make a bridge and veths: rootless, the private network is slirp4netns.
        let rootless = gcr_runtime::userns::is_rootless();
        Ok(match name {
            "host" => NetworkChoice::Host,
            "none" => NetworkChoice::None,
            "private" | "default" | "bridge" if rootless => NetworkChoice::Private(Slirp),
            "private" | "default" | "bridge" => NetworkChoice::Private(Bridge),
            "slirp4netns" => NetworkChoice::Private(Slirp),
            other => bail!(
                "unknown --network {other:?}: use private (the default), bridge, slirp4netns, host or none"
            ),
        })
    }

    /// The name recorded for `gcr start` and shown by `inspect`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            NetworkChoice::Host => "host",
            NetworkChoice::None => "none",
            NetworkChoice::Private(gcr_runtime::PrivateNetwork::Bridge) => "bridge",
            NetworkChoice::Private(gcr_runtime::PrivateNetwork::Slirp) => "slirp4netns",
        }
    }
}

/// A file removed when dropped, unless `keep` was called.
struct UnlessKept {
    path: PathBuf,
    kept: bool,
}

impl UnlessKept {
    fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for UnlessKept {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// What one `--mount` asks for.
pub(crate) enum MountFlag {
    Volume(Volume),
    Tmpfs {
        destination: String,
        options: String,
    },
}

/// Docker's `--mount type=...,source=...,target=...` (bind, volume, tmpfs).
pub(crate) fn parse_mount(text: &str) -> anyhow::Result<MountFlag> {
    let mut kind = "volume";
    let (mut source, mut target) = (None, None);
    let (mut read_only, mut no_copy) = (false, false);
    let mut tmpfs_options = Vec::new();
    let truth = |key: &str, value: Option<&str>| -> anyhow::Result<bool> {
        match value {
            None | Some("true") | Some("1") => Ok(true),
            Some("false") | Some("0") => Ok(false),
            Some(other) => bail!("invalid --mount {text:?}: {key}={other} is not true or false"),
        }
    };
    for field in text.split(',').filter(|f| !f.is_empty()) {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (field, None),
        };
        match key {
            "type" => kind = value.unwrap_or(""),
            "source" | "src" => source = value,
            "target" | "destination" | "dst" => target = value,
            "readonly" | "ro" => read_only = truth(key, value)?,
            "volume-nocopy" => no_copy = truth(key, value)?,
            "tmpfs-size" => tmpfs_options.push(format!("size={}", value.unwrap_or(""))),
            "tmpfs-mode" => tmpfs_options.push(format!("mode={}", value.unwrap_or(""))),
            // Propagation and consistency: gcr's binds are private, as Docker's default.
            "bind-propagation" | "consistency" => {}
            other => bail!("invalid --mount {text:?}: unknown key {other:?}"),
        }
    }
    let target = target
        .filter(|t| t.starts_with('/'))
        .with_context(|| format!("invalid --mount {text:?}: give target=/absolute/path"))?;
    match kind {
        "tmpfs" => {
            if source.is_some() {
                bail!("invalid --mount {text:?}: a tmpfs has no source");
            }
            Ok(MountFlag::Tmpfs {
                destination: target.to_string(),
                options: tmpfs_options.join(","),
            })
        }
        "bind" | "volume" => {
            if !tmpfs_options.is_empty() {
                bail!("invalid --mount {text:?}: tmpfs options need type=tmpfs");
            }
            let source =
                source.with_context(|| format!("invalid --mount {text:?}: give source=..."))?;
            if kind == "bind" && !source.starts_with('/') {
                bail!("invalid --mount {text:?}: a bind source must be an absolute path");
            }
            if kind == "volume" && source.starts_with('/') {
                bail!("invalid --mount {text:?}: a volume source is a volume name (use type=bind for a path)");
            }
            let mut spec = format!("{source}:{target}");
            if read_only {
                spec.push_str(":ro");
            }
            let mut volume = parse_volume(&spec)?;
            volume.no_copy = no_copy && volume.named.is_some();
            Ok(MountFlag::Volume(volume))
        }
        other => bail!("invalid --mount {text:?}: type {other:?} is not bind, volume or tmpfs"),
    }
}

/// `-l KEY=VALUE` (a bare KEY is an empty value, as Docker).
fn parse_labels(given: &[String]) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    given
        .iter()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
            if k.is_empty() {
                bail!("invalid --label {l:?}: use KEY=VALUE");
            }
            Ok((k.to_string(), v.to_string()))
        })
        .collect()
}

/// `--ulimit nofile=1024:2048` as an OCI rlimit (`RLIMIT_NOFILE`); `-1` is unlimited.
fn parse_ulimit(text: &str) -> anyhow::Result<oci_spec::runtime::PosixRlimit> {
    use oci_spec::runtime::PosixRlimitType as T;
    let usage =
        || format!("invalid --ulimit {text:?}: use NAME=SOFT[:HARD], e.g. nofile=1024:2048");
    let (name, values) = text.split_once('=').with_context(usage)?;
    let typ = match name {
        "core" => T::RlimitCore,
        "cpu" => T::RlimitCpu,
        "data" => T::RlimitData,
        "fsize" => T::RlimitFsize,
        "locks" => T::RlimitLocks,
        "memlock" => T::RlimitMemlock,
        "msgqueue" => T::RlimitMsgqueue,
        "nice" => T::RlimitNice,
        "nofile" => T::RlimitNofile,
        "nproc" => T::RlimitNproc,
        "rss" => T::RlimitRss,
        "rtprio" => T::RlimitRtprio,
        "rttime" => T::RlimitRttime,
        "sigpending" => T::RlimitSigpending,
        "stack" => T::RlimitStack,
        "as" => T::RlimitAs,
        other => bail!("invalid --ulimit {text:?}: unknown limit {other:?}"),
    };
    let value = |v: &str| -> anyhow::Result<u64> {
        if v == "-1" || v == "unlimited" {
            return Ok(u64::MAX);
        }
        v.parse().with_context(usage)
    };
    let (soft, hard) = match values.split_once(':') {
        Some((s, h)) => (value(s)?, value(h)?),
        None => (value(values)?, value(values)?),
    };
    if soft > hard {
        bail!("invalid --ulimit {text:?}: the soft limit is above the hard one");
    }
    oci_spec::runtime::PosixRlimitBuilder::default()
        .typ(typ)
        .soft(soft)
        .hard(hard)
        .build()
        .with_context(usage)
}

/// `--add-host NAME:IP` (or NAME=IP); `host-gateway` is the host as the network reaches it.
pub(crate) fn parse_extra_hosts(
    given: &[String],
    network: NetworkChoice,
) -> anyhow::Result<Vec<(String, String)>> {
    given
        .iter()
        .map(|entry| {
            let (name, ip) = entry
                .split_once('=')
                .or_else(|| entry.split_once(':'))
                .filter(|(n, ip)| !n.is_empty() && !ip.is_empty())
                .with_context(|| format!("invalid --add-host {entry:?}: use NAME:IP"))?;
            let ip = match (ip, network) {
                ("host-gateway", NetworkChoice::Private(gcr_runtime::PrivateNetwork::Bridge)) => {
                    "10.88.0.1".to_string()
                }
                // slirp4netns refuses its gateway address (the host's loopback stays closed):
                // the host is reached at its own address, as Podman maps host-gateway.
                ("host-gateway", NetworkChoice::Private(gcr_runtime::PrivateNetwork::Slirp)) => {
                    host_address().with_context(|| {
                        format!("--add-host {entry}: cannot find the host's own address")
                    })?
                }
                ("host-gateway", NetworkChoice::Host) => "127.0.0.1".to_string(),
                ("host-gateway", NetworkChoice::None) => {
                    bail!("--add-host {entry}: with --network none the host cannot be reached")
                }
                (ip, _) => {
                    // IPv6 addresses hold colons: NAME:IP splits at the first one.
                    ip.parse::<std::net::IpAddr>().with_context(|| {
                        format!("invalid --add-host {entry:?}: {ip:?} is not an IP address")
                    })?;
                    ip.to_string()
                }
            };
            Ok((name.to_string(), ip))
        })
        .collect()
}

/// The host's address on its default route (no packet is sent: a UDP socket is only
/// connected to learn which source address the kernel would use).
fn host_address() -> anyhow::Result<String> {
    let socket = std::net::UdpSocket::bind(("0.0.0.0", 0))?;
    socket.connect(("192.0.2.1", 9))?;
    let ip = socket.local_addr()?.ip();
    if ip.is_unspecified() || ip.is_loopback() {
        bail!("no address on a default route");
    }
    Ok(ip.to_string())
}

/// One `-p` value: `[IP:][HOST_PORT:]CONTAINER_PORT[/tcp]` with optional ranges; a host port
/// of 0 means "pick a free one".
pub(crate) fn parse_publish(text: &str) -> anyhow::Result<Vec<crate::containers::PublishedPort>> {
    let usage = || format!("invalid -p {text:?}: use [IP:][HOST_PORT:]CONTAINER_PORT[/tcp]");
    let (rest, proto) = match text.rsplit_once('/') {
        Some((rest, proto)) => (rest, proto.to_ascii_lowercase()),
        None => (text, "tcp".to_string()),
    };
    match proto.as_str() {
        "tcp" => {}
        "udp" | "sctp" => {
            bail!("-p {text}: publishing {proto} ports is not supported yet (tcp only)")
        }
        _ => bail!("{}", usage()),
    }
    // An IPv6 address comes in brackets: [::1]:8080:80.
    let (ip, rest) = match rest.strip_prefix('[') {
        Some(v6) => {
            let (ip, after) = v6.split_once("]:").with_context(usage)?;
            (Some(ip), after)
        }
        None => (None, rest),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let (ip, host, container) = match (ip, parts.as_slice()) {
        (None, [c]) => (None, "", *c),
        (None, [h, c]) => (None, *h, *c),
        (None, [ip, h, c]) => (Some(*ip), *h, *c),
        (Some(ip), [h, c]) => (Some(ip), *h, *c),
        _ => bail!("{}", usage()),
    };
    let host_ip: std::net::IpAddr = match ip {
        None | Some("") => std::net::Ipv4Addr::UNSPECIFIED.into(),
        Some(ip) => ip
            .parse()
            .with_context(|| format!("invalid -p {text:?}: {ip:?} is not an IP address"))?,
    };
    let range = |r: &str| -> anyhow::Result<(u16, u16)> {
        let number = |n: &str| {
            n.parse::<u16>()
                .ok()
                .filter(|n| *n > 0)
                .with_context(|| format!("invalid -p {text:?}: {n:?} is not a port (1-65535)"))
        };
        let (a, b) = match r.split_once('-') {
            Some((a, b)) => (number(a)?, number(b)?),
            None => (number(r)?, number(r)?),
        };
        if b < a {
            bail!("invalid -p {text:?}: the range {r} ends before it starts");
        }
        Ok((a, b))
    };
    let (c_first, c_last) = range(container)?;
    let count = usize::from(c_last - c_first) + 1;
    let host_ports: Vec<u16> = if host.is_empty() {
        vec![0; count]
    } else {
        let (h_first, h_last) = range(host)?;
        if usize::from(h_last - h_first) + 1 != count {
            bail!("invalid -p {text:?}: the host and container ranges differ in length");
        }
        (h_first..=h_last).collect()
    };
    Ok((c_first..=c_last)
        .zip(host_ports)
        .map(
            |(container_port, host_port)| crate::containers::PublishedPort {
                host_ip: host_ip.to_string(),
                host_port,
                container_port,
            },
        )
        .collect())
}

/// Free host ports for the `-p` entries that named none (the kernel's choice).
fn pick_free_ports(ports: &mut [crate::containers::PublishedPort]) -> anyhow::Result<()> {
    for port in ports.iter_mut().filter(|p| p.host_port == 0) {
        let ip: std::net::IpAddr = port.host_ip.parse()?;
        let probe = std::net::TcpListener::bind((ip, 0))
            .with_context(|| format!("cannot find a free port on {ip}"))?;
        port.host_port = probe.local_addr()?.port();
    }
    Ok(())
}

/// `-v SRC:DST[:OPTIONS]`: SRC is a host path (absolute, or relative starting with `.`) or a
/// volume name.
pub fn parse_volume(spec: &str) -> anyhow::Result<Volume> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (source, destination, options) = match parts.as_slice() {
        [s, d] => (*s, *d, ""),
        [s, d, o] => (*s, *d, *o),
        _ => bail!("invalid volume {spec:?}: use SRC:DST[:ro|rw]"),
    };
    let named = !source.starts_with('/') && !source.starts_with('.');
    if named && !gcr_storage::valid_volume_name(source) {
        bail!("invalid volume {spec:?}: {source:?} is neither an absolute path nor a volume name (a letter or digit, then letters, digits, '_', '.' or '-')");
    }
    if !destination.starts_with('/') {
        bail!("invalid volume {spec:?}: the destination must be an absolute path");
    }
    let mut read_only = false;
    let mut no_copy = false;
    for option in options.split(',').filter(|o| !o.is_empty()) {
        match option {
            "ro" => read_only = true,
            // Docker Desktop's consistency hints and SELinux relabelling: nothing to do here.
            "cached" | "delegated" | "consistent" | "z" | "Z" => {}
            "rw" => read_only = false,
            "nocopy" if named => no_copy = true,
            other => bail!("invalid volume {spec:?}: unknown option {other:?} (use ro, rw or, for a named volume, nocopy)"),
        }
    }
    if named {
        return Ok(Volume {
            source: PathBuf::new(),
            destination: destination.to_string(),
            read_only,
            named: Some(source.to_string()),
            no_copy,
        });
    }
    let source_path = Path::new(source);
    let source_path = std::fs::canonicalize(source_path).with_context(|| {
        format!("volume source {source} does not exist: create it first or fix the path")
    })?;
    Ok(Volume {
        source: source_path,
        destination: destination.to_string(),
        read_only,
        named: None,
        no_copy,
    })
}

/// `gcr create`: everything `gcr run` prepares (image, record, spec, upper dir), nothing run;
/// `gcr start` runs it.
pub fn create(ctx: &Context, mut args: RunArgs) -> anyhow::Result<u8> {
    args.create_only = true;
    run(ctx, args)
}

pub fn run(ctx: &Context, args: RunArgs) -> anyhow::Result<u8> {
    match run_inner(ctx, args) {
        Ok(code) => Ok(code),
        Err(RunFailure::Runtime(err)) => {
            eprintln!("error: {err}");
            Ok(u8::try_from(err.exit_code()).unwrap_or(crate::EXIT_GCR_FAILED))
        }
        Err(RunFailure::Other(err)) => Err(err),
    }
}

/// A runtime error keeps its own exit status (126, 127); everything else is 125.
pub(crate) enum RunFailure {
    Runtime(gcr_runtime::RuntimeError),
    Other(anyhow::Error),
}

impl From<anyhow::Error> for RunFailure {
    fn from(err: anyhow::Error) -> Self {
        RunFailure::Other(err)
    }
}

impl From<gcr_storage::StoreError> for RunFailure {
    fn from(err: gcr_storage::StoreError) -> Self {
        RunFailure::Other(err.into())
    }
}

fn run_inner(ctx: &Context, args: RunArgs) -> Result<u8, RunFailure> {
    let env_overrides = command_line_env(&args)?;
    let mut volumes = args
        .volume
        .iter()
        .map(|v| parse_volume(v))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut tmpfs_mounts: Vec<(String, String)> = Vec::new();
    for text in &args.mount {
        match parse_mount(text)? {
            MountFlag::Volume(v) => volumes.push(v),
            MountFlag::Tmpfs {
                destination,
                options,
            } => tmpfs_mounts.push((destination, options)),
        }
    }
    for tmpfs in &args.tmpfs {
        let (destination, options) = tmpfs.split_once(':').unwrap_or((tmpfs.as_str(), ""));
        if !destination.starts_with('/') {
            return Err(anyhow::anyhow!(
                "invalid --tmpfs {tmpfs:?}: the destination must be an absolute path"
            )
            .into());
        }
        tmpfs_mounts.push((destination.to_string(), options.to_string()));
    }
    let labels = parse_labels(&args.label)?;
    if !matches!(args.pull.as_str(), "missing" | "always" | "never") {
        return Err(anyhow::anyhow!(
            "invalid --pull {:?}: use missing, always or never",
            args.pull
        )
        .into());
    }
    if let Some(signal) = &args.stop_signal {
        crate::containers::parse_signal(signal)?;
    }
    let rlimits = args
        .ulimit
        .iter()
        .map(|u| parse_ulimit(u))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let shm_bytes = args
        .shm_size
        .as_deref()
        .map(|s| parse_memory(s).with_context(|| format!("invalid --shm-size {s:?}")))
        .transpose()?;
    let network = NetworkChoice::parse(&args.network)?;
    let extra_hosts = parse_extra_hosts(&args.add_host, network)?;
    for server in &args.dns {
        server
            .parse::<std::net::IpAddr>()
            .map_err(|_| anyhow::anyhow!("invalid --dns {server:?}: give an IP address"))?;
    }
    let mut published = Vec::new();
    for p in &args.publish {
        published.extend(parse_publish(p)?);
    }
    match network {
        NetworkChoice::Host if !published.is_empty() || args.publish_all => {
            eprintln!("WARNING: published ports are discarded when using the host network");
            published.clear();
        }
        NetworkChoice::None if !published.is_empty() || args.publish_all => {
            return Err(anyhow::anyhow!(
                "-p/-P need a network with its own ports; --network none has none"
            )
            .into());
        }
        _ => {}
    }
    let policy = RestartPolicy::parse(&args.restart)?;
    if args.rm && policy != RestartPolicy::No {
        return Err(anyhow::anyhow!(
            "conflicting options: --restart {} and --rm (a removed container cannot run again)",
            args.restart
        )
        .into());
    }
    let store = ctx.open_store()?;
    // Named volumes exist from their first use on; a new (empty) one gets the image's files.
    let mut copy_up = Vec::new();
    for volume in &mut volumes {
        if let Some(name) = &volume.named {
            let (dir, _) = store.create_volume(name)?;
            let empty = std::fs::read_dir(&dir)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
            if empty && !volume.no_copy {
                copy_up.push(PathBuf::from(&volume.destination));
            }
            volume.source = dir;
        }
    }
    let container_id = new_container_id()?;
    let state_dir = store.container_dir(&container_id)?;
    // As Docker: an existing file is refused (it may name another container); written now so
    // that this fails before anything starts, removed again if the container is not made.
    let mut cidfile = match &args.cidfile {
        Some(file) => {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(file)
                .and_then(|mut f| std::io::Write::write_all(&mut f, container_id.as_bytes()))
                .with_context(|| {
                    format!(
                        "cannot write --cidfile {} (it must not exist yet)",
                        file.display()
                    )
                })?;
            Some(UnlessKept {
                path: file.clone(),
                kept: false,
            })
        }
        None => None,
    };

    // What to run: an image's layers, or a plain directory.
    let (rootfs, image, command, image_id) = match &args.rootfs {
        Some(dir) => {
            let meta = std::fs::metadata(dir)
                .with_context(|| format!("rootfs {} does not exist", dir.display()))?;
            if !meta.is_dir() {
                return Err(anyhow::anyhow!(
                    "rootfs {} is not a directory: give a directory holding a root filesystem",
                    dir.display()
                )
                .into());
            }
            let dir = std::fs::canonicalize(dir)
                .with_context(|| format!("cannot resolve rootfs {}", dir.display()))?;
            (
                gcr_runtime::RootfsSource::Directory(dir),
                ImageProcess::default(),
                args.args.clone(),
                None,
            )
        }
        None => {
            let (name, command) = args
                .args
                .split_first()
                .ok_or_else(|| anyhow::anyhow!("no image given: gcr run IMAGE [COMMAND]"))?;
            let record = match (args.pull.as_str(), crate::images::find_image(&store, name)) {
                ("always", _) | ("missing", Err(_)) => {
                    pull_missing(ctx, name, args.platform.as_deref())?;
                    crate::images::find_image(&store, name)?
                }
                (_, Ok(record)) => record,
                (_, Err(e)) => {
                    return Err(e
                        .context(format!("--pull never: image {name} is not in the store"))
                        .into())
                }
            };
            let config_bytes = store.image_config_bytes(&record)?;
            let config: Value = serde_json::from_slice(&config_bytes)
                .with_context(|| format!("image config of {name} is not JSON"))?;
            let upper = state_dir.join("upper");
            let work = state_dir.join("work");
            let lower = record
                .layers
                .iter()
                .rev()
                .map(|diff_id| store.layer_dir(diff_id))
                .collect();
            (
                gcr_runtime::RootfsSource::Overlay {
                    lower,
                    upper,
                    work,
                    userxattr: gcr_runtime::userns::rootless_ids().is_some(),
                },
                ImageProcess::from_config(&config),
                command.to_vec(),
                Some(record.id.clone()),
            )
        }
    };

    let argv = process_args(&image, args.entrypoint.as_deref(), &command);
    if argv.is_empty() {
        return Err(anyhow::anyhow!(
            "no command to run: the image has no ENTRYPOINT or CMD; give one after the image"
        )
        .into());
    }
    let hostname = args
        .hostname
        .clone()
        .unwrap_or_else(|| container_id[..12].to_string());
    let mut base_env = vec![format!("HOSTNAME={hostname}")];
    if !image.env.iter().any(|e| e.starts_with("PATH=")) {
        base_env
            .push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string());
    }
    let env = merge_env(&merge_env(&base_env, &image.env), &env_overrides);

    let mut spec = gcr_runtime::docker_default_spec();
    spec.set_hostname(Some(hostname));
    let recorded_command = argv.clone();
    if let Some(mut process) = spec.process().clone() {
        process.set_args(Some(argv));
        process.set_env(Some(env));
        let cwd = args
            .workdir
            .clone()
            .filter(|w| !w.is_empty())
            .or_else(|| Some(image.working_dir.clone()).filter(|w| !w.is_empty()))
            .unwrap_or_else(|| "/".to_string());
        if !cwd.starts_with('/') {
            return Err(
                anyhow::anyhow!("working directory {cwd:?} must be an absolute path").into(),
            );
        }
        process.set_cwd(PathBuf::from(cwd));
        process.set_terminal(Some(args.tty));
        spec.set_process(Some(process));
    }
    apply_security(&mut spec, &args)?;
    if network == NetworkChoice::Host {
        gcr_runtime::remove_namespace(&mut spec, oci_spec::runtime::LinuxNamespaceType::Network);
    }
    for (flag, mode, namespace) in [
        (
            "--pid",
            &args.pid_mode,
            oci_spec::runtime::LinuxNamespaceType::Pid,
        ),
        (
            "--ipc",
            &args.ipc_mode,
            oci_spec::runtime::LinuxNamespaceType::Ipc,
        ),
    ] {
        match mode.as_deref() {
            None | Some("private") | Some("") => {}
            // Rootless, a fresh /proc cannot be mounted for the host's PID namespace.
            Some("host") if flag == "--pid" && gcr_runtime::userns::is_rootless() => {
                return Err(anyhow::anyhow!(
                    "--pid host is not supported rootless yet: run as root, or without it"
                )
                .into())
            }
            Some("host") => gcr_runtime::remove_namespace(&mut spec, namespace),
            Some(other) => {
                return Err(anyhow::anyhow!(
                    "{flag} {other:?} is not supported: use private or host"
                )
                .into())
            }
        }
    }
    if args.publish_all && matches!(network, NetworkChoice::Private(_)) {
        for exposed in &image.exposed_ports {
            match exposed.split_once('/') {
                Some((port, "tcp")) | Some((port, "")) => {
                    if let Ok(port) = port.parse::<u16>() {
                        published.push(crate::containers::PublishedPort {
                            host_ip: "0.0.0.0".into(),
                            host_port: 0,
                            container_port: port,
                        });
                    }
                }
                _ => eprintln!("WARNING: -P publishes tcp ports only; {exposed} is not published"),
            }
        }
    }
    pick_free_ports(&mut published)?;
    // Held until the container is gone: no other gcr gets the same --userns=auto range.
    let _userns_lease = match user_namespace(&args)? {
        Some(mapped) => {
            gcr_runtime::set_user_namespace(&mut spec, &mapped.uid_map, &mapped.gid_map);
            mapped.lease
        }
        None => None,
    };
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    for volume in &volumes {
        mounts.push(gcr_runtime::bind_mount(
            &volume.source,
            Path::new(&volume.destination),
            volume.read_only,
        ));
    }
    for (destination, options) in &tmpfs_mounts {
        mounts.push(gcr_runtime::tmpfs_mount(Path::new(destination), options));
    }
    if let Some(bytes) = shm_bytes {
        for m in mounts
            .iter_mut()
            .filter(|m| m.destination() == Path::new("/dev/shm"))
        {
            let mut options: Vec<String> = m
                .options()
                .clone()
                .unwrap_or_default()
                .into_iter()
                .filter(|o| !o.starts_with("size="))
                .collect();
            options.push(format!("size={bytes}"));
            m.set_options(Some(options));
        }
    }
    spec.set_mounts(Some(mounts));
    if !rlimits.is_empty() || !args.group_add.is_empty() {
        if let Some(mut process) = spec.process().clone() {
            if !rlimits.is_empty() {
                process.set_rlimits(Some(rlimits));
            }
            spec.set_process(Some(process));
        }
    }
    if let Some(resources) = resource_limits(&args)? {
        if let Some(mut linux) = spec.linux().clone() {
            linux.set_resources(Some(resources));
            spec.set_linux(Some(linux));
        }
    }
    if args.read_only {
        if let Some(mut root) = spec.root().clone() {
            root.set_readonly(Some(true));
            spec.set_root(Some(root));
        }
    }

    // From the check until the record holds the name, no other gcr may take it.
    let names_lock = match &args.name {
        Some(name) => {
            let lock = crate::containers::NameLock::take(&store)?;
            crate::containers::ensure_name_free(&store, name)?;
            Some(lock)
        }
        None => None,
    };
    // Record the container before anything is created for it, so `gcr system check` and
    // `rmi` know the image is in use.
    match &image_id {
        // A --rm container's record need not survive a crash: skip the fsyncs.
        Some(id) if args.rm => store.register_ephemeral_container(&container_id, id)?,
        Some(id) => store.register_container(&container_id, id)?,
        None => std::fs::create_dir_all(&state_dir)
            .with_context(|| format!("cannot create {}", state_dir.display()))?,
    }
    let meta = crate::containers::ContainerMeta {
        name: args.name.clone(),
        image: match &args.rootfs {
            Some(dir) => format!("--rootfs {}", dir.display()),
            None => args.args.first().cloned().unwrap_or_default(),
        },
        command: recorded_command,
        created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        pid: std::process::id(),
        pid_start: crate::containers::process_start(std::process::id()),
        stop_signal: args
            .stop_signal
            .clone()
            .or_else(|| Some(image.stop_signal.clone()))
            .filter(|s| !s.is_empty()),
        stop_timeout: args.stop_timeout,
        labels: labels.clone(),
        group_add: args.group_add.clone(),
        remove: args.rm,
        user: args
            .user
            .clone()
            .or_else(|| Some(image.user.clone()))
            .filter(|u| !u.is_empty()),
        init: args.init,
        started: None,
        restart: (args.restart != "no").then(|| args.restart.clone()),
        restarts: 0,
        network: Some(network.name().to_string()),
        ports: published.clone(),
        extra_hosts: extra_hosts.clone(),
        dns: args.dns.clone(),
        dns_search: args.dns_search.clone(),
        dns_options: args.dns_option.clone(),
    };
    crate::containers::write_meta(&state_dir, &meta)?;
    drop(names_lock);
    // The container exists from here on: the --cidfile names it.
    if let Some(file) = cidfile.take() {
        file.keep();
    }
    // The OCI runtime spec, as a bundle's config.json: `gcr exec` starts from its process.
    crate::containers::write_spec(&state_dir, &spec)?;
    if let gcr_runtime::RootfsSource::Overlay { upper, work, .. } = &rootfs {
        for dir in [upper, work] {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
    }
    let mut options = gcr_runtime::RunOptions::new(rootfs, container_id.clone(), &state_dir);
    options.tty = args.tty;
    options.stdin = args.interactive;
    options.init = args.init;
    // A kept container's upper dir may be mounted again (`gcr start`): the kernel refuses to
    // reuse one that was mounted `volatile`, so only --rm containers skip the syncs.
    options.overlay_volatile = args.rm;
    options.user = args
        .user
        .clone()
        .or_else(|| Some(image.user.clone()))
        .filter(|u| !u.is_empty());

    options.pid_file = Some(crate::containers::pid_file(&state_dir));
    options.copy_up = copy_up;
    options.network = crate::containers::network_options(network, &published)?;
    options.extra_hosts = extra_hosts.clone();
    options.group_add = args.group_add.clone();
    options.dns = gcr_runtime::DnsOptions {
        servers: args.dns.clone(),
        search: args.dns_search.clone(),
        options: args.dns_option.clone(),
    };
    let keep = !args.rm && image_id.is_some();
    if args.create_only {
        if image_id.is_none() {
            remove_container(&store, &container_id, false);
            return Err(anyhow::anyhow!("gcr create needs an image (not --rootfs)").into());
        }
        std::fs::write(state_dir.join(crate::containers::CREATED), b"")
            .with_context(|| format!("cannot write {}", state_dir.display()))?;
        println!("{container_id}");
        return Ok(0);
    }
    if args.detach {
        let code = start_detached(
            &store,
            &container_id,
            &state_dir,
            &spec,
            options,
            keep,
            meta,
        )?;
        if code == 0 {
            println!("{container_id}");
        }
        return Ok(code);
    }
    // A kept container's output goes to its log too, as Docker keeps it (`gcr logs`); with
    // a terminal (-t) it stays the terminal's only.
    let tee = if keep && !args.tty {
        Some(
            gcr_runtime::OutputTee::start(&crate::containers::log_file(&state_dir))
                .map_err(RunFailure::Runtime)?,
        )
    } else {
        None
    };
    let result = supervise(
        &store,
        &container_id,
        &state_dir,
        &spec,
        &options,
        keep,
        policy,
    );
    drop(tee);
    match result {
        Ok(code) => Ok((code & 0xff) as u8),
        Err(err) => Err(RunFailure::Runtime(err)),
    }
}

/// The exit status a run of the container gives.
fn result_code(result: &Result<i32, gcr_runtime::RuntimeError>) -> i32 {
    match result {
        Ok(code) => *code,
        Err(err) => err.exit_code(),
    }
}

/// Runs the container to its end, then records its exit status (`keep`) or removes it.
pub(crate) fn supervise(
    store: &gcr_storage::Store,
    container_id: &str,
    state_dir: &Path,
    spec: &gcr_runtime::Spec,
    options: &gcr_runtime::RunOptions,
    keep: bool,
    policy: RestartPolicy,
) -> Result<i32, gcr_runtime::RuntimeError> {
    let mut result = gcr_runtime::run_container(spec, options);
    // Later runs have nobody waiting for the start byte.
    let mut again = options.clone();
    again.started_fd = None;
    let mut restarts = 0u32;
    let mut delay = std::time::Duration::from_millis(100);
    loop {
        let code = result_code(&result);
        let ran = result.is_ok();
        // `gcr stop` and `kill` mark the container: stopped by hand, it stays stopped.
        let stopped = state_dir.join(crate::containers::STOPPED).exists();
        if !(keep && ran && !stopped && policy.wants(code, restarts)) {
            break;
        }
        restarts += 1;
        crate::containers::record_restart(state_dir, restarts);
        // Docker's backoff (doubling from 100 ms), watching for a stop meanwhile.
        let until = std::time::Instant::now() + delay;
        while std::time::Instant::now() < until
            && !state_dir.join(crate::containers::STOPPED).exists()
        {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        delay = (delay * 2).min(std::time::Duration::from_secs(30));
        if state_dir.join(crate::containers::STOPPED).exists() {
            break;
        }
        result = gcr_runtime::run_container(spec, &again);
    }
    // A container that never started leaves nothing behind; --rm removes it after it ran.
    let started = result.is_ok() || matches!(&result, Err(gcr_runtime::RuntimeError::Exec { .. }));
    if !keep || !started {
        if started {
            // For `gcr attach`, which reads it through a handle of the directory set aside.
            crate::containers::write_exit_status(state_dir, result_code(&result));
            crate::containers::wait_for_attached(state_dir);
        }
        remove_container(store, container_id, started);
    } else {
        let _ = std::fs::remove_file(crate::containers::pid_file(state_dir));
        crate::containers::write_exit_status(state_dir, result_code(&result));
    }
    result
}

/// `gcr run -d` and `gcr start`: a detached child becomes the container's `gcr run` (its
/// supervisor: new session, output into the container's log) and reports through a pipe
/// whether the command started; 0 when it did (the caller prints what Docker prints).
pub(crate) fn start_detached(
    store: &gcr_storage::Store,
    container_id: &str,
    state_dir: &Path,
    spec: &gcr_runtime::Spec,
    mut options: gcr_runtime::RunOptions,
    keep: bool,
    mut meta: crate::containers::ContainerMeta,
) -> Result<u8, RunFailure> {
    use std::io::Write as _;
    use std::os::fd::AsRawFd as _;
    let log_path = crate::containers::log_file(state_dir);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))?;
    let (report_read, report_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .context("cannot make a pipe for the detached container")?;
    let mut report_read = std::fs::File::from(report_read);
    options.started_fd = Some(report_write.as_raw_fd());
    // `-dit`/`-di`: the container's input stays open and empty (the usual way to keep a
    // shell alive for `gcr exec`); nothing can write to it, as gcr attach has no input.
    let keep_input_open = options.stdin;
    if options.tty {
        // The pty alone keeps it open; gcr's own /dev/null must not reach it.
        options.stdin = false;
    }
    let detached = gcr_runtime::run_detached(move || {
        // Between two runs of a restart policy no container takes the signals `gcr stop`
        // sends through the supervisor: they must not end it unrecorded.
        gcr_runtime::ignore_stop_signals();
        if keep_input_open && !options.tty {
            if let Ok((read_end, write_end)) = nix::unistd::pipe() {
                let _ = nix::unistd::dup2_stdin(&read_end);
                // Held (never written) for the supervisor's life: no end-of-file comes.
                std::mem::forget(write_end);
            }
        }
        let mut report = std::fs::File::from(report_write);
        let _ = nix::unistd::dup2_stdout(&log);
        let _ = nix::unistd::dup2_stderr(&log);
        drop(log);
        meta.owned_by_this_process();
        if let Err(err) = crate::containers::write_meta(state_dir, &meta) {
            let _ = write!(report, "E125 {err:#}");
            return;
        }
        let policy = RestartPolicy::of(&meta);
        match supervise(store, container_id, state_dir, spec, &options, keep, policy) {
            // The runtime wrote "S" when the command started.
            Ok(_) => {}
            Err(err) => {
                let _ = write!(report, "E{} {err}", err.exit_code());
            }
        }
    });
    if let Err(err) = detached {
        remove_container(store, container_id, false);
        return Err(anyhow::anyhow!("cannot start the container in the background: {err}").into());
    }
    await_start(&mut report_read).ok_or_else(|| {
        anyhow::anyhow!(
            "the background gcr for container {} ended before the command started; see `gcr logs {}`",
            &container_id[..12],
            &container_id[..12]
        )
        .into()
    })
}

/// Reads a background gcr's start report: `S` when the command started (0), or `E<code>
/// <message>` (the message is printed, the code returned); None when it ended silently.
pub(crate) fn await_start(report: &mut std::fs::File) -> Option<u8> {
    use std::io::Read as _;
    // One byte first: the background gcr keeps its end open while the command runs.
    let mut first = [0u8; 1];
    let got = report.read(&mut first).unwrap_or(0);
    if got == 1 && first[0] == b'S' {
        return Some(0);
    }
    let mut text = String::new();
    if got == 1 {
        text.push(first[0] as char);
        let _ = report.read_to_string(&mut text);
    }
    let rest = text.strip_prefix('E')?;
    let (code, message) = rest.split_once(' ').unwrap_or(("125", rest));
    eprintln!("error: {message}");
    Some(code.parse().unwrap_or(crate::EXIT_GCR_FAILED))
}

/// Removes a finished container: its directory leaves `containers/` at once (so the image is
/// free again), and the files are deleted by a detached child so gcr exits without waiting for
/// the filesystem. A container that never started has little to delete: done in place.
fn remove_container(store: &gcr_storage::Store, container_id: &str, started: bool) {
    let aside = match store.set_aside_container(container_id) {
        Ok(Some(aside)) => aside,
        Ok(None) => return,
        Err(err) => {
            tracing::warn!(%err, "cannot remove the container's files");
            return;
        }
    };
    if !started {
        aside.remove();
        return;
    }
    let mut pending = Some(aside);
    let detached = gcr_runtime::run_detached(|| {
        if let Some(aside) = pending.take() {
            aside.remove();
        }
    });
    match (detached, pending) {
        // The child deletes; this process must neither delete nor unlock the entry.
        (Ok(()), Some(aside)) => std::mem::forget(aside),
        (Err(err), Some(aside)) => {
            tracing::debug!(%err, "cannot fork a remover; removing in place");
            aside.remove();
        }
        (_, None) => {}
    }
}

/// A user namespace chosen with --userns/--uidmap/--gidmap.
struct MappedUserns {
    uid_map: Vec<(u32, u32, u32)>,
    gid_map: Vec<(u32, u32, u32)>,
    /// The lock that reserves an auto-allocated range.
    lease: Option<std::fs::File>,
}

/// Where `--userns=auto` reservations are locked: ids are machine-wide, so not per store.
const USERNS_LEASES: &str = "/run/gcr/userns";
/// Subordinate ids for `--userns=auto` belong to this user, as with Podman.
const AUTO_USER: &str = "containers";

fn user_namespace(args: &RunArgs) -> anyhow::Result<Option<MappedUserns>> {
    let mode = args.userns.as_deref().unwrap_or("");
    let explicit = !args.uidmap.is_empty() || !args.gidmap.is_empty();
    if gcr_runtime::userns::rootless_ids().is_some() {
        if explicit || !matches!(mode, "" | "host") {
            bail!(
                "--userns={mode}{} is not supported rootless yet: rootless gcr runs every container in its own user namespace, mapped from your /etc/subuid range",
                if explicit { " / --uidmap / --gidmap" } else { "" }
            );
        }
        return Ok(None);
    }
    if explicit {
        if !matches!(mode, "" | "private") {
            bail!("--uidmap/--gidmap cannot be combined with --userns={mode}");
        }
        let uid_map = parse_id_maps("--uidmap", &args.uidmap)?;
        let gid_map = if args.gidmap.is_empty() {
            uid_map.clone()
        } else {
            parse_id_maps("--gidmap", &args.gidmap)?
        };
        if uid_map.is_empty() {
            bail!("--gidmap needs a --uidmap too");
        }
        return Ok(Some(MappedUserns {
            uid_map,
            gid_map,
            lease: None,
        }));
    }
    let size = match mode {
        "" | "host" => return Ok(None),
        "auto" | "private" => 65536,
        other => match other.strip_prefix("auto:size=") {
            Some(n) => n
                .parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .with_context(|| format!("--userns={other}: size must be a positive number"))?,
            None => bail!(
                "unknown --userns {other:?}: use host, auto, auto:size=N or private (keep-id, nomap and ns: are not supported yet)"
            ),
        },
    };
    allocate_userns(size).map(Some)
}

/// `C:H:S[,C:H:S...]` values of --uidmap/--gidmap.
fn parse_id_maps(flag: &str, values: &[String]) -> anyhow::Result<Vec<(u32, u32, u32)>> {
    let mut maps = Vec::new();
    for value in values.iter().flat_map(|v| v.split(',')) {
        let parts: Vec<Option<u32>> = value.split(':').map(|x| x.parse().ok()).collect();
        match parts[..] {
            [Some(c), Some(h), Some(n)]
                if n > 0 && c.checked_add(n).is_some() && h.checked_add(n).is_some() =>
            {
                maps.push((c, h, n))
            }
            _ => bail!("{flag} {value:?}: expected CONTAINER_ID:HOST_ID:SIZE with a size above 0"),
        }
    }
    for (i, a) in maps.iter().enumerate() {
        for b in &maps[i + 1..] {
            let overlap = |x: u32, y: u32| x < y + b.2 && y < x + a.2;
            if overlap(a.0, b.0) || overlap(a.1, b.1) {
                bail!("{flag}: the ranges {a:?} and {b:?} overlap");
            }
        }
    }
    Ok(maps)
}

/// Reserves `size` ids from the "containers" ranges of /etc/subuid and /etc/subgid that no
/// running gcr container holds. Each reservation is a lease file `UID-GID-SIZE` locked by its
/// gcr for the container's life; a short global lock orders the allocations, and leases whose
/// lock is free are stale and removed.
fn allocate_userns(size: u32) -> anyhow::Result<MappedUserns> {
    let ranges = |file: &str| {
        gcr_runtime::userns::subordinate_ranges(Path::new(file), AUTO_USER, u32::MAX)
            .with_context(|| format!("reading {file}"))
    };
    let (uids, gids) = (ranges("/etc/subuid")?, ranges("/etc/subgid")?);
    if uids.is_empty() || gids.is_empty() {
        bail!(
            "--userns=auto needs subordinate ids for the user {AUTO_USER:?}: add a line such as \"{AUTO_USER}:2147483647:2147483648\" to /etc/subuid and /etc/subgid (as for Podman)"
        );
    }
    let dir = Path::new(USERNS_LEASES);
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let open = |path: &Path| {
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))
    };
    let global = open(&dir.join("allocate.lock"))?;
    global
        .lock()
        .with_context(|| format!("locking {}", dir.display()))?;
    // Ranges held by live leases: (uid start, gid start, size).
    let mut taken = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let parts: Vec<u32> = name.split('-').filter_map(|x| x.parse().ok()).collect();
        let [uid, gid, n] = parts[..] else { continue };
        let lease = open(&path)?;
        match lease.try_lock() {
            Ok(()) => {
                let _ = std::fs::remove_file(&path);
            }
            Err(std::fs::TryLockError::WouldBlock) => taken.push((uid, gid, n)),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", path.display()))
            }
        }
    }
    let free = |start: u32, pick: fn(&(u32, u32, u32)) -> u32| {
        taken.iter().all(|t| {
            start as u64 + size as u64 <= pick(t) as u64
                || pick(t) as u64 + t.2 as u64 <= start as u64
        })
    };
    let slots = |ranges: &[gcr_runtime::userns::IdRange]| -> Vec<u32> {
        ranges
            .iter()
            .flat_map(|r| (0..r.count / size).map(move |k| r.start + k * size))
            .collect()
    };
    let uid_start = slots(&uids).into_iter().find(|s| free(*s, |t| t.0));
    let gid_start = slots(&gids).into_iter().find(|s| free(*s, |t| t.1));
    let (Some(uid_start), Some(gid_start)) = (uid_start, gid_start) else {
        bail!(
            "--userns=auto: no free range of {size} ids left for the user {AUTO_USER:?} in /etc/subuid and /etc/subgid (running containers hold the rest)"
        )
    };
    let path = dir.join(format!("{uid_start}-{gid_start}-{size}"));
    let lease = open(&path)?;
    lease
        .try_lock()
        .with_context(|| format!("locking {}", path.display()))?;
    Ok(MappedUserns {
        uid_map: vec![(0, uid_start, size)],
        gid_map: vec![(0, gid_start, size)],
        lease: Some(lease),
    })
}

/// `--privileged`, `--cap-add/--cap-drop` and `--security-opt`, in the order Docker applies them.
fn apply_security(spec: &mut gcr_runtime::Spec, args: &RunArgs) -> anyhow::Result<()> {
    if args.privileged {
        gcr_runtime::set_privileged(spec);
    }
    if !args.cap_add.is_empty() || !args.cap_drop.is_empty() {
        gcr_runtime::set_capabilities(spec, &args.cap_add, &args.cap_drop)?;
    }
    for option in &args.security_opt {
        let (key, value) = option
            .split_once(['=', ':'])
            .unwrap_or((option.as_str(), ""));
        match (key, value) {
            ("seccomp", "unconfined") => gcr_runtime::set_seccomp_profile(spec, None)?,
            ("seccomp", file) if !file.is_empty() => {
                if !args.privileged {
                    gcr_runtime::set_seccomp_profile(spec, Some(Path::new(file)))?;
                }
            }
            ("no-new-privileges", "" | "true") => {
                if let Some(mut process) = spec.process().clone() {
                    process.set_no_new_privileges(Some(true));
                    spec.set_process(Some(process));
                }
            }
            ("no-new-privileges", "false") => {}
            ("apparmor" | "label", _) => {
                tracing::warn!(option, "ignored: gcr has no AppArmor or SELinux support");
            }
            _ => bail!(
                "unknown --security-opt {option:?}: use seccomp=unconfined, seccomp=FILE or no-new-privileges"
            ),
        }
    }
    Ok(())
}

/// `--memory 64m` -> bytes; Docker's units (b, k, m, g; case-insensitive; default bytes).
pub fn parse_memory(text: &str) -> anyhow::Result<i64> {
    let lower = text.trim().to_ascii_lowercase();
    let lower = lower
        .strip_suffix('b')
        .filter(|s| !s.is_empty())
        .unwrap_or(&lower);
    let (digits, factor) = match lower.chars().last() {
        Some('k') => (&lower[..lower.len() - 1], 1i64 << 10),
        Some('m') => (&lower[..lower.len() - 1], 1 << 20),
        Some('g') => (&lower[..lower.len() - 1], 1 << 30),
        _ => (lower, 1),
    };
    let value: f64 = digits
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v > 0.0)
        .ok_or_else(|| {
            anyhow::anyhow!("invalid --memory {text:?}: use a size such as 64m or 1g")
        })?;
    let bytes = value * factor as f64;
    if bytes < 6.0 * 1024.0 * 1024.0 || bytes > i64::MAX as f64 {
        bail!("invalid --memory {text:?}: the minimum is 6m, as in Docker");
    }
    Ok(bytes as i64)
}

/// The cgroup limits the flags ask for, or None.
fn resource_limits(args: &RunArgs) -> anyhow::Result<Option<oci_spec::runtime::LinuxResources>> {
    use oci_spec::runtime::{
        LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder,
    };
    if args.memory.is_none()
        && args.pids_limit.is_none()
        && args.cpus.is_none()
        && args.cpu_shares.is_none()
    {
        return Ok(None);
    }
    let mut resources = LinuxResourcesBuilder::default();
    if let Some(memory) = &args.memory {
        let limit = parse_memory(memory)?;
        resources = resources.memory(LinuxMemoryBuilder::default().limit(limit).build()?);
    }
    if let Some(pids) = args.pids_limit {
        if pids == 0 || pids < -1 {
            bail!("invalid --pids-limit {pids}: give a positive number, or -1 for no limit");
        }
        resources = resources.pids(LinuxPidsBuilder::default().limit(pids).build()?);
    }
    if args.cpus.is_some() || args.cpu_shares.is_some() {
        let mut cpu = LinuxCpuBuilder::default();
        if let Some(cpus) = args.cpus {
            let online = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
            if !(cpus > 0.0 && cpus <= online) {
                bail!("invalid --cpus {cpus}: give a number above 0 and at most {online}");
            }
            let period: u64 = 100_000;
            cpu = cpu.period(period).quota((cpus * period as f64) as i64);
        }
        if let Some(shares) = args.cpu_shares {
            cpu = cpu.shares(shares);
        }
        resources = resources.cpu(cpu.build()?);
    }
    Ok(Some(resources.build()?))
}

/// 64 hex digits: sha256 of fresh random bytes, like Docker's container IDs.
fn new_container_id() -> anyhow::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("cannot read /dev/urandom for a container id")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Pulls a missing image in a child `gcr pull`, so this process never starts the threads of
/// an async runtime before it forks the container.
fn pull_missing(ctx: &Context, name: &str, platform: Option<&str>) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find the gcr binary to pull with")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("--root").arg(&ctx.root).arg("pull").arg("-q");
    if let Some(platform) = platform {
        cmd.arg("--platform").arg(platform);
    }
    cmd.arg(name).stdout(std::process::Stdio::null());
    let status = cmd.status().context("cannot start gcr pull")?;
    if !status.success() {
        bail!("image {name} is not in the store and could not be pulled");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_values_as_docker_reads_them() {
        let one = |text: &str| {
            parse_publish(text)
                .unwrap()
                .into_iter()
                .map(|p| (p.host_ip, p.host_port, p.container_port))
                .collect::<Vec<_>>()
        };
        assert_eq!(one("80"), [("0.0.0.0".into(), 0, 80)]);
        assert_eq!(one("8080:80"), [("0.0.0.0".into(), 8080, 80)]);
        assert_eq!(one("8080:80/TCP"), [("0.0.0.0".into(), 8080, 80)]);
        assert_eq!(one("127.0.0.1::80"), [("127.0.0.1".into(), 0, 80)]);
        assert_eq!(one("127.0.0.1:81:80"), [("127.0.0.1".into(), 81, 80)]);
        assert_eq!(one("[::1]:81:80"), [("::1".into(), 81, 80)]);
        assert_eq!(
            one("9000-9001:8000-8001"),
            [
                ("0.0.0.0".into(), 9000, 8000),
                ("0.0.0.0".into(), 9001, 8001)
            ]
        );
        for bad in [
            "",
            "0",
            "70000",
            "a:80",
            "1:2:3:4",
            "9000-9002:8000-8001",
            "81-80",
            "80/udp",
            "80/xyz",
            "bad-ip:80:80",
            "[::1:80",
        ] {
            assert!(parse_publish(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn extra_hosts_resolve_host_gateway_per_network() {
        use gcr_runtime::PrivateNetwork::{Bridge, Slirp};
        let given = ["db:10.0.0.5".to_string(), "gw=host-gateway".to_string()];
        let hosts = parse_extra_hosts(&given, NetworkChoice::Private(Bridge)).unwrap();
        assert_eq!(hosts[1], ("gw".to_string(), "10.88.0.1".to_string()));
        let hosts = parse_extra_hosts(&given, NetworkChoice::Private(Slirp)).unwrap();
        let host: std::net::IpAddr = hosts[1].1.parse().unwrap();
        assert!(!host.is_loopback() && !host.is_unspecified(), "{host}");
        assert_eq!(hosts[0], ("db".to_string(), "10.0.0.5".to_string()));
        assert!(parse_extra_hosts(&given, NetworkChoice::None).is_err());
        assert!(parse_extra_hosts(&[":1.2.3.4".into()], NetworkChoice::Host).is_err());
    }

    fn image() -> ImageProcess {
        ImageProcess {
            entrypoint: vec!["/entry".into()],
            cmd: vec!["serve".into()],
            ..Default::default()
        }
    }

    #[test]
    fn entrypoint_and_cmd_follow_docker() {
        assert_eq!(process_args(&image(), None, &[]), vec!["/entry", "serve"]);
        assert_eq!(
            process_args(&image(), None, &["x".into()]),
            vec!["/entry", "x"]
        );
        assert_eq!(process_args(&image(), Some("/sh"), &[]), vec!["/sh"]);
        assert_eq!(process_args(&image(), Some(""), &["ls".into()]), vec!["ls"]);
    }

    #[test]
    fn env_overrides_keep_last() {
        let merged = merge_env(
            &["PATH=/bin".into(), "A=1".into()],
            &["A=2".into(), "B=3".into()],
        );
        assert_eq!(merged, vec!["PATH=/bin", "A=2", "B=3"]);
    }

    #[test]
    fn memory_sizes_follow_docker_units() {
        assert_eq!(parse_memory("64m").unwrap(), 64 << 20);
        assert_eq!(parse_memory("1G").unwrap(), 1 << 30);
        assert_eq!(parse_memory("8192k").unwrap(), 8 << 20);
        assert_eq!(parse_memory("10mb").unwrap(), 10 << 20);
        assert!(parse_memory("1k").is_err());
        assert!(parse_memory("lots").is_err());
        assert!(parse_memory("-5m").is_err());
    }

    #[test]
    fn volumes_are_checked() {
        assert!(parse_volume("/nonexistent-gcr-dir:/x").is_err());
        assert!(parse_volume("/tmp:relative").is_err());
        assert!(parse_volume("-bad:/x").is_err());
        assert!(parse_volume("/tmp:/x:nocopy").is_err());
        let v = parse_volume("/tmp:/data:ro").unwrap();
        assert!(v.read_only);
        assert_eq!(v.destination, "/data");
        let v = parse_volume("cache:/var/cache:nocopy").unwrap();
        assert_eq!(v.named.as_deref(), Some("cache"));
        assert!(v.no_copy && !v.read_only);
    }
}
