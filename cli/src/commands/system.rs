//! `gcr system check|df|prune`: store maintenance; `gcr system service`: the Docker Engine
//! API on a socket (gcr-api).

use std::io::{BufRead, IsTerminal};

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};

use crate::context::Context;
use crate::format::{human_size, table};

#[derive(Subcommand, Debug)]
pub enum SystemCommand {
    /// Verify every blob and unpacked layer in the store
    Check(CheckArgs),
    /// Show how much disk space the store uses
    Df,
    /// Remove unused data
    Prune(PruneArgs),
    /// Serve the Docker Engine API on a socket (for docker -H, Compose, the SDKs)
    Service(ServiceArgs),
}

#[derive(Args, Debug)]
pub struct ServiceArgs {
    /// Stop after this many seconds without a request (0: never)
    #[arg(short, long, default_value_t = 5)]
    time: u64,
    /// unix:///path/to.sock or tcp://127.0.0.1:PORT (default /run/gcr/gcr.sock as root,
    /// $XDG_RUNTIME_DIR/gcr/gcr.sock otherwise)
    uri: Option<String>,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Remove whatever is broken (and names pointing at it)
    #[arg(long)]
    repair: bool,
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Also remove every image no container uses, not only unnamed ones
    #[arg(short, long)]
    all: bool,
    /// Do not ask for confirmation
    #[arg(short, long)]
    force: bool,
    /// Also remove named volumes no container uses
    #[arg(long)]
    volumes: bool,
}

pub fn system(ctx: &Context, cmd: SystemCommand) -> anyhow::Result<u8> {
    match cmd {
        SystemCommand::Check(args) => check(ctx, args),
        SystemCommand::Df => df(ctx),
        SystemCommand::Prune(args) => prune(ctx, args),
        SystemCommand::Service(args) => service(ctx, args),
    }
}

/// The default socket: Podman's places, under gcr's name.
fn default_socket() -> std::path::PathBuf {
    if nix::unistd::geteuid().is_root() {
        return "/run/gcr/gcr.sock".into();
    }
    let runtime_dir = std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|d| !d.is_empty())
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| format!("/tmp/gcr-{}", nix::unistd::geteuid()).into());
    runtime_dir.join("gcr/gcr.sock")
}

fn service(ctx: &Context, args: ServiceArgs) -> anyhow::Result<u8> {
    let listen = match &args.uri {
        Some(uri) => gcr_api::Listen::parse(uri)?,
        None => gcr_api::Listen::Unix(default_socket()),
    };
    // Opened once here so that a store that cannot be opened fails now, not per request.
    ctx.open_store()?;
    let opts = gcr_api::ServiceOptions {
        store_root: ctx.root.clone(),
        listen,
        idle: (args.time > 0).then(|| std::time::Duration::from_secs(args.time)),
        worker_exe: std::env::current_exe()
            .context("cannot find the gcr binary to start workers with")?,
    };
    // A client that hangs up must cost its connection, not the service (gcr's default
    // SIGPIPE action ends the process; workers set it back to the default for themselves).
    gcr_runtime::ignore_sigpipe();
    // Rootless: the service, its workers and the gcr commands run beside it share the
    // rootless network namespace's user namespace, so their user networks are one.
    if let Err(err) = gcr_runtime::prepare_rootless_networks() {
        tracing::warn!("rootless user networks will not work: {err}");
    }
    let served = crate::context::tokio_runtime()?.block_on(gcr_api::serve(opts));
    gcr_runtime::release_rootless_networks();
    served?;
    Ok(0)
}

fn check(ctx: &Context, args: CheckArgs) -> anyhow::Result<u8> {
    let store = ctx.open_store()?;
    let report = store.check(args.repair)?;
    if report.problems.is_empty() {
        println!(
            "store {} is consistent: {} blobs, {} layers, {} images checked",
            store.root().display(),
            report.blobs_checked,
            report.layers_checked,
            report.images_checked
        );
        return Ok(0);
    }
    for problem in &report.problems {
        let state = if problem.repaired { " (removed)" } else { "" };
        println!(
            "{} {}: {}{state}",
            problem.kind, problem.subject, problem.detail
        );
    }
    if args.repair {
        println!("repaired {} problem(s)", report.problems.len());
        Ok(0)
    } else {
        eprintln!(
            "error: {} problem(s) found; run `gcr system check --repair` to remove what is broken",
            report.problems.len()
        );
        Ok(1)
    }
}

fn df(ctx: &Context) -> anyhow::Result<u8> {
    let store = ctx.open_store()?;
    let usage = store.disk_usage()?;
    let row = |kind: &str, entry: &gcr_storage::UsageEntry| {
        vec![
            kind.to_string(),
            entry.count.to_string(),
            entry.active.to_string(),
            human_size(entry.size),
            human_size(entry.reclaimable),
        ]
    };
    // The store cannot tell a live container from a stopped one, nor which volume is used:
    // the container records can.
    let (containers, volumes) = gcr_containers::usage(&store)?;
    let rows = vec![
        row("Images", &usage.images),
        row("Containers", &containers),
        row("Local Volumes", &volumes),
        row("Build Cache", &usage.build_cache),
    ];
    print!(
        "{}",
        table(&["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"], &rows)
    );
    Ok(0)
}

fn prune(ctx: &Context, args: PruneArgs) -> anyhow::Result<u8> {
    if !args.force {
        let images = if args.all {
            "all images without a container"
        } else {
            "unnamed images"
        };
        let volumes = if args.volumes { ", unused volumes" } else { "" };
        let what = format!(
            "stopped containers, {images}{volumes}, unused layers and blobs, and stale temporary files"
        );
        if !std::io::stdin().is_terminal() {
            bail!("prune removes {what}; confirm with -f when not on a terminal");
        }
        eprint!("WARNING! This will remove {what}.\nAre you sure you want to continue? [y/N] ");
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Ok(0);
        }
    }
    let store = ctx.open_store()?;
    // As `docker system prune`: stopped containers go first, then what they held.
    for id in gcr_containers::remove_stopped(&store)? {
        println!("Deleted container: {id}");
    }
    if args.volumes {
        for name in gcr_containers::prune_volumes(&store)? {
            println!("Deleted volume: {name}");
        }
    }
    let report = store.prune(args.all)?;
    crate::commands::images::print_prune_report(&report);
    Ok(0)
}
