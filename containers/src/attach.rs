//! Reading a container's output: `logs` (what it wrote so far, optionally followed) and
//! `attach` (from now on until it ends), with the handshake that keeps a `--rm` container's
//! files until every attached reader has its last output and exit status.

use std::io::{Read as _, Seek as _, Write};
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};

use crate::container::Container;
use crate::error::{ContainerError, Result};
use crate::record;

const ATTACHED: &str = "attached.";

/// `attached.PID` in the container's directory while a reader follows it.
struct AttachMark(PathBuf);

impl AttachMark {
    fn new(dir: &Path) -> Result<AttachMark> {
        let path = dir.join(format!("{ATTACHED}{}", std::process::id()));
        std::fs::write(&path, b"").map_err(|e| ContainerError::io("write", &path, e))?;
        Ok(AttachMark(path))
    }
}

impl Drop for AttachMark {
    fn drop(&mut self) {
        // The supervisor may have moved the directory away (--rm): nothing to remove then.
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Waits (a few seconds at most) until no live reader follows the container's files: a
/// container run with --rm is deleted only once they have its last output and exit status.
pub(crate) fn wait_for_attached(dir: &Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let attached = || {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|entry| {
                let name = entry.file_name();
                let pid = name.to_str().and_then(|n| n.strip_prefix(ATTACHED));
                pid.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
            })
    };
    while attached() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn open_log(c: &Container) -> Result<std::fs::File> {
    let path = c.log_path();
    std::fs::File::open(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ContainerError::State(format!(
            "container {} has no logs: containers run with --rm or -t in the foreground keep no output",
            c.display_name()
        )),
        _ => ContainerError::io("read", path, e),
    })
}

/// Which part of the log `logs` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tail {
    All,
    Lines(usize),
}

impl Tail {
    /// `all` (or -1) or a number, as `--tail` takes it.
    pub fn parse(text: &str) -> Result<Tail> {
        match text {
            "all" | "-1" => Ok(Tail::All),
            n => n.parse().map(Tail::Lines).map_err(|_| {
                ContainerError::invalid(format!("invalid --tail {n:?}: give a number or all"))
            }),
        }
    }
}

/// `logs`: what the container wrote so far (its last lines with `tail`) into `out`; with
/// `follow`, then what it writes until it ends.
pub fn logs(c: &Container, tail: Tail, follow: bool, out: &mut impl Write) -> Result<()> {
    let mut file = open_log(c)?;
    let path = c.log_path();
    let mut text = Vec::new();
    file.read_to_end(&mut text)
        .map_err(|e| ContainerError::io("read", &path, e))?;
    let shown: Vec<u8> = match tail {
        Tail::All => text.clone(),
        Tail::Lines(n) => {
            let lines: Vec<&[u8]> = text.split_inclusive(|b| *b == b'\n').collect();
            lines[lines.len().saturating_sub(n)..].concat()
        }
    };
    write_out(out, &shown)?;
    if follow {
        follow_from(c, &mut file, text.len() as u64, out, &mut || Ok(()))?;
    }
    Ok(())
}

fn write_out(out: &mut impl Write, data: &[u8]) -> Result<()> {
    out.write_all(data)
        .and_then(|()| out.flush())
        .map_err(|e| ContainerError::io("write", "the output", e))
}

/// Copies what the log gets from `offset` on into `out` until the container ends, calling
/// `tick` between reads (e.g. to forward signals).
fn follow_from(
    c: &Container,
    log: &mut std::fs::File,
    mut offset: u64,
    out: &mut impl Write,
    tick: &mut dyn FnMut() -> Result<()>,
) -> Result<()> {
    let path = c.log_path();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let running = c.alive();
        tick()?;
        let n = log
            .seek(std::io::SeekFrom::Start(offset))
            .and_then(|_| log.read(&mut buf))
            .map_err(|e| ContainerError::io("read", &path, e))?;
        if n > 0 {
            write_out(out, &buf[..n])?;
            offset += n as u64;
            continue;
        }
        if !running {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// `attach`: the output of a running container from now on into `out`, calling `tick`
/// between reads (the CLI forwards its signals there), until it ends; returns its exit
/// status. Only a container whose output is logged (started in the background, or kept)
/// can be attached to.
pub fn attach(
    c: &Container,
    out: &mut impl Write,
    tick: &mut dyn FnMut() -> Result<()>,
) -> Result<i32> {
    if !c.alive() {
        return Err(ContainerError::State(format!(
            "container {} is not running: start it first (gcr start -a {})",
            c.display_name(),
            c.display_name()
        )));
    }
    let path = c.log_path();
    let mut log = std::fs::File::open(&path).map_err(|_| {
        ContainerError::State(format!(
            "container {} has no output to attach to: only containers started in the background keep it",
            c.display_name()
        ))
    })?;
    // The directory stays readable through this handle when --rm takes it away at the end;
    // the mark asks the supervisor to wait for this reader before it deletes the files.
    let dir = std::fs::File::open(&c.dir).map_err(|e| ContainerError::io("open", &c.dir, e))?;
    let _mark = AttachMark::new(&c.dir)?;
    let offset = log
        .seek(std::io::SeekFrom::End(0))
        .map_err(|e| ContainerError::io("read", &path, e))?;
    follow_from(c, &mut log, offset, out, tick)?;
    let status = format!("/proc/self/fd/{}/{}", dir.as_raw_fd(), record::EXIT);
    match std::fs::read_to_string(status) {
        Ok(code) => code.trim().parse::<i32>().map_err(|_| {
            ContainerError::State(format!(
                "container {} ended with an unreadable exit status",
                c.display_name()
            ))
        }),
        Err(_) => Err(ContainerError::State(format!(
            "container {} ended, but its exit status is gone (removed with --rm)",
            c.display_name()
        ))),
    }
}
