//! A container's network as asked for (`--network`, `-p`, `--add-host`) and its hand-off to
//! the runtime, which makes the namespace, the veth or slirp4netns and the port proxies.

use crate::error::{ContainerError, Result};
use crate::record::PublishedPort;

/// What `--network` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkChoice {
    Host,
    None,
    Private(gcr_runtime::PrivateNetwork),
}

impl NetworkChoice {
    pub fn parse(name: &str) -> Result<NetworkChoice> {
        use gcr_runtime::PrivateNetwork::{Bridge, Slirp};
        // Only root can make a bridge and veths: rootless, the private network is slirp4netns.
        let rootless = gcr_runtime::userns::is_rootless();
        Ok(match name {
            "host" => NetworkChoice::Host,
            "none" => NetworkChoice::None,
            "private" | "default" | "bridge" if rootless => NetworkChoice::Private(Slirp),
            "private" | "default" | "bridge" => NetworkChoice::Private(Bridge),
            "slirp4netns" => NetworkChoice::Private(Slirp),
            "pasta" => NetworkChoice::Private(gcr_runtime::PrivateNetwork::Pasta),
            other => {
                return Err(ContainerError::invalid(format!(
                "unknown --network {other:?}: use private (the default), bridge, slirp4netns, pasta, host, none, container:NAME or a network of `gcr network ls`"
            )))
            }
        })
    }

    /// The name recorded for `gcr start` and shown by `inspect`.
    pub fn name(self) -> &'static str {
        match self {
            NetworkChoice::Host => "host",
            NetworkChoice::None => "none",
            NetworkChoice::Private(gcr_runtime::PrivateNetwork::Bridge) => "bridge",
            NetworkChoice::Private(gcr_runtime::PrivateNetwork::Slirp) => "slirp4netns",
            NetworkChoice::Private(gcr_runtime::PrivateNetwork::Pasta) => "pasta",
        }
    }

    /// The gateway and prefix length a container sees on this network (none for host/none).
    pub fn gateway(self) -> Option<(&'static str, u8)> {
        match self {
            NetworkChoice::Private(gcr_runtime::PrivateNetwork::Bridge) => Some(("10.88.0.1", 16)),
            NetworkChoice::Private(gcr_runtime::PrivateNetwork::Slirp) => Some(("10.0.2.2", 24)),
            // pasta gives the container the host's own addresses and routes.
            NetworkChoice::Private(gcr_runtime::PrivateNetwork::Pasta) => None,
            _ => None,
        }
    }
}

/// How `--network container:NAME` is recorded: `container:<ID>`.
pub(crate) const CONTAINER_MODE: &str = "container:";

/// The running container whose network namespace `--network container:NAME` joins: its ID
/// and the namespace's path (its PID 1's).
pub(crate) fn shared_network_of(
    store: &gcr_storage::Store,
    wanted: &str,
) -> Result<(String, std::path::PathBuf)> {
    let c = crate::container::lookup(store, wanted)?;
    let pid = c.pid().filter(|_| c.alive()).ok_or_else(|| {
        ContainerError::State(format!(
            "cannot join the network of container {}: it is not running (start it first)",
            c.display_name()
        ))
    })?;
    Ok((c.id, format!("/proc/{pid}/ns/net").into()))
}

/// The PID 1 of container `wanted` of the store at `root`, read before gcr enters its
/// rootless user namespace (so it can join that container's instead); None when it does
/// not run or cannot be read (the create says why later).
pub fn container_pid_for_sharing(root: &std::path::Path, wanted: &str) -> Option<u32> {
    let store = gcr_storage::Store::open(root.to_path_buf()).ok()?;
    running_pid(&store, wanted)
}

/// For `start` of container `wanted` made with `--network container:NAME`: that other
/// container's PID 1 (see [`container_pid_for_sharing`]).
pub fn shared_network_pid_of(root: &std::path::Path, wanted: &str) -> Option<u32> {
    let store = gcr_storage::Store::open(root.to_path_buf()).ok()?;
    let c = crate::container::lookup(&store, wanted).ok()?;
    let target = c.meta.network.as_deref()?.strip_prefix(CONTAINER_MODE)?;
    running_pid(&store, target)
}

fn running_pid(store: &gcr_storage::Store, wanted: &str) -> Option<u32> {
    let c = crate::container::lookup(store, wanted).ok()?;
    c.pid().filter(|_| c.alive()).map(|pid| pid.as_raw() as u32)
}

/// The runtime's network options for a container.
pub fn network_options(
    choice: NetworkChoice,
    ports: &[PublishedPort],
) -> Result<gcr_runtime::NetworkOptions> {
    let private = match choice {
        NetworkChoice::Private(kind) => Some(kind),
        _ => None,
    };
    let ports = ports
        .iter()
        .map(|p| {
            Ok(gcr_runtime::PortMapping {
                host_ip: p.host_ip.parse().map_err(|_| {
                    ContainerError::invalid(format!("bad recorded host address {}", p.host_ip))
                })?,
                host_port: p.host_port,
                container_port: p.container_port,
                udp: p.is_udp(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(gcr_runtime::NetworkOptions {
        private,
        ports,
        bridge: None,
        more_bridges: Vec::new(),
    })
}

/// `--add-host NAME:IP` (or NAME=IP); `host-gateway` is the host as the network reaches it.
pub fn parse_extra_hosts(
    given: &[String],
    network: NetworkChoice,
) -> Result<Vec<(String, String)>> {
    given
        .iter()
        .map(|entry| {
            let (name, ip) = entry
                .split_once('=')
                .or_else(|| entry.split_once(':'))
                .filter(|(n, ip)| !n.is_empty() && !ip.is_empty())
                .ok_or_else(|| {
                    ContainerError::invalid(format!("invalid --add-host {entry:?}: use NAME:IP"))
                })?;
            let ip = match (ip, network) {
                ("host-gateway", NetworkChoice::Private(gcr_runtime::PrivateNetwork::Bridge)) => {
                    "10.88.0.1".to_string()
                }
                // slirp4netns refuses its gateway address (the host's loopback stays closed):
                // the host is reached at its own address, as Podman maps host-gateway.
                ("host-gateway", NetworkChoice::Private(gcr_runtime::PrivateNetwork::Slirp)) => {
                    gcr_runtime::host_address().map(|ip| ip.to_string()).ok_or_else(|| {
                        ContainerError::invalid(format!(
                            "--add-host {entry}: cannot find the host's own address"
                        ))
                    })?
                }
                ("host-gateway", NetworkChoice::Host) => "127.0.0.1".to_string(),
                ("host-gateway", NetworkChoice::Private(gcr_runtime::PrivateNetwork::Pasta)) => {
                    return Err(ContainerError::Unsupported(format!(
                        "--add-host {entry}: host-gateway with --network pasta is not supported yet (the container has the host's own address)"
                    )))
                }
                ("host-gateway", NetworkChoice::None) => {
                    return Err(ContainerError::invalid(format!(
                        "--add-host {entry}: with --network none the host cannot be reached"
                    )))
                }
                (ip, _) => {
                    // IPv6 addresses hold colons: NAME:IP splits at the first one.
                    ip.parse::<std::net::IpAddr>().map_err(|_| {
                        ContainerError::invalid(format!(
                            "invalid --add-host {entry:?}: {ip:?} is not an IP address"
                        ))
                    })?;
                    ip.to_string()
                }
            };
            Ok((name.to_string(), ip))
        })
        .collect()
}

/// One `-p` value: `[IP:][HOST_PORT:]CONTAINER_PORT[/tcp|/udp]` with optional ranges; a
/// host port of 0 means "pick a free one".
pub fn parse_publish(text: &str) -> Result<Vec<PublishedPort>> {
    let bad = |why: String| ContainerError::invalid(why);
    let usage = || {
        bad(format!(
            "invalid -p {text:?}: use [IP:][HOST_PORT:]CONTAINER_PORT[/tcp|/udp]"
        ))
    };
    let (rest, proto) = match text.rsplit_once('/') {
        Some((rest, proto)) => (rest, proto.to_ascii_lowercase()),
        None => (text, "tcp".to_string()),
    };
    match proto.as_str() {
        "tcp" | "udp" => {}
        "sctp" => {
            return Err(bad(format!(
                "-p {text}: publishing sctp ports is not supported yet (tcp and udp)"
            )))
        }
        _ => return Err(usage()),
    }
    // An IPv6 address comes in brackets: [::1]:8080:80.
    let (ip, rest) = match rest.strip_prefix('[') {
        Some(v6) => {
            let (ip, after) = v6.split_once("]:").ok_or_else(usage)?;
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
        _ => return Err(usage()),
    };
    let host_ip: std::net::IpAddr = match ip {
        None | Some("") => std::net::Ipv4Addr::UNSPECIFIED.into(),
        Some(ip) => ip
            .parse()
            .map_err(|_| bad(format!("invalid -p {text:?}: {ip:?} is not an IP address")))?,
    };
    let range = |r: &str| -> Result<(u16, u16)> {
        let number = |n: &str| {
            n.parse::<u16>().ok().filter(|n| *n > 0).ok_or_else(|| {
                bad(format!(
                    "invalid -p {text:?}: {n:?} is not a port (1-65535)"
                ))
            })
        };
        let (a, b) = match r.split_once('-') {
            Some((a, b)) => (number(a)?, number(b)?),
            None => (number(r)?, number(r)?),
        };
        if b < a {
            return Err(bad(format!(
                "invalid -p {text:?}: the range {r} ends before it starts"
            )));
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
            return Err(bad(format!(
                "invalid -p {text:?}: the host and container ranges differ in length"
            )));
        }
        (h_first..=h_last).collect()
    };
    Ok((c_first..=c_last)
        .zip(host_ports)
        .map(|(container_port, host_port)| PublishedPort {
            host_ip: host_ip.to_string(),
            host_port,
            container_port,
            protocol: proto.clone(),
        })
        .collect())
}

/// The image's EXPOSEd tcp and udp ports on free host ports (`-P`); returns the ones it
/// cannot publish (sctp).
pub(crate) fn publish_exposed(exposed: &[String], out: &mut Vec<PublishedPort>) -> Vec<String> {
    let mut skipped = Vec::new();
    for entry in exposed {
        let (port, proto) = entry.split_once('/').unwrap_or((entry, "tcp"));
        let proto = if proto.is_empty() { "tcp" } else { proto };
        match (port.parse::<u16>(), proto) {
            (Ok(port), "tcp" | "udp") => out.push(PublishedPort {
                host_ip: "0.0.0.0".into(),
                host_port: 0,
                container_port: port,
                protocol: proto.to_string(),
            }),
            _ => skipped.push(entry.clone()),
        }
    }
    skipped
}

/// Free host ports for the `-p` entries that named none (the kernel's choice).
pub(crate) fn pick_free_ports(ports: &mut [PublishedPort]) -> Result<()> {
    for port in ports.iter_mut().filter(|p| p.host_port == 0) {
        let ip: std::net::IpAddr = port
            .host_ip
            .parse()
            .map_err(|_| ContainerError::invalid(format!("bad host address {}", port.host_ip)))?;
        let probe = if port.is_udp() {
            std::net::UdpSocket::bind((ip, 0)).and_then(|s| s.local_addr())
        } else {
            std::net::TcpListener::bind((ip, 0)).and_then(|l| l.local_addr())
        }
        .map_err(|e| ContainerError::Invalid(format!("cannot find a free port on {ip}: {e}")))?;
        port.host_port = probe.port();
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
        assert_eq!(one("5353:53/udp"), [("0.0.0.0".into(), 5353, 53)]);
        assert!(parse_publish("5353:53/udp").unwrap()[0].is_udp());
        assert!(!parse_publish("80").unwrap()[0].is_udp());
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
            "80/sctp",
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

    #[test]
    fn exposed_ports_publish_tcp_and_udp() {
        let mut out = Vec::new();
        let skipped = publish_exposed(
            &["80/tcp".into(), "53/udp".into(), "9/sctp".into()],
            &mut out,
        );
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].container_port, out[0].is_udp()), (80, false));
        assert_eq!((out[1].container_port, out[1].is_udp()), (53, true));
        assert_eq!(skipped, ["9/sctp"]);
    }
}
