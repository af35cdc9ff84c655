//! `gcr ps`: the containers of the store, as Docker lists them.

use clap::Args;
use gcr_containers::{Container, Filters};

use crate::context::Context;
use crate::format::{human_age, short_id, table};

#[derive(Args, Debug)]
pub struct PsArgs {
    /// Show every container, not only running ones
    #[arg(short, long)]
    all: bool,
    /// Only show container IDs
    #[arg(short, long)]
    quiet: bool,
    /// Show full IDs and commands
    #[arg(long)]
    no_trunc: bool,
    /// Only containers matching: id=, name=, status=created|running|exited, ancestor=IMAGE,
    /// exited=CODE, label=KEY[=VALUE] (repeatable; different keys must all match)
    #[arg(short, long = "filter", value_name = "KEY=VALUE")]
    filter: Vec<String>,
    /// Show the N containers created last (all states)
    #[arg(short = 'n', long = "last", value_name = "N")]
    last: Option<usize>,
    /// Show the container created last (all states)
    #[arg(short, long)]
    latest: bool,
    /// table, json, or a Go template such as '{{.Names}}' or 'table {{.ID}}\t{{.Status}}'
    #[arg(long, default_value = "table")]
    format: String,
}

pub fn ps(ctx: &Context, args: PsArgs) -> anyhow::Result<u8> {
    let filters = Filters::parse(&args.filter)?;
    let format = crate::template::ListFormat::parse(&args.format)?;
    let store = ctx.open_store()?;
    let last = if args.latest { Some(1) } else { args.last };
    // Filters on state, -n and -l look at stopped containers too, as Docker's.
    let all = args.all || last.is_some() || filters.wants_stopped();
    let normalize = |n: &str| crate::lookup::normalize_name(n).ok();
    let mut shown: Vec<Container> = gcr_containers::list(&store)?
        .into_iter()
        .filter(|c| all || c.running())
        .filter(|c| filters.matches(c, &normalize))
        .collect();
    if let Some(n) = last {
        shown.truncate(n);
    }
    let id = |c: &Container| {
        if args.no_trunc {
            c.id.clone()
        } else {
            short_id(&c.id)
        }
    };
    if args.quiet {
        for c in &shown {
            println!("{}", id(c));
        }
        return Ok(0);
    }
    let command = |c: &Container| {
        let command = c.meta.command.join(" ");
        let command = if args.no_trunc || command.chars().count() <= 20 {
            command
        } else {
            format!("{}…", command.chars().take(19).collect::<String>())
        };
        format!("{command:?}")
    };
    let ports = |c: &Container| {
        c.meta
            .ports
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !matches!(format, crate::template::ListFormat::Table(None)) {
        let rows: Vec<serde_json::Value> = shown
            .iter()
            .map(|c| {
                serde_json::json!({
                    "ID": id(c),
                    "Image": c.meta.image,
                    "Command": command(c),
                    "CreatedAt": c.meta.created,
                    "RunningFor": human_age(Some(&c.meta.created)),
                    "Status": gcr_containers::status_text(c),
                    "State": c.state().as_str(),
                    "Names": c.meta.name.clone().unwrap_or_default(),
                    "Ports": ports(c),
                    "Mounts": "",
                    "Labels": c.meta.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
                    "Size": "",
                })
            })
            .collect();
        format.print(&rows, |field| match field {
            "ID" => "CONTAINER ID".into(),
            "RunningFor" => "CREATED".into(),
            "CreatedAt" => "CREATED AT".into(),
            other => other.to_uppercase(),
        })?;
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = shown
        .iter()
        .map(|c| {
            vec![
                id(c),
                c.meta.image.clone(),
                command(c),
                human_age(Some(&c.meta.created)),
                gcr_containers::status_text(c),
                ports(c),
                c.meta.name.clone().unwrap_or_default(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "CONTAINER ID",
                "IMAGE",
                "COMMAND",
                "CREATED",
                "STATUS",
                "PORTS",
                "NAMES"
            ],
            &rows
        )
    );
    Ok(0)
}
