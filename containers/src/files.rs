//! A container's files for copying in and out (`cp`, `export`, the archive endpoints): a
//! running one through its own root, a stopped one by mounting its overlay in a child.

use std::path::{Path, PathBuf};

use crate::container::Container;
use crate::error::{ContainerError, Result};
use crate::rootfs;

/// Where a container's files are reached, owning what [`gcr_runtime::ContainerFiles`]
/// borrows.
pub enum FilesView {
    /// A running container, through its PID 1's root.
    Running(i32),
    /// A stopped container's overlay, mounted by the copy in a child.
    Stopped {
        rootfs: gcr_runtime::RootfsSource,
        mountpoint: PathBuf,
        /// The scratch upper/work dirs of a throw-away view, removed on drop.
        _scratch: Option<tempfile::TempDir>,
    },
}

impl FilesView {
    pub fn files(&self) -> gcr_runtime::ContainerFiles<'_> {
        match self {
            FilesView::Running(pid) => gcr_runtime::ContainerFiles::Running(*pid),
            FilesView::Stopped {
                rootfs, mountpoint, ..
            } => gcr_runtime::ContainerFiles::Stopped { rootfs, mountpoint },
        }
    }
}

/// Enters gcr's rootless user namespace when this process is not in it yet: mounting the
/// layers needs the store's owners.
fn enter_store_namespace() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        gcr_runtime::userns::enter_rootless_userns()?;
    }
    Ok(())
}

/// The container's files to copy from or into (`cp`): the live root of a running one, or its
/// overlay (its own upper dir, so writes land in it) for a stopped one.
pub fn view(store: &gcr_storage::Store, c: &Container) -> Result<FilesView> {
    let mountpoint = c.dir.join("rootfs");
    if let Some(pid) = c.alive().then(|| c.pid()).flatten() {
        return Ok(FilesView::Running(pid.as_raw()));
    }
    let image = c.image(store)?;
    let rootfs = rootfs::image_rootfs(store, &image, None, c.upper_dir(), c.work_dir());
    enter_store_namespace()?;
    std::fs::create_dir_all(&mountpoint)
        .map_err(|e| ContainerError::io("create", &mountpoint, e))?;
    Ok(FilesView::Stopped {
        rootfs,
        mountpoint,
        _scratch: None,
    })
}

/// A read-only view of the container's files (running or stopped) for `export`: its upper
/// dir as the top lower layer of a throw-away overlay, so a running container keeps its own
/// mount and nothing is written to its files.
pub fn snapshot(store: &gcr_storage::Store, c: &Container) -> Result<FilesView> {
    let image = c.image(store)?;
    throwaway_view(store, &image, Some(c.upper_dir()), &c.dir, "export-")
}

/// The layers of `image` (with `top` over them) under a scratch upper dir made in `base`
/// and removed when the view is dropped.
fn throwaway_view(
    store: &gcr_storage::Store,
    image: &gcr_storage::ImageRecord,
    top: Option<PathBuf>,
    base: &Path,
    prefix: &str,
) -> Result<FilesView> {
    let scratch = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(base)
        .map_err(|e| ContainerError::io("make a work directory in", base, e))?;
    let (upper, work, mountpoint) = (
        scratch.path().join("upper"),
        scratch.path().join("work"),
        scratch.path().join("root"),
    );
    for dir in [&upper, &work, &mountpoint] {
        std::fs::create_dir(dir).map_err(|e| ContainerError::io("create", dir, e))?;
    }
    let rootfs = rootfs::image_rootfs(store, image, top, upper, work);
    enter_store_namespace()?;
    Ok(FilesView::Stopped {
        rootfs,
        mountpoint,
        _scratch: Some(scratch),
    })
}

/// A read-only view of an image's files (no container): its layers under a throw-away
/// upper dir in the store's temporary space, for a build's `--output`.
pub fn image_view(
    store: &gcr_storage::Store,
    image: &gcr_storage::ImageRecord,
) -> Result<FilesView> {
    let base = store.root().join("tmp");
    std::fs::create_dir_all(&base).map_err(|e| ContainerError::io("create", &base, e))?;
    throwaway_view(store, image, None, &base, "image-view-")
}

/// A path in the container: absolute as given, relative to its working directory otherwise
/// (as Docker's `cp`).
pub fn container_path(c: &Container, path: &str) -> PathBuf {
    if path.starts_with('/') {
        return PathBuf::from(path);
    }
    let cwd = c
        .spec()
        .ok()
        .and_then(|s| s.process().clone())
        .map(|p| p.cwd().clone())
        .unwrap_or_else(|| Path::new("/").to_path_buf());
    cwd.join(path)
}

/// The lower dirs (top first) and upper dir of a container, for `diff`.
pub fn layers_of(store: &gcr_storage::Store, c: &Container) -> Result<(Vec<PathBuf>, PathBuf)> {
    let image = c.image(store)?;
    Ok((rootfs::lower_dirs(store, &image.layers), c.upper_dir()))
}

/// A container path as the Docker API's archive endpoints take it: `DIR/.` names the
/// directory's contents.
fn archive_path(c: &Container, path: &str) -> (PathBuf, bool) {
    let (path, contents) = match path.strip_suffix("/.") {
        Some("") => ("/", true),
        Some(dir) => (dir, true),
        None if path == "." => (".", true),
        None => (path, false),
    };
    (container_path(c, path), contents)
}

/// `HEAD|GET /containers/{id}/archive`: what `path` is (not followed if a symlink).
pub fn archive_stat(
    store: &gcr_storage::Store,
    c: &Container,
    path: &str,
) -> Result<gcr_runtime::EntryStat> {
    let (path, _) = archive_path(c, path);
    let view = view(store, c)?;
    Ok(gcr_runtime::stat_entry(view.files(), &path)?)
}

/// `GET /containers/{id}/archive`: `path` as a tar stream into `out` (named by its last
/// component; `DIR/.`: the directory's entries).
pub fn archive_out(
    store: &gcr_storage::Store,
    c: &Container,
    path: &str,
    out: &std::fs::File,
) -> Result<()> {
    let (path, contents) = archive_path(c, path);
    let view = view(store, c)?;
    let options = gcr_runtime::CopyOptions {
        contents,
        follow_link: false,
    };
    Ok(gcr_runtime::copy_out_tar(
        view.files(),
        &path,
        options,
        out,
    )?)
}

/// `PUT /containers/{id}/archive`: the tar stream `input` unpacked into the existing
/// directory `dir`. The stream is unpacked aside first (the tar crate keeps every entry
/// beneath that directory: `..` and links out are refused), then copied in beneath the
/// container's root, owned by its root.
pub fn archive_in(
    store: &gcr_storage::Store,
    c: &Container,
    dir: &str,
    input: impl std::io::Read,
) -> Result<()> {
    let stat = archive_stat(store, c, dir)?;
    if !stat.is_dir {
        return Err(ContainerError::invalid(format!(
            "{dir} in container {} is not a directory: give the directory to extract into",
            c.display_name()
        )));
    }
    let (dir, _) = archive_path(c, dir);
    let unpacked =
        tempfile::tempdir().map_err(|e| ContainerError::io("make", std::env::temp_dir(), e))?;
    let mut archive = tar::Archive::new(input);
    archive.set_preserve_permissions(true);
    archive
        .unpack(unpacked.path())
        .map_err(|e| ContainerError::invalid(format!("the tar stream cannot be unpacked: {e}")))?;
    let view = view(store, c)?;
    let options = gcr_runtime::CopyOptions {
        contents: true,
        follow_link: false,
    };
    Ok(gcr_runtime::copy_in(
        view.files(),
        unpacked.path(),
        &dir,
        options,
    )?)
}
