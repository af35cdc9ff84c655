//! Name resolution on a user network, without a resolver: every member's `/etc/hosts` lists
//! the other live members (address, container name, aliases), kept current as members join
//! and leave. A member is a file under `/run/gcr/net/members-<bridge>/` naming its address,
//! owner process (PID and start time: a member whose owner died without cleaning up is
//! dropped at the next refresh), hosts file and names; joining or leaving rewrites every
//! live member's hosts file in place (the file is bind-mounted into the container, so its
//! inode must stay), below a marker line that keeps the container's own entries above it.

use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use crate::error::RuntimeError;

/// The line after which a hosts file holds the network's peers.
const MARKER: &str = "# gcr network peers (kept current by gcr)\n";

/// A container's membership of a user network; leaving (drop) removes it from the others'
/// hosts files.
pub(crate) struct Member {
    file: PathBuf,
}

struct Entry {
    address: String,
    hosts: PathBuf,
    names: Vec<String>,
    owner_alive: bool,
}

fn members_dir(bridge: &str) -> PathBuf {
    super::network::state_dir().join(format!("members-{bridge}"))
}

/// Joins the network of `bridge` for as long as this process lives: records the member and
/// brings every live member's hosts file (this one's too) up to date.
pub(crate) fn join(
    bridge: &str,
    container_id: &str,
    address: Ipv4Addr,
    hosts: &Path,
    names: &[String],
) -> Result<Member, RuntimeError> {
    let me = std::process::id();
    let owner = format!("{me} {}", super::network::process_start(me).unwrap_or(0));
    let file = record(bridge, container_id, address, hosts, names, &owner)?;
    Ok(Member { file })
}

/// Records a member owned by `owner` (PID and start time: the member lasts as long as that
/// process) and refreshes every hosts file. Returns the member's file.
pub(crate) fn record(
    bridge: &str,
    container_id: &str,
    address: Ipv4Addr,
    hosts: &Path,
    names: &[String],
    owner: &str,
) -> Result<PathBuf, RuntimeError> {
    let dir = members_dir(bridge);
    super::network::create_private_dir(&dir)?;
    let _lock = super::network::StateLock::take()?;
    // Names hold no whitespace (they are container names and aliases).
    let names: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| !n.is_empty() && !n.contains(char::is_whitespace))
        .collect();
    let text = format!(
        "{address}\n{owner}\n{}\n{}\n",
        hosts.display(),
        names.join(" ")
    );
    let file = dir.join(container_id);
    std::fs::write(&file, text).map_err(|e| RuntimeError::io("write", &file, e))?;
    refresh();
    Ok(file)
}

/// Takes `container_id` off the network of `bridge` (network disconnect).
pub(crate) fn leave(bridge: &str, container_id: &str) {
    let Ok(_lock) = super::network::StateLock::take() else {
        return;
    };
    let _ = std::fs::remove_file(members_dir(bridge).join(container_id));
    refresh();
}

/// Drops the members whose owners are gone (a container that ended) from every hosts file.
pub(crate) fn forget_the_dead() {
    if let Ok(_lock) = super::network::StateLock::take() {
        refresh();
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let Ok(_lock) = super::network::StateLock::take() else {
            return;
        };
        let _ = std::fs::remove_file(&self.file);
        refresh();
    }
}

fn read_entry(file: &Path) -> Option<Entry> {
    let text = std::fs::read_to_string(file).ok()?;
    let mut lines = text.lines();
    let address = lines.next()?.to_string();
    let owner = lines.next()?;
    let hosts = PathBuf::from(lines.next()?);
    let names = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(String::from)
        .collect();
    Some(Entry {
        address,
        hosts,
        names,
        owner_alive: super::network::owner_alive(owner),
    })
}

/// Rewrites each live member's hosts file with the live members of every network it is on
/// (a container on two networks finds the members of both); drops dead members. Called
/// under the network state lock.
fn refresh() {
    let state = super::network::state_dir();
    let mut networks: Vec<Vec<Entry>> = Vec::new();
    for dir in std::fs::read_dir(&state).into_iter().flatten().flatten() {
        if !dir.file_name().to_string_lossy().starts_with("members-") {
            continue;
        }
        let mut live = Vec::new();
        for entry in std::fs::read_dir(dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            match read_entry(&entry.path()) {
                Some(member) if member.owner_alive => live.push(member),
                _ => {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        networks.push(live);
    }
    let mut hosts_files: Vec<&Path> = networks
        .iter()
        .flatten()
        .map(|m| m.hosts.as_path())
        .collect();
    hosts_files.sort();
    hosts_files.dedup();
    for hosts in hosts_files {
        let mut peers = String::new();
        for network in networks
            .iter()
            .filter(|n| n.iter().any(|m| m.hosts == hosts))
        {
            for other in network
                .iter()
                .filter(|other| other.hosts != hosts && !other.names.is_empty())
            {
                let line = format!("{}\t{}\n", other.address, other.names.join(" "));
                if !peers.contains(&line) {
                    peers.push_str(&line);
                }
            }
        }
        if let Err(err) = rewrite_hosts(hosts, &peers) {
            tracing::warn!(%err, hosts = %hosts.display(), "cannot update a network member's hosts file");
        }
    }
}

/// The hosts file with its own part kept and `peers` below the marker, written in place.
fn rewrite_hosts(path: &Path, peers: &str) -> std::io::Result<()> {
    let current = std::fs::read_to_string(path)?;
    let own = current.split(MARKER).next().unwrap_or_default();
    let mut text = own.to_string();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(MARKER);
    text.push_str(peers);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)?;
    file.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_keep_their_own_part_and_get_the_peers() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = dir.path().join("hosts");
        std::fs::write(&hosts, "127.0.0.1\tlocalhost\n10.89.1.2\tweb\n").unwrap();
        rewrite_hosts(&hosts, "10.89.1.3\tclient c1\n").unwrap();
        rewrite_hosts(&hosts, "10.89.1.4\tdb\n").unwrap();
        let text = std::fs::read_to_string(&hosts).unwrap();
        assert_eq!(
            text,
            format!("127.0.0.1\tlocalhost\n10.89.1.2\tweb\n{MARKER}10.89.1.4\tdb\n")
        );
    }
}
