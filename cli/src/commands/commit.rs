//! `gcr commit`: a container's changes (its overlay upper directory) become a new image on top
//! of the container's image, as `docker commit` makes it.

use anyhow::{bail, Context as _};
use clap::Args;
use serde_json::{json, Value};

use crate::context::Context;

#[derive(Args, Debug)]
pub struct CommitArgs {
    /// Commit message (the history entry's comment)
    #[arg(short, long)]
    message: Option<String>,
    /// Author (e.g. "Jane Doe <jane@example.com>")
    #[arg(short, long)]
    author: Option<String>,
    /// Apply a Containerfile instruction to the image's config: CMD, ENTRYPOINT, ENV, EXPOSE,
    /// LABEL, USER, VOLUME, WORKDIR or STOPSIGNAL (repeatable)
    #[arg(short, long, value_name = "INSTRUCTION")]
    change: Vec<String>,
    /// Print only the image ID
    #[arg(short, long)]
    quiet: bool,
    #[arg(value_name = "CONTAINER")]
    container: String,
    /// Name for the image: NAME[:TAG]
    #[arg(value_name = "IMAGE")]
    image: Option<String>,
}

pub fn commit(ctx: &Context, args: CommitArgs) -> anyhow::Result<u8> {
    let store = ctx.open_store()?;
    let container = gcr_containers::lookup(&store, &args.container)?;
    let image_digest = container.image_id().with_context(|| {
        format!(
            "container {} has no image (a --rootfs container cannot be committed)",
            gcr_containers::short_id(&container.id)
        )
    })?;
    let base = crate::lookup::find_image(&store, &image_digest)?;
    let names = match &args.image {
        Some(name) => vec![crate::lookup::normalize_name(name)?],
        None => Vec::new(),
    };

    let mut config: Value = serde_json::from_slice(&store.image_config_bytes(&base)?)
        .context("the base image's config is not JSON")?;
    let manifest: Value = serde_json::from_slice(&store.image_manifest_bytes(&base)?)
        .context("the base image's manifest is not JSON")?;
    for change in &args.change {
        apply_change(&mut config, change)?;
    }

    // The layers of the base, in OCI terms, then the container's changes, if any.
    let mut layers: Vec<Value> = manifest["layers"]
        .as_array()
        .context("the base image's manifest lists no layers")?
        .iter()
        .map(|l| {
            let mut l = l.clone();
            if let Some(t) = l["mediaType"].as_str() {
                l["mediaType"] = Value::from(gcr_storage::oci_layer_media_type(t));
            }
            l
        })
        .collect();
    let upper = container.upper_dir();
    let layer = gcr_builder::layer_from_upper(&store, &upper, gcr_builder::Compression::Gzip)?;
    if let Some(info) = &layer {
        store
            .ingest_layer_from_blob(&gcr_storage::LayerExpectation {
                digest: info.digest.clone(),
                size: info.size,
                media_type: info.media_type.clone(),
                diff_id: info.diff_id.clone(),
            })
            .context("unpacking the committed layer")?;
        config["rootfs"]["diff_ids"]
            .as_array_mut()
            .context("the base image's config has no rootfs.diff_ids")?
            .push(Value::from(info.diff_id.as_str()));
        layers.push(json!({
            "mediaType": info.media_type,
            "digest": info.digest.as_str(),
            "size": info.size,
        }));
    }
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    config["created"] = Value::from(now.clone());
    if let Some(author) = &args.author {
        config["author"] = Value::from(author.as_str());
    }
    let meta = &container.meta;
    let mut entry = json!({
        "created": now,
        "created_by": meta.command.join(" "),
    });
    if let Some(author) = &args.author {
        entry["author"] = Value::from(author.as_str());
    }
    if let Some(message) = &args.message {
        entry["comment"] = Value::from(message.as_str());
    }
    if layer.is_none() {
        entry["empty_layer"] = Value::from(true);
    }
    match config["history"].as_array_mut() {
        Some(history) => history.push(entry),
        None => config["history"] = Value::from(vec![entry]),
    }
    let config_bytes = serde_json::to_vec(&config)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": gcr_storage::OCI_MANIFEST,
        "config": {
            "mediaType": gcr_storage::OCI_CONFIG,
            "digest": gcr_storage::Digest::of(&config_bytes).as_str(),
            "size": config_bytes.len(),
        },
        "layers": layers,
    });
    let record = store.commit_image(&names, &serde_json::to_vec(&manifest)?, &config_bytes)?;
    if args.quiet {
        println!("{}", record.id);
    } else {
        for name in &names {
            eprintln!("Successfully tagged {name}");
        }
        println!("{}", record.id);
    }
    Ok(0)
}

/// `--change INSTRUCTION`, parsed by the Containerfile grammar, applied to the config.
fn apply_change(config: &mut Value, change: &str) -> anyhow::Result<()> {
    use gcr_grammar::InstructionKind as K;
    let parsed = gcr_grammar::parse(&format!("FROM scratch\n{change}\n"))
        .with_context(|| format!("invalid --change {change:?}"))?;
    let instruction = match parsed.stages.first().map(|s| s.instructions.as_slice()) {
        Some([one]) => one.clone(),
        _ => bail!("invalid --change {change:?}: give exactly one instruction"),
    };
    if !config["config"].is_object() {
        config["config"] = json!({});
    }
    let c = &mut config["config"];
    let command = |cl: &gcr_grammar::CommandLine| -> Value {
        match cl {
            gcr_grammar::CommandLine::Exec(v) => json!(v),
            gcr_grammar::CommandLine::Shell(s) => json!(["/bin/sh", "-c", s]),
        }
    };
    match &instruction.kind {
        K::Cmd(cl) => c["Cmd"] = command(cl),
        K::Entrypoint(cl) => {
            c["Entrypoint"] = command(cl);
            // As in a build: a new ENTRYPOINT drops the CMD it inherited.
            c["Cmd"] = Value::Null;
        }
        K::Env(pairs) => {
            let mut env: Vec<String> = c["Env"]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
                .unwrap_or_default();
            for kv in pairs {
                env.retain(|e| e.split('=').next() != Some(kv.key.as_str()));
                env.push(format!("{}={}", kv.key, kv.value));
            }
            c["Env"] = json!(env);
        }
        K::Label(pairs) => {
            if !c["Labels"].is_object() {
                c["Labels"] = json!({});
            }
            for kv in pairs {
                c["Labels"][&kv.key] = Value::from(kv.value.as_str());
            }
        }
        K::Expose(ports) => {
            if !c["ExposedPorts"].is_object() {
                c["ExposedPorts"] = json!({});
            }
            for p in ports {
                let p = if p.contains('/') { p.clone() } else { format!("{p}/tcp") };
                c["ExposedPorts"][&p] = json!({});
            }
        }
        K::Volume(paths) => {
            if !c["Volumes"].is_object() {
                c["Volumes"] = json!({});
            }
            for p in paths {
                c["Volumes"][p] = json!({});
            }
        }
        K::User(u) => c["User"] = Value::from(u.as_str()),
        K::Workdir(w) => c["WorkingDir"] = Value::from(w.as_str()),
        K::StopSignal(s) => c["StopSignal"] = Value::from(s.as_str()),
        _ => bail!(
            "--change {change:?}: only CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER, VOLUME, WORKDIR and STOPSIGNAL change a committed image"
        ),
    }
    Ok(())
}
