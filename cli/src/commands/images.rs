//! Image commands: images, rmi, tag, inspect, history, import.

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::Args;
use gcr_storage::{ImageRecord, Store};
use serde_json::{json, Value};

use crate::context::Context;
use crate::format::{human_age, human_size, short_id, split_name, table};
use crate::lookup::{find_image, normalize_name};

/// Largest image config gcr reads back from its own store.
const MAX_CONFIG_BYTES: u64 = 4 << 20;

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
    let mut records = store.images()?;
    records.sort_by(|a, b| b.created.cmp(&a.created));
    // One image (one config) may be stored under two manifests, e.g. loaded from an archive
    // and then pulled: the unnamed one is the same image, not a dangling one.
    let named_ids: std::collections::HashSet<String> = records
        .iter()
        .filter(|r| !r.names.is_empty())
        .map(|r| r.id.to_string())
        .collect();
    records.retain(|r| !r.names.is_empty() || !named_ids.contains(&r.id.to_string()));
    let records = select_images(&store, records, &args)?;
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

/// `gcr images [REPOSITORY[:TAG]] [-f ...]`: the images (with only their matching names)
/// that pass every filter; values of one key may match any.
fn select_images(
    store: &Store,
    records: Vec<ImageRecord>,
    args: &ImagesArgs,
) -> anyhow::Result<Vec<ImageRecord>> {
    let mut filters: Vec<(String, String)> = Vec::new();
    for f in &args.filter {
        let (key, value) = f
            .split_once('=')
            .with_context(|| format!("invalid filter {f:?}: use KEY=VALUE"))?;
        match key {
            "dangling" if matches!(value, "true" | "false") => {}
            "dangling" => bail!("invalid filter {f:?}: dangling is true or false"),
            "reference" | "label" => {}
            other => bail!("unknown filter {other:?}: use dangling, reference or label"),
        }
        filters.push((key.to_string(), value.to_string()));
    }
    // The short forms people type: `busybox:latest` for docker.io/library/busybox:latest.
    let short = |name: &str| -> String {
        name.strip_prefix("docker.io/library/")
            .or_else(|| name.strip_prefix("docker.io/"))
            .unwrap_or(name)
            .to_string()
    };
    let wanted = match &args.reference {
        None => None,
        Some(r) => {
            let full = normalize_name(r)?;
            // Without a tag every tag of the repository is meant.
            let tagged =
                r.rsplit('/').next().is_some_and(|last| last.contains(':')) || r.contains('@');
            Some((full, tagged))
        }
    };
    let mut out = Vec::new();
    for mut record in records {
        if let Some((full, tagged)) = &wanted {
            record.names.retain(|n| {
                if *tagged {
                    n == full
                } else {
                    split_name(n).0 == split_name(full).0
                }
            });
            if record.names.is_empty() {
                continue;
            }
        }
        let mut labels: Option<std::collections::BTreeMap<String, String>> = None;
        let mut keep = true;
        let keys: std::collections::BTreeSet<&str> =
            filters.iter().map(|(k, _)| k.as_str()).collect();
        for key in keys {
            let values = filters
                .iter()
                .filter(|(k, _)| k == key)
                .map(|(_, v)| v.as_str());
            let pass = match key {
                "dangling" => values
                    .into_iter()
                    .any(|v| (v == "true") == record.names.is_empty()),
                "reference" => {
                    let matching: Vec<String> = record
                        .names
                        .iter()
                        .filter(|n| {
                            filters.iter().any(|(k, pattern)| {
                                k == "reference"
                                    && (glob_match(pattern, n)
                                        || glob_match(pattern, &short(n))
                                        || glob_match(pattern, &split_name(&short(n)).0))
                            })
                        })
                        .cloned()
                        .collect();
                    record.names = matching;
                    !record.names.is_empty()
                }
                _ => {
                    let have = labels.get_or_insert_with(|| image_labels(store, &record));
                    values.into_iter().any(|v| match v.split_once('=') {
                        Some((k, want)) => have.get(k).is_some_and(|x| x == want),
                        None => have.contains_key(v),
                    })
                }
            };
            keep &= pass;
        }
        if keep {
            out.push(record);
        }
    }
    Ok(out)
}

/// The labels of an image's config.
fn image_labels(store: &Store, record: &ImageRecord) -> std::collections::BTreeMap<String, String> {
    store
        .image_config_bytes(record)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|c| c["config"]["Labels"].as_object().cloned())
        .map(|labels| {
            labels
                .into_iter()
                .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// Shell-style `*` and `?` matching of a whole name.
fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    // Classic two-pointer match with backtracking to the last `*`.
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            pi += 1;
            mark = ti;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
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
                let familiar = name
                    .strip_prefix("docker.io/library/")
                    .or_else(|| name.strip_prefix("docker.io/"))
                    .unwrap_or(&name);
                split_name(familiar)
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
        // As Docker: with -f an image that is not there is no error.
        if args.force && find_image(&store, input).is_err() {
            continue;
        }
        if let Err(err) = remove_one(&store, input, args.force) {
            eprintln!("error: {}", crate::format::error_chain(&err));
            failed = true;
        }
    }
    Ok(if failed { 1 } else { 0 })
}

fn remove_one(store: &Store, input: &str, force: bool) -> anyhow::Result<()> {
    let record = find_image(store, input)?;
    // A name given and the image has other names: only that name goes, like `docker rmi`.
    let name_given = record
        .names
        .iter()
        .find(|n| n.as_str() == input || normalize_name(input).ok().as_deref() == Some(n))
        .cloned();
    if let Some(name) = &name_given {
        if record.names.len() > 1 {
            store.untag(name)?;
            println!("Untagged: {name}");
            return Ok(());
        }
    } else if record.names.len() > 1 && !force {
        bail!(
            "image {} has several names ({}): remove them by name, or use -f",
            short_id(&record.id.to_string()),
            record.names.join(", ")
        );
    }
    // As Docker: -f on an image that containers use takes its names away and keeps it.
    if force && !record.names.is_empty() && !store.containers_using(&record.id)?.is_empty() {
        for name in &record.names {
            store.untag(name)?;
            println!("Untagged: {name}");
        }
        return Ok(());
    }
    let removed = store.remove_image(&record.id, force)?;
    for name in &record.names {
        println!("Untagged: {name}");
    }
    println!("Deleted: {}", record.id);
    let _ = removed;
    Ok(())
}

pub fn tag(ctx: &Context, args: TagArgs) -> anyhow::Result<u8> {
    let store = ctx.open_store()?;
    let record = find_image(&store, &args.source)?;
    let target = normalize_name(&args.target)?;
    if target.contains('@') {
        bail!("cannot tag with a digest reference {target:?}: give NAME[:TAG]");
    }
    store.tag(&record.id, &target)?;
    Ok(0)
}

/// The image's config JSON, as stored.
fn config_json(store: &Store, record: &ImageRecord) -> anyhow::Result<Value> {
    let bytes = store.image_config_bytes(record)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        bail!("image config of {} is larger than 4 MiB", record.id);
    }
    serde_json::from_slice(&bytes)
        .with_context(|| format!("image config {} is not JSON", record.id))
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
    let config = config_json(store, &record)?;
    let repo_tags: Vec<&String> = record.names.iter().filter(|n| !n.contains('@')).collect();
    let repo_digests: Vec<String> = record
        .names
        .iter()
        .map(|n| {
            let (repo, _) = split_name(n);
            format!("{repo}@{}", record.manifest_digest)
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    Ok(json!({
        "Id": record.id.to_string(),
        "Digest": record.manifest_digest.to_string(),
        "RepoTags": repo_tags,
        "RepoDigests": repo_digests,
        "Created": config.get("created"),
        "Author": config.get("author"),
        "Architecture": config.get("architecture"),
        "Variant": config.get("variant"),
        "Os": config.get("os"),
        "Config": config.get("config").cloned().unwrap_or(Value::Object(Default::default())),
        "RootFS": {
            "Type": "layers",
            "Layers": record.layers.iter().map(|l| l.to_string()).collect::<Vec<_>>(),
        },
        "History": config.get("history"),
        "Size": record.size,
    }))
}

pub fn history(ctx: &Context, args: HistoryArgs) -> anyhow::Result<u8> {
    let store = ctx.open_store()?;
    let record = find_image(&store, &args.image)?;
    let config = config_json(&store, &record)?;
    let entries = config
        .get("history")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let layer_sizes = manifest_layer_sizes(&store, &record);
    // Docker lists newest first; non-empty entries take the layers in order.
    let mut layer_index = 0usize;
    let mut rows: Vec<(String, String, String, u64, String)> = Vec::new();
    for entry in &entries {
        let empty = entry
            .get("empty_layer")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let size = if empty {
            0
        } else {
            let s = layer_sizes.get(layer_index).copied().unwrap_or(0);
            layer_index += 1;
            s
        };
        let text = |k: &str| {
            entry
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        rows.push((
            "<missing>".to_string(),
            text("created"),
            text("created_by"),
            size,
            text("comment"),
        ));
    }
    if let Some(top) = rows.last_mut() {
        top.0 = record.id.to_string();
    }
    rows.reverse();
    if args.quiet {
        for row in &rows {
            println!("{}", display_id(&row.0, args.no_trunc));
        }
        return Ok(0);
    }
    if args.format == "json" {
        let list: Vec<Value> = rows
            .iter()
            .map(|(id, created, by, size, comment)| {
                json!({"id": id, "created": created, "createdBy": by, "size": size, "comment": comment})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(0);
    } else if args.format != "table" {
        bail!("unknown --format {:?}: use table or json", args.format);
    }
    let table_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|(id, created, by, size, comment)| {
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
                human_size(*size),
                comment.clone(),
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

/// Sizes of the image's layers as its manifest gives them (compressed sizes).
fn manifest_layer_sizes(store: &Store, record: &ImageRecord) -> Vec<u64> {
    let Ok(bytes) = store.image_manifest_bytes(record) else {
        return Vec::new();
    };
    let Ok(manifest) = serde_json::from_slice::<Value>(&bytes) else {
        return Vec::new();
    };
    manifest
        .get("layers")
        .and_then(Value::as_array)
        .map(|layers| {
            layers
                .iter()
                .map(|l| l.get("size").and_then(Value::as_u64).unwrap_or(0))
                .collect()
        })
        .unwrap_or_default()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_whole_names() {
        assert!(glob_match("busy*", "busybox:latest"));
        assert!(glob_match("*box", "busybox"));
        assert!(glob_match("b?sybox", "busybox"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("busy", "busybox"));
        assert!(!glob_match("*x", "busybox:latest"));
        assert!(glob_match("*/app:*", "localhost/app:1"));
    }
}
