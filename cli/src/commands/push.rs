//! `gcr push`: an image from the store to a registry, with progress bars like `gcr pull`.

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::Args;
use gcr_registry::{PushEvent, PushOptions, Reference};

use crate::context::Context;
use crate::lookup::find_image;

#[derive(Args, Debug)]
pub struct PushArgs {
    /// Print nothing but the pushed reference when done
    #[arg(short, long)]
    quiet: bool,
    #[command(flatten)]
    tls: super::pull::TlsArgs,
    /// Write the digest of the pushed manifest to this file
    #[arg(long, value_name = "FILE")]
    digestfile: Option<PathBuf>,
    /// Upload blobs in PATCH chunks of this many bytes (default: one request per blob)
    #[arg(long, value_name = "BYTES", hide = true)]
    chunk_size: Option<u64>,
    /// Local image: name or ID
    #[arg(value_name = "IMAGE")]
    image: String,
    /// Where to push: [docker://]REGISTRY/REPOSITORY[:TAG] (default: IMAGE's name)
    #[arg(value_name = "DESTINATION")]
    destination: Option<String>,
}

pub fn push(ctx: &Context, args: PushArgs) -> anyhow::Result<u8> {
    let store = ctx.open_store()?;
    let image = find_image(&store, &args.image)?;
    let destination_text = match &args.destination {
        Some(d) => d.strip_prefix("docker://").unwrap_or(d).to_string(),
        None => args.image.clone(),
    };
    let destination: Reference = destination_text
        .parse()
        .with_context(|| format!("invalid destination {destination_text:?}"))?;
    if args.destination.is_none() && !image.names.iter().any(|n| *n == destination.to_string()) {
        bail!(
            "{} is not a name of the image: give a destination (gcr push {} REGISTRY/REPOSITORY[:TAG])",
            args.image,
            args.image
        );
    }
    if args.chunk_size == Some(0) {
        bail!("--chunk-size must be more than 0");
    }
    let options = PushOptions {
        tls_verify: args.tls.tls_verify,
        cert_dir: args.tls.cert_dir.clone(),
        chunk_size: args.chunk_size,
        ..Default::default()
    };
    let runtime = crate::context::tokio_runtime()?;
    let quiet = args.quiet;
    let pushed = runtime.block_on(async {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        let display = tokio::spawn(show_progress(receiver, quiet));
        let result = gcr_registry::push(&store, &image, &destination, &options, sender).await;
        let _ = display.await;
        result
    })?;
    if let Some(path) = &args.digestfile {
        std::fs::write(path, pushed.manifest_digest.as_str())
            .with_context(|| format!("cannot write the digest to {}", path.display()))?;
    }
    if quiet {
        println!("{}", pushed.destination);
    } else {
        let label = destination
            .tag()
            .map(str::to_string)
            .unwrap_or_else(|| pushed.manifest_digest.to_string());
        println!(
            "{label}: digest: {} size: {}",
            pushed.manifest_digest, pushed.manifest_size
        );
    }
    Ok(0)
}

/// Draws per-blob bars on a terminal, plain lines otherwise, nothing when quiet.
async fn show_progress(mut events: tokio::sync::mpsc::UnboundedReceiver<PushEvent>, quiet: bool) {
    let mut shown = crate::progress::Transfers::new(quiet);
    while let Some(event) = events.recv().await {
        match event {
            PushEvent::Preparing {
                destination,
                manifest_digest,
            } => shown.plain(format!(
                "Pushing {destination} (manifest {manifest_digest})"
            )),
            PushEvent::BlobExists { digest } => {
                let message = "skipped: already exists".to_string();
                shown.settled(digest.as_str(), message.clone(), message)
            }
            PushEvent::BlobMounted { digest, from } => {
                let message = format!("mounted from {from}");
                shown.settled(digest.as_str(), message.clone(), message)
            }
            PushEvent::BlobStarted { digest, size } => {
                shown.started(digest.as_str(), size, "pushing")
            }
            PushEvent::BlobProgress { digest, bytes_done } => {
                shown.progress(digest.as_str(), bytes_done)
            }
            PushEvent::BlobDone { digest } => shown.done(digest.as_str(), "pushed"),
            PushEvent::Retrying {
                what,
                attempt,
                delay,
                reason,
            } => shown.note(format!(
                "Retrying {what} in {delay:?} (attempt {attempt}): {reason}"
            )),
            PushEvent::ManifestPushed { digest, .. } => {
                shown.plain(format!("Writing manifest {digest}"))
            }
        }
    }
    shown.finish();
}
