//! A container's root filesystem put together from an image record: the image's layers as
//! OverlayFS lower dirs (top layer first) under the container's own upper and work dirs.
//! Used by run, start, cp, export and diff, and by the builder for RUN steps.

use std::path::PathBuf;

/// The unpacked layer directories of `layers` (bottom first, as an image config lists
/// them), top first as OverlayFS wants its lower dirs.
pub fn lower_dirs(store: &gcr_storage::Store, layers: &[gcr_storage::Digest]) -> Vec<PathBuf> {
    layers.iter().rev().map(|d| store.layer_dir(d)).collect()
}

/// The overlay of `lower` (top first) under `upper`/`work`; `userxattr` when gcr runs in its
/// rootless user namespace, where the kernel only allows `user.` overlay xattrs.
pub fn overlay(lower: Vec<PathBuf>, upper: PathBuf, work: PathBuf) -> gcr_runtime::RootfsSource {
    gcr_runtime::RootfsSource::Overlay {
        lower,
        upper,
        work,
        userxattr: gcr_runtime::userns::is_rootless(),
    }
}

/// The root of a container of `image` whose writable layer is `upper` (with `work` beside
/// it); `top` adds read-only layers above the image (e.g. a container's upper dir, for a
/// throw-away view of its files).
pub fn image_rootfs(
    store: &gcr_storage::Store,
    image: &gcr_storage::ImageRecord,
    top: Option<PathBuf>,
    upper: PathBuf,
    work: PathBuf,
) -> gcr_runtime::RootfsSource {
    let lower = top
        .into_iter()
        .chain(lower_dirs(store, &image.layers))
        .collect();
    overlay(lower, upper, work)
}
