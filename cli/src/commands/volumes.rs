//! `gcr volume ls|create|inspect|rm|prune`: named volumes (`-v NAME:/path`).

use clap::{Args, Subcommand};

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
            gcr_containers::create_volume(&store, &args.name, &Default::default())?;
            println!("{}", args.name);
            Ok(0)
        }
        VolumeCommand::Inspect(args) => {
            let mut out = Vec::new();
            for name in &args.names {
                out.push(gcr_containers::volume_info(&store, name)?);
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(0)
        }
        VolumeCommand::Rm(args) => {
            let mut failed = false;
            for name in &args.names {
                let result = (|| -> anyhow::Result<()> {
                    // As Docker: with -f a volume that is not there is no error.
                    if args.force && !store.volume_dir(name)?.exists() {
                        return Ok(());
                    }
                    gcr_containers::remove_volume(&store, name, args.force)?;
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
            for name in gcr_containers::prune_volumes(&store)? {
                println!("Deleted volume {name}");
            }
            Ok(0)
        }
    }
}
