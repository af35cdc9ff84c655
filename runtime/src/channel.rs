//! The parent/child protocol over the SOCK_SEQPACKET socketpair: one-byte message kinds,
//! with an fd (SCM_RIGHTS) for the pty.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};

use crate::error::RuntimeError;
use crate::sys;

/// Messages from the child. `Error` carries the exit code (125/126/127) and one line of text.
pub(crate) const MSG_ERROR: u8 = b'E';
pub(crate) const MSG_PTY: u8 = b'P';
pub(crate) const MSG_GO: u8 = b'G';
/// `gcr exec`: the pid of the process that runs the command, as text.
pub(crate) const MSG_PID: u8 = b'I';
/// OCI: the namespaces named by path are joined and the new ones made (id maps may follow).
pub(crate) const MSG_NAMESPACES: u8 = b'N';
/// OCI: the mounts are done; the parent runs prestart and createRuntime hooks, then goes.
pub(crate) const MSG_HOOKS: u8 = b'H';
/// OCI: the process waits at its start gate; `create` is done.
pub(crate) const MSG_READY: u8 = b'R';

/// The error an `E` message carries: its exit code (126/127: the command could not run) and
/// its text.
pub(crate) fn child_error(msg: &[u8]) -> RuntimeError {
    let code = msg.get(1).copied().unwrap_or(125) as i32;
    let text = String::from_utf8_lossy(msg.get(2..).unwrap_or(&[])).into_owned();
    match code {
        126 | 127 => RuntimeError::Exec {
            code,
            message: text,
        },
        _ => RuntimeError::Setup(text),
    }
}

/// A message from the child and the fd that came with it.
pub(crate) type Message = (Vec<u8>, Option<OwnedFd>);

/// Receives one message from the child: `None` at EOF (the command was executed).
pub(crate) fn receive(sock: &OwnedFd) -> Result<Option<Message>, RuntimeError> {
    let mut buf = vec![0u8; 8192];
    loop {
        match sys::recv_with_fd(sock, &mut buf) {
            Ok((0, _)) => return Ok(None),
            Ok((n, fd)) => {
                buf.truncate(n);
                return Ok(Some((buf, fd)));
            }
            Err(Errno::EINTR) => continue,
            Err(Errno::ECONNRESET) => return Ok(None),
            Err(e) => return Err(RuntimeError::sys("read from the container process", e)),
        }
    }
}

pub(crate) fn send(sock: &OwnedFd, data: &[u8], fd: Option<RawFd>) -> Result<(), Errno> {
    let iov = [IoSlice::new(data)];
    let fds;
    let cmsgs: Vec<ControlMessage> = match fd {
        Some(f) => {
            fds = [f];
            vec![ControlMessage::ScmRights(&fds)]
        }
        None => Vec::new(),
    };
    sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsgs, MsgFlags::empty(), None).map(drop)
}
