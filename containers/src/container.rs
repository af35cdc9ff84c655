//! A container as its record describes it: state derivation, lookup by name or ID, and
//! signalling its processes. There is no daemon: a container is running while the process
//! that owns it (its `gcr run` or supervisor) lives; its exit status is written when it ends.

use std::path::PathBuf;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::error::{ContainerError, Result};
use crate::record::{self, ContainerMeta};

/// Where a container is in its life, as Docker's `State.Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Made by `create`, never started.
    Created,
    Running,
    /// Running, with its processes frozen.
    Paused,
    /// Ended (or its owner died without recording a status).
    Exited,
    /// `rm -f` is taking it down.
    Removing,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Created => "created",
            State::Running => "running",
            State::Paused => "paused",
            State::Exited => "exited",
            State::Removing => "removing",
        }
    }

    /// A `ps --filter status=` value: Docker's names.
    pub fn parse(text: &str) -> Option<State> {
        Some(match text {
            "created" => State::Created,
            "running" => State::Running,
            "paused" => State::Paused,
            "exited" => State::Exited,
            "removing" => State::Removing,
            _ => return None,
        })
    }
}

/// One container of the store, read at one moment.
#[derive(Debug, Clone)]
pub struct Container {
    pub id: String,
    pub dir: PathBuf,
    pub meta: ContainerMeta,
    /// None while running; Some(None) when it ended without a readable status.
    exit: Option<Option<i32>>,
}

/// The first 12 hex digits, as Docker shows IDs.
pub fn short_id(id: &str) -> String {
    id.trim_start_matches("sha256:").chars().take(12).collect()
}

impl Container {
    /// Reads the record of container `id` in `dir`.
    pub fn read(id: String, dir: PathBuf) -> Container {
        let meta = record::read_meta(&dir);
        let exit = match std::fs::read_to_string(dir.join(record::EXIT)) {
            Ok(text) => Some(text.trim().parse().ok()),
            // No status yet: running while its owner lives.
            Err(_) if meta.owner_alive() => None,
            Err(_) => Some(None),
        };
        Container {
            id,
            dir,
            meta,
            exit,
        }
    }

    /// The same container read again now.
    pub fn current(&self) -> Container {
        Container::read(self.id.clone(), self.dir.clone())
    }

    /// Running when it was read.
    pub fn running(&self) -> bool {
        self.exit.is_none()
    }

    /// Still running now (re-checked: the record was read a while ago).
    pub fn alive(&self) -> bool {
        !self.dir.join(record::EXIT).exists() && self.meta.owner_alive()
    }

    /// The exit status recorded when it ended.
    pub fn exit_code(&self) -> Option<i32> {
        self.exit.flatten()
    }

    pub fn state(&self) -> State {
        match self.exit {
            None if record::has_mark(&self.dir, record::REMOVING) => State::Removing,
            None if record::has_mark(&self.dir, record::PAUSED) => State::Paused,
            None => State::Running,
            Some(None) if record::has_mark(&self.dir, record::CREATED) => State::Created,
            Some(_) => State::Exited,
        }
    }

    /// The container's PID 1, while it runs.
    pub fn pid(&self) -> Option<Pid> {
        std::fs::read_to_string(record::pid_file(&self.dir))
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .filter(|p| *p > 0)
            .map(Pid::from_raw)
    }

    /// Its name, or its short ID when it has none.
    pub fn display_name(&self) -> String {
        self.meta.name.clone().unwrap_or_else(|| short_id(&self.id))
    }

    /// The ID of the image it was made from (none for a `--rootfs` container).
    pub fn image_id(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.join(record::IMAGE))
            .ok()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
    }

    /// The image record it was made from.
    pub fn image(&self, store: &gcr_storage::Store) -> Result<gcr_storage::ImageRecord> {
        let id = self.image_id().ok_or_else(|| {
            ContainerError::State(format!(
                "container {} records no image (a --rootfs container)",
                self.display_name()
            ))
        })?;
        Ok(store.resolve_image(&id)?)
    }

    /// Its OCI runtime spec as recorded.
    pub fn spec(&self) -> Result<gcr_runtime::Spec> {
        record::read_spec(&self.dir)
    }

    pub fn log_path(&self) -> PathBuf {
        record::log_file(&self.dir)
    }

    pub fn upper_dir(&self) -> PathBuf {
        self.dir.join("upper")
    }

    pub fn work_dir(&self) -> PathBuf {
        self.dir.join("work")
    }

    /// Its address on a private network while it runs.
    pub fn address(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.join(record::ADDRESS)).ok()
    }

    /// When the exit status was recorded.
    pub fn finished_at(&self) -> Option<std::time::SystemTime> {
        std::fs::metadata(self.dir.join(record::EXIT))
            .and_then(|m| m.modified())
            .ok()
    }

    /// Sends `signal` to the container's PID 1. Rootless, a sibling gcr may not signal a
    /// process of another user namespace whose uid differs from its own: then the signal
    /// goes through the container's supervisor, which forwards all but SIGKILL and SIGSTOP.
    pub fn signal(&self, signal: Signal) -> Result<()> {
        use nix::sys::signal::kill;
        // Only while the recorded owner is the same process: after a crash its PID (and the
        // container's) may belong to anything.
        if !self.meta.owner_alive() {
            return Err(ContainerError::NotRunning(self.display_name()));
        }
        let supervisor = Pid::from_raw(self.meta.pid as i32);
        let direct = match self.pid() {
            Some(pid) => kill(pid, signal),
            None => Err(nix::errno::Errno::ESRCH),
        };
        let failed = |action| {
            move |source| ContainerError::Signal {
                action,
                name: self.display_name(),
                source,
            }
        };
        match direct {
            Ok(()) => Ok(()),
            Err(_) if !matches!(signal, Signal::SIGKILL | Signal::SIGSTOP) => {
                kill(supervisor, signal).map_err(failed("signal"))
            }
            Err(_) => {
                // SIGKILL cannot be forwarded: kill the supervisor, whose death kills the
                // container (parent-death signal); record what it would have recorded.
                kill(supervisor, signal).map_err(failed("kill"))?;
                if record::wait_gone(&self.meta, std::time::Duration::from_secs(10)) {
                    let _ = std::fs::remove_file(record::pid_file(&self.dir));
                    record::write_exit_status(&self.dir, 128 + signal as i32);
                }
                Ok(())
            }
        }
    }
}

/// Every container of the store, created last first.
pub fn list(store: &gcr_storage::Store) -> Result<Vec<Container>> {
    let mut out = Vec::new();
    for id in store.container_ids()? {
        let dir = store.container_dir(&id)?;
        out.push(Container::read(id, dir));
    }
    out.sort_by(|a, b| b.meta.created.cmp(&a.meta.created));
    Ok(out)
}

/// The container an ID, unique ID prefix or name means.
pub fn find<'a>(all: &'a [Container], wanted: &str) -> Result<&'a Container> {
    if let Some(c) = all
        .iter()
        .find(|c| c.meta.name.as_deref() == Some(wanted) || c.id == wanted)
    {
        return Ok(c);
    }
    let matches: Vec<&Container> = all.iter().filter(|c| c.id.starts_with(wanted)).collect();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(ContainerError::NotFound(wanted.to_string())),
        _ => Err(ContainerError::Ambiguous(wanted.to_string())),
    }
}

/// Reads the store and finds one container (see [`find`]).
pub fn lookup(store: &gcr_storage::Store, wanted: &str) -> Result<Container> {
    let all = list(store)?;
    find(&all, wanted).cloned()
}

/// How many containers there are, and how many of them run.
pub fn counts(store: &gcr_storage::Store) -> Result<(usize, usize)> {
    let all = list(store)?;
    let running = all.iter().filter(|c| c.running()).count();
    Ok((all.len(), running))
}

/// `SIGTERM`, `TERM` or `15`.
pub fn parse_signal(text: &str) -> Result<Signal> {
    use std::str::FromStr as _;
    let upper = text.trim().to_ascii_uppercase();
    let parsed = match upper.parse::<i32>() {
        Ok(n) => Signal::try_from(n).ok(),
        Err(_) => {
            let name = if upper.starts_with("SIG") {
                upper.clone()
            } else {
                format!("SIG{upper}")
            };
            Signal::from_str(&name).ok()
        }
    };
    parsed.ok_or_else(|| {
        ContainerError::invalid(format!(
            "unknown signal {text:?}: give a name such as SIGTERM or a number"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_or_number() {
        assert_eq!(parse_signal("TERM").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("sigkill").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("15").unwrap(), Signal::SIGTERM);
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("99").is_err());
    }

    #[test]
    fn find_by_name_id_and_unique_prefix() {
        let make = |id: &str, name: Option<&str>| Container {
            id: id.into(),
            dir: PathBuf::from("/nonexistent"),
            meta: ContainerMeta {
                name: name.map(Into::into),
                ..Default::default()
            },
            exit: Some(Some(0)),
        };
        let all = vec![make("abc123", Some("web")), make("abd456", None)];
        assert_eq!(find(&all, "web").unwrap().id, "abc123");
        assert_eq!(find(&all, "abd").unwrap().id, "abd456");
        assert!(matches!(
            find(&all, "ab"),
            Err(ContainerError::Ambiguous(_))
        ));
        assert!(matches!(find(&all, "zz"), Err(ContainerError::NotFound(_))));
    }
}
