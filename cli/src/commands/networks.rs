//! `gcr network ls|inspect`: the networks a container can join. gcr has the built-in ones
//! only (`bridge` as root, `slirp4netns` rootless, `host`, `none`); user-defined networks are
//! not supported yet, and `create` says so.

use anyhow::bail;
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::format::table;

#[derive(Subcommand, Debug)]
pub enum NetworkCommand {
    /// List networks
    Ls(LsArgs),
    /// Show networks as JSON
    Inspect(NamesArgs),
    /// Create a network (not supported yet)
    Create(NamesArgs),
    /// Remove networks (the built-in ones cannot be removed)
    Rm(NamesArgs),
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

/// The built-in networks, as `network inspect` shows them.
fn networks() -> Vec<Value> {
    let rootless = gcr_runtime::userns::is_rootless();
    let private = if rootless {
        json!({
            "Name": "slirp4netns", "Driver": "slirp4netns", "Scope": "local",
            "IPAM": {"Config": [{"Subnet": "10.0.2.0/24", "Gateway": "10.0.2.2"}]},
            "Options": {"dns": gcr_runtime::SLIRP_DNS.to_string()},
        })
    } else {
        json!({
            "Name": "bridge", "Driver": "bridge", "Scope": "local",
            "IPAM": {"Config": [{"Subnet": "10.88.0.0/16", "Gateway": "10.88.0.1"}]},
            "Options": {"com.docker.network.bridge.name": gcr_runtime::BRIDGE},
        })
    };
    vec![
        private,
        json!({"Name": "host", "Driver": "host", "Scope": "local", "IPAM": {"Config": []}, "Options": {}}),
        json!({"Name": "none", "Driver": "null", "Scope": "local", "IPAM": {"Config": []}, "Options": {}}),
    ]
}

pub fn network(cmd: NetworkCommand) -> anyhow::Result<u8> {
    match cmd {
        NetworkCommand::Ls(args) => {
            let all = networks();
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
            let all = networks();
            let mut out = Vec::new();
            let mut failed = false;
            for name in &args.names {
                // `private` and `default` are the names `--network` also takes for it.
                let wanted = match name.as_str() {
                    "private" | "default" => all[0]["Name"].as_str().unwrap_or_default(),
                    other => other,
                };
                match all.iter().find(|n| n["Name"] == wanted) {
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
        NetworkCommand::Create(args) => bail!(
            "cannot create network {}: user-defined networks are not supported yet (containers use the built-in private network, host or none)",
            args.names.join(", ")
        ),
        NetworkCommand::Rm(args) => bail!(
            "cannot remove {}: gcr has only its built-in networks",
            args.names.join(", ")
        ),
    }
}
