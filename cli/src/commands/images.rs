//! Image commands: images, rmi, tag, inspect, history, import.

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::Args;
use gcr_images::{familiar_name, Removal};
use gcr_storage::Store;
use serde_json::{json, Value};

use crate::context::Context;
use crate::format::{human_age, human_size, short_id, split_name, table};
use crate::lookup::{find_image, normalize_name};

#[derive(Args, Debug)]
pub struct ImagesArgs {
    /// Only images of this repository (and tag)
    #[arg(value_name = "REPOSITORY[:TAG]")]
    reference: Option<String>,
    /// Only images matching: dangling=true|false, reference=PATTERN (* and ?), label=KEY[=VALUE]
    #[arg(short, long = "filter", value_name = "KEY=VALUE")]
    filter: Vec<String>,
    /// Show all images (gcr keeps no intermediate images: the same as without it)
    #[arg(short, long)]
    all: bool,
    /// Only show image IDs
    #[arg(short, long)]
    quiet: bool,
    /// table, json, or a Go template such as '{{.Repository}}:{{.Tag}}'
    #[arg(long, default_value = "table")]
    format: String,
    /// Show full image IDs
    #[arg(long)]
    no_trunc: bool,
}

#[derive(Args, Debug)]
pub struct RmiArgs {
    /// Remove the image even if it has several names or containers use it
    #[arg(short, long)]
    force: bool,
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<String>,
}

#[derive(Args, Debug)]
pub struct TagArgs {
    #[arg(value_name = "SOURCE_IMAGE")]
    source: String,
    #[arg(value_name = "TARGET_IMAGE")]
    target: String,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Print each object through a Go template, e.g. '{{.State.Status}}' or '{{json .Config}}'
    #[arg(short, long, value_name = "TEMPLATE")]
    format: Option<String>,
    /// Only look for this kind of object: container or image
    #[arg(long = "type", value_name = "TYPE")]
    kind: Option<String>,
    #[arg(required = true, value_name = "NAME|ID")]
    images: Vec<String>,
}

#[derive(Args, Debug)]
pub struct HistoryArgs {
    #[arg(value_name = "IMAGE")]
    image: String,
    /// Only show image IDs
    #[arg(short, long)]
    quiet: bool,
    /// Don't truncate output
    #[arg(long)]
    no_trunc: bool,
    /// Output format: table (default) or json
    #[arg(long, default_value = "table")]
    format: String,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// Root filesystem archive: tar, tar.gz, tar.zst or zip; `-` reads it from stdin
    #[arg(value_name = "ARCHIVE")]
    archive: PathBuf,
    /// Name for the new image
    #[arg(value_name = "NAME[:TAG]")]
    name: String,
    /// Only print the image ID
    #[arg(short, long)]
    quiet: bool,
}

pub fn images(ctx: &Context, args: ImagesArgs) -> anyhow::Result<u8> {
    let store = ctx.open_store()?;
    let records = gcr_images::list(&store)?;
    let records = gcr_images::select(&store, records, args.reference.as_deref(), &args.filter)?;
    if args.quiet {
        let mut seen = std::collections::HashSet::new();
        for record in &records {
            if seen.insert(record.id.to_string()) {
                println!("{}", display_id(&record.id.to_string(), args.no_trunc));
            }
        }
        return Ok(0);
    }
    match args.format.as_str() {
        "json" => {
            let list: Vec<Value> = records
                .iter()
                .map(|r| {
                    json!({
                        "Id": r.id.to_string(),
                        "Names": r.names,
                        "Digest": r.manifest_digest.to_string(),
                        "Created": r.created,
                        "Size": r.size,
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&list)?);
        }
        "table" => {
            let rows: Vec<Vec<String>> = image_rows(&records, args.no_trunc)
                .iter()
                .map(|row| {
                    ["Repository", "Tag", "ID", "CreatedSince", "Size"]
                        .iter()
                        .map(|field| row[field].as_str().unwrap_or_default().to_string())
                        .collect()
                })
                .collect();
            print!(
                "{}",
                table(&["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"], &rows)
            );
        }
        template => {
            let format = crate::template::ListFormat::parse(template)
                .context("use table, json or a Go template such as '{{.Repository}}:{{.Tag}}'")?;
            format.print(&image_rows(&records, args.no_trunc), |field| match field {
                "ID" => "IMAGE ID".into(),
                "CreatedSince" => "CREATED".into(),
                "CreatedAt" => "CREATED AT".into(),
                other => other.to_uppercase(),
            })?;
        }
    }
    Ok(0)
}

/// One row per name of each image (one `<none>` row for an image without names), with the
/// fields Docker's `images --format` templates use.
fn image_rows(records: &[gcr_storage::ImageRecord], no_trunc: bool) -> Vec<Value> {
    let mut rows = Vec::new();
    for record in records {
        let names: Vec<String> = if record.names.is_empty() {
            vec![String::new()]
        } else {
            record.names.clone()
        };
        for name in names {
            let (repository, tag) = if name.is_empty() {
                ("<none>".to_string(), "<none>".to_string())
            } else {
                // Docker Hub names as Docker shows them: `app`, `user/app`.
                split_name(&familiar_name(&name))
            };
            rows.push(json!({
                "Repository": repository,
                "Tag": tag,
                "ID": display_id(&record.id.to_string(), no_trunc),
                "Digest": record.manifest_digest.to_string(),
                "CreatedSince": human_age(record.created.as_deref()),
                "CreatedAt": record.created.clone().unwrap_or_default(),
                "Size": human_size(record.size),
            }));
        }
    }
    rows
}

fn display_id(id: &str, no_trunc: bool) -> String {
    if no_trunc {
        id.to_string()
    } else {
        short_id(id)
    }
}

pub fn rmi(ctx: &Context, args: RmiArgs) -> anyhow::Result<u8> {
    let store = ctx.open_store()?;
    let mut failed = false;
    for input in &args.images {
        match gcr_images::remove(&store, input, args.force) {
            Ok(done) => {
                for removal in done {
                    match removal {
                        Removal::Untagged(name) => println!("Untagged: {name}"),
                        Removal::Deleted(id) => println!("Deleted: {id}"),
                    }
                }
            }
            // As Docker: with -f an image that is not there is no error (an ambiguous ID is).
            Err(gcr_images::ImageError::NotFound { .. }) if args.force => {}
            Err(err) => {
                eprintln!("error: {}", crate::format::error_chain(&err.into()));
                failed = true;
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

pub fn tag(ctx: &Context, args: TagArgs) -> anyhow::Result<u8> {
    let store = ctx.open_store()?;
    gcr_images::tag(&store, &args.source, &args.target)?;
    Ok(0)
}

impl InspectArgs {
    /// `gcr image inspect` and `gcr container inspect`: only that kind of object.
    pub fn only(mut self, kind: &str) -> InspectArgs {
        self.kind = Some(kind.to_string());
        self
    }
}

pub fn inspect(ctx: &Context, args: InspectArgs) -> anyhow::Result<u8> {
    let template = args
        .format
        .as_deref()
        .map(crate::template::Template::parse)
        .transpose()?;
    let (containers, images) = match args.kind.as_deref() {
        None => (true, true),
        Some("container") => (true, false),
        Some("image") => (false, true),
        Some(other) => bail!("unknown --type {other:?}: use container or image"),
    };
    let store = ctx.open_store()?;
    let mut out = Vec::new();
    let mut failed = false;
    for input in &args.images {
        let found = (|| -> anyhow::Result<Value> {
            // As `docker inspect`: a container of that name or ID first, then an image.
            if containers {
                let container = gcr_containers::lookup(&store, input)
                    .map(|c| gcr_containers::inspect(&store, &c))
                    .map_err(anyhow::Error::from);
                if container.is_ok() || !images {
                    return container;
                }
            }
            inspect_image(&store, input).with_context(|| {
                if containers {
                    format!("no container or image {input}")
                } else {
                    format!("no image {input}")
                }
            })
        })();
        let shown = found.and_then(|value| match &template {
            Some(template) => {
                println!("{}", template.render(&value)?);
                Ok(())
            }
            None => {
                out.push(value);
                Ok(())
            }
        });
        if let Err(err) = shown {
            eprintln!("error: {}", crate::format::error_chain(&err));
            failed = true;
        }
    }
    if template.is_none() {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(if failed { 125 } else { 0 })
}

fn inspect_image(store: &Store, input: &str) -> anyhow::Result<Value> {
    let record = find_image(store, input)?;
    Ok(gcr_images::inspect(store, &record)?)
}

pub fn history(ctx: &Context, args: HistoryArgs) -> anyhow::Result<u8> {
    let store = ctx.open_store()?;
    let record = find_image(&store, &args.image)?;
    let rows = gcr_images::history(&store, &record)?;
    if args.quiet {
        for row in &rows {
            println!("{}", display_id(&row.id, args.no_trunc));
        }
        return Ok(0);
    }
    if args.format == "json" {
        let list: Vec<Value> = rows
            .iter()
            .map(|row| {
                json!({
                    "id": row.id,
                    "created": row.created,
                    "createdBy": row.created_by,
                    "size": row.size,
                    "comment": row.comment,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(0);
    } else if args.format != "table" {
        bail!("unknown --format {:?}: use table or json", args.format);
    }
    let table_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let (id, created, by) = (&row.id, &row.created, &row.created_by);
            let id = if id == "<missing>" {
                id.clone()
            } else {
                display_id(id, args.no_trunc)
            };
            let by = if args.no_trunc || by.chars().count() <= 45 {
                by.clone()
            } else {
                format!("{}…", by.chars().take(44).collect::<String>())
            };
            vec![
                id,
                human_age(Some(created.as_str()).filter(|c| !c.is_empty())),
                by,
                human_size(row.size),
                row.comment.clone(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"],
            &table_rows
        )
    );
    Ok(0)
}

pub fn import(ctx: &Context, args: ImportArgs) -> anyhow::Result<u8> {
    let store = ctx.open_store()?;
    let name = normalize_name(&args.name)?;
    if name.contains('@') {
        bail!("cannot import under a digest reference {name:?}: give NAME[:TAG]");
    }
    // `-` (as `gcr export c | gcr import - img`): stdin is kept aside in the store's work
    // area first, for the archive is read more than once.
    let from_stdin;
    let archive = if args.archive.as_os_str() == "-" {
        from_stdin = store.build_dir("import-stdin")?;
        let path = from_stdin.path().join("archive");
        let mut file = std::fs::File::create(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        std::io::copy(&mut std::io::stdin().lock(), &mut file)
            .context("cannot read the archive from stdin")?;
        path
    } else {
        args.archive.clone()
    };
    if !archive.is_file() {
        bail!(
            "archive {} does not exist or is not a file",
            archive.display()
        );
    }
    // The storage error names the archive.
    let record = store.import_archive(&archive, &name)?;
    if args.quiet {
        println!("{}", record.id);
    } else {
        println!("Imported {} as {name}", args.archive.display());
        println!("{}", record.id);
    }
    Ok(0)
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Every image no container uses, not only unnamed ones
    #[arg(short, long)]
    all: bool,
    /// Do not ask for confirmation (accepted for Docker's habit; gcr does not ask here)
    #[arg(short, long)]
    force: bool,
}

/// `gcr image prune`: unnamed images (or, with -a, every image no container uses) and the
/// layers and blobs only they held.
pub fn prune(ctx: &Context, args: PruneArgs) -> anyhow::Result<u8> {
    let store = ctx.open_store()?;
    let report = store.prune(args.all)?;
    print_prune_report(&report);
    Ok(0)
}

/// What an image prune removed, as Docker prints it.
pub fn print_prune_report(report: &gcr_storage::PruneReport) {
    for name in &report.untagged {
        println!("Untagged: {name}");
    }
    for id in &report.images {
        println!("Deleted: {id}");
    }
    println!(
        "Removed {} blob(s), {} layer(s), {} temporary entr(ies)",
        report.blobs, report.layers, report.tmp
    );
    println!(
        "Total reclaimed space: {}",
        crate::format::human_size(report.reclaimed)
    );
}
