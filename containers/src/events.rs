//! The container events this library records in the store's journal (Docker's: create,
//! start, die, kill, stop, destroy, rename), for `docker events` through the API.

use std::collections::BTreeMap;

use crate::record::ContainerMeta;

/// Records `action` of container `id`: its image, name and labels as attributes (Compose
/// finds its containers' events by label), with `extra` over them.
pub(crate) fn container_event(
    store: &gcr_storage::Store,
    id: &str,
    meta: &ContainerMeta,
    action: &str,
    extra: &[(&str, String)],
) {
    let mut attributes: BTreeMap<String, String> = meta.labels.clone();
    attributes.insert("image".into(), meta.image.clone());
    attributes.insert(
        "name".into(),
        meta.name.clone().unwrap_or_else(|| crate::short_id(id)),
    );
    for (key, value) in extra {
        attributes.insert(key.to_string(), value.clone());
    }
    store.record_event(&gcr_storage::Event::new(
        "container",
        action,
        id,
        attributes,
    ));
}

/// Records `action` of volume `name`.
pub(crate) fn volume_event(store: &gcr_storage::Store, name: &str, action: &str) {
    let attributes = BTreeMap::from([("driver".to_string(), "local".to_string())]);
    store.record_event(&gcr_storage::Event::new("volume", action, name, attributes));
}
