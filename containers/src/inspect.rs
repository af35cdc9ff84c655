//! What front ends show about containers: Docker's inspect document, the processes of a
//! running one, and the disk they use.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};

use crate::container::{list, Container};
use crate::error::Result;
use crate::network::NetworkChoice;
use crate::record::{ContainerMeta, PublishedPort};

/// `inspect CONTAINER`: the record in Docker's shape (the fields people script against).
pub fn inspect(store: &gcr_storage::Store, c: &Container) -> Value {
    let spec = c.spec().ok();
    let process = spec.as_ref().and_then(|s| s.process().clone());
    let image = c.image_id().unwrap_or_default();
    let running = c.alive();
    let pid = if running {
        c.pid().map_or(0, |p| p.as_raw())
    } else {
        0
    };
    let address = running.then(|| c.address()).flatten();
    let mounts: Vec<Value> = spec
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
    let state = c.state();
    let r = &c.meta.resources;
    let mut doc = json!({
        "Id": c.id,
        "Created": c.meta.created,
        "Path": c.meta.command.first(),
        "Args": c.meta.command.get(1..).unwrap_or(&[]),
        "State": {
            "Status": state.as_str(),
            "Running": running,
            "Paused": state == crate::State::Paused,
            "Restarting": false,
            "OOMKilled": !running && c.dir.join(gcr_runtime::OOM_KILLED_FILE).exists(),
            "Dead": false,
            "Pid": pid,
            "ExitCode": c.exit_code().unwrap_or(0),
            "Error": "",
            "StartedAt": c.meta.started.as_ref().unwrap_or(&c.meta.created),
            // When the exit status was recorded (Docker's zero time while it runs).
            "FinishedAt": c.finished_at()
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
            "Labels": labels(store, c),
        },
        "RestartCount": c.meta.restarts,
        "HostConfig": {
            "AutoRemove": c.meta.remove,
            "Init": c.meta.init,
            "RestartPolicy": restart_policy(c.meta.restart.as_deref()),
            "Memory": r.memory.unwrap_or(0),
            "MemorySwap": r.memory_swap.unwrap_or(0),
            "NanoCpus": r.cpus.map_or(0, |c| (c * 1e9).round() as i64),
            "CpuShares": r.cpu_shares.unwrap_or(0),
            "PidsLimit": r.pids_limit,
            "CpusetCpus": r.cpuset_cpus.clone().unwrap_or_default(),
            "BlkioWeight": r.blkio_weight.unwrap_or(0),
            "BlkioDeviceReadBps": throttle(&r.device_read_bps),
            "BlkioDeviceWriteBps": throttle(&r.device_write_bps),
            "CgroupParent": c.meta.cgroup_parent.clone().unwrap_or_default(),
            "Devices": c.meta.devices.iter().map(|d| json!({
                "PathOnHost": d.host,
                "PathInContainer": d.container,
                "CgroupPermissions": d.access,
            })).collect::<Vec<_>>(),
            "DeviceCgroupRules": c.meta.device_cgroup_rules,
            "NetworkMode": network_mode(&c.meta, spec.as_ref()),
            "PortBindings": port_bindings(&c.meta.ports),
            // The driver and options as given; the file is gcr's own format (a line per
            // record) whichever driver keeps it, read through logs and attach.
            "LogConfig": {
                "Type": c.meta.log_config().driver,
                "Config": c.meta.log_config().options,
            },
        },
        "NetworkSettings": {
            "IPAddress": address.clone().unwrap_or_default(),
            "Ports": port_bindings(&c.meta.ports),
            "Networks": networks_of(store, c, spec.as_ref(), address.as_deref()),
        },
        "Mounts": mounts,
        "LogPath": if c.log_path().exists() { Some(c.log_path()) } else { None },
    });
    // Docker shows both only for a container with a check.
    if let Some(health) = &c.meta.health {
        doc["Config"]["Healthcheck"] = json!(health);
        doc["State"]["Health"] =
            json!(
                crate::health::state(&c.dir).unwrap_or_else(|| crate::health::HealthState {
                    status: "starting".into(),
                    ..Default::default()
                })
            );
    }
    doc
}

/// Docker's RestartPolicy: the name apart from on-failure's count.
fn restart_policy(policy: Option<&str>) -> Value {
    let policy = policy.unwrap_or("no");
    let (name, count) = policy.split_once(':').unwrap_or((policy, "0"));
    json!({ "Name": name, "MaximumRetryCount": count.parse::<u32>().unwrap_or(0) })
}

/// BlkioDeviceReadBps and its kin.
fn throttle(list: &[crate::limits::ThrottleDevice]) -> Value {
    list.iter()
        .map(|t| json!({ "Path": t.path, "Rate": t.rate }))
        .collect()
}

/// The image's labels with the container's own (`--label`) over them, as Docker shows them.
pub fn labels(store: &gcr_storage::Store, c: &Container) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    if let Ok(record) = c.image(store) {
        let config: Option<Value> = store
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
    labels.extend(c.meta.labels.clone());
    labels
}

/// `--network` of a container (older records: from its spec).
pub fn network_mode(meta: &ContainerMeta, spec: Option<&gcr_runtime::Spec>) -> String {
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

/// Docker's `NetworkSettings.Networks`: the container's networks by name, with its
/// addresses.
fn networks_of(
    store: &gcr_storage::Store,
    c: &Container,
    spec: Option<&gcr_runtime::Spec>,
    address: Option<&str>,
) -> Value {
    let (id, meta) = (&c.id, &c.meta);
    let mode = network_mode(meta, spec);
    let user_network = |name: &str| crate::user_networks::find_network(store, name).ok();
    let endpoint = |address: Option<&str>, gateway: &str, prefix: u8| match address {
        Some(ip) => json!({"IPAddress": ip, "Gateway": gateway, "IPPrefixLen": prefix}),
        None => json!({"IPAddress": "", "Gateway": "", "IPPrefixLen": 0}),
    };
    let prefix_of = |record: &crate::user_networks::NetworkRecord| {
        record
            .subnet
            .split('/')
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(24)
    };
    let mut out = serde_json::Map::new();
    // Another container's network: its settings are that container's (Docker shows none).
    if mode.starts_with(crate::network::CONTAINER_MODE) {
        return Value::Object(out);
    }
    match NetworkChoice::parse(&mode) {
        Ok(choice) => {
            let (gateway, prefix) = choice.gateway().unwrap_or(("", 0));
            out.insert(mode.clone(), endpoint(address, gateway, prefix));
        }
        // A user network: its aliases there and, as Docker adds it, the short ID (Compose
        // checks for it before it would reconnect the container).
        Err(_) => {
            let record = user_network(&mode);
            let mut entry = match &record {
                Some(r) => endpoint(address, &r.gateway, prefix_of(r)),
                None => endpoint(address, "", 0),
            };
            let mut aliases = meta.network_aliases.clone();
            aliases.push(crate::short_id(id));
            entry["Aliases"] = json!(aliases);
            entry["NetworkID"] = json!(record.map(|r| r.id).unwrap_or_else(|| mode.clone()));
            entry["IPAMConfig"] = json!(meta.ip.as_ref().map(|ip| json!({"IPv4Address": ip})));
            out.insert(mode.clone(), entry);
        }
    }
    for attachment in crate::attachments::attachments(&c.dir) {
        let Some(record) = user_network(&attachment.network) else {
            continue;
        };
        let address = crate::attachments::address_on(c, &record.bridge);
        let mut entry = endpoint(address.as_deref(), &record.gateway, prefix_of(&record));
        let mut aliases = attachment.aliases.clone();
        aliases.push(crate::short_id(id));
        entry["Aliases"] = json!(aliases);
        entry["NetworkID"] = json!(record.id);
        entry["IPAMConfig"] = json!(attachment.ip.as_ref().map(|ip| json!({"IPv4Address": ip})));
        out.insert(attachment.network, entry);
    }
    Value::Object(out)
}

/// Docker's `{"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]}`.
pub fn port_bindings(ports: &[PublishedPort]) -> Value {
    let mut out = serde_json::Map::new();
    for p in ports {
        let entry = out
            .entry(p.key())
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = entry {
            list.push(json!({"HostIp": p.host_ip, "HostPort": p.host_port.to_string()}));
        }
    }
    Value::Object(out)
}

/// One process of a running container, as the host sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessInfo {
    pub uid: String,
    pub pid: u32,
    pub ppid: String,
    pub command: String,
}

/// `top`: the processes in the container's PID namespace, by PID.
pub fn processes(c: &Container) -> Result<Vec<ProcessInfo>> {
    let pid = match c.pid() {
        Some(pid) if c.alive() => pid,
        _ => return Err(crate::ContainerError::NotRunning(c.display_name())),
    };
    let ns_of = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/pid")).ok();
    let theirs = ns_of(&pid.to_string()).ok_or_else(|| {
        crate::ContainerError::State(format!(
            "cannot read the PID namespace of container {}",
            c.display_name()
        ))
    })?;
    let mut rows = Vec::new();
    let entries =
        std::fs::read_dir("/proc").map_err(|e| crate::ContainerError::io("read", "/proc", e))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(number) = name.parse::<u32>() else {
            continue;
        };
        if ns_of(&name).as_ref() != Some(&theirs) {
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
        rows.push(ProcessInfo {
            uid: field("Uid:"),
            pid: number,
            ppid: field("PPid:"),
            command: if cmd.is_empty() { field("Name:") } else { cmd },
        });
    }
    rows.sort_by_key(|r| r.pid);
    Ok(rows)
}

/// The containers (short IDs or names) with a mount of `source` in their spec.
pub fn using_source(store: &gcr_storage::Store, source: &Path) -> Result<Vec<String>> {
    let mut users = Vec::new();
    for c in list(store)? {
        let Ok(spec) = c.spec() else { continue };
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

/// Bytes a container's record takes (its upper dir, log and files).
pub fn size_of(c: &Container) -> u64 {
    dir_size(&c.dir)
}

/// Bytes under `dir` (files as allocated on disk, not followed through symlinks).
pub fn dir_size(dir: &Path) -> u64 {
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
) -> Result<(gcr_storage::UsageEntry, gcr_storage::UsageEntry)> {
    let mut containers = gcr_storage::UsageEntry::default();
    for c in list(store)? {
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
