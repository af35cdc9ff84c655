//! pasta (Debian package passt) as a container's private network, rootless or as root: a
//! user-mode network stack like slirp4netns that gives the namespace the host's own
//! address and routes and translates its sockets to the host's. `--network pasta`. pasta
//! forks itself into the background once the namespace is configured (so its exit is the
//! readiness signal) and is killed when the run ends (it outlives the namespace otherwise).

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::error::RuntimeError;
use crate::network::{owner_alive, process_start};

/// The running pasta of a container's namespace (its PID and start time).
pub(crate) struct Pasta {
    owner: String,
    pid: i32,
}

impl Drop for Pasta {
    fn drop(&mut self) {
        if owner_alive(&self.owner) {
            let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
        }
    }
}

fn pasta_binary() -> Result<PathBuf, RuntimeError> {
    ["/usr/bin/pasta", "/bin/pasta", "/usr/local/bin/pasta"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| {
            RuntimeError::Setup(
                "--network pasta needs pasta (Debian package passt): install it, or use the default network".into(),
            )
        })
}

/// The host's own IPv4 address toward the outside (its default route's source): what pasta
/// gives the container, and what slirp4netns containers reach the host at. A UDP connect
/// sends nothing; it only asks the kernel for the route.
pub fn host_address() -> Option<std::net::Ipv4Addr> {
    let socket = std::net::UdpSocket::bind(("0.0.0.0", 0)).ok()?;
    socket.connect(("192.0.2.1", 9)).ok()?;
    match socket.local_addr().ok()?.ip() {
        std::net::IpAddr::V4(ip) if !ip.is_unspecified() && !ip.is_loopback() => Some(ip),
        _ => None,
    }
}

/// pasta on the namespace of the container process `pid`, configured and in the background.
pub(crate) fn pasta_attach(pid: Pid) -> Result<Pasta, RuntimeError> {
    let binary = pasta_binary()?;
    let state = crate::network::state_dir();
    crate::network::create_private_dir(&state)?;
    let pid_file = state.join(format!("pasta-{pid}.pid"));
    let mut command = Command::new(&binary);
    command
        .args(["--config-net", "--quiet"])
        // No port forwarding of its own: published ports go through gcr's proxy.
        .args(["-t", "none", "-u", "none", "-T", "none", "-U", "none"])
        // As uid 0 (root, or rootless gcr's namespace) pasta would become nobody first.
        .args(["--runas", "0"])
        .arg("--pid")
        .arg(&pid_file);
    // The container's process is not dumpable until it execs, so pasta (which drops its
    // capabilities first) could not open its /proc files: it gets the namespaces as
    // inherited fds instead, by /proc/self/fd.
    let open = |kind: &str| -> Result<std::os::fd::OwnedFd, RuntimeError> {
        let path = format!("/proc/{pid}/ns/{kind}");
        let file = std::fs::File::open(&path).map_err(|e| RuntimeError::io("open", &path, e))?;
        crate::network::inheritable(&file)
    };
    let netns = open("net")?;
    command
        .arg("--netns")
        .arg(format!("/proc/self/fd/{}", netns.as_raw_fd()));
    let userns =
        if crate::network::same_namespace(&format!("/proc/{pid}/ns/user"), "/proc/self/ns/user") {
            None
        } else {
            let fd = open("user")?;
            command
                .arg("--userns")
                .arg(format!("/proc/self/fd/{}", fd.as_raw_fd()));
            Some(fd)
        };
    let out = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| RuntimeError::io("run", &binary, e))?;
    drop((netns, userns));
    let daemon = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|t| t.trim().parse::<i32>().ok());
    let _ = std::fs::remove_file(&pid_file);
    match (out.status.success(), daemon) {
        (true, Some(daemon)) => Ok(Pasta {
            owner: format!("{daemon} {}", process_start(daemon as u32).unwrap_or(0)),
            pid: daemon,
        }),
        _ => Err(RuntimeError::Setup(format!(
            "pasta could not set up the container's network: {} (--network slirp4netns or host runs without it)",
            String::from_utf8_lossy(&out.stderr).trim()
        ))),
    }
}
