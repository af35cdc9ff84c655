//! Running a container to its end without a daemon: the supervisor (the foreground `gcr run`,
//! or a detached child of it) runs the container, applies its restart policy, records its
//! exit status and removes a `--rm` container.

use std::path::PathBuf;

use crate::attach;
use crate::error::{ContainerError, Result};
use crate::record::{self, ContainerMeta};

/// Docker's restart policies, applied by the container's supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RestartPolicy {
    #[default]
    No,
    /// `always` and `unless-stopped` (they differ only when a daemon restarts).
    Always,
    /// Restart after a non-zero exit, at most `max` times (0: no limit).
    OnFailure { max: u32 },
}

impl RestartPolicy {
    pub fn parse(text: &str) -> Result<RestartPolicy> {
        Ok(match text {
            "no" | "" => RestartPolicy::No,
            "always" | "unless-stopped" => RestartPolicy::Always,
            "on-failure" => RestartPolicy::OnFailure { max: 0 },
            other => match other.strip_prefix("on-failure:").map(str::parse::<u32>) {
                Some(Ok(max)) => RestartPolicy::OnFailure { max },
                _ => {
                    return Err(ContainerError::invalid(format!(
                    "invalid --restart {other:?}: use no, always, unless-stopped or on-failure[:MAX]"
                )))
                }
            },
        })
    }

    /// The policy a container was created with (an unreadable one counts as `no`).
    pub fn of(meta: &ContainerMeta) -> RestartPolicy {
        RestartPolicy::parse(meta.restart.as_deref().unwrap_or("no")).unwrap_or_default()
    }

    /// Whether a run that ended with `code`, after `restarts` restarts, runs again.
    pub fn wants(self, code: i32, restarts: u32) -> bool {
        match self {
            RestartPolicy::No => false,
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure { max } => code != 0 && (max == 0 || restarts < max),
        }
    }
}

/// A container ready to run: its record is written, its spec and runtime options made.
pub struct Launch {
    pub store: gcr_storage::Store,
    pub id: String,
    pub dir: PathBuf,
    pub spec: gcr_runtime::Spec,
    pub options: gcr_runtime::RunOptions,
    pub meta: ContainerMeta,
    /// Kept when it ends (not --rm, not a --rootfs container).
    pub keep: bool,
    /// Held until the container is gone (a `--userns=auto` range).
    pub(crate) _userns_lease: Option<std::fs::File>,
}

impl Launch {
    /// Runs the container in this process to its end (restart policy included) and returns
    /// its exit status. A kept container's output also goes to its log (`gcr logs`), as
    /// Docker keeps it (with a terminal too), unless its log driver is none.
    pub fn run_attached(mut self) -> Result<i32> {
        // `create` records this process already; `start` runs it again from another one.
        if self.meta.pid != std::process::id() {
            self.meta.owned_by_this_process();
            self.meta.started = Some(record::now());
            record::write_meta(&self.dir, &self.meta)?;
        }
        // With a terminal too (Docker logs -t containers): the relay writes the pty to the
        // tee, so stdout and stderr are one stream, as the terminal shows them.
        let tee = if self.keep && self.meta.log_config().keeps_log() {
            Some(gcr_runtime::OutputTee::start(
                open_log(&self.dir, &self.meta)?,
                true,
            )?)
        } else {
            None
        };
        let policy = RestartPolicy::of(&self.meta);
        let result = self.supervise(policy, tee);
        Ok(result?)
    }

    /// `gcr run -d` and `gcr start`: a detached child becomes the container's supervisor
    /// (new session, output into the container's log) and reports through a pipe whether
    /// the command started; Ok once it did, else the start failure with its exit status.
    pub fn start_detached(mut self) -> Result<()> {
        use std::io::Write as _;
        use std::os::fd::AsRawFd as _;
        let log = open_log(&self.dir, &self.meta)?;
        let (report_read, report_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|source| ContainerError::Sys {
                action: "make a pipe for the detached container",
                source,
            })?;
        let mut report_read = std::fs::File::from(report_read);
        self.options.started_fd = Some(report_write.as_raw_fd());
        // `-dit`/`-di`: the container's input stays open and empty (the usual way to keep a
        // shell alive for `gcr exec`); nothing can write to it, as gcr attach has no input.
        // An API client that attaches stdin writes into the record's FIFO instead.
        let stdin_fifo = self.dir.join(record::STDIN_FIFO);
        let attached_input = self.options.stdin && stdin_fifo.exists();
        let keep_input_open = self.options.stdin && !attached_input;
        if self.options.tty && !attached_input {
            // The pty alone keeps it open; gcr's own /dev/null must not reach it.
            self.options.stdin = false;
        }
        let id = self.id.clone();
        let store = self.store.clone();
        let detached = gcr_runtime::run_detached(move || {
            // Between two runs of a restart policy no container takes the signals `gcr stop`
            // sends through the supervisor: they must not end it unrecorded.
            gcr_runtime::ignore_stop_signals();
            let mut report = std::fs::File::from(report_write);
            if attached_input {
                // Never waits: with no writer (nobody attached) the input is at its end at
                // once; the attached client holds a writer from before the start.
                if let Err(err) = open_stdin_fifo(&stdin_fifo) {
                    let _ = write!(report, "E125 {err}");
                    return;
                }
            } else if keep_input_open && !self.options.tty {
                if let Ok((read_end, write_end)) = nix::unistd::pipe() {
                    let _ = nix::unistd::dup2_stdin(&read_end);
                    // Held (never written) for the supervisor's life: no end-of-file comes.
                    std::mem::forget(write_end);
                }
            }
            // The container's output (and this supervisor's messages) go to the log as
            // records of their stream until the last run has ended (see `supervise`).
            let tee = match gcr_runtime::OutputTee::start(log, false) {
                Ok(tee) => tee,
                Err(err) => {
                    let _ = write!(report, "E125 cannot keep the container's log: {err}");
                    return;
                }
            };
            self.meta.owned_by_this_process();
            self.meta.started = Some(record::now());
            if let Err(err) = record::write_meta(&self.dir, &self.meta) {
                let _ = write!(report, "E125 {err}");
                return;
            }
            let policy = RestartPolicy::of(&self.meta);
            // The runtime writes "S" when the command starts.
            if let Err(err) = self.supervise(policy, Some(tee)) {
                let _ = write!(report, "E{} {err}", err.exit_code());
            }
        });
        if let Err(source) = detached {
            remove_finished(&store, &id, false);
            return Err(ContainerError::Sys {
                action: "start the container in the background",
                source,
            });
        }
        await_start(&mut report_read).unwrap_or_else(|| {
            Err(ContainerError::State(format!(
                "the background gcr for container {} ended before the command started; see `gcr logs {}`",
                &id[..12],
                &id[..12]
            )))
        })
    }

    /// Runs the container to its end, then records its exit status (`keep`) or removes it.
    /// One run of the container, between its start and die events.
    fn run_once(
        &self,
        spec: &gcr_runtime::Spec,
        options: &gcr_runtime::RunOptions,
    ) -> Result<i32, gcr_runtime::RuntimeError> {
        use crate::events::container_event;
        container_event(&self.store, &self.id, &self.meta, "start", &[]);
        let monitor = crate::health::start_monitor(
            &self.store,
            &self.id,
            &self.dir,
            self.meta.health.as_ref(),
        );
        let result = gcr_runtime::run_container(spec, options);
        crate::health::stop_monitor(monitor);
        let code = result_code(&result).to_string();
        container_event(
            &self.store,
            &self.id,
            &self.meta,
            "die",
            &[("exitCode", code)],
        );
        result
    }

    /// The spec of a run again: `update` may have changed the limits recorded meanwhile
    /// (the rest stays as prepared: some of it, such as joined namespaces, is not recorded).
    fn spec_now(&self) -> gcr_runtime::Spec {
        let mut spec = self.spec.clone();
        let recorded = record::read_spec(&self.dir)
            .ok()
            .and_then(|s| s.linux().as_ref().and_then(|l| l.resources().clone()));
        if let (Some(resources), Some(mut linux)) = (recorded, spec.linux().clone()) {
            linux.set_resources(Some(resources));
            spec.set_linux(Some(linux));
        }
        spec
    }

    /// `tee` (the log's) ends once the last run has: its copier has written everything to
    /// the log before the exit status tells followers that nothing more comes.
    fn supervise(
        &self,
        policy: RestartPolicy,
        tee: Option<gcr_runtime::OutputTee>,
    ) -> Result<i32, gcr_runtime::RuntimeError> {
        let (dir, options) = (&self.dir, &self.options);
        let mut result = self.run_once(&self.spec, options);
        // Later runs have nobody waiting for the start byte.
        let mut again = options.clone();
        again.started_fd = None;
        let mut restarts = 0u32;
        let mut delay = std::time::Duration::from_millis(100);
        let stopped = || record::has_mark(dir, record::STOPPED);
        loop {
            let code = result_code(&result);
            // `update --restart` may have changed the policy since the start.
            let policy = if self.keep {
                RestartPolicy::of(&record::read_meta(dir))
            } else {
                policy
            };
            // `gcr stop` and `kill` mark the container: stopped by hand, it stays stopped.
            if !(self.keep && result.is_ok() && !stopped() && policy.wants(code, restarts)) {
                break;
            }
            restarts += 1;
            record::record_restart(dir, restarts);
            // Docker's backoff (doubling from 100 ms), watching for a stop meanwhile.
            let until = std::time::Instant::now() + delay;
            while std::time::Instant::now() < until && !stopped() {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            delay = (delay * 2).min(std::time::Duration::from_secs(30));
            if stopped() {
                break;
            }
            result = self.run_once(&self.spec_now(), &again);
        }
        drop(tee);
        // The groups a `pause` or `update` made beside the run's own are empty now.
        gcr_runtime::cgroups::remove_container_groups(&crate::limits::cgroup_rel(
            &self.id,
            Some(&self.spec),
        ));
        // A container that never started leaves nothing behind; --rm removes it after it ran.
        let started =
            result.is_ok() || matches!(&result, Err(gcr_runtime::RuntimeError::Exec { .. }));
        if !self.keep || !started {
            if started {
                // For `gcr attach`, which reads it through a handle of the directory set aside.
                record::write_exit_status(dir, result_code(&result));
                attach::wait_for_attached(dir);
            }
            remove_finished(&self.store, &self.id, started);
            // --rm takes the container's anonymous volumes along, as Docker's.
            crate::volumes::remove_anonymous_volumes(&self.store, &self.meta);
            if started {
                crate::events::container_event(&self.store, &self.id, &self.meta, "destroy", &[]);
            }
        } else {
            let _ = std::fs::remove_file(record::pid_file(dir));
            record::write_exit_status(dir, result_code(&result));
        }
        result
    }
}

/// The stdin FIFO as this process's stdin (read side, blocking reads).
fn open_stdin_fifo(fifo: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(fifo)
        .map_err(|e| ContainerError::io("open", fifo, e))?;
    nix::fcntl::fcntl(
        &file,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
    )
    .map_err(|source| ContainerError::Sys {
        action: "make the stdin FIFO blocking",
        source,
    })?;
    nix::unistd::dup2_stdin(&file).map_err(|source| ContainerError::Sys {
        action: "take the stdin FIFO as input",
        source,
    })?;
    Ok(())
}

/// The container's log (or, with the none driver, its attach-only output), opened for
/// appending, as the tee's record writer.
fn open_log(
    dir: &std::path::Path,
    meta: &ContainerMeta,
) -> Result<impl FnMut(gcr_runtime::OutputStream, &[u8]) + Send> {
    let (path, rotation) = record::output_file(dir, meta)?;
    crate::logfile::writer(&path, rotation).map_err(|e| ContainerError::io("create", &path, e))
}

/// The exit status a run of the container gives.
fn result_code(result: &Result<i32, gcr_runtime::RuntimeError>) -> i32 {
    match result {
        Ok(code) => *code,
        Err(err) => err.exit_code(),
    }
}

/// Reads a background gcr's start report: `S` when the command started, or `E<code>
/// <message>`; None when it ended silently.
pub(crate) fn await_start(report: &mut std::fs::File) -> Option<Result<()>> {
    use std::io::Read as _;
    // One byte first: the background gcr keeps its end open while the command runs.
    let mut first = [0u8; 1];
    let got = report.read(&mut first).unwrap_or(0);
    if got == 1 && first[0] == b'S' {
        return Some(Ok(()));
    }
    let mut text = String::new();
    if got == 1 {
        text.push(first[0] as char);
        let _ = report.read_to_string(&mut text);
    }
    let rest = text.strip_prefix('E')?;
    let (code, message) = rest.split_once(' ').unwrap_or(("125", rest));
    Some(Err(ContainerError::StartFailed {
        code: code.parse().unwrap_or(125),
        message: message.to_string(),
    }))
}

/// Removes a finished container: its directory leaves `containers/` at once (so the image is
/// free again), and the files are deleted by a detached child so gcr exits without waiting for
/// the filesystem. A container that never started has little to delete: done in place.
pub(crate) fn remove_finished(store: &gcr_storage::Store, container_id: &str, started: bool) {
    // The freezer group a `pause` made (empty once the container ended).
    gcr_runtime::cgroups::remove_container_groups(&gcr_runtime::cgroups::group_path(
        container_id,
        None,
    ));
    let aside = match store.set_aside_container(container_id) {
        Ok(Some(aside)) => aside,
        Ok(None) => return,
        Err(err) => {
            tracing::warn!(%err, "cannot remove the container's files");
            return;
        }
    };
    if !started {
        aside.remove();
        return;
    }
    let mut pending = Some(aside);
    let detached = gcr_runtime::run_detached(|| {
        if let Some(aside) = pending.take() {
            aside.remove();
        }
    });
    match (detached, pending) {
        // The child deletes; this process must neither delete nor unlock the entry.
        (Ok(()), Some(aside)) => std::mem::forget(aside),
        (Err(err), Some(aside)) => {
            tracing::debug!(%err, "cannot fork a remover; removing in place");
            aside.remove();
        }
        (_, None) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policies_follow_docker() {
        assert_eq!(RestartPolicy::parse("no").unwrap(), RestartPolicy::No);
        assert_eq!(
            RestartPolicy::parse("unless-stopped").unwrap(),
            RestartPolicy::Always
        );
        let limited = RestartPolicy::parse("on-failure:2").unwrap();
        assert!(limited.wants(1, 1));
        assert!(!limited.wants(1, 2));
        assert!(!limited.wants(0, 0));
        assert!(RestartPolicy::Always.wants(0, 100));
        assert!(!RestartPolicy::No.wants(1, 0));
        assert!(RestartPolicy::parse("sometimes").is_err());
    }
}
