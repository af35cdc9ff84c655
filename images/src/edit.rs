//! Changing names and images: rmi and tag, with Docker's rules.

use gcr_storage::{Store, StoreError};

use crate::{find, normalize_name, ImageError, Result};

/// One thing `remove` did, in order; the front end reports them (`Untagged: X`,
/// `Deleted: Y`). Names are full stored names, IDs full `sha256:` digests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    Untagged(String),
    Deleted(String),
}

/// `docker rmi INPUT`: given one of several names of an image, only that name goes. An image
/// with several names given by ID needs `force` (it would take every name). With `force`, an
/// image that containers use loses its names and stays (their rootfs needs its layers);
/// without, it is a conflict. Otherwise the image goes with every blob and layer only it used.
pub fn remove(store: &Store, input: &str, force: bool) -> Result<Vec<Removal>> {
    let done = remove_quietly(store, input, force)?;
    for step in &done {
        // Docker's image events: untag with the name, delete with the ID.
        let (action, actor) = match step {
            Removal::Untagged(name) => ("untag", name),
            Removal::Deleted(id) => ("delete", id),
        };
        let attributes = std::collections::BTreeMap::from([("name".to_string(), actor.clone())]);
        store.record_event(&gcr_storage::Event::new("image", action, actor, attributes));
    }
    Ok(done)
}

fn remove_quietly(store: &Store, input: &str, force: bool) -> Result<Vec<Removal>> {
    let record = find(store, input)?;
    let normalized = normalize_name(input).ok();
    let name_given = record
        .names
        .iter()
        .find(|n| n.as_str() == input || normalized.as_deref() == Some(n.as_str()))
        .cloned();
    if let Some(name) = &name_given {
        if record.names.len() > 1 {
            store.untag(name)?;
            return Ok(vec![Removal::Untagged(name.clone())]);
        }
    } else if record.names.len() > 1 && !force {
        return Err(ImageError::Conflict {
            id: record.id.short().to_string(),
            reason: format!(
                "has several names ({}): remove them by name, or use -f",
                record.names.join(", ")
            ),
        });
    }
    if force && !record.names.is_empty() && !store.containers_using(&record.id)?.is_empty() {
        let mut done = Vec::new();
        for name in &record.names {
            store.untag(name)?;
            done.push(Removal::Untagged(name.clone()));
        }
        return Ok(done);
    }
    let removed = store
        .remove_image(&record.id, force)
        .map_err(|err| match err {
            StoreError::ImageInUse { id, containers } => ImageError::Conflict {
                id: id.to_string(),
                reason: format!(
                    "is used by container(s) {containers}; remove them first or force the removal"
                ),
            },
            other => other.into(),
        })?;
    // What the store took: this manifest's names and those of any other manifest of the
    // same image (one loaded and one pulled).
    let mut done: Vec<Removal> = removed
        .untagged
        .into_iter()
        .map(Removal::Untagged)
        .collect();
    done.extend(
        removed
            .deleted
            .iter()
            .map(|id| Removal::Deleted(id.to_string())),
    );
    Ok(done)
}

/// `docker tag SOURCE TARGET`: TARGET (normalised) names SOURCE's image, moved from any image
/// it named before.
pub fn tag(store: &Store, source: &str, target: &str) -> Result<()> {
    let record = find(store, source)?;
    let name = normalize_name(target)?;
    if name.contains('@') {
        return Err(ImageError::Invalid {
            what: "tag",
            input: target.to_string(),
            reason: "a digest reference names no tag: give NAME[:TAG]".to_string(),
        });
    }
    store.tag(&record.id, &name)?;
    let attributes = std::collections::BTreeMap::from([("name".to_string(), name.clone())]);
    store.record_event(&gcr_storage::Event::new(
        "image",
        "tag",
        &record.id.to_string(),
        attributes,
    ));
    Ok(())
}
