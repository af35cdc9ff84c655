//! A container's output kept in its log (`gcr logs`), as Docker keeps it: while an
//! [`OutputTee`] lives, fds 1 and 2 of this process are pipes; a forked copier hands what
//! comes through, stream by stream, to the log writer it was given (the log's format is the
//! caller's), and for a foreground container also to the original stdout and stderr.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

use crate::error::RuntimeError;

/// Which of the two output streams a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// Copies this process's stdout and stderr into a log (and, when echoing, to where they
/// went before), until dropped. Start it from a single-threaded process, before the
/// container is cloned (the container inherits the pipes as its stdout and stderr).
pub struct OutputTee {
    /// The original stdout and stderr, put back when the tee ends.
    saved: [OwnedFd; 2],
    copier: Pid,
}

/// A copy of `fd` that a container will not inherit.
fn dup_cloexec(fd: std::os::fd::BorrowedFd) -> Result<OwnedFd, RuntimeError> {
    let copy = nix::unistd::dup(fd).map_err(|e| RuntimeError::sys("dup", e))?;
    fcntl(&copy, FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC))
        .map_err(|e| RuntimeError::sys("fcntl", e))?;
    Ok(copy)
}

impl OutputTee {
    /// `log` gets every chunk with its stream, in the order they were read; with `echo` the
    /// chunks also go to the original stdout and stderr.
    pub fn start(
        log: impl FnMut(OutputStream, &[u8]) + Send + 'static,
        echo: bool,
    ) -> Result<OutputTee, RuntimeError> {
        let saved = [
            dup_cloexec(std::io::stdout().as_fd())?,
            dup_cloexec(std::io::stderr().as_fd())?,
        ];
        let (out_read, out_write) =
            nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| RuntimeError::sys("pipe", e))?;
        let (err_read, err_write) =
            nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| RuntimeError::sys("pipe", e))?;
        let targets = [
            saved[0]
                .try_clone()
                .map_err(|e| RuntimeError::io("dup", Path::new("stdout"), e))?,
            saved[1]
                .try_clone()
                .map_err(|e| RuntimeError::io("dup", Path::new("stderr"), e))?,
        ];
        // The copier must not hold write ends of its own pipes, or it would never see them end.
        let write_ends = [out_write.as_raw_fd(), err_write.as_raw_fd()];
        let copier = crate::sys::spawn_child(move || {
            crate::sys::ignore_sigpipe();
            for fd in write_ends {
                let _ = nix::unistd::close(fd);
            }
            copy_both(
                [File::from(out_read), File::from(err_read)],
                echo.then(|| targets.map(File::from)),
                log,
            );
        })
        .map_err(|e| RuntimeError::sys("start the log copier", e))?;
        // From here on what this process (and the container it starts) writes goes through
        // the copier.
        nix::unistd::dup2_stdout(&out_write).map_err(|e| RuntimeError::sys("dup2", e))?;
        nix::unistd::dup2_stderr(&err_write).map_err(|e| RuntimeError::sys("dup2", e))?;
        drop((out_write, err_write));
        Ok(OutputTee { saved, copier })
    }
}

impl Drop for OutputTee {
    fn drop(&mut self) {
        let _ = std::io::stdout().flush();
        // The original fds back: the pipes' last write ends close, the copier drains them
        // and ends.
        let _ = nix::unistd::dup2_stdout(&self.saved[0]);
        let _ = nix::unistd::dup2_stderr(&self.saved[1]);
        let _ = waitpid(self.copier, None);
    }
}

/// Until both pipes end: each chunk to the log and to its own target.
fn copy_both(
    mut from: [File; 2],
    mut to: Option<[File; 2]>,
    mut log: impl FnMut(OutputStream, &[u8]),
) {
    const STREAMS: [OutputStream; 2] = [OutputStream::Stdout, OutputStream::Stderr];
    let mut open = [true, true];
    let mut buf = vec![0u8; 64 * 1024];
    while open[0] || open[1] {
        let watched: Vec<usize> = (0..2).filter(|i| open[*i]).collect();
        let mut fds: Vec<PollFd> = watched
            .iter()
            .map(|i| PollFd::new(from[*i].as_fd(), PollFlags::POLLIN))
            .collect();
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
        }
        let ready: Vec<usize> = watched
            .iter()
            .zip(&fds)
            .filter(|(_, fd)| fd.revents().is_some_and(|r| !r.is_empty()))
            .map(|(i, _)| *i)
            .collect();
        drop(fds);
        for i in ready {
            match from[i].read(&mut buf) {
                Ok(0) | Err(_) => open[i] = false,
                Ok(n) => {
                    // A closed terminal must not stop the log (nor the other way round).
                    if let Some(to) = &mut to {
                        let _ = to[i].write_all(&buf[..n]);
                    }
                    log(STREAMS[i], &buf[..n]);
                }
            }
        }
    }
}
