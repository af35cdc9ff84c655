//! `gcr cp`, `gcr export` and `gcr diff`: a container's files.

use std::os::fd::AsFd as _;
use std::path::Path;

use anyhow::{bail, Context as _};
use clap::Args;

use crate::context::Context;

#[derive(Args, Debug)]
pub struct DiffArgs {
    #[arg(value_name = "CONTAINER")]
    container: String,
}

/// `gcr diff`: the files a container added (A), changed (C) or deleted (D) over its image.
pub fn diff(ctx: &Context, args: DiffArgs) -> anyhow::Result<u8> {
    let store = ctx.open_store()?;
    let c = gcr_containers::lookup(&store, &args.container)?;
    let (lower, upper) = gcr_containers::layers_of(&store, &c)?;
    let changes = gcr_builder::changes_in_upper(&upper, &lower)
        .with_context(|| format!("cannot read {}", upper.display()))?;
    // The mount points of the generated files are gcr's, not the container's changes.
    let generated = ["/etc/hostname", "/etc/hosts", "/etc/resolv.conf"];
    for (kind, path) in changes {
        if !generated.contains(&path.as_str()) {
            println!("{kind} {path}");
        }
    }
    Ok(0)
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Write to this file instead of stdout
    #[arg(short, long, value_name = "FILE")]
    output: Option<std::path::PathBuf>,
    #[arg(value_name = "CONTAINER")]
    container: String,
}

/// `gcr export`: the container's file system (image and changes, without the runtime's
/// /proc, /dev or volumes) as one tar stream, as `docker export` (`gcr import` reads it).
pub fn export(ctx: &Context, args: ExportArgs) -> anyhow::Result<u8> {
    use std::io::IsTerminal as _;
    let out = match &args.output {
        Some(path) => std::fs::File::create(path)
            .with_context(|| format!("cannot create {}", path.display()))?,
        None if std::io::stdout().is_terminal() => {
            bail!("refusing to write a tar archive to a terminal: use -o FILE or redirect stdout")
        }
        None => std::fs::File::from(std::io::stdout().as_fd().try_clone_to_owned()?),
    };
    let store = ctx.open_store()?;
    let c = gcr_containers::lookup(&store, &args.container)?;
    let view = gcr_containers::snapshot(&store, &c)?;
    let options = gcr_runtime::CopyOptions {
        contents: true,
        follow_link: false,
    };
    gcr_runtime::copy_out_tar(view.files(), Path::new("/"), options, &out)?;
    Ok(0)
}

#[derive(Args, Debug)]
pub struct CpArgs {
    /// CONTAINER:SRC_PATH or a host path
    #[arg(value_name = "SRC")]
    src: String,
    /// A host path or CONTAINER:DEST_PATH
    #[arg(value_name = "DEST")]
    dest: String,
    /// Follow a symlink that is SRC itself
    #[arg(short = 'L', long)]
    follow_link: bool,
}

/// `PATH/.` (or `.`) names a directory's contents; returns the directory and whether it did.
fn contents_of(path: &str) -> (&str, bool) {
    if path == "." {
        return (".", true);
    }
    match path.strip_suffix("/.") {
        Some("") => ("/", true),
        Some(dir) => (dir, true),
        None => (path, false),
    }
}

/// `CONTAINER:PATH`, or `None` for a host path (`./a:b` is a host path with a colon).
fn container_side(arg: &str) -> Option<(&str, &str)> {
    let (name, path) = arg.split_once(':')?;
    (!name.is_empty() && !name.contains('/') && !name.starts_with('.')).then_some((name, path))
}

/// `gcr cp`: files between a container (running or stopped) and the host.
pub fn cp(ctx: &Context, args: CpArgs) -> anyhow::Result<u8> {
    let store = ctx.open_store()?;
    let all = gcr_containers::list(&store)?;
    let (c, container_path, host, out) =
        match (container_side(&args.src), container_side(&args.dest)) {
            (Some((name, path)), None) => (
                gcr_containers::find(&all, name)?,
                path,
                args.dest.as_str(),
                true,
            ),
            (None, Some((name, path))) => (
                gcr_containers::find(&all, name)?,
                path,
                args.src.as_str(),
                false,
            ),
            (Some(_), Some(_)) => {
                bail!("gcr cp copies between a container and the host, not between two containers")
            }
            (None, None) => bail!(
                "give a container side: gcr cp CONTAINER:SRC DEST or gcr cp SRC CONTAINER:DEST"
            ),
        };
    let (src_path, contents) = if out {
        contents_of(container_path)
    } else {
        contents_of(host)
    };
    let options = gcr_runtime::CopyOptions {
        contents: contents || (!out && host == "-"),
        follow_link: args.follow_link,
    };
    let container_path = if out { src_path } else { container_path };
    let host = if out { host } else { src_path };
    let container_path = gcr_containers::container_path(c, container_path);
    let view = gcr_containers::view(&store, c)?;
    let files = view.files();
    if out && host == "-" {
        let stdout = std::fs::File::from(std::io::stdout().as_fd().try_clone_to_owned()?);
        gcr_runtime::copy_out_tar(files, &container_path, options, &stdout)?;
    } else if out {
        // Into an existing directory the source keeps its name (its contents go straight in).
        let host = Path::new(host);
        let target = if host.is_dir() && !options.contents {
            host.join(
                container_path
                    .file_name()
                    .context("the container path names no file")?,
            )
        } else {
            host.to_path_buf()
        };
        if options.contents && target.symlink_metadata().is_ok_and(|m| !m.is_dir()) {
            bail!(
                "cannot copy a directory's contents to {}: it is not a directory",
                target.display()
            );
        }
        gcr_runtime::copy_out(files, &container_path, &target, options)?;
    } else if host == "-" {
        // A tar stream on stdin: unpacked aside first (the tar crate keeps it beneath that
        // directory), then copied in as a directory's contents, owned by the container's root.
        let unpacked = tempfile::tempdir().context("cannot make a temporary directory")?;
        let mut archive = tar::Archive::new(std::io::stdin().lock());
        archive.set_preserve_permissions(true);
        archive
            .unpack(unpacked.path())
            .context("cannot read the tar stream on stdin")?;
        gcr_runtime::copy_in(files, unpacked.path(), &container_path, options)?;
    } else {
        let host = Path::new(host);
        std::fs::symlink_metadata(host)
            .with_context(|| format!("{} does not exist", host.display()))?;
        if options.contents && !host.is_dir() {
            bail!(
                "{}/. names a directory's contents, but {} is not a directory",
                host.display(),
                host.display()
            );
        }
        gcr_runtime::copy_in(files, host, &container_path, options)?;
    }
    Ok(0)
}
