//! gcr-oci: gcr's runtime (gcr-runtime) behind the runc command line, so that Podman
//! (`--runtime`), containerd (`BinaryName`, `ctr run --runc-binary`) and CRI-O run
//! containers with it. A front end: the container logic lives in gcr-runtime; this crate
//! parses runc's flags, keeps each container's record under `--root` and maps commands onto
//! the runtime's create/start split.

#![deny(unsafe_code)]

mod commands;
mod error;
mod log;
mod spec;
mod state;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use error::OciError;

/// The runtime-spec version gcr-oci implements.
pub const OCI_VERSION: &str = "1.1.0";

#[derive(Debug, Parser)]
#[command(
    name = "gcr-oci",
    about = "gcr's container runtime behind the runc command line (the OCI runtime CLI)",
    version = None,
    disable_version_flag = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    /// Print the version.
    #[arg(short = 'v', long = "version", global = true)]
    pub version: bool,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// runc's global flags.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// Where containers' state is kept (default /run/gcr-oci, rootless
    /// $XDG_RUNTIME_DIR/gcr-oci).
    #[arg(long, global = true)]
    pub root: Option<PathBuf>,
    /// Log file (default: stderr).
    #[arg(long, global = true)]
    pub log: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long = "log-format", global = true, default_value = "text")]
    pub log_format: String,
    /// Accepted for runc's callers; gcr-oci manages cgroups through cgroupfs.
    #[arg(long = "systemd-cgroup", global = true)]
    pub systemd_cgroup: bool,
    /// Debug logging.
    #[arg(long, global = true)]
    pub debug: bool,
    /// Accepted for runc's callers (true, false, auto); gcr-oci decides from its own uid.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub rootless: Option<String>,
    /// Accepted for runc's callers; checkpointing is not supported.
    #[arg(long, global = true, hide = true)]
    pub criu: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a container from a bundle; its process waits for `start`.
    Create(CreateArgs),
    /// Start the command of a created container.
    Start { id: String },
    /// Create and start a container (in the foreground unless --detach).
    Run {
        #[command(flatten)]
        create: CreateArgs,
        /// Return once the command has started.
        #[arg(short, long)]
        detach: bool,
        /// Keep the container's record after it exits.
        #[arg(long = "keep")]
        keep: bool,
    },
    /// Print a container's OCI state as JSON.
    State { id: String },
    /// Send a signal (default SIGTERM) to a container's process.
    Kill {
        /// Signal every process of the container.
        #[arg(short, long)]
        all: bool,
        id: String,
        signal: Option<String>,
    },
    /// Delete a stopped (or created) container; --force kills a running one first.
    Delete {
        #[arg(short, long)]
        force: bool,
        id: String,
    },
    /// Run a new process in a running container.
    Exec(commands::exec::ExecArgs),
    /// List the processes of a container.
    Ps {
        /// table or json.
        #[arg(short, long, default_value = "table")]
        format: String,
        id: String,
        /// Options for ps(1) (default -ef).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// List the containers.
    List {
        /// table or json.
        #[arg(short, long, default_value = "table")]
        format: String,
        /// Only the ids.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Freeze every process of a container.
    Pause { id: String },
    /// Thaw a paused container.
    Resume { id: String },
    /// Change a running container's resource limits.
    Update(commands::update::UpdateArgs),
    /// Write a default config.json.
    Spec {
        /// Where to write it (default: the current directory).
        #[arg(short, long)]
        bundle: Option<PathBuf>,
        /// A spec for an unprivileged caller (user namespace mapping its own ids).
        #[arg(long)]
        rootless: bool,
    },
    /// Print what this runtime implements, as JSON (runc's `features`).
    Features,
    /// Not supported: checkpointing needs CRIU.
    Checkpoint {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        rest: Vec<String>,
    },
    /// Not supported: restoring needs CRIU.
    Restore {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        rest: Vec<String>,
    },
    /// Not supported yet: container events and statistics.
    Events {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        rest: Vec<String>,
    },
}

/// `create` and `run`.
#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    /// The bundle directory (holds config.json; default: the current directory).
    #[arg(short, long)]
    pub bundle: Option<PathBuf>,
    /// Write the container's pid here.
    #[arg(long = "pid-file")]
    pub pid_file: Option<PathBuf>,
    /// Unix socket that gets the pty master (SCM_RIGHTS) when process.terminal is set.
    #[arg(long = "console-socket")]
    pub console_socket: Option<PathBuf>,
    /// Do not use pivot_root (for a rootfs on ramfs).
    #[arg(long = "no-pivot")]
    pub no_pivot: bool,
    /// Accepted for runc's callers: gcr-oci does not use a keyring.
    #[arg(long = "no-new-keyring")]
    pub no_new_keyring: bool,
    /// Pass this many fds beyond stdio (3, 4, ...) to the container.
    #[arg(long = "preserve-fds", default_value_t = 0)]
    pub preserve_fds: u32,
    pub id: String,
}

/// Runs the command line `args` (argv, program name first) and returns the exit status.
pub fn main_with_args(args: Vec<String>) -> i32 {
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    if cli.version {
        print!("{}", commands::info::version());
        return 0;
    }
    let log = log::Log::new(&cli.global);
    let Some(command) = cli.command else {
        eprintln!("gcr-oci: no command given (try --help)");
        return 1;
    };
    match commands::run(&cli.global, &log, command) {
        Ok(code) => code,
        Err(e) => {
            log.error(&e.to_string());
            e.exit_code()
        }
    }
}
