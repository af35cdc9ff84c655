//! `gcr start|stop|restart|kill|wait|rm|rename|container prune`.

use anyhow::bail;
use clap::Args;

use super::each;
use crate::context::{status_byte, Context};

#[derive(Args, Debug)]
pub struct StartArgs {
    /// Stay attached: print the output and return the container's exit status
    #[arg(short, long)]
    attach: bool,
    #[arg(required = true, value_name = "CONTAINER")]
    pub containers: Vec<String>,
}

/// `gcr start`: runs a stopped container again, on its own upper directory, with the spec it
/// was created with; in the background (its output goes on into `gcr logs`) unless `-a`.
pub fn start(ctx: &Context, args: StartArgs) -> anyhow::Result<u8> {
    let store = ctx.open_store()?;
    let all = gcr_containers::list(&store)?;
    if args.attach && args.containers.len() > 1 {
        bail!("gcr start -a takes one container");
    }
    let mut status = 0;
    let result = each(&args.containers, |wanted| {
        let c = gcr_containers::find(&all, wanted)?;
        if c.alive() {
            println!("{wanted}");
            return Ok(());
        }
        let launch = gcr_containers::prepare_start(&store, c)?;
        if args.attach {
            status = match launch.run_attached() {
                Ok(code) => status_byte(code),
                Err(err) => {
                    eprintln!("error: {err}");
                    u8::try_from(err.exit_code()).unwrap_or(crate::context::EXIT_GCR_FAILED)
                }
            };
            return Ok(());
        }
        if let Err(err) = launch.start_detached() {
            if let gcr_containers::ContainerError::StartFailed { code, message } = &err {
                eprintln!("error: {message}");
                status = u8::try_from(*code).unwrap_or(crate::context::EXIT_GCR_FAILED);
                bail!("container {} did not start", c.display_name());
            }
            return Err(err.into());
        }
        println!("{wanted}");
        Ok(())
    })?;
    // With -a the container's status, unless it could not even start (then each's failure).
    Ok(if args.attach && result == 0 {
        status
    } else {
        result.max(status.min(1))
    })
}

#[derive(Args, Debug)]
pub struct StopArgs {
    /// Seconds to wait for the container to end before killing it (default: its
    /// --stop-timeout, else 10)
    #[arg(
        short = 't',
        long = "time",
        visible_alias = "timeout",
        value_name = "SECONDS"
    )]
    time: Option<u64>,
    #[arg(required = true, value_name = "CONTAINER")]
    pub containers: Vec<String>,
}

/// `gcr stop`: the image's STOPSIGNAL (SIGTERM by default), then SIGKILL after the timeout.
pub fn stop(ctx: &Context, args: StopArgs) -> anyhow::Result<u8> {
    let store = ctx.open_store()?;
    let all = gcr_containers::list(&store)?;
    each(&args.containers, |wanted| {
        gcr_containers::stop(&store, gcr_containers::find(&all, wanted)?, args.time)?;
        println!("{wanted}");
        Ok(())
    })
}

/// `gcr restart`: stop (if running), then start in the background.
pub fn restart(ctx: &Context, args: StopArgs) -> anyhow::Result<u8> {
    let store = ctx.open_store()?;
    let all = gcr_containers::list(&store)?;
    each(&args.containers, |wanted| {
        let c = gcr_containers::find(&all, wanted)?;
        if let Err(err) = gcr_containers::restart(&store, c, args.time) {
            if let gcr_containers::ContainerError::StartFailed { message, .. } = &err {
                eprintln!("error: {message}");
                bail!("container {} did not start again", c.display_name());
            }
            return Err(err.into());
        }
        println!("{wanted}");
        Ok(())
    })
}

#[derive(Args, Debug)]
pub struct KillArgs {
    /// Signal to send
    #[arg(short, long, default_value = "SIGKILL")]
    signal: String,
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

/// `gcr kill`: a signal to the container's PID 1.
pub fn kill(ctx: &Context, args: KillArgs) -> anyhow::Result<u8> {
    let store = ctx.open_store()?;
    let all = gcr_containers::list(&store)?;
    let signal = gcr_containers::parse_signal(&args.signal)?;
    each(&args.containers, |wanted| {
        gcr_containers::kill(&store, gcr_containers::find(&all, wanted)?, signal)?;
        println!("{wanted}");
        Ok(())
    })
}

#[derive(Args, Debug)]
pub struct PauseArgs {
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

/// `gcr pause`: freezes every process of the containers (the cgroup freezer).
pub fn pause(ctx: &Context, args: PauseArgs) -> anyhow::Result<u8> {
    let store = ctx.open_store()?;
    let all = gcr_containers::list(&store)?;
    each(&args.containers, |wanted| {
        gcr_containers::pause(&store, gcr_containers::find(&all, wanted)?)?;
        println!("{wanted}");
        Ok(())
    })
}

/// `gcr unpause`: thaws paused containers.
pub fn unpause(ctx: &Context, args: PauseArgs) -> anyhow::Result<u8> {
    let store = ctx.open_store()?;
    let all = gcr_containers::list(&store)?;
    each(&args.containers, |wanted| {
        gcr_containers::unpause(&store, gcr_containers::find(&all, wanted)?)?;
        println!("{wanted}");
        Ok(())
    })
}

#[derive(Args, Debug)]
pub struct WaitArgs {
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

/// `gcr wait`: blocks until each container ends and prints its exit status.
pub fn wait(ctx: &Context, args: WaitArgs) -> anyhow::Result<u8> {
    let store = ctx.open_store()?;
    let all = gcr_containers::list(&store)?;
    each(&args.containers, |wanted| {
        let code = gcr_containers::wait(gcr_containers::find(&all, wanted)?)?;
        println!("{code}");
        Ok(())
    })
}

#[derive(Args, Debug)]
pub struct RmArgs {
    /// Kill a running container first
    #[arg(short, long)]
    force: bool,
    /// Also remove the container's anonymous volumes (`-v /data`, the image's VOLUMEs);
    /// named volumes stay
    #[arg(short, long)]
    volumes: bool,
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

/// `gcr rm`: stopped containers (running ones too with -f).
pub fn rm(ctx: &Context, args: RmArgs) -> anyhow::Result<u8> {
    let store = ctx.open_store()?;
    let all = gcr_containers::list(&store)?;
    each(&args.containers, |wanted| {
        let c = match gcr_containers::find(&all, wanted) {
            Ok(c) => c,
            // As Docker: removing what is not there with -f is not an error.
            Err(_) if args.force => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        gcr_containers::remove(&store, c, args.force)?;
        if args.volumes {
            gcr_containers::remove_anonymous_volumes(&store, &c.meta);
        }
        println!("{}", c.meta.name.clone().unwrap_or_else(|| c.id.clone()));
        Ok(())
    })
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Do not ask for confirmation (accepted for Docker's habit; gcr does not ask here)
    #[arg(short, long)]
    force: bool,
}

/// `gcr container prune`: every stopped container.
pub fn prune(ctx: &Context, _args: PruneArgs) -> anyhow::Result<u8> {
    let store = ctx.open_store()?;
    for id in gcr_containers::remove_stopped(&store)? {
        println!("Deleted container: {id}");
    }
    Ok(0)
}

#[derive(Args, Debug)]
pub struct RenameArgs {
    #[arg(value_name = "CONTAINER")]
    container: String,
    #[arg(value_name = "NEW_NAME")]
    name: String,
}

/// `gcr rename`: a new name, unique as for `--name`.
pub fn rename(ctx: &Context, args: RenameArgs) -> anyhow::Result<u8> {
    let store = ctx.open_store()?;
    let c = gcr_containers::lookup(&store, &args.container)?;
    gcr_containers::rename(&store, &c, &args.name)?;
    Ok(0)
}

#[derive(Args, Debug)]
pub struct UpdateArgs {
    /// Memory limit: N[b|k|m|g]
    #[arg(short, long, value_name = "SIZE")]
    memory: Option<String>,
    /// Memory and swap together: N[b|k|m|g], or -1 for unlimited swap
    #[arg(long, value_name = "SIZE", allow_hyphen_values = true)]
    memory_swap: Option<String>,
    /// CPUs the container may use, e.g. 0.5 or 2
    #[arg(long, value_name = "N")]
    cpus: Option<f64>,
    /// Relative CPU weight
    #[arg(short = 'c', long, value_name = "N")]
    cpu_shares: Option<u64>,
    /// Largest number of processes (-1: unlimited)
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pids_limit: Option<i64>,
    /// Restart policy: no, always, unless-stopped, on-failure[:MAX]
    #[arg(long, value_name = "POLICY")]
    restart: Option<String>,
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

/// `gcr update`: new limits (written into a running container's cgroups at once) and
/// restart policy, kept in the record for inspect and the next start.
pub fn update(ctx: &Context, args: UpdateArgs) -> anyhow::Result<u8> {
    let changes = gcr_containers::UpdateOptions {
        memory: args
            .memory
            .as_deref()
            .map(gcr_containers::parse_memory)
            .transpose()?,
        memory_swap: args
            .memory_swap
            .as_deref()
            .map(super::run::parse_memory_swap)
            .transpose()?,
        cpus: args.cpus,
        cpu_shares: args.cpu_shares,
        pids_limit: args.pids_limit,
        restart: args.restart.clone(),
    };
    let store = ctx.open_store()?;
    let all = gcr_containers::list(&store)?;
    each(&args.containers, |wanted| {
        gcr_containers::update(&store, gcr_containers::find(&all, wanted)?, &changes)?;
        println!("{wanted}");
        Ok(())
    })
}
