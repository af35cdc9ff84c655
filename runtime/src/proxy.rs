//! Published ports (`-p`): a small proxy process that accepts on the host's sockets and
//! connects to the container's port from inside its network namespace, copying both ways
//! (as docker-proxy and rootlesskit's builtin port driver do).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

use crate::error::RuntimeError;

/// The host sockets of a container's published ports, each with its container port.
#[derive(Default)]
pub(crate) struct HostSockets {
    pub tcp: Vec<(TcpListener, u16)>,
    pub udp: Vec<(UdpSocket, u16)>,
}

impl HostSockets {
    pub(crate) fn is_empty(&self) -> bool {
        self.tcp.is_empty() && self.udp.is_empty()
    }
}

/// A process that accepts on each host socket (tcp) or receives on it (udp) and connects to
/// the container's port from inside its network namespace, copying both ways. It dies with
/// the `gcr run` that started it (parent-death signal) and is killed when the container
/// ends.
pub(crate) fn start_proxy(
    sockets: &HostSockets,
    pid: Pid,
    address: Ipv4Addr,
) -> Result<Pid, RuntimeError> {
    let listeners = &sockets.tcp;
    let netns = std::fs::File::open(format!("/proc/{pid}/ns/net"))
        .map_err(|e| RuntimeError::io("open", format!("/proc/{pid}/ns/net"), e))?;
    let userns = std::fs::File::open(format!("/proc/{pid}/ns/user"))
        .map_err(|e| RuntimeError::io("open", format!("/proc/{pid}/ns/user"), e))?;
    let listeners: Vec<(TcpListener, u16)> = listeners
        .iter()
        .map(|(l, port)| l.try_clone().map(|l| (l, *port)))
        .collect::<Result<_, _>>()
        .map_err(|e| RuntimeError::io("duplicate", Path::new("the published port"), e))?;
    let datagrams: Vec<(UdpSocket, u16)> = sockets
        .udp
        .iter()
        .map(|(s, port)| s.try_clone().map(|s| (s, *port)))
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
        let mut threads: Vec<_> = listeners
            .into_iter()
            .map(|(listener, port)| {
                let target = SocketAddr::new(IpAddr::V4(address), port);
                std::thread::spawn(move || accept_loop(listener, target))
            })
            .collect();
        threads.extend(datagrams.into_iter().map(|(socket, port)| {
            let target = SocketAddr::new(IpAddr::V4(address), port);
            std::thread::spawn(move || datagram_loop(socket, target))
        }));
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

/// How long a udp client's flow lives without a datagram either way (as conntrack's udp
/// stream timeout).
const UDP_IDLE: Duration = Duration::from_secs(120);

/// Relays the datagrams of each client of the host socket to the container's port through a
/// socket of its own inside the container's namespace (so replies find their client), and
/// the replies back from the host socket.
fn datagram_loop(host: UdpSocket, target: SocketAddr) {
    let host = Arc::new(host);
    let flows: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, client)) = host.recv_from(&mut buf) else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        let known = flows.lock().ok().and_then(|f| f.get(&client).cloned());
        let inner = match known {
            Some(inner) => inner,
            None => {
                let Ok(inner) = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
                    .and_then(|s| s.connect(target).map(|()| s))
                else {
                    continue;
                };
                let _ = inner.set_read_timeout(Some(UDP_IDLE));
                let inner = Arc::new(inner);
                if let Ok(mut f) = flows.lock() {
                    f.insert(client, inner.clone());
                }
                let (host, flows, replies) = (host.clone(), flows.clone(), inner.clone());
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 65536];
                    // Refused (nothing listens) or idle: the flow ends.
                    while let Ok(n) = replies.recv(&mut buf) {
                        let _ = host.send_to(&buf[..n], client);
                    }
                    if let Ok(mut f) = flows.lock() {
                        f.remove(&client);
                    }
                });
                inner
            }
        };
        let _ = inner.send(&buf[..n]);
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
