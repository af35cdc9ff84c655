//! `gcr network create|ls|inspect|rm|prune`: the built-in networks (`bridge`: the gcr0
//! bridge as root, slirp4netns rootless; `host`, `none`) and user networks (rootless in the
//! rootless network namespace), whose members resolve each other by name.

use clap::{Args, Subcommand};
use serde_json::Value;

use crate::context::Context;
use crate::format::table;

#[derive(Subcommand, Debug)]
pub enum NetworkCommand {
    /// List networks
    Ls(LsArgs),
    /// Show networks as JSON
    Inspect(NamesArgs),
    /// Create a user network: its own bridge and subnet; its containers find each other by
    /// name and --network-alias
    Create(CreateArgs),
    /// Remove user networks (the built-in ones cannot be removed)
    Rm(NamesArgs),
    /// Remove every user network no container is on
    Prune(PruneArgs),
    /// Connect a container to a user network (a running one at once, on its next free
    /// ethN; every start after that too)
    Connect(ConnectArgs),
    /// Disconnect a container from a user network it was connected to
    Disconnect(DisconnectArgs),
}

#[derive(Args, Debug)]
pub struct ConnectArgs {
    /// More names the container has on this network (repeatable)
    #[arg(long = "alias", value_name = "ALIAS")]
    alias: Vec<String>,
    /// Its address on the network
    #[arg(long, value_name = "IPv4")]
    ip: Option<String>,
    #[arg(value_name = "NETWORK")]
    network: String,
    #[arg(value_name = "CONTAINER")]
    container: String,
}

#[derive(Args, Debug)]
pub struct DisconnectArgs {
    /// Accepted for Docker's sake (a running container is disconnected anyway)
    #[arg(short, long)]
    force: bool,
    #[arg(value_name = "NETWORK")]
    network: String,
    #[arg(value_name = "CONTAINER")]
    container: String,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Only print network names
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Args, Debug)]
pub struct NamesArgs {
    #[arg(required = true, value_name = "NETWORK")]
    names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// The network's IPv4 subnet (default: a free 10.89.N.0/24)
    #[arg(long, value_name = "CIDR")]
    subnet: Option<String>,
    /// The bridge's address (default: the subnet's first)
    #[arg(long, value_name = "IP")]
    gateway: Option<String>,
    /// No traffic out of the network: its members reach each other only
    #[arg(long)]
    internal: bool,
    /// Driver: bridge (the only one)
    #[arg(short, long, default_value = "bridge")]
    driver: String,
    /// Set a label: KEY=VALUE (repeatable)
    #[arg(long = "label", value_name = "KEY=VALUE")]
    label: Vec<String>,
    #[arg(value_name = "NAME")]
    name: String,
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Do not ask (gcr never asks)
    #[arg(short, long)]
    force: bool,
}

/// Every network's document: the built-in ones, then the user networks.
fn all_networks(store: &gcr_storage::Store) -> anyhow::Result<Vec<Value>> {
    let mut all = gcr_containers::builtin_networks();
    for record in gcr_containers::networks(store)? {
        all.push(gcr_containers::network_document(store, &record));
    }
    Ok(all)
}

pub fn network(ctx: &Context, cmd: NetworkCommand) -> anyhow::Result<u8> {
    let store = ctx.open_store()?;
    match cmd {
        NetworkCommand::Ls(args) => {
            let all = all_networks(&store)?;
            if args.quiet {
                for n in &all {
                    println!("{}", n["Name"].as_str().unwrap_or_default());
                }
            } else {
                let rows: Vec<Vec<String>> = all
                    .iter()
                    .map(|n| {
                        ["Name", "Driver", "Scope"]
                            .iter()
                            .map(|k| n[k].as_str().unwrap_or_default().to_string())
                            .collect()
                    })
                    .collect();
                print!("{}", table(&["NAME", "DRIVER", "SCOPE"], &rows));
            }
            Ok(0)
        }
        NetworkCommand::Inspect(args) => {
            let all = all_networks(&store)?;
            let mut out = Vec::new();
            let mut failed = false;
            for name in &args.names {
                // `private` and `default` are the names `--network` also takes for it.
                let wanted = match name.as_str() {
                    "private" | "default" | "slirp4netns" => {
                        all[0]["Name"].as_str().unwrap_or_default()
                    }
                    other => other,
                };
                match all
                    .iter()
                    .find(|n| n["Name"] == wanted || n["Id"] == wanted)
                {
                    Some(n) => out.push(n.clone()),
                    None => {
                        eprintln!("error: no such network: {name} (see `gcr network ls`)");
                        failed = true;
                    }
                }
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(if failed { 1 } else { 0 })
        }
        NetworkCommand::Create(args) => {
            if args.driver != "bridge" {
                anyhow::bail!(
                    "network driver {:?} is not supported: use bridge",
                    args.driver
                );
            }
            let options = gcr_containers::UserNetworkOptions {
                subnet: args.subnet,
                gateway: args.gateway,
                internal: args.internal,
                labels: gcr_containers::parse_labels(&args.label)?,
            };
            let record = gcr_containers::create_network(&store, &args.name, &options)?;
            println!("{}", record.id);
            Ok(0)
        }
        NetworkCommand::Rm(args) => {
            let mut failed = false;
            for name in &args.names {
                if gcr_containers::builtin_networks()
                    .iter()
                    .any(|n| n["Name"] == name.as_str())
                {
                    eprintln!("error: {name} is a built-in network: it cannot be removed");
                    failed = true;
                    continue;
                }
                match gcr_containers::remove_network(&store, name) {
                    Ok(()) => println!("{name}"),
                    Err(err) => {
                        eprintln!("error: {err}");
                        failed = true;
                    }
                }
            }
            Ok(if failed { 1 } else { 0 })
        }
        NetworkCommand::Connect(args) => {
            let all = gcr_containers::list(&store)?;
            let c = gcr_containers::find(&all, &args.container)?;
            let request = gcr_containers::NetworkRequest {
                network: args.network.clone(),
                aliases: args.alias,
                ip: args.ip,
            };
            gcr_containers::connect_network(&store, &args.network, c, &request)?;
            Ok(0)
        }
        NetworkCommand::Disconnect(args) => {
            let all = gcr_containers::list(&store)?;
            let c = gcr_containers::find(&all, &args.container)?;
            gcr_containers::disconnect_network(&store, &args.network, c)?;
            Ok(0)
        }
        NetworkCommand::Prune(_) => {
            for name in gcr_containers::prune_networks(&store)? {
                println!("Deleted Network: {name}");
            }
            Ok(0)
        }
    }
}
