//! `POST /containers/create`'s body (Docker's container Config with its HostConfig) read into
//! the library's typed [`CreateOptions`], as the CLI reads its flags into them. A setting gcr
//! cannot honour yet is refused by name (501), never dropped in silence.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use gcr_containers::{CreateOptions, ImageSource};

use crate::error::Failure;

/// A string or a list of strings (Docker accepts both for Cmd, Entrypoint, Shell).
#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
pub enum StrOrList {
    One(String),
    Many(Vec<String>),
}

impl StrOrList {
    fn into_vec(self) -> Vec<String> {
        match self {
            // A string is a shell command line for Docker's CLI, but the API takes it as one
            // argument (what the Go client sends for a bare string).
            StrOrList::One(s) => vec![s],
            StrOrList::Many(v) => v,
        }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateBody {
    pub image: String,
    pub cmd: Option<StrOrList>,
    pub entrypoint: Option<StrOrList>,
    pub env: Option<Vec<String>>,
    pub working_dir: String,
    pub user: String,
    pub hostname: String,
    pub domainname: String,
    pub tty: bool,
    pub open_stdin: bool,
    pub attach_stdin: bool,
    pub labels: Option<BTreeMap<String, String>>,
    pub stop_signal: Option<String>,
    pub stop_timeout: Option<i64>,
    pub healthcheck: Option<Value>,
    /// `-v /data`: anonymous volumes, by their mount point.
    pub volumes: Option<BTreeMap<String, Value>>,
    pub host_config: Option<HostConfig>,
    pub networking_config: Option<Value>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct HostConfig {
    pub binds: Option<Vec<String>>,
    pub sysctls: Option<BTreeMap<String, String>>,
    pub mounts: Option<Vec<MountBody>>,
    pub tmpfs: Option<BTreeMap<String, String>>,
    pub port_bindings: Option<BTreeMap<String, Option<Vec<PortBinding>>>>,
    pub publish_all_ports: bool,
    pub memory: i64,
    pub nano_cpus: i64,
    pub cpu_shares: i64,
    pub cpu_quota: i64,
    pub pids_limit: Option<i64>,
    pub restart_policy: Option<RestartPolicyBody>,
    pub network_mode: String,
    pub auto_remove: bool,
    pub privileged: bool,
    pub cap_add: Option<Vec<String>>,
    pub cap_drop: Option<Vec<String>>,
    pub security_opt: Option<Vec<String>>,
    pub readonly_rootfs: bool,
    pub dns: Option<Vec<String>>,
    pub dns_search: Option<Vec<String>>,
    pub dns_options: Option<Vec<String>>,
    pub extra_hosts: Option<Vec<String>>,
    pub init: Option<bool>,
    pub shm_size: i64,
    pub ulimits: Option<Vec<UlimitBody>>,
    pub group_add: Option<Vec<String>>,
    pub pid_mode: String,
    pub ipc_mode: String,
    pub userns_mode: String,
    pub devices: Option<Vec<DeviceBody>>,
    pub device_cgroup_rules: Option<Vec<String>>,
    pub memory_swap: i64,
    pub cpuset_cpus: String,
    pub blkio_weight: u16,
    pub blkio_device_read_bps: Option<Vec<ThrottleBody>>,
    pub blkio_device_write_bps: Option<Vec<ThrottleBody>>,
    pub volumes_from: Option<Vec<String>>,
    pub links: Option<Vec<String>>,
    pub cgroup_parent: String,
    pub log_config: Option<LogConfigBody>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct MountBody {
    #[serde(rename = "Type")]
    pub kind: String,
    pub source: String,
    pub target: String,
    pub read_only: bool,
    pub volume_options: Option<Value>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct PortBinding {
    pub host_ip: String,
    pub host_port: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct RestartPolicyBody {
    pub name: String,
    pub maximum_retry_count: u32,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct DeviceBody {
    pub path_on_host: String,
    pub path_in_container: String,
    pub cgroup_permissions: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct ThrottleBody {
    pub path: String,
    pub rate: u64,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct UlimitBody {
    pub name: String,
    pub soft: i64,
    pub hard: i64,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct LogConfigBody {
    #[serde(rename = "Type")]
    pub kind: String,
    /// The driver's options (`max-size`, `max-file`, ...); null is none.
    pub config: Option<std::collections::BTreeMap<String, String>>,
}

fn unsupported(what: &str) -> Failure {
    Failure::not_implemented(&format!("{what} in POST /containers/create"))
}

fn invalid(err: gcr_containers::ContainerError) -> Failure {
    Failure::bad_request(err.to_string())
}

impl CreateBody {
    /// The network the container asks for (HostConfig.NetworkMode) and its aliases there
    /// (NetworkingConfig.EndpointsConfig); one network only.
    pub fn network_request(&self) -> Result<NetworkRequests, Failure> {
        let mode = self
            .host_config
            .as_ref()
            .map(|h| h.network_mode.clone())
            .unwrap_or_default();
        let endpoints = self
            .networking_config
            .as_ref()
            .and_then(|n| n["EndpointsConfig"].as_object().cloned())
            .unwrap_or_default();
        let mut out = NetworkRequests {
            mode: mode.clone(),
            ..Default::default()
        };
        for (network, endpoint) in &endpoints {
            let (aliases, ip) = endpoint_request(endpoint)?;
            let primary = *network == mode
                || (matches!(mode.as_str(), "" | "default") && network == "bridge");
            if primary || (mode.is_empty() && out.mode.is_empty()) {
                // No NetworkMode: the first endpoint is the network (as Docker takes it).
                if out.mode.is_empty() {
                    out.mode = network.clone();
                }
                out.aliases = aliases;
                out.ip = ip;
            } else {
                out.more.push(gcr_containers::NetworkRequest {
                    network: network.clone(),
                    aliases,
                    ip,
                });
            }
        }
        Ok(out)
    }

    /// Refuses what gcr cannot honour before anything is looked up.
    pub fn check_supported(&self) -> Result<(), Failure> {
        match &self.host_config {
            Some(host) => host.refuse_unsupported(),
            None => Ok(()),
        }
    }

    /// The options for a container of `source` (the image the caller resolved) named `name`.
    pub fn into_options(
        self,
        source: ImageSource,
        name: Option<String>,
    ) -> Result<CreateOptions, Failure> {
        let mut host = self.host_config.unwrap_or_default();
        host.refuse_unsupported()?;
        if !self.domainname.is_empty() {
            return Err(unsupported("Domainname"));
        }
        let mut opts = CreateOptions::new(source);
        opts.name = name.filter(|n| !n.is_empty());
        opts.health = self
            .healthcheck
            .map(serde_json::from_value::<gcr_containers::health::HealthConfig>)
            .transpose()
            .map_err(|e| Failure::bad_request(format!("invalid Healthcheck: {e}")))?;
        // Docker's process: Entrypoint ++ Cmd; an Entrypoint given drops the image's CMD.
        let entrypoint = self.entrypoint.map(StrOrList::into_vec);
        let cmd = self.cmd.map(StrOrList::into_vec).unwrap_or_default();
        match entrypoint {
            None => opts.command = cmd,
            Some(list) if list.is_empty() => {
                opts.entrypoint = Some(String::new());
                opts.command = cmd;
            }
            Some(list) => {
                opts.entrypoint = Some(list[0].clone());
                opts.command = list[1..].iter().cloned().chain(cmd).collect();
            }
        }
        opts.env = self.env.unwrap_or_default();
        opts.workdir = Some(self.working_dir).filter(|w| !w.is_empty());
        opts.user = Some(self.user).filter(|u| !u.is_empty());
        opts.hostname = Some(self.hostname).filter(|h| !h.is_empty());
        opts.tty = self.tty;
        opts.stdin = self.open_stdin;
        opts.attach_stdin = self.attach_stdin && self.open_stdin;
        opts.labels = self.labels.unwrap_or_default();
        if let Some(log) = host.log_config.as_ref() {
            opts.log_config = gcr_containers::logconfig::LogConfig::new(
                &log.kind,
                log.config.clone().unwrap_or_default(),
            )
            .map_err(invalid)?;
        }
        if let Some(signal) = &self.stop_signal {
            gcr_containers::parse_signal(signal).map_err(invalid)?;
            opts.stop_signal = Some(signal.clone());
        }
        opts.stop_timeout = self.stop_timeout.and_then(|t| u64::try_from(t).ok());

        for bind in host.binds.unwrap_or_default() {
            let source = bind.split(':').next().unwrap_or_default();
            if !source.starts_with('/') && !gcr_storage::valid_volume_name(source) {
                return Err(Failure::bad_request(format!(
                    "invalid bind {bind:?}: the source must be an absolute path or a volume name"
                )));
            }
            opts.volumes
                .push(gcr_containers::parse_volume(&bind).map_err(invalid)?);
        }
        for destination in self.volumes.unwrap_or_default().into_keys() {
            // One a bind or mount already covers is not anonymous.
            if !opts.volumes.iter().any(|v| v.destination == destination) {
                opts.volumes
                    .push(gcr_containers::parse_volume(&destination).map_err(invalid)?);
            }
        }
        for mount in host.mounts.unwrap_or_default() {
            mount_into(&mut opts, mount)?;
        }
        opts.volumes_from = host.volumes_from.clone().unwrap_or_default();
        for (destination, options) in host.tmpfs.unwrap_or_default() {
            opts.tmpfs.push((destination, options));
        }
        for (port, bindings) in host.port_bindings.unwrap_or_default() {
            let container_port = match port.split_once('/') {
                Some((_, "tcp" | "udp")) | None => port.clone(),
                Some((_, proto)) => {
                    return Err(unsupported(&format!("publishing {proto} ports ({port})")))
                }
            };
            for binding in bindings.unwrap_or_default() {
                let text = match (binding.host_ip.as_str(), binding.host_port.as_str()) {
                    ("", "") => container_port.clone(),
                    ("", host_port) => format!("{host_port}:{container_port}"),
                    (ip, host_port) if ip.contains(':') => {
                        format!("[{ip}]:{host_port}:{container_port}")
                    }
                    (ip, host_port) => format!("{ip}:{host_port}:{container_port}"),
                };
                opts.publish
                    .extend(gcr_containers::parse_publish(&text).map_err(invalid)?);
            }
        }
        opts.publish_all = host.publish_all_ports;
        let throttle = |list: Option<Vec<ThrottleBody>>| {
            list.unwrap_or_default()
                .into_iter()
                .map(|t| gcr_containers::ThrottleDevice {
                    path: t.path.into(),
                    rate: t.rate,
                })
                .collect::<Vec<_>>()
        };
        opts.resources = gcr_containers::Resources {
            memory: Some(host.memory).filter(|m| *m > 0),
            // Docker's clients send 0 for "not set".
            memory_swap: Some(host.memory_swap).filter(|s| *s != 0),
            pids_limit: host.pids_limit.filter(|p| *p != 0),
            cpus: Some(host.nano_cpus)
                .filter(|n| *n > 0)
                .map(|n| n as f64 / 1e9),
            cpu_shares: u64::try_from(host.cpu_shares).ok().filter(|s| *s > 0),
            cpuset_cpus: Some(host.cpuset_cpus.clone()).filter(|c| !c.is_empty()),
            blkio_weight: Some(host.blkio_weight).filter(|w| *w > 0),
            device_read_bps: throttle(host.blkio_device_read_bps.take()),
            device_write_bps: throttle(host.blkio_device_write_bps.take()),
        };
        for device in host.devices.take().unwrap_or_default() {
            let container = Some(device.path_in_container)
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| device.path_on_host.clone());
            let access = Some(device.cgroup_permissions)
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "rwm".to_string());
            let text = format!("{}:{container}:{access}", device.path_on_host);
            opts.devices
                .push(gcr_containers::parse_device(&text).map_err(invalid)?);
        }
        for rule in host.device_cgroup_rules.take().unwrap_or_default() {
            opts.device_cgroup_rules
                .push(gcr_containers::parse_device_cgroup_rule(&rule).map_err(invalid)?);
        }
        if !host.cgroup_parent.is_empty() {
            opts.cgroup_parent =
                Some(gcr_containers::parse_cgroup_parent(&host.cgroup_parent).map_err(invalid)?);
        }
        if host.cpu_quota > 0 {
            return Err(unsupported("HostConfig.CpuQuota (use NanoCpus)"));
        }
        if let Some(policy) = host.restart_policy {
            opts.restart = match (policy.name.as_str(), policy.maximum_retry_count) {
                ("", _) => "no".to_string(),
                ("on-failure", n) if n > 0 => format!("on-failure:{n}"),
                (name, _) => name.to_string(),
            };
            gcr_containers::RestartPolicy::parse(&opts.restart).map_err(invalid)?;
        }
        opts.network = match host.network_mode.as_str() {
            "" | "default" | "bridge" => gcr_containers::NetworkChoice::parse("bridge"),
            other => gcr_containers::NetworkChoice::parse(other),
        }
        // Not a built-in one: a user network, which the caller resolves in the store.
        .unwrap_or(gcr_containers::NetworkChoice::None);
        opts.remove = host.auto_remove;
        opts.privileged = host.privileged;
        opts.cap_add = host.cap_add.unwrap_or_default();
        opts.cap_drop = host.cap_drop.unwrap_or_default();
        opts.security_opt = host.security_opt.unwrap_or_default();
        opts.read_only = host.readonly_rootfs;
        opts.dns = host.dns.unwrap_or_default();
        opts.dns_search = host.dns_search.unwrap_or_default();
        opts.dns_options = host.dns_options.unwrap_or_default();
        opts.extra_hosts = host.extra_hosts.unwrap_or_default();
        opts.init = host.init.unwrap_or(false);
        opts.shm_size = Some(host.shm_size).filter(|s| *s > 0);
        for ulimit in host.ulimits.unwrap_or_default() {
            let text = format!("{}={}:{}", ulimit.name, ulimit.soft, ulimit.hard);
            opts.rlimits
                .push(gcr_containers::parse_ulimit(&text).map_err(invalid)?);
        }
        opts.group_add = host.group_add.unwrap_or_default();
        opts.sysctls = host.sysctls.unwrap_or_default().into_iter().collect();
        let shared = |what: &str, mode: &str| match mode {
            "" | "private" => Ok(false),
            "host" => Ok(true),
            other => Err(unsupported(&format!("{what} {other:?}"))),
        };
        opts.pid_host = shared("HostConfig.PidMode", &host.pid_mode)?;
        opts.ipc_host = shared("HostConfig.IpcMode", &host.ipc_mode)?;
        let userns = Some(host.userns_mode.as_str()).filter(|m| !m.is_empty());
        opts.userns = gcr_containers::UsernsMode::parse(userns, &[], &[]).map_err(invalid)?;
        Ok(opts)
    }
}

impl HostConfig {
    fn refuse_unsupported(&self) -> Result<(), Failure> {
        let non_empty = |v: &Option<Vec<_>>| v.as_ref().is_some_and(|v: &Vec<_>| !v.is_empty());
        if non_empty(&self.links) {
            return Err(unsupported("HostConfig.Links"));
        }
        Ok(())
    }
}

fn mount_into(opts: &mut CreateOptions, mount: MountBody) -> Result<(), Failure> {
    let ro = if mount.read_only { ",readonly" } else { "" };
    let no_copy = mount
        .volume_options
        .as_ref()
        .and_then(|o| o["NoCopy"].as_bool())
        .unwrap_or(false);
    let text = match mount.kind.as_str() {
        "bind" | "volume" => {
            if mount.kind == "bind" && !mount.source.starts_with('/') {
                return Err(Failure::bad_request(format!(
                    "invalid mount source {:?}: a bind needs an absolute path",
                    mount.source
                )));
            }
            let nocopy = if no_copy { ",volume-nocopy" } else { "" };
            format!(
                "type={},source={},target={}{ro}{nocopy}",
                mount.kind, mount.source, mount.target
            )
        }
        "tmpfs" => format!("type=tmpfs,target={}", mount.target),
        other => return Err(unsupported(&format!("HostConfig.Mounts of type {other:?}"))),
    };
    match gcr_containers::parse_mount(&text).map_err(invalid)? {
        gcr_containers::MountFlag::Volume(v) => opts.volumes.push(v),
        gcr_containers::MountFlag::Tmpfs {
            destination,
            options,
        } => opts.tmpfs.push((destination, options)),
    }
    Ok(())
}

/// The networks a create asks for: the first (NetworkMode) with its aliases and address,
/// and further user networks (EndpointsConfig naming others).
#[derive(Debug, Default)]
pub struct NetworkRequests {
    pub mode: String,
    pub aliases: Vec<String>,
    pub ip: Option<String>,
    pub more: Vec<gcr_containers::NetworkRequest>,
}

/// An EndpointSettings object's aliases and IPv4 address (an IPv6 one is refused).
pub fn endpoint_request(endpoint: &Value) -> Result<(Vec<String>, Option<String>), Failure> {
    let aliases = endpoint["Aliases"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(String::from))
        .collect();
    let ipam = &endpoint["IPAMConfig"];
    if ipam["IPv6Address"].as_str().is_some_and(|s| !s.is_empty()) {
        return Err(unsupported(
            "an IPv6 address (EndpointsConfig.IPAMConfig.IPv6Address)",
        ));
    }
    let ip = ipam["IPv4Address"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(String::from);
    Ok((aliases, ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(body: &str) -> Result<CreateOptions, Failure> {
        let body: CreateBody = serde_json::from_str(body).unwrap();
        body.into_options(ImageSource::Directory("/".into()), Some("web".into()))
    }

    #[test]
    fn docker_cli_body_becomes_options() {
        let opts = options(
            r#"{"Image":"busybox","Cmd":["httpd","-f"],"Env":["A=1"],"Tty":false,
                "Labels":{"x":"y"},"HostConfig":{"AutoRemove":true,"Memory":67108864,
                "NanoCpus":500000000,"PortBindings":{"80/tcp":[{"HostIp":"127.0.0.1","HostPort":"8080"}]},
                "RestartPolicy":{"Name":"on-failure","MaximumRetryCount":3},"NetworkMode":"default",
                "LogConfig":{"Type":"json-file","Config":{}}}}"#,
        )
        .unwrap();
        assert_eq!(opts.command, ["httpd", "-f"]);
        assert_eq!(opts.name.as_deref(), Some("web"));
        assert!(opts.remove);
        assert_eq!(opts.resources.memory, Some(64 << 20));
        assert_eq!(opts.resources.cpus, Some(0.5));
        assert_eq!(opts.publish.len(), 1);
        assert_eq!(opts.publish[0].host_port, 8080);
        assert_eq!(opts.restart, "on-failure:3");
        assert_eq!(opts.labels["x"], "y");
    }

    #[test]
    fn entrypoint_list_and_cmd_join() {
        let opts = options(r#"{"Image":"x","Entrypoint":["sh","-c"],"Cmd":["echo hi"]}"#).unwrap();
        assert_eq!(opts.entrypoint.as_deref(), Some("sh"));
        assert_eq!(opts.command, ["-c", "echo hi"]);
        let cleared = options(r#"{"Image":"x","Entrypoint":[],"Cmd":["ls"]}"#).unwrap();
        assert_eq!(cleared.entrypoint.as_deref(), Some(""));
    }

    #[test]
    fn what_gcr_cannot_do_is_refused_by_name() {
        let links = options(r#"{"HostConfig":{"Links":["a:b"]}}"#);
        let failure = links.err().unwrap();
        assert_eq!(failure.status, axum::http::StatusCode::NOT_IMPLEMENTED);
        assert!(failure.message.contains("HostConfig.Links"));
        let devices = options(
            r#"{"HostConfig":{"Devices":[{"PathOnHost":"/dev/null","PathInContainer":"/dev/mynull","CgroupPermissions":"rw"}],
                "DeviceCgroupRules":["c 1:11 rwm"],"CgroupParent":"/mine","MemorySwap":-1,"Memory":67108864,
                "CpusetCpus":"0","BlkioWeight":300}}"#,
        )
        .unwrap();
        assert_eq!(
            devices.devices[0].container,
            std::path::PathBuf::from("/dev/mynull")
        );
        assert_eq!(devices.devices[0].access, "rw");
        assert_eq!(devices.device_cgroup_rules.len(), 1);
        assert_eq!(devices.cgroup_parent.as_deref(), Some("mine"));
        assert_eq!(devices.resources.memory_swap, Some(-1));
        assert_eq!(devices.resources.cpuset_cpus.as_deref(), Some("0"));
        assert_eq!(devices.resources.blkio_weight, Some(300));
        let bad_rule = options(r#"{"HostConfig":{"DeviceCgroupRules":["x 1"]}}"#);
        assert_eq!(
            bad_rule.err().unwrap().status,
            axum::http::StatusCode::BAD_REQUEST
        );
        let relative = options(r#"{"HostConfig":{"Binds":["./x:/x"]}}"#)
            .err()
            .unwrap();
        assert_eq!(relative.status, axum::http::StatusCode::BAD_REQUEST);
        // Further endpoints are further networks; the mode's own carries aliases and --ip.
        let two = r#"{"HostConfig":{"NetworkMode":"a"},"NetworkingConfig":{"EndpointsConfig":{"a":{"Aliases":["web"],"IPAMConfig":{"IPv4Address":"10.89.9.9"}},"b":{"Aliases":["w2"]}}}}"#;
        let body: CreateBody = serde_json::from_str(two).unwrap();
        let asked = body.network_request().unwrap();
        assert_eq!(
            (
                asked.mode.as_str(),
                asked.aliases.clone(),
                asked.ip.as_deref()
            ),
            ("a", vec!["web".to_string()], Some("10.89.9.9"))
        );
        assert_eq!(asked.more.len(), 1);
        assert_eq!(asked.more[0].network, "b");
        assert_eq!(asked.more[0].aliases, ["w2"]);
        let v6 = r#"{"NetworkingConfig":{"EndpointsConfig":{"a":{"IPAMConfig":{"IPv6Address":"fd00::9"}}}}}"#;
        let body: CreateBody = serde_json::from_str(v6).unwrap();
        assert!(body.network_request().is_err());
    }
}
