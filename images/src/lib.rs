//! gcr-images: the views of stored images that every front end shows.
//!
//! `gcr images`, `gcr inspect`, `gcr history`, `gcr rmi` and `gcr tag` and the Docker Engine
//! API's `/images/...` endpoints answer from the same functions here, so a name resolves, a
//! filter matches and an image is removed the same way whichever front end asked. The crate
//! prints nothing: it returns records, JSON values in Docker's shapes, and what it did.
#![deny(unsafe_code)]

mod archive;
mod edit;
mod select;
mod views;

#[cfg(test)]
mod store_tests;

use std::collections::BTreeMap;

use gcr_storage::{ImageRecord, Store, StoreError};
use serde_json::Value;

pub use archive::{load_name, save_requests};
pub use edit::{remove, tag, Removal};
pub use select::select;
pub use views::{history, inspect, summary, HistoryEntry};

/// Largest image config read back from the store (the store's own cap for documents).
pub const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// What can go wrong with an image operation. The variants are what a front end needs to
/// answer differently: the Docker API sends 404, 409 and 400 for the first three.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// No stored image has this name, ID, ID prefix or manifest digest.
    #[error("image not known: {reference} (see `gcr images`, or `gcr pull {reference}`)")]
    NotFound { reference: String },
    /// The image exists, but the operation would take more than was asked: it has several
    /// names, or containers use it, and force was not given.
    #[error("image {id} {reason}")]
    Conflict { id: String, reason: String },
    /// What was given cannot be used: a malformed name or filter, a digest as a tag.
    #[error("invalid {what} {input:?}: {reason}")]
    Invalid {
        what: &'static str,
        input: String,
        reason: String,
    },
    /// The store failed (I/O, a broken blob, an ambiguous ID prefix, ...).
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub type Result<T, E = ImageError> = std::result::Result<T, E>;

/// The full stored name for what a user typed ("busybox" -> "docker.io/library/busybox:latest").
pub fn normalize_name(input: &str) -> Result<String> {
    let reference: gcr_registry::Reference =
        input
            .parse()
            .map_err(|e: gcr_registry::ReferenceError| ImageError::Invalid {
                what: "image name",
                input: input.to_string(),
                reason: e.to_string(),
            })?;
    Ok(reference.store_name())
}

/// Finds a stored image by ID (or unique ID prefix), manifest digest, full name, or name as
/// Docker normalises it. The name as given is tried first: stored names are full already, and
/// a hex prefix is no name.
pub fn find(store: &Store, input: &str) -> Result<ImageRecord> {
    let ambiguous = match store.resolve_image(input) {
        Ok(record) => return Ok(record),
        Err(StoreError::ImageNotFound { .. }) => None,
        // "abc" may be an ID prefix of two images and also a name: try the name first.
        Err(err @ StoreError::AmbiguousImage { .. }) => Some(err),
        // The index is unreadable: a second look would fail alike.
        Err(err) => return Err(err.into()),
    };
    if let Ok(name) = normalize_name(input) {
        match store.resolve_image(&name) {
            Ok(record) => return Ok(record),
            Err(StoreError::ImageNotFound { .. } | StoreError::AmbiguousImage { .. }) => {}
            Err(err) => return Err(err.into()),
        }
    }
    Err(match ambiguous {
        Some(err) => err.into(),
        None => ImageError::NotFound {
            reference: input.to_string(),
        },
    })
}

/// A stored name as Docker shows it: Docker Hub's registry, and its `library/` for official
/// images, left out (`docker.io/library/busybox:latest` -> `busybox:latest`,
/// `docker.io/user/app:1` -> `user/app:1`); names on other registries stay whole.
pub fn familiar_name(full: &str) -> String {
    let Some(rest) = full.strip_prefix("docker.io/") else {
        return full.to_string();
    };
    // Docker drops `library/` only for a one-component path (tags and digests hold no `/`).
    match rest.strip_prefix("library/") {
        Some(short) if !short.contains('/') => short.to_string(),
        _ => rest.to_string(),
    }
}

/// Every stored image, newest first. One image (one config) stored under two manifests, e.g.
/// loaded from an archive and then pulled, is listed once: its unnamed manifest is the same
/// image, not a dangling one.
pub fn list(store: &Store) -> Result<Vec<ImageRecord>> {
    let mut records = store.images()?;
    records.sort_by(|a, b| b.created.cmp(&a.created));
    let named_ids: std::collections::HashSet<String> = records
        .iter()
        .filter(|r| !r.names.is_empty())
        .map(|r| r.id.to_string())
        .collect();
    records.retain(|r| !r.names.is_empty() || !named_ids.contains(&r.id.to_string()));
    Ok(records)
}

/// The image config as stored (`architecture`, `os`, `config`, `rootfs`, `history`, ...).
pub fn config(store: &Store, record: &ImageRecord) -> Result<Value> {
    let bytes = store.image_config_bytes(record)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(StoreError::TooLarge {
            what: format!("image config {}", record.id),
            limit: MAX_CONFIG_BYTES,
        }
        .into());
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        StoreError::InvalidConfig {
            digest: record.id.clone(),
            reason: format!("not JSON: {e}"),
        }
        .into()
    })
}

/// The labels of an image's config. An unreadable config has none: a filter then does not
/// match rather than failing the whole listing.
pub fn labels(store: &Store, record: &ImageRecord) -> BTreeMap<String, String> {
    config(store, record)
        .ok()
        .and_then(|c| c["config"]["Labels"].as_object().cloned())
        .map(|labels| {
            labels
                .into_iter()
                .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// The repository part of a stored name: without its tag or digest.
pub(crate) fn repository(name: &str) -> &str {
    if let Some((repo, _digest)) = name.split_once('@') {
        return repo;
    }
    let slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[slash..].rfind(':') {
        Some(colon) => &name[..slash + colon],
        None => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn familiar_names_are_dockers() {
        assert_eq!(
            familiar_name("docker.io/library/busybox:latest"),
            "busybox:latest"
        );
        assert_eq!(familiar_name("docker.io/user/app:1"), "user/app:1");
        assert_eq!(familiar_name("docker.io/library/busybox"), "busybox");
        assert_eq!(
            familiar_name("docker.io/library/a@sha256:00"),
            "a@sha256:00"
        );
        // library/ stays when it is not the official-image namespace of one component.
        assert_eq!(familiar_name("docker.io/library/a/b:1"), "library/a/b:1");
        assert_eq!(familiar_name("localhost/app:1"), "localhost/app:1");
        assert_eq!(
            familiar_name("127.0.0.1:5000/busybox:latest"),
            "127.0.0.1:5000/busybox:latest"
        );
    }

    #[test]
    fn names_normalise_as_docker_does() {
        assert_eq!(
            normalize_name("busybox").unwrap(),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            normalize_name("user/app:1").unwrap(),
            "docker.io/user/app:1"
        );
        assert_eq!(
            normalize_name("localhost:5000/app").unwrap(),
            "localhost:5000/app:latest"
        );
        let err = normalize_name("Bad Name").unwrap_err();
        assert!(
            matches!(&err, ImageError::Invalid { what: "image name", input, .. } if input == "Bad Name"),
            "{err:?}"
        );
    }

    #[test]
    fn repository_drops_tag_and_digest() {
        assert_eq!(repository("localhost:5000/app:1"), "localhost:5000/app");
        assert_eq!(repository("localhost:5000/app"), "localhost:5000/app");
        assert_eq!(
            repository("docker.io/library/a@sha256:00"),
            "docker.io/library/a"
        );
    }
}
