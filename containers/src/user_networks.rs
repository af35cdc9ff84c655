//! User networks (`gcr network create`, the Docker API's `/networks`): each is its own host
//! bridge and /24 subnet (10.89.N.0/24, never one the host already routes), recorded in the
//! store (`networks/<name>.json`); its members resolve each other by name and alias (the
//! runtime keeps their /etc/hosts current). Rootless, the bridges live in the user's
//! rootless network namespace (the runtime's `switch`), which slirp4netns connects out.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::container::{list, Container};
use crate::error::{ContainerError, Result};

/// A user network as recorded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetworkRecord {
    pub name: String,
    pub id: String,
    /// CIDR, e.g. 10.89.3.0/24.
    pub subnet: String,
    pub gateway: String,
    /// The host bridge.
    pub bridge: String,
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub created: String,
}

fn networks_dir(store: &gcr_storage::Store) -> PathBuf {
    store.root().join("networks")
}

fn record_path(store: &gcr_storage::Store, name: &str) -> PathBuf {
    networks_dir(store).join(format!("{name}.json"))
}

/// Docker's rule for network names (as for containers).
fn check_network_name(name: &str) -> Result<()> {
    let ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok || name.len() > 128 {
        return Err(ContainerError::invalid(format!(
            "invalid network name {name:?}: a letter or digit, then letters, digits, '_', '.' or '-'"
        )));
    }
    if matches!(
        name,
        "bridge" | "host" | "none" | "default" | "private" | "slirp4netns"
    ) {
        return Err(ContainerError::State(format!(
            "network {name} is a built-in one: choose another name"
        )));
    }
    Ok(())
}

fn parse_cidr(text: &str) -> Result<(Ipv4Addr, u8)> {
    let bad = || {
        ContainerError::invalid(format!(
            "invalid subnet {text:?}: give an IPv4 CIDR such as 10.90.0.0/24"
        ))
    };
    let (address, prefix) = text.split_once('/').ok_or_else(bad)?;
    let address: Ipv4Addr = address.parse().map_err(|_| bad())?;
    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
    if !(8..=30).contains(&prefix) {
        return Err(bad());
    }
    let mask = u32::MAX << (32 - u32::from(prefix));
    Ok((Ipv4Addr::from(u32::from(address) & mask), prefix))
}

fn overlaps(a: (Ipv4Addr, u8), b: (Ipv4Addr, u8)) -> bool {
    let prefix = a.1.min(b.1);
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    u32::from(a.0) & mask == u32::from(b.0) & mask
}

/// The subnets the host routes (its own networks; not the default route).
fn host_routes() -> Vec<(Ipv4Addr, u8)> {
    let text = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let destination = u32::from_str_radix(fields.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(fields.get(7)?, 16).ok()?;
            // /proc/net/route prints each address as the hex of its bytes read as a
            // little-endian number (x86, arm64).
            let prefix = mask.count_ones() as u8;
            (prefix > 0).then(|| (Ipv4Addr::from(destination.to_le_bytes()), prefix))
        })
        .collect()
}

/// Every user network.
pub fn networks(store: &gcr_storage::Store) -> Result<Vec<NetworkRecord>> {
    let dir = networks_dir(store);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ContainerError::io("read", &dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read(&path).map_err(|e| ContainerError::io("read", &path, e))?;
            let record: NetworkRecord = serde_json::from_slice(&text)
                .map_err(|source| ContainerError::Json { path, source })?;
            out.push(record);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The user network named (or with an ID starting with) `wanted`.
pub fn find_network(store: &gcr_storage::Store, wanted: &str) -> Result<NetworkRecord> {
    let all = networks(store)?;
    if let Some(found) = all.iter().find(|n| n.name == wanted || n.id == wanted) {
        return Ok(found.clone());
    }
    let by_prefix: Vec<&NetworkRecord> = all
        .iter()
        .filter(|n| wanted.len() >= 3 && n.id.starts_with(wanted))
        .collect();
    match by_prefix.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(ContainerError::NoSuchNetwork(wanted.to_string())),
        _ => Err(ContainerError::Ambiguous(wanted.to_string())),
    }
}

/// Options of a new network.
#[derive(Debug, Clone, Default)]
pub struct NetworkOptions {
    pub subnet: Option<String>,
    pub gateway: Option<String>,
    pub internal: bool,
    pub labels: BTreeMap<String, String>,
}

/// Makes a user network (its bridge comes with its first member).
pub fn create_network(
    store: &gcr_storage::Store,
    name: &str,
    options: &NetworkOptions,
) -> Result<NetworkRecord> {
    check_network_name(name)?;
    let _names = crate::names::NameLock::take(store)?;
    let taken = networks(store)?;
    if taken.iter().any(|n| n.name == name) {
        return Err(ContainerError::State(format!(
            "network with name {name} already exists"
        )));
    }
    let taken_subnets: Vec<(Ipv4Addr, u8)> = taken
        .iter()
        .filter_map(|n| parse_cidr(&n.subnet).ok())
        .collect();
    let routes = host_routes();
    let (network, prefix) = match &options.subnet {
        Some(subnet) => {
            let wanted = parse_cidr(subnet)?;
            if let Some(other) = taken
                .iter()
                .find(|n| parse_cidr(&n.subnet).is_ok_and(|s| overlaps(s, wanted)))
            {
                return Err(ContainerError::State(format!(
                    "subnet {subnet} overlaps network {}'s {}",
                    other.name, other.subnet
                )));
            }
            wanted
        }
        None => (0u8..=255)
            .map(|n| (Ipv4Addr::new(10, 89, n, 0), 24u8))
            .find(|s| {
                !taken_subnets.iter().any(|t| overlaps(*t, *s))
                    && !routes.iter().any(|r| overlaps(*r, *s))
            })
            .ok_or_else(|| {
                ContainerError::State("no free subnet left in 10.89.0.0/16: give --subnet".into())
            })?,
    };
    let gateway = match &options.gateway {
        Some(g) => {
            let g: Ipv4Addr = g
                .parse()
                .map_err(|_| ContainerError::invalid(format!("invalid gateway {g:?}")))?;
            if !overlaps((g, 32), (network, prefix)) {
                return Err(ContainerError::invalid(format!(
                    "gateway {g} is not in the subnet {network}/{prefix}"
                )));
            }
            g
        }
        None => Ipv4Addr::from(u32::from(network) + 1),
    };
    let id = crate::create::new_container_id()?;
    let record = NetworkRecord {
        name: name.to_string(),
        bridge: format!("gcr{}", &id[..8]),
        id,
        subnet: format!("{network}/{prefix}"),
        gateway: gateway.to_string(),
        internal: options.internal,
        labels: options.labels.clone(),
        created: crate::record::now(),
    };
    let dir = networks_dir(store);
    std::fs::create_dir_all(&dir).map_err(|e| ContainerError::io("create", &dir, e))?;
    let path = record_path(store, name);
    let text = serde_json::to_vec_pretty(&record).map_err(|source| ContainerError::Json {
        path: path.clone(),
        source,
    })?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text).map_err(|e| ContainerError::io("write", &tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| ContainerError::io("rename", &path, e))?;
    network_event(store, &record, "create");
    Ok(record)
}

fn network_event(store: &gcr_storage::Store, record: &NetworkRecord, action: &str) {
    let attributes = BTreeMap::from([
        ("name".to_string(), record.name.clone()),
        ("type".to_string(), "bridge".to_string()),
    ]);
    store.record_event(&gcr_storage::Event::new(
        "network", action, &record.id, attributes,
    ));
}

/// The containers of the store on network `name` (first or further).
fn members(store: &gcr_storage::Store, name: &str) -> Result<Vec<Container>> {
    Ok(list(store)?
        .into_iter()
        .filter(|c| crate::attachments::is_on(c, name))
        .collect())
}

/// Removes a user network; refused while a running container is on it.
pub fn remove_network(store: &gcr_storage::Store, wanted: &str) -> Result<()> {
    let record = find_network(store, wanted)?;
    let running: Vec<String> = members(store, &record.name)?
        .iter()
        .filter(|c| c.alive())
        .map(Container::display_name)
        .collect();
    if !running.is_empty() {
        return Err(ContainerError::State(format!(
            "network {} has active endpoints ({}): stop them first",
            record.name,
            running.join(", ")
        )));
    }
    let path = record_path(store, &record.name);
    std::fs::remove_file(&path).map_err(|e| ContainerError::io("remove", &path, e))?;
    // The bridge, its NAT rules and its leases go with the network.
    gcr_runtime::remove_bridge_network(&record.bridge)?;
    network_event(store, &record, "destroy");
    Ok(())
}

/// Removes every user network no container is on; their names.
pub fn prune_networks(store: &gcr_storage::Store) -> Result<Vec<String>> {
    let unused = unused_networks(store)?;
    for name in &unused {
        remove_network(store, name)?;
    }
    Ok(unused)
}

/// The user networks no container is on (what prune removes).
pub fn unused_networks(store: &gcr_storage::Store) -> Result<Vec<String>> {
    let mut unused = Vec::new();
    for record in networks(store)? {
        if members(store, &record.name)?.is_empty() {
            unused.push(record.name);
        }
    }
    Ok(unused)
}

/// Docker's network document (`network inspect`, `GET /networks/{id}`).
pub fn network_document(store: &gcr_storage::Store, record: &NetworkRecord) -> Value {
    let mut containers = serde_json::Map::new();
    for c in members(store, &record.name).unwrap_or_default() {
        if !c.alive() {
            continue;
        }
        let prefix = record.subnet.split('/').nth(1).unwrap_or("24");
        let address = if c.meta.network.as_deref() == Some(record.name.as_str()) {
            c.address()
        } else {
            crate::attachments::address_on(&c, &record.bridge)
        };
        containers.insert(
            c.id.clone(),
            json!({
                "Name": c.display_name(),
                "EndpointID": c.id,
                "MacAddress": "",
                "IPv4Address": address.map(|a| format!("{a}/{prefix}")).unwrap_or_default(),
                "IPv6Address": "",
            }),
        );
    }
    json!({
        "Name": record.name,
        "Id": record.id,
        "Created": record.created,
        "Scope": "local",
        "Driver": "bridge",
        "EnableIPv6": false,
        "IPAM": {"Driver": "default", "Options": {}, "Config": [{"Subnet": record.subnet, "Gateway": record.gateway}]},
        "Internal": record.internal,
        "Attachable": false,
        "Ingress": false,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": false,
        "Containers": containers,
        "Options": {"com.docker.network.bridge.name": record.bridge},
        "Labels": record.labels,
    })
}

/// The built-in networks' documents (`bridge`: gcr0 as root, slirp4netns rootless, as
/// `--network bridge` is; `host`, `none`).
pub fn builtin_networks() -> Vec<Value> {
    let rootless = gcr_runtime::userns::is_rootless();
    let private = if rootless {
        json!({
            "Name": "bridge", "Id": "bridge", "Driver": "slirp4netns", "Scope": "local",
            "IPAM": {"Driver": "default", "Config": [{"Subnet": "10.0.2.0/24", "Gateway": "10.0.2.2"}]},
            "Options": {"dns": gcr_runtime::SLIRP_DNS.to_string()}, "Labels": {}, "Containers": {},
        })
    } else {
        json!({
            "Name": "bridge", "Id": "bridge", "Driver": "bridge", "Scope": "local",
            "IPAM": {"Driver": "default", "Config": [{"Subnet": "10.88.0.0/16", "Gateway": "10.88.0.1"}]},
            "Options": {"com.docker.network.bridge.name": gcr_runtime::BRIDGE}, "Labels": {}, "Containers": {},
        })
    };
    vec![
        private,
        json!({"Name": "host", "Id": "host", "Driver": "host", "Scope": "local", "IPAM": {"Driver": "default", "Config": []}, "Options": {}, "Labels": {}, "Containers": {}}),
        json!({"Name": "none", "Id": "none", "Driver": "null", "Scope": "local", "IPAM": {"Driver": "default", "Config": []}, "Options": {}, "Labels": {}, "Containers": {}}),
    ]
}

/// Whether `name` is a built-in network (`bridge`, `host`, `none` and gcr's other names of
/// the default one: `default`, `private`, `slirp4netns`).
pub fn is_builtin_network(name: &str) -> bool {
    crate::network::NetworkChoice::parse(name).is_ok()
}

/// What `--network NAME` (or the API's NetworkMode) asks for: a built-in network, or a user
/// network of the store (then the private bridge, and the network's name).
pub fn resolve_network(
    store: &gcr_storage::Store,
    name: &str,
) -> Result<(crate::network::NetworkChoice, Option<String>)> {
    match crate::network::NetworkChoice::parse(name) {
        Ok(choice) => Ok((choice, None)),
        Err(builtin) => match find_network(store, name) {
            Ok(record) => Ok((
                crate::network::NetworkChoice::Private(gcr_runtime::PrivateNetwork::Bridge),
                Some(record.name),
            )),
            Err(ContainerError::NoSuchNetwork(_)) => Err(builtin),
            Err(other) => Err(other),
        },
    }
}

/// The names the members of its network resolve to a container: its name, aliases and short
/// ID (as Docker's resolver).
pub(crate) fn member_names(id: &str, meta: &crate::record::ContainerMeta) -> Vec<String> {
    member_names_with(id, meta, &meta.network_aliases)
}

/// The names on a network where the container has `aliases`.
pub(crate) fn member_names_with(
    id: &str,
    meta: &crate::record::ContainerMeta,
    aliases: &[String],
) -> Vec<String> {
    let mut names: Vec<String> = meta.name.iter().cloned().collect();
    for alias in aliases {
        if !names.contains(alias) {
            names.push(alias.clone());
        }
    }
    names.push(crate::short_id(id));
    names
}

/// The runtime's options for a container on user network `name`, known to the others by
/// `names`, at address `ip` if given.
pub(crate) fn runtime_options(
    store: &gcr_storage::Store,
    name: &str,
    ports: &[crate::record::PublishedPort],
    names: Vec<String>,
    ip: Option<&str>,
) -> Result<gcr_runtime::NetworkOptions> {
    let mut options = crate::network::network_options(
        crate::network::NetworkChoice::Private(gcr_runtime::PrivateNetwork::Bridge),
        ports,
    )?;
    options.bridge = Some(bridge_spec(store, name, names, ip)?);
    Ok(options)
}

/// The runtime's view of user network `name` for one member.
pub(crate) fn bridge_spec(
    store: &gcr_storage::Store,
    name: &str,
    names: Vec<String>,
    ip: Option<&str>,
) -> Result<gcr_runtime::BridgeSpec> {
    let record = find_network(store, name)?;
    let (_, prefix) = parse_cidr(&record.subnet)?;
    let gateway: Ipv4Addr = record
        .gateway
        .parse()
        .map_err(|_| ContainerError::invalid(format!("network {name} records a bad gateway")))?;
    let address = match ip {
        Some(ip) => Some(ip.parse::<Ipv4Addr>().map_err(|_| {
            ContainerError::invalid(format!(
                "invalid --ip {ip:?}: give an IPv4 address of {}",
                record.subnet
            ))
        })?),
        None => None,
    };
    Ok(gcr_runtime::BridgeSpec {
        bridge: record.bridge,
        gateway,
        prefix,
        internal: record.internal,
        names,
        resolves_names: true,
        address,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_and_overlaps() {
        assert_eq!(
            parse_cidr("10.90.1.7/24").unwrap(),
            (Ipv4Addr::new(10, 90, 1, 0), 24)
        );
        assert!(parse_cidr("10.90.1.0").is_err());
        assert!(parse_cidr("10.90.1.0/4").is_err());
        let a = (Ipv4Addr::new(10, 89, 0, 0), 16);
        assert!(overlaps(a, (Ipv4Addr::new(10, 89, 7, 0), 24)));
        assert!(!overlaps(a, (Ipv4Addr::new(10, 88, 0, 0), 16)));
        assert!(check_network_name("proj_default").is_ok());
        assert!(check_network_name("bridge").is_err());
        assert!(check_network_name("-x").is_err());
    }
}
