//! The container's generated /etc/hostname, /etc/hosts and /etc/resolv.conf (bind-mounted
//! from the state directory), and the `--dns*` options that edit resolv.conf.

use crate::network::{NetworkPlan, PrivateNetwork, SLIRP_DNS};

/// What `--dns*` ask of the container's /etc/resolv.conf.
#[derive(Debug, Clone, Default)]
pub struct DnsOptions {
    pub servers: Vec<String>,
    pub search: Vec<String>,
    pub options: Vec<String>,
}

impl DnsOptions {
    /// `resolv` with the given servers, search domains and options in place of its own.
    pub(crate) fn apply(&self, resolv: String) -> String {
        if self.servers.is_empty() && self.search.is_empty() && self.options.is_empty() {
            return resolv;
        }
        let keyword = |line: &str| line.split_whitespace().next().unwrap_or("").to_string();
        let mut out: String = resolv
            .lines()
            .filter(|l| {
                let k = keyword(l);
                !(k == "nameserver" && !self.servers.is_empty()
                    || (k == "search" || k == "domain") && !self.search.is_empty()
                    || k == "options" && !self.options.is_empty())
            })
            .map(|l| format!("{l}\n"))
            .collect();
        for server in &self.servers {
            out.push_str(&format!("nameserver {server}\n"));
        }
        if !self.search.is_empty() {
            out.push_str(&format!("search {}\n", self.search.join(" ")));
        }
        if !self.options.is_empty() {
            out.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        out
    }
}

/// The contents of the container's `/etc` files, by name: `hostname`, `hosts` and
/// `resolv.conf`, from the host's files, the private network and `--add-host`/`--dns*`.
pub(crate) fn generate(
    name: &str,
    own_netns: bool,
    network: Option<&NetworkPlan>,
    extra_hosts: &[(String, String)],
    dns: &DnsOptions,
) -> [(&'static str, String); 3] {
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let mut hosts = hosts_file(name, own_netns);
    let mut resolv = resolv_conf(&host_resolv, own_netns);
    if let Some(network) = network {
        hosts = hosts.replace(&format!("127.0.1.1\t{name}\n"), &network.hosts_line(name));
        let rootless_bridge =
            network.kind == PrivateNetwork::Bridge && crate::userns::rootless_ids().is_some();
        if network.kind == PrivateNetwork::Slirp || rootless_bridge {
            // slirp4netns forwards DNS from its own address to the host's resolvers (a
            // rootless user network reaches it through the rootless network namespace).
            resolv = format!("nameserver {SLIRP_DNS}\n");
        }
    }
    for (host, ip) in extra_hosts {
        hosts.push_str(&format!("{ip}\t{host}\n"));
    }
    let resolv = dns.apply(resolv);
    [
        ("hostname", format!("{name}\n")),
        ("hosts", hosts),
        ("resolv.conf", resolv),
    ]
}

fn is_loopback(addr: &str) -> bool {
    addr.parse::<std::net::IpAddr>()
        .map(|ip| ip.is_loopback())
        .unwrap_or(false)
}

/// resolv.conf for the container. With the host's network the host file is used as is. In a
/// network namespace of its own, loopback resolvers (systemd-resolved's 127.0.0.53, a local
/// dnsmasq) are unreachable, so they are dropped and, if none is left, Docker's fallback
/// public resolvers (Google, 8.8.8.8 / 8.8.4.4) are used.
pub(crate) fn resolv_conf(host: &str, own_netns: bool) -> String {
    if !own_netns {
        return host.to_string();
    }
    let mut out = String::new();
    let mut servers = 0;
    for line in host.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some("nameserver") {
            match words.next() {
                Some(addr) if !is_loopback(addr) => servers += 1,
                _ => continue,
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    if servers == 0 {
        out.push_str("nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
    }
    out
}

fn hosts_file(hostname: &str, own_netns: bool) -> String {
    if !own_netns {
        if let Ok(mut h) = std::fs::read_to_string("/etc/hosts") {
            // The container has its own hostname: make it resolvable (sudo and friends ask).
            let known = h
                .lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .any(|l| l.split_whitespace().skip(1).any(|n| n == hostname));
            if !known {
                if !h.is_empty() && !h.ends_with('\n') {
                    h.push('\n');
                }
                h.push_str(&format!("127.0.1.1\t{hostname}\n"));
            }
            return h;
        }
    }
    format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_options_replace_what_they_name() {
        let host = "nameserver 10.0.0.1\nsearch corp.example\noptions ndots:2\n";
        let none = DnsOptions::default();
        assert_eq!(none.apply(host.to_string()), host);
        let dns = DnsOptions {
            servers: vec!["1.1.1.1".into(), "9.9.9.9".into()],
            search: Vec::new(),
            options: vec!["timeout:1".into()],
        };
        assert_eq!(
            dns.apply(host.to_string()),
            "search corp.example\nnameserver 1.1.1.1\nnameserver 9.9.9.9\noptions timeout:1\n"
        );
    }

    #[test]
    fn resolv_conf_replaces_loopback() {
        let host = "search example.com\nnameserver 127.0.0.53\noptions edns0\n";
        let out = resolv_conf(host, true);
        assert!(!out.contains("127.0.0.53"));
        assert!(out.contains("nameserver 8.8.8.8") && out.contains("search example.com"));
        let host = "nameserver 10.0.0.2\nnameserver ::1\n";
        assert_eq!(resolv_conf(host, true), "nameserver 10.0.0.2\n");
        assert_eq!(resolv_conf(host, false), host);
    }

    #[test]
    fn own_hostname_resolves() {
        let h = hosts_file("box1", true);
        assert!(h.contains("127.0.1.1\tbox1\n") && h.contains("localhost"));
        let h = hosts_file("box1", false);
        assert!(h
            .lines()
            .any(|l| l.split_whitespace().skip(1).any(|n| n == "box1")));
    }
}
