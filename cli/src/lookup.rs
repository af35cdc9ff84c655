//! Finding a stored image from what a user typed: gcr-images' functions, as the anyhow
//! results the commands chain context onto.

use gcr_storage::{ImageRecord, Store};

/// The full stored name for what a user typed ("busybox" -> "docker.io/library/busybox:latest").
pub fn normalize_name(input: &str) -> anyhow::Result<String> {
    Ok(gcr_images::normalize_name(input)?)
}

/// Finds a local image by ID (or unique ID prefix), manifest digest, or name as Docker
/// normalises it.
pub fn find_image(store: &Store, input: &str) -> anyhow::Result<ImageRecord> {
    Ok(gcr_images::find(store, input)?)
}

/// The stored image `name` for `platform`: the named image if it is for that platform, or
/// that platform's image of a stored multi-platform name.
pub fn stored_for_platform(
    store: &gcr_storage::Store,
    name: &str,
    platform: &gcr_builder::Platform,
) -> Option<gcr_storage::ImageRecord> {
    let record = find_image(store, name).ok()?;
    store
        .platform_images(&record)
        .ok()?
        .into_iter()
        .find(|r| platform.accepts(&r.os, &r.architecture, r.variant.as_deref()))
}
