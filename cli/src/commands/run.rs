//! `gcr run` and `gcr create`: flags become the library's typed options; the library makes
//! the container and runs it.

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::Args;

use crate::context::{status_byte, Context};

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
    pub create_only: bool,
    /// Run it again when it ends: no, always, unless-stopped or on-failure[:MAX] (while its
    /// gcr supervises it; gcr has no daemon to start containers at boot)
    #[arg(long, value_name = "POLICY", default_value = "no")]
    restart: String,
    /// More names the container has on its user network (repeatable)
    #[arg(long = "network-alias", value_name = "ALIAS")]
    network_alias: Vec<String>,
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
    /// Logging driver: json-file (default), k8s-file, local (20 MB in 5 files) or none (no log)
    #[arg(long = "log-driver", value_name = "DRIVER")]
    log_driver: Option<String>,
    /// Log driver option (repeatable, or comma-joined): max-size=10m, max-file=3,
    /// labels=KEY,..., env=NAME,..., labels-regex=, env-regex=
    #[arg(long = "log-opt", value_name = "KEY=VALUE")]
    log_opt: Vec<String>,
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
    /// Set a namespaced kernel parameter: KEY=VALUE, e.g. net.ipv4.ip_forward=1 (repeatable)
    #[arg(long = "sysctl", value_name = "KEY=VALUE")]
    sysctl: Vec<String>,
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
    /// rootless), host, none; bridge or slirp4netns name the private kind; a user network
    /// (`gcr network create`; repeat --network to join further ones); or container:NAME,
    /// the network of a running container
    #[arg(long, alias = "net", value_name = "MODE")]
    network: Vec<String>,
    /// The container's address on its (first) user network
    #[arg(long, value_name = "IPv4")]
    ip: Option<String>,
    /// Publish a container port on the host: [IP:][HOST_PORT:]CONTAINER_PORT[/tcp|/udp], ranges
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
    /// Mount the volumes and binds of another container (CONTAINER[:ro|rw])
    #[arg(long = "volumes-from", value_name = "CONTAINER")]
    volumes_from: Vec<String>,
    /// Command that checks the container's health (run with /bin/sh -c)
    #[arg(long = "health-cmd", value_name = "COMMAND")]
    health_cmd: Option<String>,
    /// Time between health checks (e.g. 30s, 1m30s)
    #[arg(long = "health-interval", value_name = "DURATION")]
    health_interval: Option<String>,
    /// Longest a health check may run
    #[arg(long = "health-timeout", value_name = "DURATION")]
    health_timeout: Option<String>,
    /// Time to settle before failed checks count
    #[arg(long = "health-start-period", value_name = "DURATION")]
    health_start_period: Option<String>,
    /// Time between checks during the start period
    #[arg(long = "health-start-interval", value_name = "DURATION")]
    health_start_interval: Option<String>,
    /// Failures in a row that make it unhealthy
    #[arg(long = "health-retries", value_name = "N")]
    health_retries: Option<u32>,
    /// Disable the image's HEALTHCHECK
    #[arg(long = "no-healthcheck")]
    no_healthcheck: bool,
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
    /// Memory and swap together: N[b|k|m|g], or -1 for unlimited swap
    #[arg(long, value_name = "SIZE", allow_hyphen_values = true)]
    memory_swap: Option<String>,
    /// CPUs the container may run on, e.g. 0-2 or 0,1
    #[arg(long, value_name = "CPUS")]
    cpuset_cpus: Option<String>,
    /// Relative block I/O weight, 10 to 1000
    #[arg(long, value_name = "N")]
    blkio_weight: Option<u16>,
    /// Limit reads from a block device: DEVICE:RATE (bytes a second, e.g. /dev/sda:1mb)
    #[arg(long, value_name = "DEV:RATE")]
    device_read_bps: Vec<String>,
    /// Limit writes to a block device: DEVICE:RATE
    #[arg(long, value_name = "DEV:RATE")]
    device_write_bps: Vec<String>,
    /// The cgroup the container's cgroups go under (instead of gcr)
    #[arg(long, value_name = "PATH")]
    cgroup_parent: Option<String>,
    /// Give the container a host device: /dev/X[:/dev/Y][:rwm]
    #[arg(long = "device", value_name = "DEVICE")]
    devices: Vec<String>,
    /// Allow devices in the container's devices cgroup, e.g. 'c 1:3 rwm'
    #[arg(long = "device-cgroup-rule", value_name = "RULE")]
    device_cgroup_rules: Vec<String>,
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

/// The library's options for these flags (everything but the image, resolved later).
/// The first `--network` (the default: private).
fn first_network(args: &RunArgs) -> &str {
    args.network.first().map_or("private", String::as_str)
}

/// `--network container:NAME`: the container whose network it shares.
pub fn shared_network(args: &RunArgs) -> Option<&str> {
    first_network(args)
        .strip_prefix("container:")
        .filter(|name| !name.is_empty())
}

fn create_options(
    args: &RunArgs,
    source: gcr_containers::ImageSource,
) -> anyhow::Result<gcr_containers::CreateOptions> {
    use gcr_containers::{parse_mount, parse_tmpfs, parse_ulimit, parse_volume, MountFlag};
    let mut env_entries = Vec::new();
    for file in &args.env_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read --env-file {}", file.display()))?;
        env_entries.extend(gcr_containers::env_file_entries(&text));
    }
    env_entries.extend(args.env.iter().cloned());
    let mut opts = gcr_containers::CreateOptions::new(source);
    opts.env = gcr_containers::resolve_env(env_entries, |k| std::env::var(k).ok());
    for v in &args.volume {
        opts.volumes.push(parse_volume(v)?);
    }
    for text in &args.mount {
        match parse_mount(text)? {
            MountFlag::Volume(v) => opts.volumes.push(v),
            MountFlag::Tmpfs {
                destination,
                options,
            } => opts.tmpfs.push((destination, options)),
        }
    }
    for tmpfs in &args.tmpfs {
        opts.tmpfs.push(parse_tmpfs(tmpfs)?);
    }
    opts.labels = gcr_containers::parse_labels(&args.label)?;
    opts.log_config = gcr_containers::logconfig::LogConfig::from_flags(
        args.log_driver.as_deref(),
        &args.log_opt,
    )?;
    if let Some(signal) = &args.stop_signal {
        gcr_containers::parse_signal(signal)?;
    }
    opts.sysctls = args
        .sysctl
        .iter()
        .map(|kv| gcr_containers::parse_sysctl(kv))
        .collect::<Result<_, _>>()?;
    opts.rlimits = args
        .ulimit
        .iter()
        .map(|u| parse_ulimit(u))
        .collect::<Result<_, _>>()?;
    opts.shm_size = args
        .shm_size
        .as_deref()
        .map(|s| gcr_containers::parse_size("--shm-size", s))
        .transpose()?;
    // A user network is known once the store is open (see `run`).
    opts.network = gcr_containers::NetworkChoice::parse(first_network(args))
        .unwrap_or(gcr_containers::NetworkChoice::None);
    opts.network_aliases = args.network_alias.clone();
    opts.ip = args.ip.clone();
    opts.more_networks = args
        .network
        .iter()
        .skip(1)
        .map(|name| gcr_containers::NetworkRequest {
            network: name.clone(),
            ..Default::default()
        })
        .collect();
    for p in &args.publish {
        opts.publish.extend(gcr_containers::parse_publish(p)?);
    }
    opts.publish_all = args.publish_all;
    let mode = |flag: &str, value: &Option<String>| -> anyhow::Result<bool> {
        match value.as_deref() {
            None | Some("private") | Some("") => Ok(false),
            Some("host") => Ok(true),
            Some(other) => bail!("{flag} {other:?} is not supported: use private or host"),
        }
    };
    opts.pid_host = mode("--pid", &args.pid_mode)?;
    opts.ipc_host = mode("--ipc", &args.ipc_mode)?;
    let rates = |flag: &str, list: &[String]| -> anyhow::Result<Vec<_>> {
        Ok(list
            .iter()
            .map(|t| gcr_containers::parse_device_rate(flag, t))
            .collect::<Result<_, _>>()?)
    };
    opts.resources = gcr_containers::Resources {
        memory: args
            .memory
            .as_deref()
            .map(gcr_containers::parse_memory)
            .transpose()?,
        memory_swap: args
            .memory_swap
            .as_deref()
            .map(parse_memory_swap)
            .transpose()?,
        pids_limit: args.pids_limit,
        cpus: args.cpus,
        cpu_shares: args.cpu_shares,
        cpuset_cpus: args.cpuset_cpus.clone(),
        blkio_weight: args.blkio_weight,
        device_read_bps: rates("--device-read-bps", &args.device_read_bps)?,
        device_write_bps: rates("--device-write-bps", &args.device_write_bps)?,
    };
    opts.devices = args
        .devices
        .iter()
        .map(|d| gcr_containers::parse_device(d))
        .collect::<Result<_, _>>()?;
    opts.device_cgroup_rules = args
        .device_cgroup_rules
        .iter()
        .map(|r| gcr_containers::parse_device_cgroup_rule(r))
        .collect::<Result<_, _>>()?;
    opts.cgroup_parent = args
        .cgroup_parent
        .as_deref()
        .map(gcr_containers::parse_cgroup_parent)
        .transpose()?;
    opts.userns =
        gcr_containers::UsernsMode::parse(args.userns.as_deref(), &args.uidmap, &args.gidmap)?;
    opts.entrypoint = args.entrypoint.clone();
    opts.name = args.name.clone();
    opts.workdir = args.workdir.clone();
    opts.user = args.user.clone();
    opts.hostname = args.hostname.clone();
    opts.tty = args.tty;
    opts.stdin = args.interactive;
    opts.remove = args.rm;
    opts.restart = args.restart.clone();
    opts.init = args.init;
    opts.stop_signal = args.stop_signal.clone();
    opts.stop_timeout = args.stop_timeout;
    opts.group_add = args.group_add.clone();
    opts.read_only = args.read_only;
    opts.extra_hosts = args.add_host.clone();
    opts.dns = args.dns.clone();
    opts.dns_search = args.dns_search.clone();
    opts.dns_options = args.dns_option.clone();
    opts.privileged = args.privileged;
    opts.cap_add = args.cap_add.clone();
    opts.cap_drop = args.cap_drop.clone();
    opts.security_opt = args.security_opt.clone();
    opts.health = health_flags(args)?;
    opts.volumes_from = args.volumes_from.clone();
    Ok(opts)
}

/// `--health-*` and `--no-healthcheck` as a healthcheck over the image's (Docker's flags).
fn health_flags(args: &RunArgs) -> anyhow::Result<Option<gcr_containers::health::HealthConfig>> {
    let nanos = |flag: &str, value: &Option<String>| -> anyhow::Result<i64> {
        match value {
            None => Ok(0),
            Some(text) => {
                let d = gcr_grammar::parse_go_duration(text).map_err(|e| {
                    anyhow::anyhow!(
                        "invalid --{flag} {text:?}: {e} (durations look like 30s, 1m30s or 500ms)"
                    )
                })?;
                Ok(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
            }
        }
    };
    let config = gcr_containers::health::HealthConfig {
        test: match &args.health_cmd {
            Some(cmd) => vec!["CMD-SHELL".into(), cmd.clone()],
            None => Vec::new(),
        },
        interval: nanos("health-interval", &args.health_interval)?,
        timeout: nanos("health-timeout", &args.health_timeout)?,
        start_period: nanos("health-start-period", &args.health_start_period)?,
        start_interval: nanos("health-start-interval", &args.health_start_interval)?,
        retries: args.health_retries.map_or(0, i64::from),
    };
    if args.no_healthcheck {
        if config != Default::default() {
            bail!("--no-healthcheck conflicts with the --health-* options");
        }
        return Ok(Some(gcr_containers::health::HealthConfig {
            test: vec!["NONE".into()],
            ..Default::default()
        }));
    }
    Ok((config != Default::default()).then_some(config))
}

/// A `--cidfile`: made (empty) before the container, so an existing file fails first, as
/// Docker; removed again unless the container was made.
struct CidFile {
    path: PathBuf,
    kept: bool,
}

impl CidFile {
    fn claim(path: &std::path::Path) -> anyhow::Result<CidFile> {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .with_context(|| {
                format!(
                    "cannot write --cidfile {} (it must not exist yet)",
                    path.display()
                )
            })?;
        Ok(CidFile {
            path: path.to_path_buf(),
            kept: false,
        })
    }

    fn keep(mut self, id: &str) -> anyhow::Result<()> {
        self.kept = true;
        std::fs::write(&self.path, id)
            .with_context(|| format!("cannot write --cidfile {}", self.path.display()))
    }
}

impl Drop for CidFile {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// `gcr create`: everything `gcr run` prepares (image, record, spec, upper dir), nothing run;
/// `gcr start` runs it.
pub fn create(ctx: &Context, mut args: RunArgs) -> anyhow::Result<u8> {
    args.create_only = true;
    run(ctx, args)
}

pub fn run(ctx: &Context, args: RunArgs) -> anyhow::Result<u8> {
    // Flags are checked before anything is pulled or made; the source is set once resolved.
    let mut opts = create_options(
        &args,
        gcr_containers::ImageSource::Directory(PathBuf::new()),
    )?;
    if !matches!(args.pull.as_str(), "missing" | "always" | "never") {
        bail!(
            "invalid --pull {:?}: use missing, always or never",
            args.pull
        );
    }
    let store = ctx.open_store()?;
    match shared_network(&args) {
        Some(target) => opts.network_container = Some(target.to_string()),
        None => {
            let (network, user_network) =
                gcr_containers::resolve_network(&store, first_network(&args))?;
            opts.network = network;
            opts.user_network = user_network;
        }
    }
    if opts.user_network.is_none() && !opts.network_aliases.is_empty() {
        bail!(
            "--network-alias needs a user network (gcr network create NAME, then --network NAME)"
        );
    }
    let cidfile = args.cidfile.as_deref().map(CidFile::claim).transpose()?;
    let source = match &args.rootfs {
        Some(dir) => gcr_containers::ImageSource::Directory(dir.clone()),
        None => {
            let name = args
                .args
                .first()
                .context("no image given: gcr run IMAGE [COMMAND]")?;
            let record = match (args.pull.as_str(), crate::lookup::find_image(&store, name)) {
                ("always", _) | ("missing", Err(_)) => {
                    pull_missing(ctx, name, args.platform.as_deref())?;
                    crate::lookup::find_image(&store, name)?
                }
                (_, Ok(record)) => record,
                (_, Err(e)) => {
                    return Err(e.context(format!("--pull never: image {name} is not in the store")))
                }
            };
            // --platform picks that platform's image of a stored multi-platform name.
            let record = match args.platform.as_deref() {
                Some(text) if record.index.is_some() => {
                    let platform = gcr_builder::Platform::parse(text)
                        .map_err(|e| anyhow::anyhow!("--platform: {e}"))?;
                    crate::lookup::stored_for_platform(&store, name, &platform).with_context(|| {
                        format!("image {name} has no image for {platform} (see gcr image inspect {name})")
                    })?
                }
                _ => record,
            };
            gcr_containers::ImageSource::Image {
                record: Box::new(record),
                reference: name.clone(),
            }
        }
    };
    opts.source = source;
    opts.command = match &args.rootfs {
        Some(_) => args.args.clone(),
        None => args.args[1..].to_vec(),
    };
    let (launch, notes) = gcr_containers::create(&store, opts)?;
    for warning in &notes.warnings {
        eprintln!("WARNING: {warning}");
    }
    if let Some(file) = cidfile {
        file.keep(&launch.id)?;
    }
    if args.create_only {
        println!("{}", launch.leave_created()?);
        return Ok(0);
    }
    if args.detach {
        let id = launch.id.clone();
        launch.start_detached()?;
        println!("{id}");
        return Ok(0);
    }
    // A failure to start keeps its status (126, 127): see context::exit_code.
    Ok(status_byte(launch.run_attached()?))
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

/// `--memory-swap`: a size, or -1 for unlimited swap.
pub(crate) fn parse_memory_swap(text: &str) -> anyhow::Result<i64> {
    if text.trim() == "-1" {
        return Ok(-1);
    }
    Ok(gcr_containers::parse_size("--memory-swap", text)?)
}
