//! `gcr exec`: a command in a running container.

use anyhow::Context as _;
use clap::Args;

use crate::context::{status_byte, Context};

#[derive(Args, Debug)]
#[command(disable_help_flag = true)]
pub struct ExecArgs {
    /// Print help
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// Keep standard input open
    #[arg(short, long)]
    interactive: bool,
    /// Allocate a pseudo-terminal
    #[arg(short, long)]
    tty: bool,
    /// Run the command in the background (its output is discarded, as Docker's)
    #[arg(short, long)]
    detach: bool,
    /// Set an environment variable: KEY=VALUE, or KEY to take gcr's own value (repeatable)
    #[arg(short, long, value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Run as this user[:group] (names from the container's /etc/passwd)
    #[arg(short, long, value_name = "USER[:GROUP]")]
    user: Option<String>,
    /// Working directory inside the container
    #[arg(short, long, value_name = "DIR")]
    workdir: Option<String>,
    /// Run the command with every capability, no seccomp filter
    #[arg(long)]
    privileged: bool,
    /// CONTAINER COMMAND [ARG...]
    #[arg(required = true, num_args = 2.., trailing_var_arg = true, value_name = "CONTAINER COMMAND")]
    args: Vec<String>,
}

/// `gcr exec`: a command in a running container's namespaces and cgroups, with its security
/// settings (capabilities, seccomp, no_new_privileges) and environment.
pub fn exec(ctx: &Context, args: ExecArgs) -> anyhow::Result<u8> {
    let store = ctx.open_store()?;
    let (wanted, command) = args.args.split_first().context("no container given")?;
    let c = gcr_containers::lookup(&store, wanted)?;
    let request = gcr_containers::ExecRequest {
        command: command.to_vec(),
        env: gcr_containers::resolve_env(args.env.clone(), |k| std::env::var(k).ok()),
        user: args.user.clone(),
        workdir: args.workdir.clone(),
        privileged: args.privileged,
        tty: args.tty,
        stdin: args.interactive,
        timeout_ms: None,
    };
    if args.detach {
        gcr_containers::exec_detached(&c, &request)?;
        return Ok(0);
    }
    // A failure to start keeps its status (126, 127): see context::exit_code.
    Ok(status_byte(gcr_containers::exec(&c, &request)?))
}
