//! Private networks: the container's own network namespace, joined to the host through a
//! bridge (`gcr0`, 10.88.0.0/16, with NAT; as root) or through slirp4netns (a user-mode
//! network stack; rootless, as Podman), and published ports (`-p`), forwarded by a small
//! proxy process that listens on the host and connects inside the container's namespace (as
//! docker-proxy and rootlesskit's builtin port driver do).
//!
//! Everything a container holds is undone when its run ends: the veth goes with the
//! namespace, the proxy and slirp4netns are stopped, the address lease file is removed. A
//! lease whose owner died without cleaning up (SIGKILL) is taken again by the next run.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

use crate::error::RuntimeError;

/// The host bridge of gcr's private network (root).
pub const BRIDGE: &str = "gcr0";
const BRIDGE_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 1);
const BRIDGE_PREFIX: u8 = 16;
/// slirp4netns's fixed addresses: the container, the host (gateway) and its DNS forwarder.
const SLIRP_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 100);
pub const SLIRP_DNS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);
/// Leases and the bridge's setup lock as root (tmpfs: gone at reboot, as the bridge is).
const NET_STATE: &str = "/run/gcr/net";

/// Where the network state lives: /run/gcr/net as root; rootless, the user's own runtime
/// directory (its bridges are in the rootless network namespace, see `switch`).
pub(crate) fn state_dir() -> PathBuf {
    match crate::userns::rootless_ids() {
        Some((uid, _)) => crate::userns::user_state_dir(uid).join("net"),
        None => PathBuf::from(NET_STATE),
    }
}

/// Makes the network state directory. Rootless, its parent must be the user's own and
/// closed to others (under /tmp anybody could have made it first).
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), RuntimeError> {
    if let Some((uid, _)) = crate::userns::rootless_ids() {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt};
        let base = crate::userns::user_state_dir(uid);
        match std::fs::DirBuilder::new().mode(0o700).create(&base) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let meta = std::fs::symlink_metadata(&base)
                    .map_err(|e| RuntimeError::io("inspect", &base, e))?;
                if !meta.is_dir()
                    || meta.uid() != nix::unistd::geteuid().as_raw()
                    || meta.mode() & 0o022 != 0
                {
                    return Err(RuntimeError::Setup(format!(
                        "{} is not a directory of yours closed to others: remove it, or set XDG_RUNTIME_DIR",
                        base.display()
                    )));
                }
            }
            Err(e) => return Err(RuntimeError::io("create", &base, e)),
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| RuntimeError::io("create", dir, e))
}

/// Whether bridges live in the rootless network namespace rather than on the host.
fn in_rootless_switch() -> bool {
    crate::userns::rootless_ids().is_some()
}

/// Whether the interface `name` exists in this process's network namespace.
fn link_exists(name: &str) -> bool {
    // /proc/net is this process's network namespace (/sys/class/net is the mounter's).
    std::fs::read_to_string("/proc/net/dev").is_ok_and(|dev| {
        dev.lines()
            .filter_map(|line| line.split_once(':'))
            .any(|(interface, _)| interface.trim() == name)
    })
}

/// How a container with a network namespace of its own reaches the outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrivateNetwork {
    /// A veth pair on the host bridge `gcr0` with NAT (root only).
    Bridge,
    /// slirp4netns on a tap device (rootless).
    Slirp,
}

/// `-p [IP:]HOST_PORT:CONTAINER_PORT` (TCP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    pub host_ip: IpAddr,
    pub host_port: u16,
    pub container_port: u16,
}

/// The container's network beyond its namespace: a private network and published ports.
#[derive(Debug, Clone, Default)]
pub struct NetworkOptions {
    pub private: Option<PrivateNetwork>,
    pub ports: Vec<PortMapping>,
    /// A user network's bridge (none: the default `gcr0`).
    pub bridge: Option<BridgeSpec>,
    /// The further user networks the container is on (`network connect`), each on its own
    /// interface (`eth1`, ...), without a default route.
    pub more_bridges: Vec<ExtraBridge>,
}

/// A further network of a container: the interface in its namespace and the bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraBridge {
    pub interface: String,
    pub spec: BridgeSpec,
}

/// A bridge network: its host bridge, subnet (the gateway is the bridge's address) and, for
/// a user network, the names the container is known by to the network's other members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeSpec {
    /// The host bridge (at most 15 bytes).
    pub bridge: String,
    pub gateway: Ipv4Addr,
    pub prefix: u8,
    /// No NAT to other networks: the members reach each other only.
    pub internal: bool,
    /// The names the other members resolve to this container (name, aliases); empty on the
    /// default network, which resolves no names (as Docker's).
    pub names: Vec<String>,
    /// Whether members resolve each other by name (user networks).
    pub resolves_names: bool,
    /// The address asked for (`--ip`); none: the first free one.
    pub address: Option<Ipv4Addr>,
}

impl BridgeSpec {
    /// The default network: `gcr0`, 10.88.0.0/16, no names.
    pub fn default_bridge() -> BridgeSpec {
        BridgeSpec {
            bridge: BRIDGE.to_string(),
            gateway: BRIDGE_GATEWAY,
            prefix: BRIDGE_PREFIX,
            internal: false,
            names: Vec::new(),
            resolves_names: false,
            address: None,
        }
    }

    fn is_default(&self) -> bool {
        self.bridge == BRIDGE
    }

    /// The subnet's first address.
    fn network(&self) -> Ipv4Addr {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0);
        Ipv4Addr::from(u32::from(self.gateway) & mask)
    }
}

/// What `Plan::new` prepared before the clone: the address (leased for the bridge) and the
/// host sockets of the published ports, bound early so that a port in use fails the run
/// before anything starts.
pub(crate) struct NetworkPlan {
    pub kind: PrivateNetwork,
    pub address: Ipv4Addr,
    bridge: BridgeSpec,
    /// Held for the run; dropping it frees the address.
    _lease: Option<Lease>,
    listeners: Vec<(TcpListener, u16)>,
    /// The further networks, each with its leased address.
    extra: Vec<(ExtraBridge, Lease)>,
}

impl NetworkPlan {
    pub(crate) fn new(options: &NetworkOptions) -> Result<Option<NetworkPlan>, RuntimeError> {
        let Some(kind) = options.private else {
            if !options.ports.is_empty() {
                return Err(RuntimeError::InvalidSpec(
                    "published ports need a private network".into(),
                ));
            }
            return Ok(None);
        };
        let bridge = options
            .bridge
            .clone()
            .unwrap_or_else(BridgeSpec::default_bridge);
        if kind == PrivateNetwork::Slirp && !bridge.is_default() {
            return Err(RuntimeError::InvalidSpec(
                "a user network is a bridge network, not slirp4netns".into(),
            ));
        }
        if kind == PrivateNetwork::Bridge && bridge.is_default() && in_rootless_switch() {
            return Err(RuntimeError::InvalidSpec(
                "rootless, the default network is slirp4netns: the gcr0 bridge is root's".into(),
            ));
        }
        let owner = own_owner_record();
        let (address, lease) = match kind {
            PrivateNetwork::Bridge => {
                let lease = Lease::take(&bridge, &owner)?;
                (lease.address, Some(lease))
            }
            PrivateNetwork::Slirp => (SLIRP_ADDRESS, None),
        };
        let mut extra = Vec::new();
        for more in &options.more_bridges {
            extra.push((more.clone(), Lease::take(&more.spec, &owner)?));
        }
        let mut listeners = Vec::new();
        for port in &options.ports {
            let at = SocketAddr::new(port.host_ip, port.host_port);
            let listener = TcpListener::bind(at).map_err(|e| {
                RuntimeError::Setup(format!(
                    "cannot publish port {}: {at} is not free ({e}); choose another host port",
                    port.container_port
                ))
            })?;
            listeners.push((listener, port.container_port));
        }
        Ok(Some(NetworkPlan {
            kind,
            address,
            bridge,
            _lease: lease,
            listeners,
            extra,
        }))
    }

    /// The further networks' bridges and the addresses there.
    pub(crate) fn extra_addresses(&self) -> impl Iterator<Item = (&str, Ipv4Addr)> {
        self.extra
            .iter()
            .map(|(more, lease)| (more.spec.bridge.as_str(), lease.address))
    }

    /// The /etc/hosts line that names the container.
    pub(crate) fn hosts_line(&self, hostname: &str) -> String {
        format!("{}\t{hostname}\n", self.address)
    }

    /// Connects the namespace of the container process `pid` (cloned, not yet started) and
    /// starts the port proxy; on a user network the container joins its members (`hosts`:
    /// its generated /etc/hosts). The result undoes it all when dropped.
    pub(crate) fn attach(
        &self,
        pid: Pid,
        container_id: &str,
        hosts: Option<&Path>,
    ) -> Result<Attached, RuntimeError> {
        let mut attached = Attached::default();
        match self.kind {
            PrivateNetwork::Bridge => {
                attached.veth = Some(bridge_attach(
                    pid,
                    &primary_host_side(container_id),
                    "eth0",
                    self.address,
                    &self.bridge,
                    true,
                )?)
            }
            PrivateNetwork::Slirp => attached.slirp = Some(slirp_attach(pid)?),
        }
        if !self.listeners.is_empty() {
            attached.proxy = Some(start_proxy(&self.listeners, pid, self.address)?);
        }
        if let (true, Some(hosts)) = (self.bridge.resolves_names, hosts) {
            attached.members.push(crate::peers::join(
                &self.bridge.bridge,
                container_id,
                self.address,
                hosts,
                &self.bridge.names,
            )?);
        }
        for (more, lease) in &self.extra {
            attached.more_veths.push(bridge_attach(
                pid,
                &extra_host_side(container_id, &more.spec.bridge),
                &more.interface,
                lease.address,
                &more.spec,
                false,
            )?);
            if let Some(hosts) = hosts {
                attached.members.push(crate::peers::join(
                    &more.spec.bridge,
                    container_id,
                    lease.address,
                    hosts,
                    &more.spec.names,
                )?);
            }
        }
        Ok(attached)
    }
}

/// The helpers of a running container's network.
#[derive(Default)]
pub(crate) struct Attached {
    slirp: Option<Slirp>,
    proxy: Option<Pid>,
    /// The bridge side of the veth, deleted at the end rather than left to the kernel's
    /// asynchronous teardown of the namespace.
    veth: Option<String>,
    /// Its places in user networks' hosts files (left before the veths go).
    members: Vec<crate::peers::Member>,
    /// The bridge sides of the veths to further networks.
    more_veths: Vec<String>,
}

struct Slirp {
    child: std::process::Child,
    /// slirp4netns exits when this end is closed.
    _exit_fd: OwnedFd,
}

impl Drop for Attached {
    fn drop(&mut self) {
        let on_user_networks = !self.members.is_empty();
        self.members.clear();
        if on_user_networks {
            // Networks joined later (`network connect`) are owned by the container's PID 1,
            // now gone: its peers forget it too.
            crate::peers::forget_the_dead();
        }
        if let Some(pid) = self.proxy.take() {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
        }
        if let Some(mut slirp) = self.slirp.take() {
            let _ = slirp.child.kill();
            let _ = slirp.child.wait();
        }
        let veths: Vec<String> = self
            .veth
            .take()
            .into_iter()
            .chain(self.more_veths.drain(..))
            .collect();
        if !veths.is_empty() {
            let _ = in_bridge_namespace(|| {
                for veth in &veths {
                    if link_exists(veth) {
                        ip_batch(&format!("link del {veth}\n"))?;
                    }
                }
                Ok(())
            });
        }
    }
}

/// An address of the bridge network, held by a file under /run/gcr/net/leases that names
/// its owner (PID and start time).
struct Lease {
    address: Ipv4Addr,
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
    fn take(bridge: &BridgeSpec, owner: &str) -> Result<Lease, RuntimeError> {
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
fn own_owner_record() -> String {
    owner_record(std::process::id())
}

fn owner_record(pid: u32) -> String {
    format!("{pid} {}", process_start(pid).unwrap_or(0))
}

/// The bridge side of a container's first veth (interface names hold 15 bytes).
fn primary_host_side(container_id: &str) -> String {
    format!("gcr{}", &container_id[..container_id.len().min(12)])
}

/// The bridge side of a container's veth to a further network: `gcx`, 6 of its ID, 6 of
/// the bridge's.
fn extra_host_side(container_id: &str, bridge: &str) -> String {
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

/// Field 22 of /proc/PID/stat: with the PID, it names one process even after PID reuse.
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

pub(crate) fn owner_alive(record: &str) -> bool {
    let mut words = record.split_whitespace();
    match (
        words.next().and_then(|p| p.parse::<u32>().ok()),
        words.next().and_then(|s| s.parse::<u64>().ok()),
    ) {
        (Some(pid), Some(start)) => process_start(pid) == Some(start),
        _ => false,
    }
}

/// An exclusive lock on the network state (the bridge's setup and the leases).
pub(crate) struct StateLock(#[allow(dead_code)] nix::fcntl::Flock<std::fs::File>);

impl StateLock {
    pub(crate) fn take() -> Result<StateLock, RuntimeError> {
        let state = state_dir();
        let path = state.join("lock");
        create_private_dir(&state)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| RuntimeError::io("open", &path, e))?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map(StateLock)
            .map_err(|(_, e)| RuntimeError::sys("lock the network state", e))
    }
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
fn ip_batch(commands: &str) -> Result<(), RuntimeError> {
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
fn in_bridge_namespace(
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
fn bridge_attach(
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

/// The slirp4netns binary.
pub(crate) fn slirp_binary() -> Result<PathBuf, RuntimeError> {
    [
        "/usr/bin/slirp4netns",
        "/bin/slirp4netns",
        "/usr/local/bin/slirp4netns",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
    .ok_or_else(|| {
        RuntimeError::Setup(
            "a rootless private network needs slirp4netns (Debian package slirp4netns): install it, or use --network host"
                .into(),
        )
    })
}

/// slirp4netns on `tap0` of the container's namespace, started and ready.
fn slirp_attach(pid: Pid) -> Result<Slirp, RuntimeError> {
    let binary = slirp_binary()?;
    // Both pipes are inherited by slirp4netns (no O_CLOEXEC on its ends) and closed here
    // right after the spawn.
    let (ready_read, ready_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| RuntimeError::sys("pipe", e))?;
    let (exit_read, exit_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| RuntimeError::sys("pipe", e))?;
    let ready_for_child = inheritable(&ready_write)?;
    let exit_for_child = inheritable(&exit_read)?;
    let mut command = Command::new(binary);
    // The container's own user namespace, when it has one (not when it shares rootless
    // gcr's, which slirp4netns then already runs in).
    let userns = format!("/proc/{pid}/ns/user");
    if !same_namespace(&userns, "/proc/self/ns/user") {
        command.arg(format!("--userns-path={userns}"));
    }
    let spawned = command
        .arg("--configure")
        .arg("--mtu=65520")
        .arg("--disable-host-loopback")
        .arg("--enable-sandbox")
        .arg("--enable-seccomp")
        .arg(format!("--ready-fd={}", ready_for_child.as_raw_fd()))
        .arg(format!("--exit-fd={}", exit_for_child.as_raw_fd()))
        .arg("--netns-type=path")
        .arg(format!("/proc/{pid}/ns/net"))
        .arg("tap0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    drop((ready_write, ready_for_child, exit_read, exit_for_child));
    let mut child = spawned.map_err(|e| RuntimeError::io("run", Path::new("slirp4netns"), e))?;
    // One byte when tap0 is configured; EOF if slirp4netns failed.
    let mut ready = [0u8; 1];
    let got = std::fs::File::from(ready_read)
        .read(&mut ready)
        .unwrap_or(0);
    if got != 1 {
        let _ = child.kill();
        let out = child.wait_with_output();
        let why = out
            .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
            .unwrap_or_default();
        return Err(RuntimeError::Setup(format!(
            "slirp4netns could not set up the container's network: {why} (--network host or none runs without it)"
        )));
    }
    // Its later complaints are not gcr's output.
    drop(child.stderr.take());
    Ok(Slirp {
        child,
        _exit_fd: exit_write,
    })
}

/// Whether two namespace files name the same namespace.
fn same_namespace(a: &str, b: &str) -> bool {
    match (nix::sys::stat::stat(a), nix::sys::stat::stat(b)) {
        (Ok(x), Ok(y)) => x.st_ino == y.st_ino && x.st_dev == y.st_dev,
        _ => false,
    }
}

/// A duplicate of `fd` without O_CLOEXEC, for a child to inherit.
fn inheritable(fd: &OwnedFd) -> Result<OwnedFd, RuntimeError> {
    let dup = nix::unistd::dup(fd).map_err(|e| RuntimeError::sys("dup", e))?;
    Ok(dup)
}

/// A process that accepts on each host socket and connects to the container's port from
/// inside its network namespace, copying both ways. It dies with the `gcr run` that started
/// it (parent-death signal) and is killed when the container ends.
fn start_proxy(
    listeners: &[(TcpListener, u16)],
    pid: Pid,
    address: Ipv4Addr,
) -> Result<Pid, RuntimeError> {
    let netns = std::fs::File::open(format!("/proc/{pid}/ns/net"))
        .map_err(|e| RuntimeError::io("open", format!("/proc/{pid}/ns/net"), e))?;
    let userns = std::fs::File::open(format!("/proc/{pid}/ns/user"))
        .map_err(|e| RuntimeError::io("open", format!("/proc/{pid}/ns/user"), e))?;
    let listeners: Vec<(TcpListener, u16)> = listeners
        .iter()
        .map(|(l, port)| l.try_clone().map(|l| (l, *port)))
        .collect::<Result<_, _>>()
        .map_err(|e| RuntimeError::io("duplicate", Path::new("the published port"), e))?;
    let (ready_read, ready_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| RuntimeError::sys("pipe", e))?;
    let parent = nix::unistd::getpid();
    let proxy = crate::sys::spawn_child(move || {
        let _ = crate::sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as u64, 0);
        // The parent may have died before the death signal was asked for.
        if nix::unistd::getppid() != parent {
            return;
        }
        // Joining a namespace that the container's user namespace owns needs that user
        // namespace first (rootless); as root the network namespace alone will do.
        if nix::sched::setns(netns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
            == Err(Errno::EPERM)
            && (nix::sched::setns(userns.as_fd(), nix::sched::CloneFlags::CLONE_NEWUSER).is_err()
                || nix::sched::setns(netns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).is_err())
        {
            return;
        }
        let _ = std::fs::File::from(ready_write).write_all(b"R");
        let _ = nix::sys::signal::pthread_sigmask(
            nix::sys::signal::SigmaskHow::SIG_SETMASK,
            Some(&nix::sys::signal::SigSet::empty()),
            None,
        );
        let threads: Vec<_> = listeners
            .into_iter()
            .map(|(listener, port)| {
                let target = SocketAddr::new(IpAddr::V4(address), port);
                std::thread::spawn(move || accept_loop(listener, target))
            })
            .collect();
        for thread in threads {
            let _ = thread.join();
        }
    })
    .map_err(|e| RuntimeError::sys("start the port proxy", e))?;
    // One byte once it is inside the container's network; EOF if it could not get there.
    let mut ready = [0u8; 1];
    if std::fs::File::from(ready_read)
        .read(&mut ready)
        .unwrap_or(0)
        != 1
    {
        let _ = kill(proxy, Signal::SIGKILL);
        let _ = waitpid(proxy, None);
        return Err(RuntimeError::Setup(
            "the port proxy could not join the container's network namespace".into(),
        ));
    }
    Ok(proxy)
}

fn accept_loop(listener: TcpListener, target: SocketAddr) {
    for client in listener.incoming() {
        let Ok(client) = client else {
            // Out of fds or memory: wait rather than spin on the same error.
            std::thread::sleep(std::time::Duration::from_millis(100));
            continue;
        };
        std::thread::spawn(move || {
            // Refused (nothing listens yet): the client sees its connection closed.
            if let Ok(server) = TcpStream::connect(target) {
                splice_both_ways(client, server);
            }
        });
    }
}

/// Copies both ways until each side has ended; a half-close is passed on.
fn splice_both_ways(client: TcpStream, server: TcpStream) {
    let (Ok(client_reader), Ok(server_writer)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let upstream = std::thread::spawn(move || {
        let mut from = client_reader;
        let mut to = server_writer;
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
    let mut from = server;
    let mut to = client;
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(std::net::Shutdown::Write);
    let _ = upstream.join();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_owners_are_checked_by_pid_and_start_time() {
        let me = std::process::id();
        let start = process_start(me).unwrap();
        assert!(owner_alive(&format!("{me} {start}")));
        assert!(!owner_alive(&format!("{me} {}", start + 1)));
        assert!(!owner_alive("garbage"));
        assert!(!owner_alive(""));
    }
}
