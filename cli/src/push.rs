//! `gcr push`: an image from the store to a registry, with progress bars like `gcr pull`.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::Args;
use gcr_registry::{PushEvent, PushOptions, Reference};
use indicatif::ProgressBar;

use crate::format::short_id;
use crate::images::find_image;
use crate::Context;

#[derive(Args, Debug)]
pub struct PushArgs {
    /// Print nothing but the pushed reference when done
    #[arg(short, long)]
    quiet: bool,
    /// Require HTTPS with a verified certificate (false allows plain HTTP and any certificate)
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    tls_verify: bool,
    /// Certificates for the registry in one directory (*.crt CAs, *.cert + *.key client
    /// certificate) instead of /etc/containers/certs.d/HOST[:PORT]
    #[arg(long, value_name = "DIR")]
    cert_dir: Option<std::path::PathBuf>,
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
        tls_verify: args.tls_verify,
        cert_dir: args.cert_dir.clone(),
        chunk_size: args.chunk_size,
        ..Default::default()
    };
    let runtime = crate::tokio_runtime()?;
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
    let (terminal, multi, style) = crate::format::transfer_bars(quiet);
    let finished = |key: &str, message: String| {
        if terminal {
            let bar = multi.add(ProgressBar::new(0));
            bar.set_style(style.clone());
            bar.set_prefix(short_id(key));
            bar.finish_with_message(message);
        } else {
            eprintln!("Copying blob {} {message}", short_id(key));
        }
    };
    let mut bars: HashMap<String, ProgressBar> = HashMap::new();
    while let Some(event) = events.recv().await {
        if quiet {
            continue;
        }
        match event {
            PushEvent::Preparing {
                destination,
                manifest_digest,
            } => {
                if !terminal {
                    eprintln!("Pushing {destination} (manifest {manifest_digest})");
                }
            }
            PushEvent::BlobExists { digest } => {
                finished(digest.as_str(), "skipped: already exists".to_string())
            }
            PushEvent::BlobMounted { digest, from } => {
                finished(digest.as_str(), format!("mounted from {from}"))
            }
            PushEvent::BlobStarted { digest, size } => {
                let key = digest.to_string();
                if terminal {
                    let bar = multi.add(ProgressBar::new(size));
                    bar.set_style(style.clone());
                    bar.set_prefix(short_id(&key));
                    bar.set_message("pushing");
                    bars.insert(key, bar);
                } else {
                    eprintln!("Copying blob {} ({size} bytes)", short_id(&key));
                }
            }
            PushEvent::BlobProgress { digest, bytes_done } => {
                if let Some(bar) = bars.get(digest.as_str()) {
                    bar.set_position(bytes_done);
                }
            }
            PushEvent::BlobDone { digest } => match bars.get(digest.as_str()) {
                Some(bar) => bar.finish_with_message("pushed"),
                None => eprintln!("Copying blob {} done", short_id(digest.as_str())),
            },
            PushEvent::Retrying {
                what,
                attempt,
                delay,
                reason,
            } => {
                let line = format!("Retrying {what} in {delay:?} (attempt {attempt}): {reason}");
                if terminal {
                    let _ = multi.println(line);
                } else {
                    eprintln!("{line}");
                }
            }
            PushEvent::ManifestPushed { digest, .. } => {
                if !terminal {
                    eprintln!("Writing manifest {digest}");
                }
            }
        }
    }
}
