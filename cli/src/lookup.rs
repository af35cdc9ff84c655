//! Finding a stored image from what a user typed.

use anyhow::{bail, Context as _};
use gcr_storage::{ImageRecord, Store};

/// The full stored name for what a user typed ("busybox" -> "docker.io/library/busybox:latest").
pub fn normalize_name(input: &str) -> anyhow::Result<String> {
    let reference: gcr_registry::Reference = input
        .parse()
        .with_context(|| format!("invalid image name {input:?}"))?;
    Ok(reference.store_name())
}

/// Finds a local image by ID (or unique ID prefix), manifest digest, or name as Docker
/// normalises it.
pub fn find_image(store: &Store, input: &str) -> anyhow::Result<ImageRecord> {
    if let Ok(record) = store.resolve_image(input) {
        return Ok(record);
    }
    if let Ok(name) = normalize_name(input) {
        if let Ok(record) = store.resolve_image(&name) {
            return Ok(record);
        }
    }
    bail!("image not known: {input} (see `gcr images`, or `gcr pull {input}`)")
}
