//! Private networks: the container's own network namespace, joined to the host through a
//! bridge (`gcr0`, 10.88.0.0/16, with NAT; as root) or through slirp4netns (a user-mode
//! network stack; rootless, as Podman), and published ports (`-p`), forwarded by a small
//! proxy process that listens on the host and connects inside the container's namespace (as
//! docker-proxy and rootlesskit's builtin port driver do).
//!
//! Everything a container holds is undone when its run ends: the veth goes with the
//! namespace, the proxy and slirp4netns are stopped, the address lease file is removed. A
//! lease whose owner died without cleaning up (SIGKILL) is taken again by the next run.

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

use crate::bridge::{
    bridge_attach, extra_host_side, in_bridge_namespace, in_rootless_switch, ip_batch, link_exists,
    own_owner_record, primary_host_side, Lease,
};
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

/// How a container with a network namespace of its own reaches the outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrivateNetwork {
    /// A veth pair on the host bridge `gcr0` with NAT (root only).
    Bridge,
    /// slirp4netns on a tap device (rootless).
    Slirp,
    /// pasta: the host's address and routes, its sockets translated (`--network pasta`).
    Pasta,
}

/// `-p [IP:]HOST_PORT:CONTAINER_PORT[/udp]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    pub host_ip: IpAddr,
    pub host_port: u16,
    pub container_port: u16,
    /// A udp port (else tcp).
    pub udp: bool,
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

    pub(crate) fn is_default(&self) -> bool {
        self.bridge == BRIDGE
    }

    /// The subnet's first address.
    pub(crate) fn network(&self) -> Ipv4Addr {
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
    listeners: crate::proxy::HostSockets,
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
            PrivateNetwork::Pasta => (
                crate::pasta::host_address().ok_or_else(|| {
                    RuntimeError::Setup(
                        "--network pasta copies the host's address, but the host has no IPv4 route out".into(),
                    )
                })?,
                None,
            ),
        };
        let mut extra = Vec::new();
        for more in &options.more_bridges {
            extra.push((more.clone(), Lease::take(&more.spec, &owner)?));
        }
        let mut listeners = crate::proxy::HostSockets::default();
        for port in &options.ports {
            let at = SocketAddr::new(port.host_ip, port.host_port);
            let taken = |e: std::io::Error| {
                RuntimeError::Setup(format!(
                    "cannot publish port {}/{}: {at} is not free ({e}); choose another host port",
                    port.container_port,
                    if port.udp { "udp" } else { "tcp" }
                ))
            };
            if port.udp {
                let socket = std::net::UdpSocket::bind(at).map_err(taken)?;
                listeners.udp.push((socket, port.container_port));
            } else {
                listeners
                    .tcp
                    .push((TcpListener::bind(at).map_err(taken)?, port.container_port));
            }
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
            PrivateNetwork::Pasta => attached.pasta = Some(crate::pasta::pasta_attach(pid)?),
        }
        if !self.listeners.is_empty() {
            attached.proxy = Some(crate::proxy::start_proxy(
                &self.listeners,
                pid,
                self.address,
            )?);
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
    pasta: Option<crate::pasta::Pasta>,
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
        drop(self.pasta.take());
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

/// slirp4netns's arguments for `tap0` of the namespace at `netns`: configured, sandboxed,
/// telling readiness on `ready` and ending when `exit` reads end-of-file.
pub(crate) fn slirp_arguments(command: &mut Command, ready: &OwnedFd, exit: &OwnedFd, netns: &str) {
    command
        .arg("--configure")
        .arg("--mtu=65520")
        .arg("--disable-host-loopback")
        .arg("--enable-sandbox")
        .arg("--enable-seccomp")
        .arg(format!("--ready-fd={}", ready.as_raw_fd()))
        .arg(format!("--exit-fd={}", exit.as_raw_fd()))
        .arg("--netns-type=path")
        .arg(netns)
        .arg("tap0");
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
    slirp_arguments(
        &mut command,
        &ready_for_child,
        &exit_for_child,
        &format!("/proc/{pid}/ns/net"),
    );
    let spawned = command
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
pub(crate) fn same_namespace(a: &str, b: &str) -> bool {
    match (nix::sys::stat::stat(a), nix::sys::stat::stat(b)) {
        (Ok(x), Ok(y)) => x.st_ino == y.st_ino && x.st_dev == y.st_dev,
        _ => false,
    }
}

/// A duplicate of `fd` without O_CLOEXEC, for a child to inherit.
pub(crate) fn inheritable(fd: &impl std::os::fd::AsFd) -> Result<OwnedFd, RuntimeError> {
    nix::unistd::dup(fd).map_err(|e| RuntimeError::sys("dup", e))
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
