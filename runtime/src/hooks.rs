//! OCI lifecycle hooks: each hook is a program run with the container's state JSON on its
//! stdin, its own args and env, and an optional timeout; a failing hook fails the step it
//! belongs to (runtime-spec "Lifecycle"). Where the hook runs (the runtime's namespaces or
//! the container's) is the caller's choice of process, not this module's.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::Hook;

use crate::error::RuntimeError;

/// Runs `hooks` in order with `state` (the OCI state JSON) on stdin. `stage` names the hook
/// kind in errors (`prestart`, `createRuntime`, ...).
pub fn run_hooks(stage: &str, hooks: &[Hook], state: &str) -> Result<(), RuntimeError> {
    for (index, hook) in hooks.iter().enumerate() {
        run_hook(stage, index, hook, state)?;
    }
    Ok(())
}

/// Runs every hook of `hooks` whatever happens to the others, and gives back the failures
/// (poststart and poststop: a failure is a warning, the remaining hooks still run).
pub fn run_all_hooks(stage: &str, hooks: &[Hook], state: &str) -> Vec<RuntimeError> {
    hooks
        .iter()
        .enumerate()
        .filter_map(|(index, hook)| run_hook(stage, index, hook, state).err())
        .collect()
}

fn run_hook(stage: &str, index: usize, hook: &Hook, state: &str) -> Result<(), RuntimeError> {
    let path = hook.path();
    let fail = |what: String| RuntimeError::Hook {
        stage: stage.to_string(),
        index,
        path: path.clone(),
        message: what,
    };
    let mut command = Command::new(path);
    let args = hook.args().clone().unwrap_or_default();
    // args[0] is the program's own name (argv[0]), as in execv.
    if let Some((arg0, rest)) = args.split_first() {
        std::os::unix::process::CommandExt::arg0(&mut command, arg0);
        command.args(rest);
    }
    command.env_clear();
    for entry in hook.env().iter().flatten() {
        if let Some((key, value)) = entry.split_once('=') {
            command.env(key, value);
        }
    }
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        // The hook's messages go where the runtime's go (the caller's log).
        .stderr(Stdio::inherit());
    let mut child = command
        .spawn()
        .map_err(|e| fail(format!("cannot run it: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is allowed: ignore EPIPE.
        let _ = stdin.write_all(state.as_bytes());
    }
    let deadline = hook
        .timeout()
        .filter(|t| *t > 0)
        .map(|t| Instant::now() + Duration::from_secs(t as u64));
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => return Err(fail(format!("wait: {e}"))),
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(fail(format!(
                "timed out after {} s",
                hook.timeout().unwrap_or_default()
            )));
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    if !status.success() {
        return Err(fail(status.to_string()));
    }
    Ok(())
}
