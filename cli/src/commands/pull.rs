//! `gcr pull`, `gcr login`, `gcr logout`: the registry commands and their progress display.

use std::io::{IsTerminal, Read};

use anyhow::{bail, Context as _};
use clap::Args;
use gcr_registry::{PullEvent, PullOptions, Reference};

use crate::context::Context;

/// How gcr talks TLS to a registry (pull, push, login).
#[derive(Args, Debug)]
pub struct TlsArgs {
    /// Require HTTPS with a verified certificate (false allows plain HTTP and any certificate)
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub tls_verify: bool,
    /// Certificates for the registry in one directory (*.crt CAs, *.cert + *.key client
    /// certificate) instead of /etc/containers/certs.d/HOST[:PORT]
    #[arg(long, value_name = "DIR")]
    pub cert_dir: Option<std::path::PathBuf>,
}

#[derive(Args, Debug)]
pub struct PullArgs {
    /// Platform to pull from a multi-platform image: os/arch[/variant]
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    platform: Option<String>,
    /// Print nothing but the image name when done
    #[arg(short, long)]
    quiet: bool,
    #[command(flatten)]
    tls: TlsArgs,
    /// Image reference: NAME[:TAG|@DIGEST]
    #[arg(value_name = "IMAGE")]
    image: String,
}

#[derive(Args, Debug)]
pub struct LoginArgs {
    /// User name
    #[arg(short, long)]
    username: Option<String>,
    /// Password (prefer --password-stdin)
    #[arg(short, long)]
    password: Option<String>,
    /// Read the password from standard input
    #[arg(long)]
    password_stdin: bool,
    #[command(flatten)]
    tls: TlsArgs,
    /// Registry host[:port]
    #[arg(value_name = "REGISTRY")]
    registry: String,
}

#[derive(Args, Debug)]
pub struct LogoutArgs {
    /// Registry host[:port]
    #[arg(value_name = "REGISTRY")]
    registry: String,
}

pub fn pull(ctx: &Context, args: PullArgs) -> anyhow::Result<u8> {
    let reference: Reference = args
        .image
        .parse()
        .with_context(|| format!("invalid image reference {:?}", args.image))?;
    let platform = args
        .platform
        .as_deref()
        .map(str::parse)
        .transpose()
        .context("invalid --platform")?;
    let store = ctx.open_store()?;
    let options = PullOptions {
        platform,
        tls_verify: args.tls.tls_verify,
        cert_dir: args.tls.cert_dir.clone(),
        ..Default::default()
    };
    let runtime = crate::context::tokio_runtime()?;
    let quiet = args.quiet;
    let result = runtime.block_on(async move {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        let display = tokio::spawn(show_progress(receiver, quiet));
        let result = gcr_registry::pull(&store, &reference, &options, sender).await;
        let _ = display.await;
        result.map(|pulled| (reference, pulled))
    });
    // The pull error already names the reference.
    let (reference, pulled) = result?;
    if quiet {
        println!("{}", pulled.name);
    } else {
        println!("Digest: {}", pulled.resolved_digest);
        println!("Status: downloaded newer image for {reference}");
        println!("{}", pulled.name);
    }
    Ok(0)
}

/// Draws per-layer bars on a terminal, plain lines otherwise, nothing when quiet.
async fn show_progress(mut events: tokio::sync::mpsc::UnboundedReceiver<PullEvent>, quiet: bool) {
    let mut shown = crate::progress::Transfers::new(quiet);
    while let Some(event) = events.recv().await {
        match event {
            PullEvent::Resolved { manifest_digest } => {
                shown.plain(format!("Resolved manifest {manifest_digest}"))
            }
            PullEvent::LayerStarted { digest, size } => {
                shown.started(&digest.to_string(), size, "downloading")
            }
            PullEvent::LayerProgress { digest, bytes_done } => {
                shown.progress(&digest.to_string(), bytes_done)
            }
            PullEvent::LayerSkipped { digest } => shown.settled(
                &digest.to_string(),
                "exists".into(),
                "skipped: already exists".into(),
            ),
            PullEvent::Retrying {
                what,
                attempt,
                delay,
                reason,
            } => shown.note(format!(
                "Retrying {what} in {delay:?} (attempt {attempt}): {reason}"
            )),
            PullEvent::LayerDone { digest } => shown.done(&digest.to_string(), "done"),
            _ => {}
        }
    }
    shown.finish();
}

pub fn login(args: LoginArgs) -> anyhow::Result<u8> {
    let username = match args.username {
        Some(u) => u,
        None => {
            if !std::io::stdin().is_terminal() {
                bail!("no user name given: use -u USER");
            }
            eprint!("Username: ");
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            line.trim().to_string()
        }
    };
    let password = if args.password_stdin {
        if args.password.is_some() {
            bail!("--password and --password-stdin are mutually exclusive");
        }
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the password from standard input")?;
        text.trim_end_matches(['\n', '\r']).to_string()
    } else if let Some(p) = args.password {
        p
    } else {
        bail!("no password given: use --password-stdin (or -p PASSWORD)");
    };
    if username.is_empty() || password.is_empty() {
        bail!("user name and password must not be empty");
    }
    let runtime = crate::context::tokio_runtime()?;
    // The login error names the registry.
    let client_options = gcr_registry::ClientOptions {
        tls_verify: args.tls.tls_verify,
        cert_dir: args.tls.cert_dir.clone(),
        ..Default::default()
    };
    let outcome = runtime.block_on(gcr_registry::login_with(
        &args.registry,
        &username,
        &password,
        &client_options,
    ))?;
    tracing::info!(auth_file = %outcome.auth_file.display(), "credentials saved");
    println!("Login Succeeded!");
    Ok(0)
}

pub fn logout(args: LogoutArgs) -> anyhow::Result<u8> {
    // As Docker: logging out of a registry one is not logged in to is not an error.
    if gcr_registry::logout(&args.registry)? {
        println!("Removed login credentials for {}", args.registry);
    } else {
        println!("Not logged in to {}", args.registry);
    }
    Ok(0)
}
