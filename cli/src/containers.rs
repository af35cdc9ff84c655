//! `gcr ps` and `gcr rm`: the containers `gcr run` recorded. There is no daemon: a container is
//! running while the `gcr run` process that owns it lives; its exit status is written when it
//! ends.

use std::path::Path;

use anyhow::{bail, Context as _};
use clap::Args;
use serde::{Deserialize, Serialize};

use crate::format::{human_age, short_id, table};
use crate::Context;

/// What `gcr run` records about a container (containers/<id>/meta.json).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ContainerMeta {
    pub name: Option<String>,
    pub image: String,
    pub command: Vec<String>,
    pub created: String,
    /// The `gcr run` process that owns the container.
    pub pid: u32,
}

const META: &str = "meta.json";
const EXIT: &str = "exit-status";

/// Records the container's metadata (no fsync: it describes a live process).
pub fn write_meta(dir: &Path, meta: &ContainerMeta) -> anyhow::Result<()> {
    let text = serde_json::to_vec(meta)?;
    std::fs::write(dir.join(META), text)
        .with_context(|| format!("cannot write {}", dir.join(META).display()))
}

/// Records the exit status of a kept container.
pub fn write_exit_status(dir: &Path, code: i32) {
    if let Err(err) = std::fs::write(dir.join(EXIT), code.to_string()) {
        tracing::warn!(%err, dir = %dir.display(), "cannot record the exit status");
    }
}

#[derive(Debug, Clone)]
struct Container {
    id: String,
    meta: ContainerMeta,
    /// None while running.
    exit: Option<Option<i32>>,
}

impl Container {
    fn running(&self) -> bool {
        self.exit.is_none()
    }

    fn status(&self) -> String {
        match self.exit {
            None => format!(
                "Up {}",
                human_age(Some(&self.meta.created)).trim_end_matches(" ago")
            ),
            Some(Some(code)) => format!("Exited ({code})"),
            Some(None) => "Exited (unknown)".to_string(),
        }
    }
}

fn load(store: &gcr_storage::Store) -> anyhow::Result<Vec<Container>> {
    let mut out = Vec::new();
    for id in store.container_ids()? {
        let dir = store.container_dir(&id)?;
        let meta: ContainerMeta = std::fs::read(dir.join(META))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let exit = match std::fs::read_to_string(dir.join(EXIT)) {
            Ok(text) => Some(text.trim().parse().ok()),
            // No status yet: running while its gcr process lives.
            Err(_) if meta.pid != 0 && Path::new(&format!("/proc/{}", meta.pid)).exists() => None,
            Err(_) => Some(None),
        };
        out.push(Container { id, meta, exit });
    }
    out.sort_by(|a, b| b.meta.created.cmp(&a.meta.created));
    Ok(out)
}

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
}

pub fn ps(ctx: &Context, args: PsArgs) -> anyhow::Result<u8> {
    let store = ctx.open_store()?;
    let shown: Vec<Container> = load(&store)?
        .into_iter()
        .filter(|c| args.all || c.running())
        .collect();
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
    let rows: Vec<Vec<String>> = shown
        .iter()
        .map(|c| {
            let command = c.meta.command.join(" ");
            let command = if args.no_trunc || command.chars().count() <= 20 {
                command
            } else {
                format!("{}…", command.chars().take(19).collect::<String>())
            };
            vec![
                id(c),
                c.meta.image.clone(),
                format!("{command:?}"),
                human_age(Some(&c.meta.created)),
                c.status(),
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
                "NAMES"
            ],
            &rows
        )
    );
    Ok(0)
}

#[derive(Args, Debug)]
pub struct RmArgs {
    /// Kill a running container first
    #[arg(short, long)]
    force: bool,
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

/// The container an ID, unique ID prefix or name means.
fn find<'a>(all: &'a [Container], wanted: &str) -> anyhow::Result<&'a Container> {
    if let Some(c) = all
        .iter()
        .find(|c| c.meta.name.as_deref() == Some(wanted) || c.id == wanted)
    {
        return Ok(c);
    }
    let matches: Vec<&Container> = all.iter().filter(|c| c.id.starts_with(wanted)).collect();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => bail!("no such container: {wanted} (see `gcr ps -a`)"),
        _ => bail!("container ID prefix {wanted} is ambiguous: give more of it"),
    }
}

pub fn rm(ctx: &Context, args: RmArgs) -> anyhow::Result<u8> {
    let store = ctx.open_store()?;
    let all = load(&store)?;
    let mut failed = false;
    for wanted in &args.containers {
        let result = (|| -> anyhow::Result<()> {
            let c = find(&all, wanted)?;
            if c.running() {
                if !args.force {
                    bail!(
                        "container {} is running: stop its `gcr run` (pid {}) or use -f",
                        short_id(&c.id),
                        c.meta.pid
                    );
                }
                // The container's processes die with their gcr run (parent-death signal).
                let pid = nix::unistd::Pid::from_raw(c.meta.pid as i32);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                for _ in 0..100 {
                    if !Path::new(&format!("/proc/{}", c.meta.pid)).exists() {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            }
            store.unregister_container(&c.id)?;
            println!("{}", c.meta.name.clone().unwrap_or_else(|| c.id.clone()));
            Ok(())
        })();
        if let Err(err) = result {
            eprintln!("error: {}", crate::format::error_chain(&err));
            failed = true;
        }
    }
    Ok(if failed { 1 } else { 0 })
}

/// Refuses a `--name` another container already has, as Docker does.
pub fn ensure_name_free(store: &gcr_storage::Store, name: &str) -> anyhow::Result<()> {
    if let Some(c) = load(store)?
        .iter()
        .find(|c| c.meta.name.as_deref() == Some(name))
    {
        bail!(
            "the name {name:?} is already used by container {}: remove it (`gcr rm {name}`) or choose another",
            short_id(&c.id)
        );
    }
    Ok(())
}

/// Removes every container that is not running (for `system prune`); returns their IDs.
pub fn remove_stopped(store: &gcr_storage::Store) -> anyhow::Result<Vec<String>> {
    let mut removed = Vec::new();
    for c in load(store)? {
        if !c.running() {
            store.unregister_container(&c.id)?;
            removed.push(c.id);
        }
    }
    Ok(removed)
}
