//! `exec`: a command in a running container's namespaces and cgroups, with its security
//! settings (capabilities, seccomp, no_new_privileges) and environment.

use crate::container::Container;
use crate::error::{ContainerError, Result};

/// What to run in the container.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ExecRequest {
    pub command: Vec<String>,
    /// KEY=VALUE entries over the container's environment.
    pub env: Vec<String>,
    /// Default: the container's user.
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub privileged: bool,
    pub tty: bool,
    pub stdin: bool,
    /// Killed after this many milliseconds (a healthcheck's timeout).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// The container's PID 1 and the spec an exec into it runs with.
fn exec_spec(c: &Container, request: &ExecRequest) -> Result<(i32, gcr_runtime::Spec)> {
    if !c.alive() {
        return Err(ContainerError::NotRunning(c.display_name()));
    }
    crate::lifecycle::refuse_if_paused(c, "exec in")?;
    let pid = c.pid().ok_or_else(|| {
        ContainerError::State(format!(
            "container {} has no recorded process yet",
            c.display_name()
        ))
    })?;
    let mut spec = c.spec()?;
    if request.privileged {
        gcr_runtime::set_privileged(&mut spec);
    }
    let mut process = spec.process().clone().ok_or_else(|| {
        ContainerError::State(format!(
            "the spec of container {} has no process",
            c.display_name()
        ))
    })?;
    let env = crate::spec::merge_env(&process.env().clone().unwrap_or_default(), &request.env);
    process.set_env(Some(env));
    process.set_args(Some(request.command.clone()));
    if let Some(dir) = &request.workdir {
        if !dir.starts_with('/') {
            return Err(ContainerError::invalid(format!(
                "working directory {dir:?} must be an absolute path"
            )));
        }
        process.set_cwd(dir.into());
    }
    process.set_terminal(Some(request.tty));
    spec.set_process(Some(process));
    Ok((pid.as_raw(), spec))
}

fn exec_options(c: &Container, request: &ExecRequest) -> gcr_runtime::ExecOptions {
    gcr_runtime::ExecOptions {
        tty: request.tty,
        stdin: request.stdin,
        user: request.user.clone().or_else(|| c.meta.user.clone()),
        started_fd: None,
        timeout: request.timeout_ms.map(std::time::Duration::from_millis),
        ..Default::default()
    }
}

/// Runs the command in the foreground; its exit status.
pub fn exec(c: &Container, request: &ExecRequest) -> Result<i32> {
    if request.command.is_empty() {
        return Err(ContainerError::invalid(
            "no command given to run in the container",
        ));
    }
    let (pid, spec) = exec_spec(c, request)?;
    Ok(gcr_runtime::exec_in(&spec, pid, &exec_options(c, request))?)
}

/// `exec -d`: a detached child (new session, output to /dev/null) runs the command; Ok
/// once it started.
pub fn exec_detached(c: &Container, request: &ExecRequest) -> Result<()> {
    use std::io::Write as _;
    use std::os::fd::AsRawFd as _;
    if request.stdin || request.tty {
        return Err(ContainerError::invalid(
            "gcr exec -d takes no -i or -t: a background command has no terminal or input",
        ));
    }
    let (pid, spec) = exec_spec(c, request)?;
    let mut options = exec_options(c, request);
    let (report_read, report_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|source| ContainerError::Sys {
            action: "make a pipe for the background command",
            source,
        })?;
    let mut report_read = std::fs::File::from(report_read);
    options.started_fd = Some(report_write.as_raw_fd());
    gcr_runtime::run_detached(move || {
        let mut report = std::fs::File::from(report_write);
        if let Err(err) = gcr_runtime::exec_in(&spec, pid, &options) {
            let _ = write!(report, "E{} {err}", err.exit_code());
        }
    })
    .map_err(|source| ContainerError::Sys {
        action: "start the command in the background",
        source,
    })?;
    crate::supervisor::await_start(&mut report_read).unwrap_or_else(|| {
        Err(ContainerError::State(
            "the background gcr ended before the command started".into(),
        ))
    })
}
