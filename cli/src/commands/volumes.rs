//! `gcr volume ls|create|inspect|rm|prune`: named volumes (`-v NAME:/path`).

use anyhow::bail;
use clap::{Args, Subcommand};
use serde_json::json;

use crate::context::Context;
use crate::format::table;

#[derive(Subcommand, Debug)]
pub enum VolumeCommand {
    /// List volumes
    Ls(LsArgs),
    /// Create a volume (`-v NAME:/path` also creates it on first use)
    Create(NameArgs),
    /// Show volumes as JSON
    Inspect(NamesArgs),
    /// Remove volumes no container uses
    Rm(RmArgs),
    /// Remove every volume no container uses
    Prune(PruneArgs),
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Only print volume names
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Args, Debug)]
pub struct NameArgs {
    #[arg(value_name = "NAME")]
    name: String,
}

#[derive(Args, Debug)]
pub struct NamesArgs {
    #[arg(required = true, value_name = "NAME")]
    names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RmArgs {
    /// Remove even when containers use it (they keep a mount of deleted files)
    #[arg(short, long)]
    force: bool,
    #[arg(required = true, value_name = "NAME")]
    names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Do not ask for confirmation (there is nothing to ask here: accepted for Docker's habit)
    #[arg(short, long)]
    force: bool,
}

pub fn volume(ctx: &Context, cmd: VolumeCommand) -> anyhow::Result<u8> {
    let store = ctx.open_store()?;
    match cmd {
        VolumeCommand::Ls(args) => {
            let names = store.volumes()?;
            if args.quiet {
                for n in names {
                    println!("{n}");
                }
            } else {
                let rows: Vec<Vec<String>> = names
                    .into_iter()
                    .map(|n| vec!["local".to_string(), n])
                    .collect();
                print!("{}", table(&["DRIVER", "VOLUME NAME"], &rows));
            }
            Ok(0)
        }
        VolumeCommand::Create(args) => {
            store.create_volume(&args.name)?;
            println!("{}", args.name);
            Ok(0)
        }
        VolumeCommand::Inspect(args) => {
            let mut out = Vec::new();
            for name in &args.names {
                let dir = store.volume_dir(name)?;
                if !dir.is_dir() {
                    bail!("no such volume: {name} (see `gcr volume ls`)");
                }
                out.push(json!({
                    "Name": name,
                    "Driver": "local",
                    "Mountpoint": dir,
                    "Scope": "local",
                    "UsedBy": gcr_containers::using_source(&store, &dir)?,
                }));
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(0)
        }
        VolumeCommand::Rm(args) => {
            let mut failed = false;
            for name in &args.names {
                let result = (|| -> anyhow::Result<()> {
                    let dir = store.volume_dir(name)?;
                    // As Docker: with -f a volume that is not there is no error.
                    if args.force && !dir.exists() {
                        return Ok(());
                    }
                    let users = gcr_containers::using_source(&store, &dir)?;
                    if !users.is_empty() && !args.force {
                        bail!(
                            "volume {name} is used by container(s) {}: remove them first (`gcr rm`)",
                            users.join(", ")
                        );
                    }
                    store.remove_volume(name)?;
                    println!("{name}");
                    Ok(())
                })();
                if let Err(err) = result {
                    eprintln!("error: {}", crate::format::error_chain(&err));
                    failed = true;
                }
            }
            Ok(if failed { 1 } else { 0 })
        }
        VolumeCommand::Prune(_) => {
            for name in prune_unused(&store)? {
                println!("Deleted volume {name}");
            }
            Ok(0)
        }
    }
}

/// Removes every volume no container's spec mounts; returns their names.
pub fn prune_unused(store: &gcr_storage::Store) -> anyhow::Result<Vec<String>> {
    let mut removed = Vec::new();
    for name in store.volumes()? {
        let dir = store.volume_dir(&name)?;
        if gcr_containers::using_source(store, &dir)?.is_empty() {
            store.remove_volume(&name)?;
            removed.push(name);
        }
    }
    Ok(removed)
}
