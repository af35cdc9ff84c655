//! What a new container is made with: the typed options every front end fills (the CLI from
//! its flags, the Docker API from its JSON), and parsers for the text forms Docker's flags use.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{ContainerError, Result};
use crate::network::NetworkChoice;
use crate::record::PublishedPort;
use crate::userns::UsernsMode;

/// Where the container's root filesystem comes from.
#[derive(Debug, Clone)]
pub enum ImageSource {
    /// A stored image, and the reference the user gave for it (shown by `ps`).
    Image {
        record: Box<gcr_storage::ImageRecord>,
        reference: String,
    },
    /// A plain directory used as is (`--rootfs DIR`).
    Directory(PathBuf),
}

/// Everything a container is created with.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    pub source: ImageSource,
    /// Replaces the image's CMD (empty: keep it).
    pub command: Vec<String>,
    /// Replaces the image's ENTRYPOINT (and drops its CMD); `Some("")` clears it.
    pub entrypoint: Option<String>,
    pub name: Option<String>,
    /// KEY=VALUE entries over the image's environment.
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub hostname: Option<String>,
    pub tty: bool,
    pub stdin: bool,
    /// A client attaches the container's stdin (Docker's AttachStdin, as `docker run -i`
    /// asks): a FIFO in the record carries what it sends to the container's stdin.
    pub attach_stdin: bool,
    /// Removed when it ends (`--rm`).
    pub remove: bool,
    /// Docker's policy text: no, always, unless-stopped, on-failure[:MAX].
    pub restart: String,
    pub init: bool,
    pub volumes: Vec<Volume>,
    /// `--volumes-from CONTAINER[:ro|rw]`: that container's volumes and binds, at the same
    /// places (a `-v` to the same destination wins).
    pub volumes_from: Vec<String>,
    /// (destination, mount options) of tmpfs mounts.
    pub tmpfs: Vec<(String, String)>,
    pub labels: BTreeMap<String, String>,
    pub stop_signal: Option<String>,
    pub stop_timeout: Option<u64>,
    pub group_add: Vec<String>,
    pub rlimits: Vec<oci_spec::runtime::PosixRlimit>,
    /// `--sysctl KEY=VALUE`: namespaced sysctls (the runtime refuses the others, as Docker).
    pub sysctls: Vec<(String, String)>,
    /// Size of /dev/shm in bytes.
    pub shm_size: Option<i64>,
    pub read_only: bool,
    pub network: NetworkChoice,
    /// A user network to join instead (`network` is then the private bridge).
    pub user_network: Option<String>,
    /// Names the network's other members resolve to this container, beside its name.
    pub network_aliases: Vec<String>,
    /// `--ip`: its address on the user network.
    pub ip: Option<String>,
    /// `--network container:NAME`: the running container whose network namespace it joins.
    pub network_container: Option<String>,
    /// Further user networks (`--network a --network b`, the API's EndpointsConfig).
    pub more_networks: Vec<crate::attachments::NetworkRequest>,
    pub publish: Vec<PublishedPort>,
    /// Publish every EXPOSEd port (`-P`).
    pub publish_all: bool,
    /// `--add-host` values (NAME:IP, IP may be host-gateway).
    pub extra_hosts: Vec<String>,
    pub dns: Vec<String>,
    pub dns_search: Vec<String>,
    pub dns_options: Vec<String>,
    pub privileged: bool,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    /// seccomp=unconfined|FILE, no-new-privileges[=true|false], apparmor=..., label=...
    pub security_opt: Vec<String>,
    pub resources: Resources,
    /// `--device`: host nodes the container gets.
    pub devices: Vec<crate::limits::DeviceMapping>,
    /// `--device-cgroup-rule`: devices it may use beyond those (v1 devices cgroup, as root).
    pub device_cgroup_rules: Vec<oci_spec::runtime::LinuxDeviceCgroup>,
    /// `--cgroup-parent`: its groups go at PARENT/<id> instead of gcr/<id>.
    pub cgroup_parent: Option<String>,
    pub userns: UsernsMode,
    /// Share the host's PID namespace (`--pid host`).
    pub pid_host: bool,
    /// Share the host's IPC namespace (`--ipc host`).
    pub ipc_host: bool,
    /// `--health-*`, `--no-healthcheck`, the API's Config.Healthcheck: over the image's.
    pub health: Option<crate::health::HealthConfig>,
    /// `--log-driver`, `--log-opt` (checked when made: see [`crate::logconfig::LogConfig`]).
    pub log_config: crate::logconfig::LogConfig,
}

impl CreateOptions {
    /// Docker's defaults for a container of `source`.
    pub fn new(source: ImageSource) -> CreateOptions {
        CreateOptions {
            source,
            command: Vec::new(),
            entrypoint: None,
            name: None,
            env: Vec::new(),
            workdir: None,
            user: None,
            hostname: None,
            tty: false,
            stdin: false,
            attach_stdin: false,
            remove: false,
            restart: "no".into(),
            init: false,
            volumes: Vec::new(),
            volumes_from: Vec::new(),
            tmpfs: Vec::new(),
            labels: BTreeMap::new(),
            stop_signal: None,
            stop_timeout: None,
            group_add: Vec::new(),
            rlimits: Vec::new(),
            sysctls: Vec::new(),
            shm_size: None,
            read_only: false,
            network: NetworkChoice::None,
            user_network: None,
            network_aliases: Vec::new(),
            ip: None,
            network_container: None,
            more_networks: Vec::new(),
            publish: Vec::new(),
            publish_all: false,
            extra_hosts: Vec::new(),
            dns: Vec::new(),
            dns_search: Vec::new(),
            dns_options: Vec::new(),
            privileged: false,
            cap_add: Vec::new(),
            cap_drop: Vec::new(),
            security_opt: Vec::new(),
            resources: Resources::default(),
            devices: Vec::new(),
            device_cgroup_rules: Vec::new(),
            cgroup_parent: None,
            userns: UsernsMode::Host,
            pid_host: false,
            ipc_host: false,
            health: None,
            log_config: Default::default(),
        }
    }
}

/// cgroup limits (recorded in the container's meta.json too, for inspect and `update`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Resources {
    /// Bytes.
    pub memory: Option<i64>,
    /// Memory and swap together, bytes; -1: unlimited swap.
    pub memory_swap: Option<i64>,
    /// -1: unlimited.
    pub pids_limit: Option<i64>,
    pub cpus: Option<f64>,
    pub cpu_shares: Option<u64>,
    /// `--cpuset-cpus`: e.g. 0-2 or 0,1.
    pub cpuset_cpus: Option<String>,
    /// 10..1000.
    pub blkio_weight: Option<u16>,
    pub device_read_bps: Vec<crate::limits::ThrottleDevice>,
    pub device_write_bps: Vec<crate::limits::ThrottleDevice>,
}

/// A bind mount or named volume, its source made absolute and checked.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Volume {
    pub source: PathBuf,
    pub destination: String,
    pub read_only: bool,
    /// A named volume (its name), created in the store when first used; an empty name is an
    /// anonymous volume (`-v /data`, an image's VOLUME), named at create.
    pub named: Option<String>,
    /// `nocopy`: a new named volume stays empty instead of getting the image's files.
    pub no_copy: bool,
}

/// What one `--mount` asks for.
pub enum MountFlag {
    Volume(Volume),
    Tmpfs {
        destination: String,
        options: String,
    },
}

fn invalid(message: String) -> ContainerError {
    ContainerError::Invalid(message)
}

/// `-v SRC:DST[:OPTIONS]`: SRC is a host path (absolute, or relative starting with `.`) or a
/// volume name.
pub fn parse_volume(spec: &str) -> Result<Volume> {
    let parts: Vec<&str> = spec.split(':').collect();
    // `-v /data[:ro]`: an anonymous volume (named when the container is made).
    if let [destination, rest @ ..] = parts.as_slice() {
        let options = rest.first().copied().unwrap_or("");
        if destination.starts_with('/') && rest.len() <= 1 && !options.starts_with('/') {
            let mut read_only = false;
            for option in options.split(',').filter(|o| !o.is_empty()) {
                match option {
                    "ro" => read_only = true,
                    "rw" | "z" | "Z" | "cached" | "delegated" | "consistent" => {}
                    other => {
                        return Err(invalid(format!(
                            "invalid volume {spec:?}: unknown option {other:?} (use ro or rw)"
                        )))
                    }
                }
            }
            return Ok(Volume {
                source: PathBuf::new(),
                destination: destination.to_string(),
                read_only,
                named: Some(String::new()),
                no_copy: false,
            });
        }
    }
    let (source, destination, options) = match parts.as_slice() {
        [s, d] => (*s, *d, ""),
        [s, d, o] => (*s, *d, *o),
        _ => {
            return Err(invalid(format!(
                "invalid volume {spec:?}: use SRC:DST[:ro|rw]"
            )))
        }
    };
    let named = !source.starts_with('/') && !source.starts_with('.');
    if named && !gcr_storage::valid_volume_name(source) {
        return Err(invalid(format!("invalid volume {spec:?}: {source:?} is neither an absolute path nor a volume name (a letter or digit, then letters, digits, '_', '.' or '-')")));
    }
    if !destination.starts_with('/') {
        return Err(invalid(format!(
            "invalid volume {spec:?}: the destination must be an absolute path"
        )));
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
            other => return Err(invalid(format!("invalid volume {spec:?}: unknown option {other:?} (use ro, rw or, for a named volume, nocopy)"))),
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
    let source_path = std::fs::canonicalize(Path::new(source)).map_err(|e| {
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            invalid(format!(
                "volume source {source} cannot be reached: permission denied (a container binds only what its caller may open)"
            ))
        } else {
            invalid(format!(
                "volume source {source} does not exist: create it first or fix the path"
            ))
        }
    })?;
    Ok(Volume {
        source: source_path,
        destination: destination.to_string(),
        read_only,
        named: None,
        no_copy,
    })
}

/// Docker's `--mount type=...,source=...,target=...` (bind, volume, tmpfs).
pub fn parse_mount(text: &str) -> Result<MountFlag> {
    let mut kind = "volume";
    let (mut source, mut target) = (None, None);
    let (mut read_only, mut no_copy) = (false, false);
    let mut tmpfs_options = Vec::new();
    let truth = |key: &str, value: Option<&str>| -> Result<bool> {
        match value {
            None | Some("true") | Some("1") => Ok(true),
            Some("false") | Some("0") => Ok(false),
            Some(other) => Err(invalid(format!(
                "invalid --mount {text:?}: {key}={other} is not true or false"
            ))),
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
            other => {
                return Err(invalid(format!(
                    "invalid --mount {text:?}: unknown key {other:?}"
                )))
            }
        }
    }
    let target = target.filter(|t| t.starts_with('/')).ok_or_else(|| {
        invalid(format!(
            "invalid --mount {text:?}: give target=/absolute/path"
        ))
    })?;
    match kind {
        "tmpfs" => {
            if source.is_some() {
                return Err(invalid(format!(
                    "invalid --mount {text:?}: a tmpfs has no source"
                )));
            }
            Ok(MountFlag::Tmpfs {
                destination: target.to_string(),
                options: tmpfs_options.join(","),
            })
        }
        "bind" | "volume" => {
            if !tmpfs_options.is_empty() {
                return Err(invalid(format!(
                    "invalid --mount {text:?}: tmpfs options need type=tmpfs"
                )));
            }
            let source = source
                .ok_or_else(|| invalid(format!("invalid --mount {text:?}: give source=...")))?;
            if kind == "bind" && !source.starts_with('/') {
                return Err(invalid(format!(
                    "invalid --mount {text:?}: a bind source must be an absolute path"
                )));
            }
            if kind == "volume" && source.starts_with('/') {
                return Err(invalid(format!("invalid --mount {text:?}: a volume source is a volume name (use type=bind for a path)")));
            }
            let mut spec = format!("{source}:{target}");
            if read_only {
                spec.push_str(":ro");
            }
            let mut volume = parse_volume(&spec)?;
            volume.no_copy = no_copy && volume.named.is_some();
            Ok(MountFlag::Volume(volume))
        }
        other => Err(invalid(format!(
            "invalid --mount {text:?}: type {other:?} is not bind, volume or tmpfs"
        ))),
    }
}

/// `--tmpfs DST[:OPTIONS]`.
pub fn parse_tmpfs(text: &str) -> Result<(String, String)> {
    let (destination, options) = text.split_once(':').unwrap_or((text, ""));
    if !destination.starts_with('/') {
        return Err(invalid(format!(
            "invalid --tmpfs {text:?}: the destination must be an absolute path"
        )));
    }
    Ok((destination.to_string(), options.to_string()))
}

/// `-l KEY=VALUE` (a bare KEY is an empty value, as Docker).
pub fn parse_labels(given: &[String]) -> Result<BTreeMap<String, String>> {
    given
        .iter()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
            if k.is_empty() {
                return Err(invalid(format!("invalid --label {l:?}: use KEY=VALUE")));
            }
            Ok((k.to_string(), v.to_string()))
        })
        .collect()
}

/// `--ulimit nofile=1024:2048` as an OCI rlimit (`RLIMIT_NOFILE`); `-1` is unlimited.
pub fn parse_ulimit(text: &str) -> Result<oci_spec::runtime::PosixRlimit> {
    use oci_spec::runtime::PosixRlimitType as T;
    let usage = || {
        invalid(format!(
            "invalid --ulimit {text:?}: use NAME=SOFT[:HARD], e.g. nofile=1024:2048"
        ))
    };
    let (name, values) = text.split_once('=').ok_or_else(usage)?;
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
        other => {
            return Err(invalid(format!(
                "invalid --ulimit {text:?}: unknown limit {other:?}"
            )))
        }
    };
    let value = |v: &str| -> Result<u64> {
        if v == "-1" || v == "unlimited" {
            return Ok(u64::MAX);
        }
        v.parse().map_err(|_| usage())
    };
    let (soft, hard) = match values.split_once(':') {
        Some((s, h)) => (value(s)?, value(h)?),
        None => (value(values)?, value(values)?),
    };
    if soft > hard {
        return Err(invalid(format!(
            "invalid --ulimit {text:?}: the soft limit is above the hard one"
        )));
    }
    oci_spec::runtime::PosixRlimitBuilder::default()
        .typ(typ)
        .soft(soft)
        .hard(hard)
        .build()
        .map_err(|_| usage())
}

/// A size in Docker's units (b, k, m, g; case-insensitive; default bytes), at least 6m as
/// Docker's minimum for --memory. `flag` names the option in errors.
pub fn parse_memory(text: &str) -> Result<i64> {
    parse_size("--memory", text)
}

/// [`parse_memory`] for another option (e.g. `--shm-size`).
pub fn parse_size(flag: &str, text: &str) -> Result<i64> {
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
            invalid(format!(
                "invalid {flag} {text:?}: use a size such as 64m or 1g"
            ))
        })?;
    let bytes = value * factor as f64;
    if bytes < 6.0 * 1024.0 * 1024.0 || bytes > i64::MAX as f64 {
        return Err(invalid(format!(
            "invalid {flag} {text:?}: the minimum is 6m, as in Docker"
        )));
    }
    Ok(bytes as i64)
}

/// Environment entries as KEY=VALUE: a bare KEY takes `lookup(KEY)` or is dropped (Docker's
/// `-e KEY`); `--env-file` lines skip blanks and `#` comments.
pub fn resolve_env(
    entries: impl IntoIterator<Item = String>,
    lookup: impl Fn(&str) -> Option<String>,
) -> Vec<String> {
    entries
        .into_iter()
        .filter_map(|entry| {
            if entry.contains('=') {
                Some(entry)
            } else {
                lookup(&entry).map(|value| format!("{entry}={value}"))
            }
        })
        .collect()
}

/// The entries of an `--env-file`.
pub fn env_file_entries(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim_start)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// `--sysctl KEY=VALUE`.
pub fn parse_sysctl(text: &str) -> Result<(String, String)> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_string(), value.to_string()))
        }
        _ => Err(ContainerError::invalid(format!(
            "invalid --sysctl {text:?}: use KEY=VALUE, e.g. net.ipv4.ip_forward=1"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn mounts_and_ulimits() {
        assert!(matches!(
            parse_mount("type=tmpfs,target=/t,tmpfs-size=1m").unwrap(),
            MountFlag::Tmpfs { ref options, .. } if options == "size=1m"
        ));
        assert!(parse_mount("type=bind,source=rel,target=/x").is_err());
        assert!(parse_mount("type=tmpfs,source=/a,target=/x").is_err());
        let limit = parse_ulimit("nofile=1024:2048").unwrap();
        assert_eq!((limit.soft(), limit.hard()), (1024, 2048));
        assert!(parse_ulimit("nofile=10:5").is_err());
        assert!(parse_ulimit("bogus=1").is_err());
    }

    #[test]
    fn env_entries() {
        let env = resolve_env(
            ["A=1".to_string(), "HOME".to_string(), "MISSING".to_string()],
            |k| (k == "HOME").then(|| "/root".to_string()),
        );
        assert_eq!(env, ["A=1", "HOME=/root"]);
        assert_eq!(env_file_entries("# c\n\n  B=2\nC\n"), ["B=2", "C"]);
    }
}
