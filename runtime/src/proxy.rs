//! Published ports (`-p`): a small proxy process that accepts on the host's sockets and
//! connects to the container's port from inside its network namespace, copying both ways
//! (as docker-proxy and rootlesskit's builtin port driver do).

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::Path;

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

use crate::error::RuntimeError;

/// A process that accepts on each host socket and connects to the container's port from
/// inside its network namespace, copying both ways. It dies with the `gcr run` that started
/// it (parent-death signal) and is killed when the container ends.
pub(crate) fn start_proxy(
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
