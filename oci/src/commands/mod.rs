//! One function per runc command; `run` dispatches.

pub mod exec;
pub mod info;
pub mod lifecycle;
pub mod update;

use std::path::PathBuf;

use crate::error::OciError;
use crate::log::Log;
use crate::{Command, Global};

/// The state root: `--root`, else /run/gcr-oci as root and $XDG_RUNTIME_DIR/gcr-oci (or
/// /tmp/gcr-oci-UID) for anyone else.
pub fn state_root(global: &Global) -> PathBuf {
    if let Some(root) = &global.root {
        return root.clone();
    }
    let uid = nix::unistd::geteuid();
    if uid.is_root() {
        return PathBuf::from("/run/gcr-oci");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("gcr-oci"),
        _ => PathBuf::from(format!("/tmp/gcr-oci-{uid}")),
    }
}

/// Runs one command; `Ok` carries the exit status.
pub fn run(global: &Global, log: &Log, command: Command) -> Result<i32, OciError> {
    let root = state_root(global);
    log.debug(&format!("{command:?} (root {})", root.display()));
    match command {
        Command::Create(args) => lifecycle::create(global, log, &root, &args, false).map(|_| 0),
        Command::Start { id } => lifecycle::start(log, &root, &id).map(|()| 0),
        Command::Run {
            create,
            detach,
            keep,
        } => lifecycle::run(global, log, &root, &create, detach, keep),
        Command::State { id } => lifecycle::state(&root, &id).map(|()| 0),
        Command::Kill { all, id, signal } => {
            lifecycle::kill(&root, &id, signal.as_deref(), all).map(|()| 0)
        }
        Command::Delete { force, id } => lifecycle::delete(log, &root, &id, force).map(|()| 0),
        Command::Exec(args) => exec::exec(&root, &args),
        Command::Ps {
            format,
            id,
            ps_args,
        } => lifecycle::ps(&root, &id, &format, &ps_args).map(|()| 0),
        Command::List { format, quiet } => lifecycle::list(&root, &format, quiet).map(|()| 0),
        Command::Pause { id } => lifecycle::pause(&root, &id, true).map(|()| 0),
        Command::Resume { id } => lifecycle::pause(&root, &id, false).map(|()| 0),
        Command::Update(args) => update::update(&root, &args).map(|()| 0),
        Command::Spec { bundle, rootless } => info::spec(bundle.as_deref(), rootless).map(|()| 0),
        Command::Features => info::features().map(|()| 0),
        Command::Checkpoint { .. } => Err(OciError::NotSupported("checkpoint (CRIU)")),
        Command::Restore { .. } => Err(OciError::NotSupported("restore (CRIU)")),
        Command::Events { .. } => Err(OciError::NotSupported("events")),
    }
}
