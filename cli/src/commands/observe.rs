//! `gcr top` and `gcr port`: what a container runs and publishes.

use anyhow::{bail, Context as _};
use clap::Args;

use crate::context::Context;
use crate::format::table;

#[derive(Args, Debug)]
pub struct TopArgs {
    #[arg(value_name = "CONTAINER")]
    container: String,
}

/// `gcr top`: the container's processes (those in its PID namespace), as the host sees them.
pub fn top(ctx: &Context, args: TopArgs) -> anyhow::Result<u8> {
    let store = ctx.open_store()?;
    let c = gcr_containers::lookup(&store, &args.container)?;
    let rows: Vec<Vec<String>> = gcr_containers::processes(&c)?
        .into_iter()
        .map(|p| vec![p.uid, p.pid.to_string(), p.ppid, p.command])
        .collect();
    print!("{}", table(&["UID", "PID", "PPID", "CMD"], &rows));
    Ok(0)
}

#[derive(Args, Debug)]
pub struct PortArgs {
    #[arg(value_name = "CONTAINER")]
    container: String,
    /// Only this container port: PORT[/tcp]
    #[arg(value_name = "PRIVATE_PORT[/PROTO]")]
    port: Option<String>,
}

/// `gcr port`: the container's published ports, as Docker prints them.
pub fn port(ctx: &Context, args: PortArgs) -> anyhow::Result<u8> {
    let store = ctx.open_store()?;
    let c = gcr_containers::lookup(&store, &args.container)?;
    let wanted = match &args.port {
        None => None,
        Some(p) => {
            let (number, proto) = p.split_once('/').unwrap_or((p, "tcp"));
            let number: u16 = number
                .parse()
                .with_context(|| format!("invalid port {p:?}: use PORT[/tcp]"))?;
            if proto != "tcp" {
                bail!("no {proto} port is published: gcr publishes tcp ports only");
            }
            Some(number)
        }
    };
    let shown: Vec<_> = c
        .meta
        .ports
        .iter()
        .filter(|p| wanted.is_none_or(|w| w == p.container_port))
        .collect();
    if shown.is_empty() {
        if let Some(w) = wanted {
            bail!("no public port {w}/tcp published for {}", c.display_name());
        }
    }
    for p in shown {
        let host = if p.host_ip.contains(':') {
            format!("[{}]:{}", p.host_ip, p.host_port)
        } else {
            format!("{}:{}", p.host_ip, p.host_port)
        };
        if wanted.is_some() {
            println!("{host}");
        } else {
            println!("{}/tcp -> {host}", p.container_port);
        }
    }
    Ok(0)
}
