//! `gcr stats`: what running containers use, as `docker stats` shows it (CPU %, memory use
//! and limit, network and block I/O, PIDs). The figures are gcr-containers' (`sample`);
//! this module picks the containers, takes the readings and formats them.

use std::collections::BTreeSet;
use std::io::{IsTerminal as _, Write as _};
use std::time::Duration;

use clap::Args;
use gcr_containers::{Container, Sample};
use serde_json::{json, Value};

use crate::context::Context;
use crate::template::ListFormat;

/// Between the two readings CPU % is computed from (`--no-stream` and the first screen).
const FIRST_INTERVAL: Duration = Duration::from_millis(500);
/// Between screens while streaming.
const INTERVAL: Duration = Duration::from_secs(1);

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Show every container (default: running ones)
    #[arg(short, long)]
    all: bool,
    /// Print one reading and end (without it, the table is redrawn every second until
    /// Ctrl-C)
    #[arg(long)]
    no_stream: bool,
    /// Show full IDs
    #[arg(long)]
    no_trunc: bool,
    /// table, json, or a Go template such as '{{.Name}} {{.MemUsage}}' or
    /// 'table {{.Name}}\t{{.CPUPerc}}' (fields: Container, Name, ID, CPUPerc, MemUsage,
    /// MemPerc, NetIO, BlockIO, PIDs)
    #[arg(long, default_value = "table")]
    format: String,
    /// Containers by name or ID (default: every running one)
    #[arg(value_name = "CONTAINER")]
    containers: Vec<String>,
}

/// A container shown and the name it is shown by in the Container column.
struct Shown {
    container: Container,
    asked_as: String,
}

pub fn stats(ctx: &Context, args: StatsArgs) -> anyhow::Result<u8> {
    let format = ListFormat::parse(&args.format)?;
    let store = ctx.open_store()?;
    let pick = || -> anyhow::Result<Vec<Shown>> {
        if args.containers.is_empty() {
            Ok(gcr_containers::list(&store)?
                .into_iter()
                .filter(|c| args.all || c.running())
                .map(|c| Shown {
                    asked_as: gcr_containers::short_id(&c.id),
                    container: c,
                })
                .collect())
        } else {
            args.containers
                .iter()
                .map(|name| {
                    Ok(Shown {
                        container: gcr_containers::lookup(&store, name)?,
                        asked_as: name.clone(),
                    })
                })
                .collect()
        }
    };
    let read = |shown: &[Shown]| -> Vec<Option<Sample>> {
        shown
            .iter()
            .map(|s| gcr_containers::sample(&s.container.current()).ok())
            .collect()
    };
    let mut noted = BTreeSet::new();
    let mut shown = pick()?;
    let mut before = read(&shown);
    std::thread::sleep(FIRST_INTERVAL);
    let terminal = std::io::stdout().is_terminal();
    loop {
        let now = read(&shown);
        let rows: Vec<Value> = shown
            .iter()
            .zip(&now)
            .zip(&before)
            .map(|((s, now), before)| row(s, now.as_ref(), before.as_ref(), args.no_trunc))
            .collect();
        for (s, sample) in shown.iter().zip(&now) {
            if let Some(note) = sample.as_ref().and_then(Sample::note) {
                if noted.insert(s.container.id.clone()) {
                    eprintln!("note: {}: {note}", s.container.display_name());
                }
            }
        }
        if !args.no_stream && terminal {
            // Docker's redraw: clear the screen, cursor home.
            print!("\x1b[2J\x1b[H");
        }
        print_rows(&format, &rows)?;
        std::io::stdout().flush()?;
        if args.no_stream {
            return Ok(0);
        }
        std::thread::sleep(INTERVAL);
        // Without names, containers that started or ended meanwhile come and go.
        let next = pick()?;
        before = next
            .iter()
            .map(|n| {
                shown
                    .iter()
                    .zip(&now)
                    .find(|(s, _)| s.container.id == n.container.id)
                    .and_then(|(_, sample)| sample.clone())
            })
            .collect();
        shown = next;
    }
}

fn print_rows(format: &ListFormat, rows: &[Value]) -> anyhow::Result<()> {
    if let ListFormat::Table(None) = format {
        let columns = [
            ("CONTAINER ID", "ID"),
            ("NAME", "Name"),
            ("CPU %", "CPUPerc"),
            ("MEM USAGE / LIMIT", "MemUsage"),
            ("MEM %", "MemPerc"),
            ("NET I/O", "NetIO"),
            ("BLOCK I/O", "BlockIO"),
            ("PIDS", "PIDs"),
        ];
        let headers: Vec<&str> = columns.iter().map(|c| c.0).collect();
        let cells: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                columns
                    .iter()
                    .map(|c| r[c.1].as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .collect();
        print!("{}", crate::format::table(&headers, &cells));
        return Ok(());
    }
    format.print(rows, |field| {
        match field {
            "ID" => "CONTAINER ID",
            "Container" => "CONTAINER",
            "Name" => "NAME",
            "CPUPerc" => "CPU %",
            "MemUsage" => "MEM USAGE / LIMIT",
            "MemPerc" => "MEM %",
            "NetIO" => "NET I/O",
            "BlockIO" => "BLOCK I/O",
            "PIDs" => "PIDS",
            other => return other.to_uppercase(),
        }
        .to_string()
    })
}

/// One container's row as Docker's templates see it: every value a string.
fn row(s: &Shown, now: Option<&Sample>, before: Option<&Sample>, no_trunc: bool) -> Value {
    let c = &s.container;
    let id = if no_trunc {
        c.id.clone()
    } else {
        gcr_containers::short_id(&c.id)
    };
    let unknown = || "--".to_string();
    let pair = |v: Option<(u64, u64)>| {
        v.map_or_else(
            || "-- / --".to_string(),
            |(a, b)| format!("{} / {}", decimal_size(a), decimal_size(b)),
        )
    };
    let (cpu, mem_usage, mem_perc, net, block, pids) = match now {
        // Not running: Docker's zeros.
        None => (
            "0.00%".to_string(),
            "0B / 0B".to_string(),
            "0.00%".to_string(),
            "0B / 0B".to_string(),
            "0B / 0B".to_string(),
            "0".to_string(),
        ),
        Some(now) => {
            let cpu = before
                .and_then(|b| now.cpu_percent(b))
                .map_or_else(unknown, |p| format!("{p:.2}%"));
            let limit = now.memory_limit();
            let used = now.memory_used();
            let mem_usage = used.map_or_else(
                || format!("-- / {}", binary_size(limit)),
                |u| format!("{} / {}", binary_size(u), binary_size(limit)),
            );
            let mem_perc = used.filter(|_| limit > 0).map_or_else(unknown, |u| {
                format!("{:.2}%", u as f64 / limit as f64 * 100.0)
            });
            let pids = now.pids.map_or_else(unknown, |n| n.to_string());
            (
                cpu,
                mem_usage,
                mem_perc,
                pair(now.net_io()),
                pair(now.block_io()),
                pids,
            )
        }
    };
    json!({
        "Container": s.asked_as,
        "Name": c.display_name(),
        "ID": id,
        "CPUPerc": cpu,
        "MemUsage": mem_usage,
        "MemPerc": mem_perc,
        "NetIO": net,
        "BlockIO": block,
        "PIDs": pids,
    })
}

/// Go's `%.Ng`: `digits` significant digits, trailing zeros dropped, an exponent when the
/// number needs one (as the docker CLI prints sizes).
fn go_g(value: f64, digits: usize) -> String {
    if value == 0.0 {
        return "0".to_string();
    }
    let scientific = format!("{value:.*e}", digits.saturating_sub(1));
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let trim = |text: &str| {
        if text.contains('.') {
            text.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            text.to_string()
        }
    };
    if exponent < -4 || exponent >= digits as i32 {
        let sign = if exponent < 0 { '-' } else { '+' };
        return format!("{}e{sign}{:02}", trim(mantissa), exponent.abs());
    }
    let decimals = (digits as i32 - 1 - exponent).max(0) as usize;
    trim(&format!("{value:.decimals$}"))
}

fn scaled(bytes: u64, base: f64, units: &[&str], digits: usize) -> String {
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= base && unit < units.len() - 1 {
        value /= base;
        unit += 1;
    }
    format!("{}{}", go_g(value, digits), units[unit])
}

/// Docker's memory sizes (go-units BytesSize): binary units, four significant digits.
fn binary_size(bytes: u64) -> String {
    scaled(
        bytes,
        1024.0,
        &["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"],
        4,
    )
}

/// Docker's I/O sizes (go-units HumanSizeWithPrecision(.., 3)): decimal units.
fn decimal_size(bytes: u64) -> String {
    scaled(bytes, 1000.0, &["B", "kB", "MB", "GB", "TB", "PB", "EB"], 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_as_the_docker_cli_prints_them() {
        assert_eq!(binary_size(0), "0B");
        assert_eq!(binary_size(64 << 20), "64MiB");
        assert_eq!(binary_size(21_241_856), "20.26MiB");
        assert_eq!(binary_size(1023), "1023B");
        assert_eq!(binary_size(8_000_000_000), "7.451GiB");
        assert_eq!(decimal_size(266), "266B");
        assert_eq!(decimal_size(1_234_567), "1.23MB");
        assert_eq!(decimal_size(999_600), "1e+03kB");
        assert_eq!(go_g(0.5, 4), "0.5");
    }
}
