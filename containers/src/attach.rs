//! Reading a container's output: `logs` (what it wrote so far, optionally followed) and
//! `attach` (from now on until it ends), with the handshake that keeps a `--rm` container's
//! files until every attached reader has its last output and exit status.

use std::io::{Read as _, Seek as _, Write};
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};

use crate::container::Container;
use crate::error::{ContainerError, Result};
use crate::logfile::{self, LogRecord, OutputStream};
use crate::record;

const ATTACHED: &str = "attached.";

/// `attached.PID.N` in the container's directory while a reader follows it (N tells apart
/// the readers of one long-lived process, the API service).
struct AttachMark(PathBuf);

impl AttachMark {
    fn new(dir: &Path) -> Result<AttachMark> {
        static SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.join(format!("{ATTACHED}{}.{n}", std::process::id()));
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
                let reader = name.to_str().and_then(|n| n.strip_prefix(ATTACHED));
                let pid = reader.map(|r| r.split('.').next().unwrap_or(r));
                pid.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
            })
    };
    while attached() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A reader that follows one container: it holds the container's directory open (readable
/// even after --rm set it aside) and a mark that makes the supervisor keep the files until
/// the reader has the last output and the exit status.
pub struct Follower {
    id: String,
    /// Where the record is in the store.
    store_path: PathBuf,
    dir: std::fs::File,
    mark: Option<AttachMark>,
    /// Which run of the container was current when the reader came (owner and start time).
    run_seen: (u32, Option<String>),
    /// The output file (the log, or the none driver's attach-only file) as it was when the
    /// reader came, and its length then: what follows is new (in it, or in the files that
    /// replace it when it rotates).
    output: Option<(std::fs::File, u64)>,
    output_name: &'static str,
    name: String,
}

impl Follower {
    pub fn new(c: &Container) -> Result<Follower> {
        let dir = std::fs::File::open(&c.dir).map_err(|e| ContainerError::io("open", &c.dir, e))?;
        let mark = AttachMark::new(&c.dir)?;
        // Read after the mark exists: a run that starts later is a new one.
        let meta = record::read_meta(&c.dir);
        let output_name = if meta.log_config().keeps_log() {
            record::LOG
        } else {
            record::ATTACH_ONLY_LOG
        };
        Ok(Follower {
            id: c.id.clone(),
            store_path: c.dir.clone(),
            dir,
            mark: Some(mark),
            run_seen: (meta.pid, meta.started),
            output: std::fs::File::open(c.dir.join(output_name))
                .ok()
                .and_then(|f| Some((f.metadata().ok()?.len(), f)))
                .map(|(len, f)| (f, len)),
            output_name,
            name: c.display_name(),
        })
    }

    /// The directory as it is now, wherever it was moved.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.dir.as_raw_fd()))
    }

    /// The container as it is now.
    pub fn current(&self) -> Container {
        Container::read(self.id.clone(), self.path())
    }

    /// Whether a run began after this reader came.
    fn new_run(&self, now: &Container) -> bool {
        (now.meta.pid, now.meta.started.clone()) != self.run_seen && now.meta.started.is_some()
    }

    /// Whether the record is still in the store (not removed, not set aside by --rm).
    pub fn registered(&self) -> bool {
        // Set aside, the directory is no longer the one at the store path.
        std::fs::metadata(&self.store_path).is_ok_and(|m| {
            use std::os::unix::fs::MetadataExt as _;
            self.dir
                .metadata()
                .is_ok_and(|d| d.ino() == m.ino() && d.dev() == m.dev() && d.nlink() > 0)
        })
    }

    /// Lets the supervisor go on without this reader (a waiter that has the exit status and
    /// now waits for the removal).
    pub fn release(&mut self) {
        self.mark = None;
    }

    /// Blocks until the record left the store (removed, or set aside by --rm).
    pub fn until_removed(&self, tick: &mut dyn FnMut() -> Result<()>) -> Result<()> {
        while self.registered() {
            tick()?;
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Ok(())
    }

    /// The exit status of its last run, if recorded.
    pub fn exit_status(&self) -> Option<i32> {
        std::fs::read_to_string(self.path().join(record::EXIT))
            .ok()
            .and_then(|code| code.trim().parse().ok())
    }

    /// Blocks until the container runs (now or in a run that begins later), calling `tick`
    /// between looks (a front end ends the wait there when its client left); false when the
    /// container went away first.
    pub fn until_running(&self, tick: &mut dyn FnMut() -> Result<()>) -> Result<bool> {
        loop {
            let now = self.current();
            if now.alive() || self.new_run(&now) {
                return Ok(true);
            }
            if !self.registered() {
                return Ok(false);
            }
            tick()?;
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Blocks until the current run ends; its exit status.
    pub fn until_ended(&self, tick: &mut dyn FnMut() -> Result<()>) -> Result<Option<i32>> {
        while self.current().alive() {
            tick()?;
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Ok(self.exit_status())
    }
}

/// The container's log, its rotated files first, read whole: the bytes, the open file being
/// written (to follow) and how many of the bytes are that file's.
fn read_logs(c: &Container) -> Result<(Vec<u8>, std::fs::File, usize)> {
    if !c.meta.log_config().keeps_log() {
        // Docker's words (its API answers 501 for them).
        return Err(ContainerError::Unsupported(
            "configured logging driver does not support reading".into(),
        ));
    }
    let path = c.log_path();
    let mut current = std::fs::File::open(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ContainerError::State(format!(
            "container {} has no logs: containers run with --rm in the foreground keep no output",
            c.display_name()
        )),
        _ => ContainerError::io("read", &path, e),
    })?;
    let mut text = Vec::new();
    for older in logfile::files(&path).iter().filter(|f| **f != path) {
        match std::fs::File::open(older) {
            Ok(mut file) => file
                .read_to_end(&mut text)
                .map_err(|e| ContainerError::io("read", older, e))?,
            // Rotated away since it was listed.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(ContainerError::io("read", older, e)),
        };
    }
    let before = text.len();
    current
        .read_to_end(&mut text)
        .map_err(|e| ContainerError::io("read", &path, e))?;
    let current_len = text.len() - before;
    Ok((text, current, current_len))
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

/// What `logs` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogOptions {
    pub tail: Tail,
    /// Then what it writes until it ends.
    pub follow: bool,
    /// Only records from this time on (RFC 3339, as the log writes it).
    pub since: Option<String>,
    /// Only records before this time.
    pub until: Option<String>,
    pub stdout: bool,
    pub stderr: bool,
    /// Docker's `--details`: the attributes the log options chose before each line.
    pub details: bool,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            tail: Tail::All,
            follow: false,
            since: None,
            until: None,
            stdout: true,
            stderr: true,
            details: false,
        }
    }
}

impl LogOptions {
    fn wants(&self, record: &LogRecord) -> bool {
        let stream = match record.stream {
            OutputStream::Stdout => self.stdout,
            OutputStream::Stderr => self.stderr,
        };
        // A line of unknown time (an older log) is always shown.
        let timed = !record.time.is_empty();
        stream
            && !(timed && self.since.as_deref().is_some_and(|s| record.time < s))
            && !(timed && self.until.as_deref().is_some_and(|u| record.time >= u))
    }
}

/// Where the records of a log go (the CLI: its stdout and stderr; the API: its stream).
pub type LogSink<'a> = dyn FnMut(&LogRecord) -> Result<()> + 'a;

/// `logs`: what the container wrote so far (its last lines with `tail`) into `sink`; with
/// `follow`, then what it writes until it ends.
pub fn logs(c: &Container, options: &LogOptions, sink: &mut LogSink) -> Result<()> {
    let (text, mut file, current_len) = read_logs(c)?;
    let path = c.log_path();
    let mut sink = with_details(c, options.details, sink);
    let (records, used) = logfile::records(&text);
    let records: Vec<&LogRecord> = records.iter().filter(|r| options.wants(r)).collect();
    let first = match options.tail {
        Tail::All => 0,
        Tail::Lines(n) => first_of_last_lines(&records, n),
    };
    for record in &records[first..] {
        sink(record)?;
    }
    if options.follow {
        // Where the records read end in the file being written (a line still being
        // written is read again).
        let offset = (current_len - (text.len() - used)) as u64;
        let mut wanted = |r: &LogRecord| if options.wants(r) { sink(r) } else { Ok(()) };
        let alive = || c.current().alive();
        follow_from(
            &path,
            &mut file,
            offset,
            &alive,
            &mut wanted,
            &mut || Ok(()),
        )?;
    }
    Ok(())
}

/// `sink` with Docker's `--details` before each line: the attributes the log options chose
/// (`k=v,k2=v2`, sorted, query-escaped) and a space (a space alone when none were chosen,
/// as Docker prints it).
fn with_details<'a>(c: &Container, details: bool, sink: &'a mut LogSink) -> Box<LogSink<'a>> {
    if !details {
        return Box::new(sink);
    }
    let env = c
        .spec()
        .ok()
        .and_then(|s| s.process().as_ref().and_then(|p| p.env().clone()))
        .unwrap_or_default();
    let attributes = c.meta.log_config().attributes(&c.meta.labels, &env);
    let prefix = format!("{} ", crate::logconfig::attributes_text(&attributes));
    let mut at_line_start = [true, true];
    Box::new(move |record: &LogRecord| {
        let index = usize::from(record.stream == OutputStream::Stderr);
        let starts = at_line_start[index];
        at_line_start[index] = record.data.ends_with(b"\n");
        if !starts {
            return sink(record);
        }
        let shown = LogRecord {
            data: [prefix.as_bytes(), &record.data].concat(),
            ..record.clone()
        };
        sink(&shown)
    })
}

/// The index of the first record of the last `n` lines.
fn first_of_last_lines(records: &[&LogRecord], n: usize) -> usize {
    let mut first = records.len();
    let mut lines = 0;
    while first > 0 {
        if records[first - 1].data.ends_with(b"\n") {
            if lines == n {
                break;
            }
            lines += 1;
        }
        first -= 1;
    }
    first
}

/// Writes a record's bytes to `out`.
pub fn write_record(out: &mut impl Write, record: &LogRecord) -> Result<()> {
    out.write_all(&record.data)
        .and_then(|()| out.flush())
        .map_err(|e| ContainerError::io("write", "the output", e))
}

/// Hands what the log at `path` gets from `offset` on to `sink` until the container ends
/// (`alive` says), calling `tick` between reads (e.g. to forward signals).
fn follow_from(
    path: &Path,
    log: &mut std::fs::File,
    mut offset: u64,
    alive: &dyn Fn() -> bool,
    sink: &mut LogSink,
    tick: &mut dyn FnMut() -> Result<()>,
) -> Result<()> {
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let running = alive();
        tick()?;
        // Seen before the read: a file rotated away gets nothing more, so once a read finds
        // its end, what follows is in the new file.
        let rotated = logfile::replaced(path, log);
        let n = log
            .seek(std::io::SeekFrom::Start(offset))
            .and_then(|_| log.read(&mut buf))
            .map_err(|e| ContainerError::io("read", path, e))?;
        if n > 0 {
            offset += n as u64;
            pending.extend_from_slice(&buf[..n]);
            let (records, used) = logfile::records(&pending);
            for record in &records {
                sink(record)?;
            }
            drop(records);
            pending.drain(..used);
            continue;
        }
        if rotated {
            match std::fs::File::open(logfile::successor(path, log)) {
                Ok(file) => {
                    *log = file;
                    offset = 0;
                    pending.clear();
                    continue;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(ContainerError::io("read", path, e)),
            }
        }
        if !running {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// `attach`: the output of a container from now on into `sink`, calling `tick` between
/// reads (the CLI forwards its signals there; the API ends when its client left), until it
/// ends; returns its exit status. A running container is followed at once; with
/// `wait_for_start` a container not running yet is followed from its next start (Docker's
/// attach before start, as `docker run` and `docker start -a` do). Only a container whose
/// output is logged (started in the background, or kept) can be attached to.
pub fn attach(
    c: &Container,
    wait_for_start: bool,
    sink: &mut LogSink,
    tick: &mut dyn FnMut() -> Result<()>,
) -> Result<i32> {
    if !wait_for_start && !c.alive() {
        return Err(ContainerError::State(format!(
            "container {} is not running: start it first (gcr start -a {})",
            c.display_name(),
            c.display_name()
        )));
    }
    Follower::new(c)?.attach(sink, tick)
}

impl Follower {
    /// Hands the output written since this reader came to `sink` until the run (current,
    /// or the next one to start) ends; its exit status.
    pub fn attach(&self, sink: &mut LogSink, tick: &mut dyn FnMut() -> Result<()>) -> Result<i32> {
        if !self.until_running(tick)? {
            return Err(ContainerError::State(format!(
                "container {} was removed before it started",
                self.name
            )));
        }
        let log_path = self.path().join(self.output_name);
        let no_output = |_| {
            ContainerError::State(format!(
                "container {} has no output to attach to: only containers started in the background keep it",
                self.name
            ))
        };
        let (mut log, offset) = match &self.output {
            Some((file, offset)) => (file.try_clone().map_err(no_output)?, *offset),
            None => (std::fs::File::open(&log_path).map_err(no_output)?, 0),
        };
        let alive = || self.current().alive();
        follow_from(&log_path, &mut log, offset, &alive, sink, tick)?;
        self.exit_status().ok_or_else(|| {
            ContainerError::State(format!(
                "container {} ended, but its exit status is gone (removed with --rm)",
                self.name
            ))
        })
    }
}

/// The writer of a container's attached stdin (a container created with `attach_stdin`):
/// what is written goes to its stdin when it runs; closing it ends its input. Opened before
/// the start (read-write, so the open never waits), it keeps the start from reading an
/// early end of input.
pub fn stdin_writer(c: &Container) -> Result<std::fs::File> {
    let fifo = c.dir.join(record::STDIN_FIFO);
    if !fifo.exists() {
        return Err(ContainerError::State(format!(
            "container {} was not created with its stdin attached (docker run -i, AttachStdin)",
            c.display_name()
        )));
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)
        .map_err(|e| ContainerError::io("open", &fifo, e))
}
