//! Stages that do not depend on each other build at once, as BuildKit's solver runs
//! independent vertices.
//!
//! The builder must stay single-threaded (RUN steps clone containers), so a stage built
//! beside others is built by a forked worker process: a copy of the engine with every stage
//! it depends on already built. It writes the stage's [`State`] (or its error) as JSON into
//! its own work directory and its progress into a pipe that this process relays line by
//! line, putting the step number (`#N`) in front of output lines so that interleaved RUN
//! output stays readable. Step numbers come from one counter file that every process
//! appends a byte to. When only one stage can start and none is running, it is built here,
//! in this process, as before: a build without independent stages never forks.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::stages::Base;
use super::state::State;
use super::Engine;
use crate::error::BuildError;

/// Numbers the steps of the build (BuildKit's `#N`), across worker processes once shared.
pub(super) struct StepCounter {
    local: usize,
    /// The counter file: its length is the last number given.
    shared: Option<(PathBuf, File)>,
    /// The work directory holding it (removed with the engine).
    dir: Option<gcr_storage::BuildDir>,
}

impl StepCounter {
    pub(super) fn new() -> StepCounter {
        StepCounter {
            local: 0,
            shared: None,
            dir: None,
        }
    }

    /// The next step's number.
    pub(super) fn next(&mut self) -> usize {
        if let Some((_, file)) = &mut self.shared {
            // O_APPEND puts each byte at the end atomically; the offset after our own write
            // (this process's own open file) is our number.
            if file.write_all(b".").is_ok() {
                if let Ok(n) = file.stream_position() {
                    return n as usize;
                }
            }
        }
        self.local += 1;
        self.local
    }

    /// From now on count in `path`, shared with the workers forked later.
    fn share(&mut self, path: PathBuf) -> std::io::Result<()> {
        if self.shared.is_some() {
            return Ok(());
        }
        std::fs::write(&path, ".".repeat(self.local))?;
        let file = std::fs::OpenOptions::new().append(true).open(&path)?;
        self.shared = Some((path, file));
        Ok(())
    }

    /// In a worker: an open file of its own (a file inherited through fork shares its
    /// offset with the parent).
    fn reopen(&mut self) {
        if let Some((path, file)) = &mut self.shared {
            if let Ok(f) = std::fs::OpenOptions::new().append(true).open(&*path) {
                *file = f;
            }
        }
    }

    /// Back in the parent once the workers are done: the numbers they used stay used.
    fn settle(&mut self) {
        if let Some((_, file)) = &mut self.shared {
            if let Ok(n) = file.seek(SeekFrom::End(0)) {
                self.local = self.local.max(n as usize);
            }
        }
    }
}

/// What a worker sends back.
#[derive(Serialize, Deserialize)]
enum WorkerResult {
    Built {
        state: Box<State>,
        declared: Vec<String>,
        warnings: Vec<String>,
        /// The layer steps it made or reused (for `--cache-to`).
        cache_steps: Vec<crate::CacheStep>,
    },
    Failed(WireError),
}

/// A [`BuildError`] across the process boundary.
#[derive(Serialize, Deserialize)]
enum WireError {
    Step {
        file: String,
        line: usize,
        instruction: String,
        message: String,
    },
    RunFailed {
        file: String,
        line: usize,
        instruction: String,
        code: i32,
    },
    Other(String),
}

impl WireError {
    fn from_error(e: &BuildError) -> WireError {
        match e {
            BuildError::Step {
                file,
                line,
                instruction,
                message,
            } => WireError::Step {
                file: file.clone(),
                line: *line,
                instruction: instruction.clone(),
                message: message.clone(),
            },
            BuildError::RunFailed {
                file,
                line,
                instruction,
                code,
            } => WireError::RunFailed {
                file: file.clone(),
                line: *line,
                instruction: instruction.clone(),
                code: *code,
            },
            other => WireError::Other(other.to_string()),
        }
    }

    fn into_error(self, stage: String) -> BuildError {
        match self {
            WireError::Step {
                file,
                line,
                instruction,
                message,
            } => BuildError::Step {
                file,
                line,
                instruction,
                message,
            },
            WireError::RunFailed {
                file,
                line,
                instruction,
                code,
            } => BuildError::RunFailed {
                file,
                line,
                instruction,
                code,
            },
            WireError::Other(message) => BuildError::Worker { stage, message },
        }
    }
}

/// A stage being built by a worker process.
struct Worker {
    stage: usize,
    pid: Pid,
    output: File,
    /// Output not yet ended by a newline.
    partial: Vec<u8>,
    /// The `#N` of the step the worker last announced.
    current: Option<String>,
    dir: gcr_storage::BuildDir,
}

impl Worker {
    /// Relays complete lines of the worker's output; with `all`, the rest too.
    fn relay(&mut self, all: bool) {
        let mut buf = [0u8; 8192];
        loop {
            match self.output.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => self.partial.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        let mut stderr = std::io::stderr().lock();
        while let Some(end) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            let _ = stderr.write_all(&self.prefixed(&line));
        }
        if all && !self.partial.is_empty() {
            let mut line = std::mem::take(&mut self.partial);
            line.push(b'\n');
            let _ = stderr.write_all(&self.prefixed(&line));
        }
    }

    /// A step line (`#N ...`) as it is, remembering N; any other line with `#N ` before it.
    fn prefixed(&mut self, line: &[u8]) -> Vec<u8> {
        if let Some(number) = step_number(line) {
            self.current = Some(number);
            return line.to_vec();
        }
        match &self.current {
            Some(n) => [n.as_bytes(), b" ", line].concat(),
            None => line.to_vec(),
        }
    }
}

/// `#12` of a line `#12 ...`.
fn step_number(line: &[u8]) -> Option<String> {
    let rest = line.strip_prefix(b"#")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || rest.get(digits) != Some(&b' ') {
        return None;
    }
    Some(String::from_utf8_lossy(&line[..=digits]).into_owned())
}

impl Engine<'_> {
    /// The stages stage `index` needs built first (FROM, COPY --from, RUN --mount from).
    pub(super) fn stage_deps(&self, index: usize, bases: &[Base]) -> BTreeSet<usize> {
        let env = self.global_env();
        let mut deps = BTreeSet::new();
        if let Base::Stage(j) = bases[index] {
            deps.insert(j);
        }
        for instr in &self.cf.stages[index].instructions {
            let mut froms = Vec::new();
            match &instr.kind {
                gcr_grammar::InstructionKind::Copy(c) | gcr_grammar::InstructionKind::Add(c) => {
                    froms.extend(c.from.clone())
                }
                gcr_grammar::InstructionKind::Run(r) => {
                    froms.extend(r.mounts.iter().filter_map(|m| m.from.clone()))
                }
                _ => {}
            }
            for from in froms {
                let from = self.lexer.process_word(&from, &env).unwrap_or(from.clone());
                if let Some(j) = self.find_stage(&from, index) {
                    deps.insert(j);
                }
            }
        }
        deps
    }

    /// Builds the `needed` stages: each once the stages it depends on are built, up to
    /// `--jobs` at once. After a failure no stage starts; the running ones finish, and the
    /// first failure is the build's.
    pub(super) fn build_stages(
        &mut self,
        needed: &BTreeSet<usize>,
        bases: &[Base],
    ) -> Result<(), BuildError> {
        let deps: BTreeMap<usize, BTreeSet<usize>> = needed
            .iter()
            .map(|&i| (i, self.stage_deps(i, bases)))
            .collect();
        let jobs = self.opts.jobs.max(1);
        let mut pending: BTreeSet<usize> = needed.clone();
        let mut running: Vec<Worker> = Vec::new();
        let mut failure: Option<BuildError> = None;
        loop {
            if failure.is_none() {
                let ready: Vec<usize> = pending
                    .iter()
                    .copied()
                    .filter(|i| deps[i].iter().all(|d| self.built[*d].is_some()))
                    .collect();
                if running.is_empty() && (ready.len() == 1 || (jobs == 1 && !ready.is_empty())) {
                    let index = ready[0];
                    pending.remove(&index);
                    let state = self.build_stage(index, bases)?;
                    self.built[index] = Some(state);
                    continue;
                }
                for index in ready.into_iter().take(jobs.saturating_sub(running.len())) {
                    pending.remove(&index);
                    match self.start_worker(index, bases) {
                        Ok(worker) => running.push(worker),
                        // The running workers are still waited for.
                        Err(e) => {
                            failure = Some(e);
                            break;
                        }
                    }
                }
            }
            if running.is_empty() {
                break;
            }
            self.wait_workers(&mut running, &mut failure);
        }
        self.steps.settle();
        match failure {
            Some(e) => Err(e),
            None if !pending.is_empty() => Err(BuildError::Options(
                "some stages could not be built (a dependency cycle?)".into(),
            )),
            None => Ok(()),
        }
    }

    fn start_worker(&mut self, index: usize, bases: &[Base]) -> Result<Worker, BuildError> {
        let dir = self
            .store
            .build_dir("build-stage")
            .map_err(|e| BuildError::store("creating a work directory", e))?;
        if self.steps.shared.is_none() {
            // A work dir of its own: the counter must not show in any image's root.
            let steps_dir = self
                .store
                .build_dir("build-steps")
                .map_err(|e| BuildError::store("creating a work directory", e))?;
            let counter = steps_dir.path().join("steps");
            self.steps
                .share(counter.clone())
                .map_err(|e| BuildError::io("creating", &counter, e))?;
            self.steps.dir = Some(steps_dir);
        }
        let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| BuildError::io("creating a pipe for", dir.path(), e.into()))?;
        let result_path = dir.path().join("result.json");
        let pid =
            gcr_runtime::fork_worker(|| self.worker_main(index, bases, write_end, &result_path))
                .map_err(|e| BuildError::Worker {
                    stage: self.stage_label(index),
                    message: e.to_string(),
                })?;
        let output = File::from(read_end);
        set_nonblocking(&output);
        Ok(Worker {
            stage: index,
            pid,
            output,
            partial: Vec::new(),
            current: None,
            dir,
        })
    }

    /// The worker process: builds stage `index` with its output on `output`, writes the
    /// result; its exit status says only whether that file was written.
    fn worker_main(
        &mut self,
        index: usize,
        bases: &[Base],
        output: OwnedFd,
        result_path: &std::path::Path,
    ) -> i32 {
        if nix::unistd::dup2_stderr(output.as_fd()).is_err() {
            return 1;
        }
        drop(output);
        self.steps.reopen();
        self.declared.clear();
        self.warnings.clear();
        self.cache_steps.clear();
        let result = match self.build_stage(index, bases) {
            Ok(state) => WorkerResult::Built {
                state: Box::new(state),
                declared: self.declared.iter().cloned().collect(),
                warnings: self.warnings.clone(),
                cache_steps: std::mem::take(&mut self.cache_steps),
            },
            Err(e) => WorkerResult::Failed(WireError::from_error(&e)),
        };
        match serde_json::to_vec(&result) {
            Ok(bytes) if std::fs::write(result_path, &bytes).is_ok() => 0,
            _ => 1,
        }
    }

    /// Relays the workers' output until at least one has ended; takes in its result.
    fn wait_workers(&mut self, running: &mut Vec<Worker>, failure: &mut Option<BuildError>) {
        {
            let mut fds: Vec<PollFd> = running
                .iter()
                .map(|w| PollFd::new(w.output.as_fd(), PollFlags::POLLIN))
                .collect();
            // A timeout too: a RUN step may leave a process holding the pipe open, so an
            // ended worker is noticed by waitpid, not by end of file.
            let _ = poll(&mut fds, PollTimeout::from(100u16));
        }
        let mut i = 0;
        while i < running.len() {
            running[i].relay(false);
            let status = waitpid(running[i].pid, Some(WaitPidFlag::WNOHANG));
            let ended = match status {
                Ok(WaitStatus::StillAlive) => None,
                Ok(WaitStatus::Exited(_, code)) => Some(format!("exited with status {code}")),
                Ok(WaitStatus::Signaled(_, sig, _)) => Some(format!("was killed by {sig}")),
                Ok(_) => None,
                Err(e) => Some(format!("cannot be waited for: {e}")),
            };
            let Some(how) = ended else {
                i += 1;
                continue;
            };
            let mut worker = running.remove(i);
            worker.relay(true);
            let outcome = self.worker_outcome(&worker, &how);
            match outcome {
                Ok(state) => self.built[worker.stage] = Some(state),
                Err(e) => {
                    if failure.is_none() {
                        if !running.is_empty() {
                            self.say(&format!(
                                "waiting for {} stage(s) still building",
                                running.len()
                            ));
                        }
                        *failure = Some(e);
                    }
                }
            }
            drop(worker.dir);
        }
    }

    fn worker_outcome(&mut self, worker: &Worker, how: &str) -> Result<State, BuildError> {
        let stage = self.stage_label(worker.stage);
        let path = worker.dir.path().join("result.json");
        let bytes = std::fs::read(&path).map_err(|_| BuildError::Worker {
            stage: stage.clone(),
            message: format!("the build process {how} before it reported a result"),
        })?;
        let result: WorkerResult =
            serde_json::from_slice(&bytes).map_err(|e| BuildError::Worker {
                stage: stage.clone(),
                message: format!("unreadable result {}: {e}", path.display()),
            })?;
        match result {
            WorkerResult::Built {
                state,
                declared,
                warnings,
                cache_steps,
            } => {
                self.declared.extend(declared);
                self.warnings.extend(warnings);
                for step in cache_steps {
                    if !self.cache_steps.iter().any(|s| s.key == step.key) {
                        self.cache_steps.push(step);
                    }
                }
                Ok(*state)
            }
            WorkerResult::Failed(e) => Err(e.into_error(stage)),
        }
    }
}

fn set_nonblocking(file: &File) {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    if let Ok(flags) = fcntl(file, FcntlArg::F_GETFL) {
        let _ = fcntl(
            file,
            FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_lines_are_told_from_output_lines() {
        assert_eq!(step_number(b"#12 [a 2/3] RUN x\n").as_deref(), Some("#12"));
        assert_eq!(step_number(b"#3 DONE 1.0s\n").as_deref(), Some("#3"));
        assert_eq!(step_number(b"# comment\n"), None);
        assert_eq!(step_number(b"#12\n"), None);
        assert_eq!(step_number(b"hello #1 \n"), None);
    }

    #[test]
    fn shared_counter_continues_and_is_unique_across_opens() {
        let dir = tempfile::tempdir().unwrap();
        let mut parent = StepCounter::new();
        assert_eq!(parent.next(), 1);
        assert_eq!(parent.next(), 2);
        parent.share(dir.path().join("steps")).unwrap();
        let mut worker = StepCounter {
            local: parent.local,
            shared: parent
                .shared
                .as_ref()
                .map(|(p, f)| (p.clone(), f.try_clone().unwrap())),
            dir: None,
        };
        worker.reopen();
        assert_eq!(worker.next(), 3);
        assert_eq!(parent.next(), 4);
        assert_eq!(worker.next(), 5);
        parent.settle();
        assert_eq!(parent.local, 5);
    }

    #[test]
    fn errors_keep_line_and_status_across_the_process_boundary() {
        let e = BuildError::RunFailed {
            file: "Containerfile".into(),
            line: 4,
            instruction: "RUN false".into(),
            code: 7,
        };
        let wire: WireError =
            serde_json::from_slice(&serde_json::to_vec(&WireError::from_error(&e)).unwrap())
                .unwrap();
        let back = wire.into_error("b".into());
        assert_eq!(back.run_exit_code(), Some(7));
        assert_eq!(back.to_string(), e.to_string());
        let other =
            WireError::from_error(&BuildError::Options("bad".into())).into_error("b".into());
        assert_eq!(other.to_string(), "stage b: bad");
    }
}
