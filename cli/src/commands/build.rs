//! `gcr build`: builds an image with gcr-builder; `--check` only parses and plans.

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::Args;

use crate::context::Context;

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Containerfile to build, `-` for stdin (default: Containerfile, then Dockerfile, in the context)
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Option<PathBuf>,
    /// Name for the image: NAME[:TAG] (repeatable)
    #[arg(short = 't', long = "tag", value_name = "NAME[:TAG]")]
    tags: Vec<String>,
    /// Build-time variable: KEY=VALUE, or KEY to take gcr's own value (repeatable)
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    build_args: Vec<String>,
    /// Remove intermediate containers (always: gcr leaves none; accepted for Docker's habit)
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    rm: Option<bool>,
    /// Remove intermediate containers even after a failure (always, as --rm)
    #[arg(long = "force-rm")]
    force_rm: bool,
    /// Build up to this stage
    #[arg(long, value_name = "STAGE")]
    target: Option<String>,
    /// Only parse and plan the build; read no context files and pull nothing
    #[arg(long)]
    check: bool,
    /// Do not use the build cache (results are still cached)
    #[arg(long)]
    no_cache: bool,
    /// How many independent stages may build at once (1: one after the other; default: the
    /// CPUs, at least 4)
    #[arg(long, value_name = "N")]
    jobs: Option<usize>,
    /// Pull base images even when they are in the store
    #[arg(long)]
    pull: bool,
    /// Set a label on the image: KEY=VALUE (repeatable)
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Network for RUN steps: host (default) or none
    #[arg(long, default_value = "host", value_name = "MODE")]
    network: String,
    /// Grant an entitlement: security.insecure lets RUN --security=insecure run privileged
    #[arg(long = "allow", value_name = "ENTITLEMENT")]
    allow: Vec<String>,
    /// Also write the result elsewhere: type=local,dest=DIR (or DIR), type=tar,dest=FILE (or
    /// - for stdout), type=oci|docker,dest=FILE[,name=NAME] (repeatable)
    #[arg(short = 'o', long = "output", value_name = "SPEC")]
    outputs: Vec<String>,
    /// Write the result's digests and names as JSON (BuildKit's keys) to this file
    #[arg(long = "metadata-file", value_name = "FILE")]
    metadata_file: Option<PathBuf>,
    /// An annotation of the result: [manifest:|index:]KEY=VALUE (repeatable)
    #[arg(long = "annotation", value_name = "KEY=VALUE")]
    annotations: Vec<String>,
    /// A further context: NAME=DIR or NAME=docker-image://REF, for FROM NAME, COPY --from=NAME
    /// and RUN --mount from=NAME (repeatable)
    #[arg(long = "build-context", value_name = "NAME=VALUE")]
    build_contexts: Vec<String>,
    /// Add a line to RUN's /etc/hosts: NAME:IP (repeatable)
    #[arg(long = "add-host", value_name = "NAME:IP")]
    add_hosts: Vec<String>,
    /// Resource limit of RUN steps: NAME=SOFT[:HARD] (repeatable)
    #[arg(long = "ulimit", value_name = "NAME=SOFT[:HARD]")]
    ulimits: Vec<String>,
    /// Size of RUN's /dev/shm, e.g. 128m
    #[arg(long = "shm-size", value_name = "SIZE")]
    shm_size: Option<String>,
    /// Import build cache: type=registry,ref=REF, or an image reference (its inline cache)
    /// (repeatable)
    #[arg(long = "cache-from", value_name = "SPEC")]
    cache_from: Vec<String>,
    /// Export build cache: type=registry,ref=REF[,mode=min|max] or type=inline (repeatable)
    #[arg(long = "cache-to", value_name = "SPEC")]
    cache_to: Vec<String>,
    /// Write the image ID to this file
    #[arg(long, value_name = "FILE")]
    iidfile: Option<PathBuf>,
    /// Print only the image ID
    #[arg(short, long)]
    quiet: bool,
    /// Progress output: auto, plain or tty (all print BuildKit's plain form)
    #[arg(long, default_value = "auto", value_name = "TYPE")]
    progress: String,
    /// Target platform, or a comma-separated list of them (one image index with a manifest
    /// per platform); foreign ones run RUN steps through qemu-user-static's binfmt_misc handlers
    #[arg(long, value_name = "OS/ARCH[/VARIANT][,...]")]
    platform: Option<String>,
    /// Layer compression: gzip (default) or zstd
    #[arg(long, default_value = "gzip", value_name = "gzip|zstd")]
    compression: String,
    /// Clamp the times of files in new layers to SOURCE_DATE_EPOCH (BuildKit's
    /// rewrite-timestamp; gcr always does so when a fixed time is given)
    #[arg(long = "rewrite-timestamp")]
    rewrite_timestamp: bool,
    /// Fixed creation time (seconds since the epoch) for reproducible images
    #[arg(long, value_name = "SECONDS")]
    timestamp: Option<i64>,
    /// Secret for RUN --mount=type=secret: id=ID,src=PATH (repeatable)
    #[arg(long = "secret", value_name = "id=ID,src=PATH")]
    secrets: Vec<String>,
    /// SSH agent socket for RUN --mount=type=ssh: default, or ID=SOCKET (repeatable;
    /// `default` alone uses $SSH_AUTH_SOCK)
    #[arg(long = "ssh", value_name = "default|ID[=SOCKET]")]
    ssh: Vec<String>,
    /// Build context directory, or `-`: stdin holds the Containerfile (no context) or a
    /// tar archive of the context (plain, gzip, bzip2, xz or zstd)
    #[arg(value_name = "CONTEXT", default_value = ".")]
    context: PathBuf,
}

/// The Containerfile to use: `-f` as given, else Containerfile then Dockerfile in the context.
fn containerfile_path(args: &BuildArgs) -> anyhow::Result<PathBuf> {
    if let Some(file) = &args.file {
        return Ok(file.clone());
    }
    for name in ["Containerfile", "Dockerfile"] {
        let candidate = args.context.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "no Containerfile or Dockerfile in {}: give one with -f FILE",
        args.context.display()
    )
}

/// `--build-arg` values; a bare KEY takes gcr's own environment value or is dropped.
fn build_arg_pairs(args: &BuildArgs) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for pair in &args.build_args {
        match pair.split_once('=') {
            Some((k, v)) => out.push((k.to_string(), v.to_string())),
            None => {
                if let Ok(v) = std::env::var(pair) {
                    out.push((pair.clone(), v));
                }
            }
        }
    }
    out
}

/// `gcr build -`, as `docker build -`: stdin holds either the Containerfile (the build then
/// has an empty context) or a tar archive of the context, plain or compressed. Returns the
/// context directory made under `dir` and, for a Containerfile, its path.
fn stdin_context(dir: &std::path::Path) -> anyhow::Result<(PathBuf, Option<PathBuf>)> {
    use gcr_storage::compression::ArchiveCompression;
    use std::io::Read as _;
    let mut stdin = std::io::stdin().lock();
    let mut head = Vec::new();
    (&mut stdin)
        .take(512)
        .read_to_end(&mut head)
        .context("cannot read stdin")?;
    let compression = ArchiveCompression::sniff(&head);
    let mut decoded = compression
        .decoder(std::io::Cursor::new(head).chain(stdin))
        .context("cannot read stdin")?;
    let mut tar_head = Vec::new();
    (&mut decoded)
        .take(512)
        .read_to_end(&mut tar_head)
        .with_context(|| format!("cannot decompress stdin ({})", compression.name()))?;
    let context = dir.join("context");
    std::fs::create_dir(&context)
        .with_context(|| format!("cannot create {}", context.display()))?;
    if tar_head.get(257..262) == Some(b"ustar") {
        unpack_context(
            tar::Archive::new(std::io::Cursor::new(tar_head).chain(decoded)),
            &context,
        )?;
        return Ok((context, None));
    }
    if compression != ArchiveCompression::None {
        bail!(
            "stdin holds {} data that is not a tar archive: give a Containerfile or a tar archive of the context",
            compression.name()
        );
    }
    let mut text = tar_head;
    decoded
        .read_to_end(&mut text)
        .context("cannot read the Containerfile from stdin")?;
    let file = dir.join("Containerfile");
    std::fs::write(&file, text).with_context(|| format!("cannot write {}", file.display()))?;
    Ok((context, Some(file)))
}

/// Unpacks a context archive into `context`. An entry that names a path out of the context
/// (`..`) fails the build, as BuildKit's does, instead of being skipped; the tar crate keeps
/// every other entry beneath `context` (no way out through links either).
fn unpack_context(
    mut archive: tar::Archive<impl std::io::Read>,
    context: &std::path::Path,
) -> anyhow::Result<()> {
    archive.set_preserve_permissions(true);
    let entries = archive
        .entries()
        .context("cannot read the build context tar archive from stdin")?;
    for entry in entries {
        let mut entry = entry.context("cannot read the build context tar archive from stdin")?;
        let path = entry
            .path()
            .context("a build context entry has an unreadable name")?
            .into_owned();
        if path
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            bail!(
                "the build context archive has an entry out of the context: {} (`..` is not allowed)",
                path.display()
            );
        }
        entry
            .unpack_in(context)
            .with_context(|| format!("cannot unpack {} of the build context", path.display()))?;
    }
    Ok(())
}

pub fn build(ctx: &Context, mut args: BuildArgs) -> anyhow::Result<u8> {
    if args.check {
        return check(&args);
    }
    let store = ctx.open_store()?;
    let stdin_is_file = args.file.as_deref() == Some(std::path::Path::new("-"));
    let stdin_context_dir;
    let mut stdin_file = None;
    if args.context.as_os_str() == "-" {
        if stdin_is_file {
            bail!("-f - and the context - both want stdin: give one of them a path");
        }
        stdin_context_dir = store.build_dir("build-context")?;
        let (context, file) = stdin_context(stdin_context_dir.path())?;
        // -f names a file inside the archive, as Docker reads it.
        if let Some(f) = args.file.as_mut().filter(|f| f.is_relative()) {
            *f = context.join(&*f);
        }
        args.context = context;
        stdin_file = file;
    }
    // `-f -` reads the Containerfile from stdin into a work directory of the store.
    let stdin_dir;
    let path = if let Some(file) = stdin_file {
        file
    } else if stdin_is_file {
        stdin_dir = store.build_dir("build-stdin")?;
        let path = stdin_dir.path().join("Containerfile");
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut text)
            .context("cannot read the Containerfile from stdin")?;
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        path
    } else {
        containerfile_path(&args)?
    };
    let mut options = build_options(&args, &path)?;
    let cache_to = args
        .cache_to
        .iter()
        .map(|t| crate::commands::build_cache::parse_spec(t, true))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let cache_from = args
        .cache_from
        .iter()
        .map(|t| crate::commands::build_cache::parse_spec(t, false))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // BuildKit's build arg for an inline cache.
    let inline_arg = options
        .build_args
        .iter()
        .any(|(k, v)| k == "BUILDKIT_INLINE_CACHE" && v != "0" && !v.is_empty());
    options
        .build_args
        .retain(|(k, _)| k != "BUILDKIT_INLINE_CACHE");
    options.inline_cache = inline_arg
        || cache_to
            .iter()
            .any(|s| matches!(s, crate::commands::build_cache::CacheSpec::Inline { .. }));
    options.cache_from = crate::commands::build_cache::import(ctx, &cache_from, options.quiet);
    let fetch_layer = |source: &str, layers: &[gcr_builder::CacheLayer]| {
        crate::commands::build_cache::fetch_layers(ctx, source, layers)
    };
    let platforms = platform_list(args.platform.as_deref())?;
    let exports = args
        .outputs
        .iter()
        .map(|text| {
            let mut export = gcr_builder::BuildExport::parse(text)?;
            if let gcr_builder::BuildExport::Archive { names, .. } = &mut export {
                for name in names.iter_mut() {
                    *name = crate::lookup::normalize_name(name)?;
                }
            }
            Ok(export)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let to_stdout = exports.iter().any(|e| {
        matches!(
            e,
            gcr_builder::BuildExport::Tar(gcr_builder::Destination::Stdout)
                | gcr_builder::BuildExport::Archive {
                    dest: gcr_builder::Destination::Stdout,
                    ..
                }
        )
    });
    if to_stdout && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        bail!("refusing to write a tar stream to a terminal: give the output a dest=FILE or redirect stdout");
    }
    if platforms.len() > 1
        && exports
            .iter()
            .any(|e| matches!(e, gcr_builder::BuildExport::Tar(_)))
    {
        bail!("--output type=tar with several platforms is not supported yet: use type=local (a directory per platform), type=oci or type=docker");
    }
    let pulled = std::cell::RefCell::new(std::collections::BTreeSet::new());
    let resolve = |name: &str,
                   platform: &gcr_builder::Platform|
     -> Result<gcr_storage::ImageRecord, String> {
        let fresh_pull = args.pull && pulled.borrow_mut().insert(format!("{name} {platform}"));
        if !fresh_pull {
            if let Some(record) = crate::lookup::stored_for_platform(&store, name, platform) {
                return Ok(record);
            }
        }
        // The host's platform is pulled as gcr pull picks it (no --platform), as before.
        let wanted = (*platform != gcr_builder::Platform::host()).then_some(platform);
        let before = crate::lookup::find_image(&store, name).ok();
        pull_image(ctx, name, wanted).map_err(|e| format!("{e:#}"))?;
        let found =
            crate::lookup::stored_for_platform(&store, name, platform).ok_or_else(|| {
                format!("base image {name} was pulled but has no image for {platform}")
            })?;
        // A foreign platform's pull leaves the name where it was (on the host's image), so a
        // cross build does not change what `gcr run NAME` runs; the pulled image stays unnamed.
        if let Some(before) = before.filter(|b| b.id != found.id && wanted.is_some()) {
            if let Some(stored) = found.names.iter().find(|n| before.names.contains(n)) {
                store.tag(&before.id, stored).map_err(|e| e.to_string())?;
            }
        }
        Ok(found)
    };
    let fetch = |url: &str| -> Result<(Vec<u8>, Option<i64>), String> {
        let dir = store.build_dir("add-url").map_err(|e| e.to_string())?;
        fetch_url(&dir.path().join("download"), url).map_err(|e| format!("{e:#}"))
    };
    let hook: Option<gcr_builder::FetchLayer<'_>> = Some(&fetch_layer);
    let built = match platforms.as_slice() {
        [] => gcr_builder::build_with_cache(&store, &options, &resolve, &fetch, hook)
            .map(|o| (o.image.id.clone(), o.image, o.cache_steps)),
        [one] => {
            let mut options = options.clone();
            options.platform = Some(one.clone());
            gcr_builder::build_with_cache(&store, &options, &resolve, &fetch, hook)
                .map(|o| (o.image.id.clone(), o.image, o.cache_steps))
        }
        several => gcr_builder::build_platforms(&store, &options, several, &resolve, &fetch, hook)
            .map(|o| (o.index, o.image, o.cache_steps)),
    };
    match built {
        Ok((id, image, cache_steps)) => {
            crate::commands::build_cache::export(
                ctx,
                &store,
                &cache_to,
                &cache_steps,
                options.quiet,
            )?;
            // Several platforms: the index digest, as buildx's --iidfile has it.
            let digest = id.clone();
            let id = id.as_str().to_string();
            for export in &exports {
                gcr_builder::export(&store, &image, &options.tags, export)?;
            }
            if let Some(file) = &args.iidfile {
                std::fs::write(file, &id)
                    .with_context(|| format!("cannot write --iidfile {}", file.display()))?;
            }
            if let Some(file) = &args.metadata_file {
                let mut doc = gcr_builder::metadata(&store, &image);
                if id != image.id.as_str() {
                    // Several platforms: the result is the index.
                    let size = std::fs::metadata(store.blob_path(&digest)).map_or(0, |m| m.len());
                    doc["containerimage.digest"] = serde_json::json!(id);
                    doc["containerimage.descriptor"] = serde_json::json!({
                        "mediaType": "application/vnd.oci.image.index.v1+json",
                        "digest": id,
                        "size": size,
                    });
                }
                std::fs::write(file, serde_json::to_vec_pretty(&doc)?)
                    .with_context(|| format!("cannot write --metadata-file {}", file.display()))?;
            }
            if !args.quiet {
                for name in &image.names {
                    eprintln!("Successfully tagged {name}");
                }
            }
            // A tar stream on stdout must stay whole: the ID goes to stderr then.
            if to_stdout {
                eprintln!("{id}");
            } else {
                println!("{id}");
            }
            Ok(0)
        }
        Err(err) => {
            eprintln!("error: {err}");
            match err.run_exit_code() {
                Some(code) => Ok(u8::try_from(code & 0xff).unwrap_or(1).max(1)),
                None => Ok(crate::context::EXIT_GCR_FAILED),
            }
        }
    }
}

fn build_options(
    args: &BuildArgs,
    path: &std::path::Path,
) -> anyhow::Result<gcr_builder::BuildOptions> {
    if !matches!(args.progress.as_str(), "auto" | "plain" | "tty" | "quiet") {
        bail!(
            "unknown --progress {:?}: use auto, plain, tty or quiet",
            args.progress
        );
    }
    let mut options = gcr_builder::BuildOptions::new(path.to_path_buf(), args.context.clone());
    for tag in &args.tags {
        options.tags.push(crate::lookup::normalize_name(tag)?);
    }
    options.build_args = build_arg_pairs(args);
    options.target = args.target.clone();
    options.no_cache = args.no_cache;
    if let Some(jobs) = args.jobs {
        if jobs == 0 {
            anyhow::bail!("--jobs 0: give at least 1 (stages built at once)");
        }
        options.jobs = jobs;
    }
    for label in &args.labels {
        let (k, v) = label.split_once('=').unwrap_or((label.as_str(), ""));
        if k.is_empty() {
            bail!("invalid --label {label:?}: use KEY=VALUE");
        }
        options.labels.push((k.to_string(), v.to_string()));
    }
    for entitlement in &args.allow {
        match entitlement.as_str() {
            "security.insecure" => options.allow_insecure = true,
            // RUN steps may already use the host's network.
            "network.host" => {}
            other => bail!("unknown --allow {other:?}: use security.insecure or network.host"),
        }
    }
    options.network_none = match args.network.as_str() {
        "none" => true,
        "host" | "default" => false,
        other => bail!("unknown --network {other:?}: use host or none"),
    };
    options.compression = match args.compression.as_str() {
        "gzip" => gcr_builder::Compression::Gzip,
        "zstd" => gcr_builder::Compression::Zstd,
        other => bail!("unknown --compression {other:?}: use gzip or zstd"),
    };
    options.timestamp =
        match args.timestamp {
            Some(t) => Some(t),
            None => match std::env::var("SOURCE_DATE_EPOCH") {
                Ok(v) if !v.is_empty() => Some(v.trim().parse().with_context(|| {
                    format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds")
                })?),
                _ => None,
            },
        };
    if args.rewrite_timestamp && options.timestamp.is_none() {
        bail!("--rewrite-timestamp needs a time to clamp to: set SOURCE_DATE_EPOCH or give --timestamp");
    }
    options.quiet = args.quiet || args.progress == "quiet";
    for annotation in &args.annotations {
        options.add_annotation(annotation)?;
    }
    options.named_contexts = args
        .build_contexts
        .iter()
        .map(|c| gcr_builder::NamedContext::parse(c))
        .collect::<Result<_, _>>()?;
    options.extra_hosts =
        gcr_containers::parse_extra_hosts(&args.add_hosts, gcr_containers::NetworkChoice::Host)?;
    options.rlimits = args
        .ulimits
        .iter()
        .map(|u| gcr_containers::parse_ulimit(u))
        .collect::<Result<_, _>>()?;
    options.shm_size = args
        .shm_size
        .as_deref()
        .map(|s| gcr_containers::parse_size("--shm-size", s))
        .transpose()?;
    for secret in &args.secrets {
        let mut id = None;
        let mut src = None;
        for part in secret.split(',') {
            match part.split_once('=') {
                Some(("id", v)) => id = Some(v.to_string()),
                Some(("src" | "source", v)) => src = Some(PathBuf::from(v)),
                Some(("type", "file")) => {}
                _ => bail!("invalid --secret {secret:?}: use id=ID,src=PATH"),
            }
        }
        let (Some(id), Some(src)) = (id, src) else {
            bail!("invalid --secret {secret:?}: use id=ID,src=PATH");
        };
        let src = std::fs::canonicalize(&src)
            .with_context(|| format!("secret file {} does not exist", src.display()))?;
        options.secrets.push((id, src));
    }
    for ssh in &args.ssh {
        let (id, socket) = match ssh.split_once('=') {
            Some((id, socket)) => (id.to_string(), PathBuf::from(socket)),
            None => match std::env::var_os("SSH_AUTH_SOCK").filter(|s| !s.is_empty()) {
                Some(socket) => (ssh.clone(), PathBuf::from(socket)),
                None => bail!("--ssh {ssh}: SSH_AUTH_SOCK is not set; give the agent's socket as --ssh {ssh}=SOCKET"),
            },
        };
        if id.is_empty() || id.contains(',') {
            bail!("invalid --ssh {ssh:?}: use default or ID=SOCKET");
        }
        let meta = std::fs::metadata(&socket).with_context(|| {
            format!(
                "--ssh {id}: agent socket {} does not exist",
                socket.display()
            )
        })?;
        if !std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) {
            bail!(
                "--ssh {id}={}: not a socket; only a running ssh-agent's socket is supported yet (not key files)",
                socket.display()
            );
        }
        options.ssh.push((id, socket));
    }
    Ok(options)
}

/// `--platform` values: one or a comma-separated list, each once.
fn platform_list(text: Option<&str>) -> anyhow::Result<Vec<gcr_builder::Platform>> {
    let mut out: Vec<gcr_builder::Platform> = Vec::new();
    for part in text
        .unwrap_or("")
        .split(',')
        .filter(|p| !p.trim().is_empty())
    {
        let platform =
            gcr_builder::Platform::parse(part).map_err(|e| anyhow::anyhow!("--platform: {e}"))?;
        if !out.contains(&platform) {
            out.push(platform);
        }
    }
    Ok(out)
}

/// Pulls a base image in a child `gcr pull`, so this process never starts the threads of an
/// async runtime before it forks RUN containers.
fn pull_image(
    ctx: &Context,
    name: &str,
    platform: Option<&gcr_builder::Platform>,
) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find the gcr binary to pull with")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("--root").arg(&ctx.root).arg("pull").arg("-q");
    if let Some(platform) = platform {
        cmd.arg("--platform").arg(platform.to_string());
    }
    let status = cmd
        .arg(name)
        .stdout(std::process::Stdio::null())
        .status()
        .context("cannot start gcr pull")?;
    if !status.success() {
        bail!("base image {name} is not in the store and could not be pulled");
    }
    Ok(())
}

/// Largest `ADD <url>` download.
const MAX_ADD_URL_BYTES: u64 = 1 << 30;

/// Downloads `url` into `dest` in a child `gcr __fetch-url` (no threads in this process, which
/// forks RUN containers) and returns the bytes and the Last-Modified time.
fn fetch_url(dest: &std::path::Path, url: &str) -> anyhow::Result<(Vec<u8>, Option<i64>)> {
    let exe = std::env::current_exe().context("cannot find the gcr binary to download with")?;
    let out = std::process::Command::new(exe)
        .arg("__fetch-url")
        .arg(url)
        .arg(dest)
        .stdin(std::process::Stdio::null())
        .output()
        .context("cannot start the download")?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stderr);
        bail!("{}", text.trim().trim_start_matches("error: "));
    }
    let last_modified = String::from_utf8_lossy(&out.stdout).trim().parse().ok();
    let data = std::fs::read(dest).with_context(|| format!("cannot read {}", dest.display()))?;
    Ok((data, last_modified))
}

/// `gcr __fetch-url URL DEST`: the download itself, for [`fetch_url`]. Prints the
/// Last-Modified time (Unix seconds) when the server sent one.
pub fn fetch_url_command(url: &str, dest: &std::path::Path) -> anyhow::Result<u8> {
    let runtime = crate::context::tokio_runtime()?;
    let fetched = runtime.block_on(gcr_registry::fetch::fetch_url(url, dest, MAX_ADD_URL_BYTES))?;
    if let Some(time) = fetched.last_modified {
        println!("{time}");
    }
    Ok(0)
}

fn check(args: &BuildArgs) -> anyhow::Result<u8> {
    let path = containerfile_path(args)?;
    let source = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let build_args = build_arg_pairs(args);
    let file_name = path.display().to_string();
    let diagnostics =
        gcr_grammar::check_containerfile(&source, &file_name, &build_args, args.target.as_deref());
    for diagnostic in &diagnostics {
        eprintln!("{}", diagnostic.render());
    }
    if diagnostics.iter().any(|d| d.is_error()) {
        return Ok(1);
    }
    println!("{file_name}: ok");
    Ok(0)
}

impl BuildArgs {
    /// `--check` reads only the Containerfile; a real build needs the store (and so the
    /// rootless namespace, which `main` enters).
    pub fn needs_store(&self) -> bool {
        !self.check
    }
}
