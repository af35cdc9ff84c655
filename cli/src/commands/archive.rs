//! `gcr save` and `gcr load`: images to and from docker-archive / oci-archive files.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use clap::Args;
use gcr_storage::ArchiveFormat;

use crate::context::Context;

#[derive(Args, Debug)]
pub struct SaveArgs {
    /// Write to this file instead of standard output
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Archive format: docker-archive or oci-archive
    #[arg(long, default_value = "docker-archive", value_name = "FORMAT")]
    format: String,
    /// Images to save: names or IDs
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<String>,
}

#[derive(Args, Debug)]
pub struct LoadArgs {
    /// Read from this file instead of standard input
    #[arg(short, long, value_name = "FILE")]
    input: Option<PathBuf>,
    /// Print only the loaded images' names (or IDs)
    #[arg(short, long)]
    quiet: bool,
}

fn parse_format(text: &str) -> anyhow::Result<ArchiveFormat> {
    match text {
        "docker-archive" | "docker" => Ok(ArchiveFormat::DockerArchive),
        "oci-archive" | "oci" => Ok(ArchiveFormat::OciArchive),
        other => bail!("unknown archive format {other:?}: use docker-archive or oci-archive"),
    }
}

pub fn save(ctx: &Context, args: SaveArgs) -> anyhow::Result<u8> {
    let format = parse_format(&args.format)?;
    if args.output.is_none() && std::io::stdout().is_terminal() {
        bail!("refusing to write an archive to a terminal: use -o FILE or redirect the output");
    }
    let store = ctx.open_store()?;
    let requests = gcr_images::save_requests(&store, &args.images)?;
    match &args.output {
        Some(path) => write_atomically(path, |out| {
            store
                .save_archive(&requests, format, out)
                .context("cannot save the images")
        })?,
        None => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::with_capacity(256 * 1024, stdout.lock());
            store
                .save_archive(&requests, format, &mut out)
                .context("cannot save the images")?;
            out.flush().context("cannot write to standard output")?;
        }
    }
    Ok(0)
}

/// Writes `path` through a temporary file beside it, renamed into place only when complete.
fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .with_context(|| format!("{} is not a file name", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.gcr-tmp-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let file = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        let mut out = std::io::BufWriter::with_capacity(256 * 1024, file);
        write(&mut out)?;
        let file = out
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        file.sync_all()
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

pub fn load(ctx: &Context, args: LoadArgs) -> anyhow::Result<u8> {
    if args.input.is_none() && std::io::stdin().is_terminal() {
        bail!("no archive to load: use -i FILE or pipe one to standard input");
    }
    let store = ctx.open_store()?;
    let normalize = gcr_images::load_name;
    let loaded = match &args.input {
        Some(path) => store
            .load_archive(path, &normalize)
            .with_context(|| format!("cannot load {}", path.display()))?,
        None => {
            let stdin = std::io::stdin();
            let mut input = stdin.lock();
            store
                .load_archive_reader(&mut input, &normalize)
                .context("cannot load the archive from standard input")?
        }
    };
    for image in loaded {
        if image.names.is_empty() {
            if args.quiet {
                println!("{}", image.id);
            } else {
                println!("Loaded image ID: {}", image.id);
            }
        }
        for name in image.names {
            if args.quiet {
                println!("{name}");
            } else {
                println!("Loaded image: {name}");
            }
        }
    }
    Ok(0)
}
