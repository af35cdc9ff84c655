//! A container's further user networks (`network connect`, `run --network a --network b`):
//! recorded in its own file (`networks.json` in the record, which no supervisor rewrites),
//! joined at every start on `eth1`, `eth2`, ... and, while it runs, connected and
//! disconnected on the spot by the runtime.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::container::Container;
use crate::error::{ContainerError, Result};
use crate::user_networks::{find_network, NetworkRecord};

const FILE: &str = "networks.json";

/// One further network of a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The user network's name.
    pub network: String,
    /// Its names there beside its name and short ID.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// The interface in the container (`eth1`, ...).
    pub interface: String,
    /// The address asked for (`--ip`).
    #[serde(default)]
    pub ip: Option<String>,
}

/// What a caller asks for: a network, aliases there, an address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRequest {
    pub network: String,
    pub aliases: Vec<String>,
    pub ip: Option<String>,
}

/// The container's further networks as recorded (none for older records).
pub fn attachments(dir: &Path) -> Vec<Attachment> {
    std::fs::read(dir.join(FILE))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

fn write_attachments(dir: &Path, list: &[Attachment]) -> Result<()> {
    let path = dir.join(FILE);
    let text = serde_json::to_vec(list).map_err(|source| ContainerError::Json {
        path: path.clone(),
        source,
    })?;
    let tmp = dir.join(format!(".{FILE}.{}", std::process::id()));
    std::fs::write(&tmp, text).map_err(|e| ContainerError::io("write", &tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| ContainerError::io("rename", &path, e))
}

/// The first free `ethN` (N >= 1) among `list`.
fn free_interface(list: &[Attachment]) -> String {
    (1..)
        .map(|n| format!("eth{n}"))
        .find(|name| !list.iter().any(|a| &a.interface == name))
        .unwrap_or_default()
}

/// Records further networks of a new container (before its first start).
pub(crate) fn record_at_create(
    store: &gcr_storage::Store,
    dir: &Path,
    primary: Option<&str>,
    requests: &[NetworkRequest],
) -> Result<()> {
    let mut list: Vec<Attachment> = Vec::new();
    for request in requests {
        let record = find_network(store, &request.network)?;
        if primary == Some(record.name.as_str()) || list.iter().any(|a| a.network == record.name) {
            return Err(ContainerError::invalid(format!(
                "network {} is given twice",
                record.name
            )));
        }
        check_ip(&record, request.ip.as_deref())?;
        let interface = free_interface(&list);
        list.push(Attachment {
            network: record.name,
            aliases: request.aliases.clone(),
            interface,
            ip: request.ip.clone(),
        });
    }
    if list.is_empty() {
        return Ok(());
    }
    write_attachments(dir, &list)
}

fn check_ip(record: &NetworkRecord, ip: Option<&str>) -> Result<Option<std::net::Ipv4Addr>> {
    let Some(ip) = ip else { return Ok(None) };
    ip.parse().map(Some).map_err(|_| {
        ContainerError::invalid(format!(
            "invalid --ip {ip:?} for network {}: give an IPv4 address of {}",
            record.name, record.subnet
        ))
    })
}

/// The runtime's further bridges of a container (at its start).
pub(crate) fn extra_bridges(
    store: &gcr_storage::Store,
    id: &str,
    meta: &crate::record::ContainerMeta,
    dir: &Path,
) -> Result<Vec<gcr_runtime::ExtraBridge>> {
    attachments(dir)
        .into_iter()
        .map(|a| {
            let names = crate::user_networks::member_names_with(id, meta, &a.aliases);
            let spec =
                crate::user_networks::bridge_spec(store, &a.network, names, a.ip.as_deref())?;
            Ok(gcr_runtime::ExtraBridge {
                interface: a.interface,
                spec,
            })
        })
        .collect()
}

/// Whether the container is on network `name` (first or further).
pub(crate) fn is_on(c: &Container, name: &str) -> bool {
    c.meta.network.as_deref() == Some(name) || attachments(&c.dir).iter().any(|a| a.network == name)
}

/// `network connect NET CTR`: recorded for its next starts and, when it runs, joined now.
pub fn connect_network(
    store: &gcr_storage::Store,
    network: &str,
    c: &Container,
    request: &NetworkRequest,
) -> Result<()> {
    let record = find_network(store, network)?;
    match c.meta.network.as_deref() {
        Some("host") | Some("none") | None => {
            return Err(ContainerError::State(format!(
                "container {} has --network {}: it has no network namespace of its own to connect",
                c.display_name(),
                c.meta.network.as_deref().unwrap_or("host")
            )));
        }
        _ => {}
    }
    let ip = check_ip(&record, request.ip.as_deref())?;
    let _lock = crate::names::NameLock::take(store)?;
    if is_on(c, &record.name) {
        return Err(ContainerError::State(format!(
            "container {} is already connected to network {}",
            c.display_name(),
            record.name
        )));
    }
    let mut list = attachments(&c.dir);
    let attachment = Attachment {
        network: record.name.clone(),
        aliases: request.aliases.clone(),
        interface: free_interface(&list),
        ip: request.ip.clone(),
    };
    let c = c.current();
    if let (true, Some(pid)) = (c.alive(), c.pid()) {
        let names = crate::user_networks::member_names_with(&c.id, &c.meta, &attachment.aliases);
        let mut spec = crate::user_networks::bridge_spec(store, &record.name, names, None)?;
        spec.address = ip;
        let address = gcr_runtime::connect_running(
            pid.as_raw() as u32,
            &c.id,
            &attachment.interface,
            &spec,
            &c.dir.join("hosts"),
        )?;
        let path = address_file(&c.dir, &record.bridge);
        std::fs::write(&path, address.to_string())
            .map_err(|e| ContainerError::io("write", &path, e))?;
    }
    list.push(attachment);
    write_attachments(&c.dir, &list)?;
    network_event(store, &record, "connect", &c.id);
    Ok(())
}

/// `network disconnect NET CTR`: off the network now and at its next starts. Its first
/// network (from `--network`) stays: gcr cannot take that one away yet.
pub fn disconnect_network(store: &gcr_storage::Store, network: &str, c: &Container) -> Result<()> {
    let record = find_network(store, network)?;
    let _lock = crate::names::NameLock::take(store)?;
    let mut list = attachments(&c.dir);
    let Some(at) = list.iter().position(|a| a.network == record.name) else {
        if c.meta.network.as_deref() == Some(record.name.as_str()) {
            return Err(ContainerError::Unsupported(format!(
                "network {} is container {}'s first network (its --network): gcr cannot disconnect that one yet; recreate the container on another network",
                record.name,
                c.display_name()
            )));
        }
        return Err(ContainerError::State(format!(
            "container {} is not connected to network {}",
            c.display_name(),
            record.name
        )));
    };
    let c = c.current();
    if let (true, Some(pid)) = (c.alive(), c.pid()) {
        gcr_runtime::disconnect_running(pid.as_raw() as u32, &c.id, &record.bridge)?;
    }
    let _ = std::fs::remove_file(address_file(&c.dir, &record.bridge));
    list.remove(at);
    write_attachments(&c.dir, &list)?;
    network_event(store, &record, "disconnect", &c.id);
    Ok(())
}

/// Where the runtime (at start) or `connect` writes the address on a further network.
pub(crate) fn address_file(dir: &Path, bridge: &str) -> std::path::PathBuf {
    dir.join(format!("address.{bridge}"))
}

/// The container's address on a further network, while it runs.
pub(crate) fn address_on(c: &Container, bridge: &str) -> Option<String> {
    if !c.alive() {
        return None;
    }
    std::fs::read_to_string(address_file(&c.dir, bridge)).ok()
}

fn network_event(
    store: &gcr_storage::Store,
    record: &NetworkRecord,
    action: &str,
    container: &str,
) {
    let attributes = std::collections::BTreeMap::from([
        ("name".to_string(), record.name.clone()),
        ("type".to_string(), "bridge".to_string()),
        ("container".to_string(), container.to_string()),
    ]);
    store.record_event(&gcr_storage::Event::new(
        "network", action, &record.id, attributes,
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interfaces_fill_the_first_gap() {
        let a = |interface: &str| Attachment {
            network: "n".into(),
            aliases: vec![],
            interface: interface.into(),
            ip: None,
        };
        assert_eq!(free_interface(&[]), "eth1");
        assert_eq!(free_interface(&[a("eth1"), a("eth3")]), "eth2");
        assert_eq!(free_interface(&[a("eth1"), a("eth2")]), "eth3");
    }
}
