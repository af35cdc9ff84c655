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
    /// Only this container port: PORT[/tcp|/udp]
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
                .with_context(|| format!("invalid port {p:?}: use PORT[/tcp|/udp]"))?;
            if !matches!(proto, "tcp" | "udp") {
                bail!("invalid port {p:?}: use PORT[/tcp|/udp]");
            }
            Some((number, proto.to_string()))
        }
    };
    let shown: Vec<_> = c
        .meta
        .ports
        .iter()
        .filter(|p| {
            wanted
                .as_ref()
                .is_none_or(|(n, proto)| *n == p.container_port && *proto == p.protocol)
        })
        .collect();
    if shown.is_empty() {
        if let Some((n, proto)) = wanted {
            bail!(
                "no public port {n}/{proto} published for {}",
                c.display_name()
            );
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
            println!("{} -> {host}", p.key());
        }
    }
    Ok(0)
}

#[derive(Args, Debug)]
pub struct EventsArgs {
    /// Show events from this time on: Unix seconds, an RFC 3339 time or a duration back
    /// from now (10m); without it only events from now on
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Stop at this time (same forms as --since); without it follow until interrupted
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// Filter: type=, event=, container=, image=, volume=, network=, label= (repeatable)
    #[arg(short, long = "filter", value_name = "KEY=VALUE")]
    filter: Vec<String>,
    /// Go template over each event (.Type, .Action, .Actor.ID, .Actor.Attributes, .time),
    /// or json
    #[arg(long, value_name = "TEMPLATE")]
    format: Option<String>,
}

/// `gcr events`: the store's event journal, replayed from --since and followed, as
/// `docker events` prints it.
pub fn events(ctx: &Context, args: EventsArgs) -> anyhow::Result<u8> {
    let store = ctx.open_store()?;
    let since = args
        .since
        .as_deref()
        .map(|t| gcr_containers::event_time("--since", t))
        .transpose()?;
    let until = args
        .until
        .as_deref()
        .map(|t| gcr_containers::event_time("--until", t))
        .transpose()?;
    let filters = gcr_containers::EventFilters::parse(&args.filter)?;
    let template = match args.format.as_deref() {
        None | Some("") => None,
        Some("json") => Some(crate::template::Template::parse("{{json .}}")?),
        Some(text) => Some(crate::template::Template::parse(text)?),
    };
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let mut failure = None;
    gcr_containers::follow_events(&store, since, until, &filters, |event| {
        let Some(event) = event else { return true };
        let line = match &template {
            Some(template) => {
                match serde_json::to_value(event)
                    .map_err(anyhow::Error::from)
                    .and_then(|v| template.render(&v))
                {
                    Ok(line) => line,
                    Err(err) => {
                        failure = Some(err);
                        return false;
                    }
                }
            }
            None => event_line(event),
        };
        // A reader that went away (a closed pipe) ends the follow.
        writeln!(out, "{line}").and_then(|()| out.flush()).is_ok()
    })?;
    match failure {
        Some(err) => Err(err),
        None => Ok(0),
    }
}

/// Docker's default line: `TIME TYPE ACTION ID (key=value, ...)`.
fn event_line(event: &gcr_storage::Event) -> String {
    let time = chrono::DateTime::from_timestamp_nanos(event.time_nano)
        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let attributes: Vec<String> = event
        .actor
        .attributes
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    format!(
        "{time} {} {} {} ({})",
        event.kind,
        event.action,
        event.actor.id,
        attributes.join(", ")
    )
}

#[derive(clap::Subcommand, Debug)]
pub enum HealthcheckCommand {
    /// Run the container's healthcheck once now and record the result (exit 0 healthy,
    /// 1 unhealthy), as `podman healthcheck run`
    Run {
        #[arg(value_name = "CONTAINER")]
        container: String,
    },
}

/// `gcr healthcheck run CONTAINER`.
pub fn healthcheck(ctx: &Context, cmd: HealthcheckCommand) -> anyhow::Result<u8> {
    let HealthcheckCommand::Run { container } = cmd;
    let store = ctx.open_store()?;
    let c = gcr_containers::lookup(&store, &container)?;
    let exe =
        std::env::current_exe().context("cannot find the gcr binary to run the check with")?;
    let state = gcr_containers::health::check_now(&store, &c, &exe, true)?;
    let healthy = state.log.last().is_some_and(|r| r.exit_code == 0);
    if healthy {
        println!("healthy");
        Ok(0)
    } else {
        println!("unhealthy");
        Ok(1)
    }
}
