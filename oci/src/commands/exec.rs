//! `exec`: a new process in a running container, from `--process FILE` or from the command
//! line over the container's own process settings (as runc builds it).

use std::path::{Path, PathBuf};

use clap::Args;
use oci_spec::runtime::{Capability, Process};

use crate::error::OciError;
use crate::state::{Container, Status};

#[derive(Debug, Clone, Args)]
pub struct ExecArgs {
    /// A runtime-spec process JSON file (`-` for stdin); replaces the command line's.
    #[arg(short, long)]
    pub process: Option<PathBuf>,
    /// Unix socket that gets the pty master with --tty.
    #[arg(long = "console-socket")]
    pub console_socket: Option<PathBuf>,
    /// Write the new process's pid here.
    #[arg(long = "pid-file")]
    pub pid_file: Option<PathBuf>,
    /// Return once the command has started.
    #[arg(short, long)]
    pub detach: bool,
    /// Allocate a pty.
    #[arg(short, long)]
    pub tty: bool,
    /// Working directory.
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// Environment variables (KEY=VALUE), added to the container's.
    #[arg(short, long)]
    pub env: Vec<String>,
    /// UID[:GID].
    #[arg(short, long)]
    pub user: Option<String>,
    /// Additional gids.
    #[arg(short = 'g', long = "additional-gids")]
    pub additional_gids: Vec<u32>,
    /// Add a capability.
    #[arg(short, long)]
    pub cap: Vec<String>,
    /// Set no_new_privs.
    #[arg(long = "no-new-privs")]
    pub no_new_privs: bool,
    /// Accepted: AppArmor is not enforced by gcr-oci.
    #[arg(short, long)]
    pub apparmor: Option<String>,
    /// Accepted: SELinux is not enforced by gcr-oci.
    #[arg(long = "process-label")]
    pub process_label: Option<String>,
    /// Pass this many fds beyond stdio.
    #[arg(long = "preserve-fds", default_value_t = 0)]
    pub preserve_fds: u32,
    pub id: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// The process the command line describes, over the container's own.
fn process_from_args(base: Option<Process>, args: &ExecArgs) -> Result<Process, OciError> {
    if args.command.is_empty() {
        return Err(OciError::Usage(
            "exec needs a command (or --process FILE)".into(),
        ));
    }
    let mut p = base.unwrap_or_default();
    p.set_args(Some(args.command.clone()));
    p.set_terminal(Some(args.tty));
    if let Some(cwd) = &args.cwd {
        p.set_cwd(cwd.clone());
    }
    let mut env = p.env().clone().unwrap_or_default();
    env.extend(args.env.iter().cloned());
    p.set_env(Some(env));
    if let Some(user) = &args.user {
        let (uid, gid) = user.split_once(':').unwrap_or((user, "0"));
        let bad = || OciError::Usage(format!("--user {user:?}: use UID[:GID] (numbers)"));
        let mut u = p.user().clone();
        u.set_uid(uid.parse().map_err(|_| bad())?);
        u.set_gid(gid.parse().map_err(|_| bad())?);
        p.set_user(u);
    }
    if !args.additional_gids.is_empty() {
        let mut u = p.user().clone();
        u.set_additional_gids(Some(args.additional_gids.clone()));
        p.set_user(u);
    }
    if !args.cap.is_empty() {
        let mut caps = p.capabilities().clone().unwrap_or_default();
        for name in &args.cap {
            let cap: Capability = gcr_runtime::parse_capability(name)
                .ok_or_else(|| OciError::Usage(format!("unknown capability {name:?}")))?;
            let add = |s: &Option<oci_spec::runtime::Capabilities>| {
                let mut s = s.clone().unwrap_or_default();
                s.insert(cap);
                Some(s)
            };
            let (b, e, pm) = (
                add(caps.bounding()),
                add(caps.effective()),
                add(caps.permitted()),
            );
            caps.set_bounding(b);
            caps.set_effective(e);
            caps.set_permitted(pm);
        }
        p.set_capabilities(Some(caps));
    }
    if args.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    Ok(p)
}

/// `exec`: in the foreground the command's exit status; with --detach 0 once it started.
pub fn exec(root: &Path, args: &ExecArgs) -> Result<i32, OciError> {
    let container = Container::load(root, &args.id)?;
    match container.status() {
        Status::Running | Status::Created => {}
        other => {
            return Err(OciError::WrongState {
                id: args.id.clone(),
                status: other.as_str(),
                action: "exec in it",
            })
        }
    }
    let mut spec = container.spec()?;
    let process = match &args.process {
        Some(path) => crate::spec::read_json(path, "process")?,
        None => process_from_args(spec.process().clone(), args)?,
    };
    let tty = process.terminal().unwrap_or(false);
    if tty && args.detach && args.console_socket.is_none() {
        return Err(OciError::Usage(
            "cannot allocate a tty for a detached exec without a --console-socket".into(),
        ));
    }
    spec.set_process(Some(process));
    let opts = gcr_runtime::ExecOptions {
        tty,
        stdin: true,
        user: None,
        started_fd: None,
        console_socket: args.console_socket.clone(),
        pid_file: args.pid_file.clone(),
        oci: true,
        timeout: None,
    };
    if args.preserve_fds > 0 {
        return Err(OciError::NotSupported("exec --preserve-fds"));
    }
    if args.detach {
        gcr_runtime::exec_detached_oci(&spec, container.record.pid, &opts)?;
        return Ok(0);
    }
    Ok(gcr_runtime::exec_in(&spec, container.record.pid, &opts)?)
}
