//! Bridge networks: the bridges (gcr0 and the user networks'), their NAT rules, the
//! address leases and the veths that join a container's namespace to them; on the host as
//! root, in the rootless network namespace (`switch`) rootless. `network connect` and
//! `disconnect` of a running container are here too.

use std::io::Write;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::unistd::Pid;

use crate::error::RuntimeError;
use crate::network::{
    create_private_dir, owner_alive, process_start, state_dir, BridgeSpec, StateLock, BRIDGE,
};

/// Whether bridges live in the rootless network namespace rather than on the host.
pub(crate) fn in_rootless_switch() -> bool {
    crate::userns::rootless_ids().is_some()
}

/// Whether the interface `name` exists in this process's network namespace.
pub(crate) fn link_exists(name: &str) -> bool {
    // /proc/net is this process's network namespace (/sys/class/net is the mounter's).
    std::fs::read_to_string("/proc/net/dev").is_ok_and(|dev| {
        dev.lines()
            .filter_map(|line| line.split_once(':'))
            .any(|(interface, _)| interface.trim() == name)
    })
}

/// An address of the bridge network, held by a file under /run/gcr/net/leases that names
/// its owner (PID and start time).
pub(crate) struct Lease {
    pub(crate) address: Ipv4Addr,
    path: PathBuf,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Lease {
    /// The address `bridge.address` asks for, or the first free one, for `owner` (a
    /// process record: PID and start time).
    pub(crate) fn take(bridge: &BridgeSpec, owner: &str) -> Result<Lease, RuntimeError> {
        let dir = lease_dir(bridge);
        create_private_dir(&dir)?;
        let _lock = StateLock::take()?;
        // The subnet's addresses but its own, the gateway and the broadcast address.
        let first = u32::from(bridge.network());
        let size = 1u32 << (32 - u32::from(bridge.prefix).min(30));
        let free = |address: Ipv4Addr| {
            std::fs::read_to_string(dir.join(address.to_string()))
                .map(|text| !owner_alive(&text))
                .unwrap_or(true)
        };
        let chosen = match bridge.address {
            Some(wanted) => {
                let n = u32::from(wanted).wrapping_sub(first);
                if n == 0 || n >= size - 1 || wanted == bridge.gateway {
                    return Err(RuntimeError::InvalidSpec(format!(
                        "address {wanted} is not a free host address of the network's subnet {}/{}",
                        bridge.network(),
                        bridge.prefix
                    )));
                }
                if !free(wanted) {
                    return Err(RuntimeError::Setup(format!(
                        "address {wanted} is already in use on the network: choose another --ip"
                    )));
                }
                Some(wanted)
            }
            None => (1..size - 1)
                .map(|n| Ipv4Addr::from(first + n))
                .find(|a| *a != bridge.gateway && free(*a)),
        };
        let Some(address) = chosen else {
            return Err(RuntimeError::Setup(format!(
                "the network of bridge {} has no free address left",
                bridge.bridge
            )));
        };
        let path = dir.join(address.to_string());
        std::fs::write(&path, owner).map_err(|e| RuntimeError::io("write", &path, e))?;
        Ok(Lease { address, path })
    }
}

fn lease_dir(bridge: &BridgeSpec) -> PathBuf {
    if bridge.is_default() {
        state_dir().join("leases")
    } else {
        state_dir().join(format!("leases-{}", bridge.bridge))
    }
}

/// This process as a lease or member owner.
pub(crate) fn own_owner_record() -> String {
    owner_record(std::process::id())
}

fn owner_record(pid: u32) -> String {
    format!("{pid} {}", process_start(pid).unwrap_or(0))
}

/// The bridge side of a container's first veth (interface names hold 15 bytes).
pub(crate) fn primary_host_side(container_id: &str) -> String {
    format!("gcr{}", &container_id[..container_id.len().min(12)])
}

/// The bridge side of a container's veth to a further network: `gcx`, 6 of its ID, 6 of
/// the bridge's.
pub(crate) fn extra_host_side(container_id: &str, bridge: &str) -> String {
    let tail = bridge.strip_prefix("gcr").unwrap_or(bridge);
    format!(
        "gcx{}{}",
        &container_id[..container_id.len().min(6)],
        &tail[..tail.len().min(6)]
    )
}

/// `network connect` of a running container (its PID 1 `pid`): a lease and a veth to the
/// network's bridge on `interface`, and its names in the members' hosts files (`hosts`: the
/// container's own). The lease and the membership last as long as the container's PID 1.
/// Returns the address.
pub fn connect_running(
    pid: u32,
    container_id: &str,
    interface: &str,
    spec: &BridgeSpec,
    hosts: &Path,
) -> Result<Ipv4Addr, RuntimeError> {
    let owner = owner_record(pid);
    let lease = Lease::take(spec, &owner)?;
    let address = lease.address;
    let host_side = extra_host_side(container_id, &spec.bridge);
    bridge_attach(
        Pid::from_raw(pid as i32),
        &host_side,
        interface,
        address,
        spec,
        false,
    )?;
    if spec.resolves_names {
        if let Err(e) = crate::peers::record(
            &spec.bridge,
            container_id,
            address,
            hosts,
            &spec.names,
            &owner,
        ) {
            let _ = in_bridge_namespace(|| ip_batch(&format!("link del {host_side}\n")));
            return Err(e);
        }
    }
    // Owned by PID 1 now: the file stays when this process ends.
    std::mem::forget(lease);
    Ok(address)
}

/// `network disconnect` of a running container: its veth to `bridge` goes, with its lease
/// and its names in the members' hosts files.
pub fn disconnect_running(pid: u32, container_id: &str, bridge: &str) -> Result<(), RuntimeError> {
    crate::peers::leave(bridge, container_id);
    let host_side = extra_host_side(container_id, bridge);
    in_bridge_namespace(|| {
        if link_exists(&host_side) {
            ip_batch(&format!("link del {host_side}\n"))?;
        }
        Ok(())
    })?;
    let owner = owner_record(pid);
    let spec = BridgeSpec {
        bridge: bridge.to_string(),
        ..BridgeSpec::default_bridge()
    };
    let _lock = StateLock::take()?;
    for entry in std::fs::read_dir(lease_dir(&spec))
        .into_iter()
        .flatten()
        .flatten()
    {
        if std::fs::read_to_string(entry.path()).is_ok_and(|text| text == owner) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

/// The `ip` command (iproute2).
fn ip_command() -> Result<PathBuf, RuntimeError> {
    ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| {
            RuntimeError::Setup(
                "the bridge network needs the ip command (iproute2): install it, or use --network host".into(),
            )
        })
}

/// Runs `ip -batch -` with `commands`; its error output names what failed.
pub(crate) fn ip_batch(commands: &str) -> Result<(), RuntimeError> {
    let mut child = Command::new(ip_command()?)
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| RuntimeError::io("run", Path::new("ip"), e))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(commands.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| RuntimeError::io("run", Path::new("ip"), e))?;
    if !out.status.success() {
        return Err(RuntimeError::Setup(format!(
            "setting up the network failed: ip: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// The nftables table of a bridge's NAT and forward rules.
fn nat_table(spec_bridge: &str) -> String {
    if spec_bridge == BRIDGE {
        "gcr".to_string()
    } else {
        format!("gcr_{}", spec_bridge.replace('-', "_"))
    }
}

/// Removes what a user network left on the host: its bridge, its nftables table and its
/// lease and member records (the network itself is gone; its containers are not running).
pub fn remove_bridge_network(bridge: &str) -> Result<(), RuntimeError> {
    if bridge == BRIDGE {
        return Err(RuntimeError::InvalidSpec(format!(
            "{BRIDGE} is the default network's bridge"
        )));
    }
    let _lock = StateLock::take()?;
    let table = nat_table(bridge);
    let remove = || {
        if link_exists(bridge) {
            ip_batch(&format!("link del {bridge}\n"))?;
        }
        if let Some(nft) = nft_command() {
            let _ = Command::new(nft)
                .args(["delete", "table", "ip", &table])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        Ok(())
    };
    let state = state_dir();
    if in_rootless_switch() {
        crate::switch::in_switch_if_alive(&state, remove)?;
    } else {
        remove()?;
    }
    let _ = std::fs::remove_file(state.join(format!("nat-checked-{table}")));
    let _ = std::fs::remove_file(state.join(format!("bridge-{bridge}")));
    let _ = std::fs::remove_dir_all(state.join(format!("leases-{bridge}")));
    let _ = std::fs::remove_dir_all(state.join(format!("members-{bridge}")));
    if in_rootless_switch() {
        crate::switch::stop_keeper_if_unused(&state, std::time::Duration::ZERO);
    }
    Ok(())
}

/// Rootless: starts the rootless network namespace now (for a long-lived caller such as the
/// API service, whose workers inherit its user namespace: they and later gcr commands then
/// share one). Nothing as root.
pub fn prepare_rootless_networks() -> Result<(), RuntimeError> {
    if !in_rootless_switch() {
        return Ok(());
    }
    let _lock = StateLock::take()?;
    crate::switch::HELD_BY_THIS_PROCESS.store(true, std::sync::atomic::Ordering::SeqCst);
    crate::switch::in_switch(&state_dir(), || Ok(()))
}

/// Rootless: stops the rootless network namespace if nothing uses it any more.
pub fn release_rootless_networks() {
    if !in_rootless_switch() {
        return;
    }
    crate::switch::HELD_BY_THIS_PROCESS.store(false, std::sync::atomic::Ordering::SeqCst);
    if let Ok(_lock) = StateLock::take() {
        crate::switch::stop_keeper_if_unused(&state_dir(), std::time::Duration::from_secs(3));
    }
}

/// Runs `work` where the bridges are: on the host as root, in the rootless network
/// namespace (started if need be) rootless.
pub(crate) fn in_bridge_namespace(
    work: impl FnOnce() -> Result<(), RuntimeError>,
) -> Result<(), RuntimeError> {
    if in_rootless_switch() {
        crate::switch::in_switch(&state_dir(), work)
    } else {
        work()
    }
}

fn nft_command() -> Option<&'static str> {
    ["/usr/sbin/nft", "/sbin/nft"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
}

/// The bridge with its address, forwarding on, and NAT for its subnet (once per boot).
fn ensure_bridge(spec: &BridgeSpec) -> Result<(), RuntimeError> {
    let _lock = StateLock::take()?;
    let (bridge, gateway, prefix) = (&spec.bridge, spec.gateway, spec.prefix);
    let setup = || {
        if !link_exists(bridge) {
            ip_batch(&format!(
                "link add {bridge} type bridge\naddr add {gateway}/{prefix} dev {bridge}\nlink set {bridge} up\n"
            ))?;
        }
        // Per network namespace: the host's as root, the rootless one's rootless.
        let forward = "/proc/sys/net/ipv4/ip_forward";
        if std::fs::read_to_string(forward)
            .map(|v| v.trim() != "1")
            .unwrap_or(true)
        {
            std::fs::write(forward, "1").map_err(|e| RuntimeError::io("write", forward, e))?;
        }
        ensure_nat(spec);
        Ok(())
    };
    if in_rootless_switch() {
        let state = state_dir();
        crate::switch::in_switch(&state, setup)?;
        // Counted by the keeper's stop: the namespace goes with the last bridge.
        let marker = state.join(format!("bridge-{bridge}"));
        std::fs::write(&marker, b"").map_err(|e| RuntimeError::io("write", &marker, e))?;
        Ok(())
    } else {
        setup()
    }
}

/// Masquerading for traffic from the bridge to other interfaces, with nftables. Without nft
/// the containers still reach the host and published ports work: a warning says what lacks.
fn ensure_nat(spec: &BridgeSpec) {
    let subnet = format!("{}/{}", spec.network(), spec.prefix);
    let bridge = &spec.bridge;
    // The default network's table keeps its old name; each user network has its own.
    let table = nat_table(bridge);
    let Some(nft) = nft_command() else {
        tracing::warn!(
            "nft (nftables) is missing: containers on {bridge} cannot reach other networks"
        );
        return;
    };
    // Checked at most once a minute (an nft run costs a few ms on every `gcr run`): the
    // marker says when the table was last seen complete.
    let marker = state_dir().join(format!("nat-checked-{table}"));
    let fresh = std::fs::metadata(&marker)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age < std::time::Duration::from_secs(60));
    if fresh {
        return;
    }
    // Up to date when the table has the rule that keeps the outside from opening
    // connections into the bridge (older gcr versions lacked it).
    let listed = Command::new(nft)
        .args(["list", "table", "ip", &table])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .output();
    if matches!(&listed, Ok(out) if out.status.success()
        && String::from_utf8_lossy(&out.stdout).contains("ct state new drop"))
    {
        let _ = std::fs::write(&marker, b"");
        return;
    }
    // One transaction: the old table (if any) goes, the new one comes. Containers reach out
    // and get their answers; nothing from outside opens a connection to them (published
    // ports come through gcr's proxy, not the forward path); the bridge talks to itself.
    // An internal network neither masquerades nor forwards out of its bridge.
    let (nat, outbound) = if spec.internal {
        (String::new(), format!("iifname \"{bridge}\" drop;"))
    } else {
        (
            format!("ip saddr {subnet} oifname != \"{bridge}\" masquerade;"),
            format!("iifname \"{bridge}\" accept;"),
        )
    };
    let rules = format!(
        "table ip {table} {{}}\ndelete table ip {table}\n\
         table ip {table} {{\n\
         chain postrouting {{ type nat hook postrouting priority srcnat; policy accept; {nat} }}\n\
         chain forward {{ type filter hook forward priority filter; policy accept; {outbound} oifname \"{bridge}\" ct state related,established accept; oifname \"{bridge}\" ct state new drop; }}\n\
         }}\n"
    );
    let added = Command::new(nft)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            if let Some(mut stdin) = child.stdin.take() {
                stdin.write_all(rules.as_bytes())?;
            }
            child.wait_with_output()
        });
    match added {
        Ok(out) if out.status.success() => {
            let _ = std::fs::write(&marker, b"");
        }
        Ok(out) => tracing::warn!(
            "cannot add the NAT rules for {bridge}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => tracing::warn!("cannot run nft for the NAT rules of {bridge}: {e}"),
    }
}

/// A veth pair: `host_side` on the bridge, `interface` with `address` in the container
/// (with the default route through the bridge when `default_route`). Returns `host_side`.
pub(crate) fn bridge_attach(
    pid: Pid,
    host_side: &str,
    interface: &str,
    address: Ipv4Addr,
    spec: &BridgeSpec,
    default_route: bool,
) -> Result<String, RuntimeError> {
    ensure_bridge(spec)?;
    let (bridge, gateway, prefix) = (&spec.bridge, spec.gateway, spec.prefix);
    // The previous run's veth of this container (a restart) may outlive its namespace for a
    // moment: the kernel tears namespaces down asynchronously.
    in_bridge_namespace(|| {
        if link_exists(host_side) {
            let _ = ip_batch(&format!("link del {host_side}\n"));
        }
        ip_batch(&format!(
            "link add {host_side} type veth peer name {interface} netns {pid}\nlink set {host_side} master {bridge} up\n"
        ))
    })?;
    let netns = std::fs::File::open(format!("/proc/{pid}/ns/net"))
        .map_err(|e| RuntimeError::io("open", format!("/proc/{pid}/ns/net"), e))?;
    let route = if default_route {
        format!("route add default via {gateway}\n")
    } else {
        String::new()
    };
    let configured = crate::sys::in_child(|| {
        nix::sched::setns(netns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| RuntimeError::sys("join the container's network namespace", e))?;
        ip_batch(&format!(
            "addr add {address}/{prefix} dev {interface}\nlink set {interface} up\n{route}"
        ))
    });
    if let Err(e) = configured {
        let _ = in_bridge_namespace(|| ip_batch(&format!("link del {host_side}\n")));
        return Err(e);
    }
    Ok(host_side.to_string())
}
