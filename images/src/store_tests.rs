//! The views over a real store in a temporary directory, with layerless images committed
//! directly (no registry, no layers to unpack).

use gcr_storage::{Digest, ImageRecord, Store};
use serde_json::{json, Value};

use crate::*;

/// Commits a layerless image with this config under `names`; `salt` makes a distinct
/// manifest for the same config.
fn commit(store: &Store, names: &[&str], config: &Value, salt: &str) -> ImageRecord {
    let config = serde_json::to_vec(config).unwrap();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": Digest::of(&config).to_string(),
            "size": config.len(),
        },
        "layers": [],
        "annotations": {"salt": salt},
    });
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    store
        .commit_image(&names, &serde_json::to_vec(&manifest).unwrap(), &config)
        .unwrap()
}

fn image_config(created: &str, labels: Value) -> Value {
    json!({
        "created": created,
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["sh"], "Labels": labels},
        "rootfs": {"type": "layers", "diff_ids": []},
        "history": [
            {"created": "2024-01-01T00:00:00Z", "created_by": "base", "empty_layer": true},
            {"created": created, "created_by": "CMD [\"sh\"]", "empty_layer": true},
        ],
    })
}

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    (dir, store)
}

#[test]
fn summary_and_inspect_have_dockers_shape() {
    let (_dir, store) = store();
    let config = image_config("2024-05-01T10:00:00Z", json!({"team": "a"}));
    let record = commit(&store, &["docker.io/library/busybox:latest"], &config, "1");

    let s = summary(&store, &record);
    assert_eq!(s["Id"], record.id.to_string());
    assert_eq!(s["ParentId"], "");
    assert_eq!(s["RepoTags"], json!(["busybox:latest"]));
    assert_eq!(
        s["RepoDigests"],
        json!([format!("busybox@{}", record.manifest_digest)])
    );
    assert_eq!(s["Created"], 1_714_557_600);
    assert_eq!(s["SharedSize"], -1);
    assert_eq!(s["Containers"], -1);
    assert_eq!(s["Labels"], json!({"team": "a"}));

    let i = inspect(&store, &record).unwrap();
    assert_eq!(i["RepoTags"], json!(["busybox:latest"]));
    assert_eq!(i["Created"], "2024-05-01T10:00:00Z");
    assert_eq!(i["Architecture"], "amd64");
    assert_eq!(i["Os"], "linux");
    assert!(i.get("Variant").is_none(), "{i}");
    assert_eq!(i["Config"]["Cmd"], json!(["sh"]));
    assert_eq!(i["GraphDriver"]["Name"], "overlay");
    assert_eq!(i["RootFS"], json!({"Type": "layers", "Layers": []}));
    assert_eq!(i["Metadata"]["LastTagTime"], "0001-01-01T00:00:00Z");
    assert_eq!(i["Digest"], record.manifest_digest.to_string());
    assert_eq!(i["History"].as_array().unwrap().len(), 2);
    for key in ["Parent", "Comment", "Container", "DockerVersion", "Author"] {
        assert_eq!(i[key], "", "{key}");
    }
}

#[test]
fn an_unnamed_image_shows_none() {
    let (_dir, store) = store();
    let mut config = image_config("2024-05-01T10:00:00Z", Value::Null);
    config["variant"] = json!("v8");
    let record = commit(&store, &[], &config, "1");
    let s = summary(&store, &record);
    assert_eq!(s["RepoTags"], json!(["<none>:<none>"]));
    assert_eq!(s["RepoDigests"], json!(["<none>@<none>"]));
    assert_eq!(s["Labels"], Value::Null);
    assert_eq!(inspect(&store, &record).unwrap()["Variant"], "v8");
}

#[test]
fn find_list_and_select() {
    let (_dir, store) = store();
    let old = image_config("2024-01-01T00:00:00Z", json!({"team": "a"}));
    let new = image_config("2024-06-01T00:00:00Z", json!({"team": "b"}));
    let a = commit(
        &store,
        &["docker.io/library/app:1", "localhost/app:2"],
        &old,
        "a",
    );
    let b = commit(&store, &["docker.io/user/tool:latest"], &new, "b");
    // The same image as `a`, unnamed under another manifest: not a dangling image.
    commit(&store, &[], &old, "a2");

    assert_eq!(find(&store, "app:1").unwrap().id, a.id);
    assert_eq!(find(&store, &b.id.hex()[..8]).unwrap().id, b.id);
    assert!(matches!(
        find(&store, "nosuch:v9"),
        Err(ImageError::NotFound { reference }) if reference == "nosuch:v9"
    ));

    let all = list(&store).unwrap();
    let ids: Vec<&Digest> = all.iter().map(|r| &r.id).collect();
    assert_eq!(ids, [&b.id, &a.id], "newest first, the duplicate folded");

    let names = |reference: Option<&str>, filters: &[&str]| -> Vec<String> {
        let filters: Vec<String> = filters.iter().map(|f| f.to_string()).collect();
        select(&store, list(&store).unwrap(), reference, &filters)
            .unwrap()
            .into_iter()
            .flat_map(|r| r.names)
            .collect()
    };
    assert_eq!(names(Some("app"), &[]), ["docker.io/library/app:1"]);
    assert_eq!(names(Some("localhost/app:2"), &[]), ["localhost/app:2"]);
    assert_eq!(
        names(None, &["reference=user/*"]),
        ["docker.io/user/tool:latest"]
    );
    assert_eq!(names(None, &["reference=app"]), ["docker.io/library/app:1"]);
    assert_eq!(
        names(None, &["label=team=b"]),
        ["docker.io/user/tool:latest"]
    );
    assert_eq!(names(None, &["label=team", "dangling=true"]).len(), 0);
    assert_eq!(names(None, &["dangling=false"]).len(), 3);
}

#[test]
fn remove_and_tag_follow_docker() {
    let (_dir, store) = store();
    let config = image_config("2024-01-01T00:00:00Z", Value::Null);
    let a = commit(&store, &["localhost/a:1"], &config, "a");

    tag(&store, "localhost/a:1", "localhost/b:1").unwrap();
    assert_eq!(find(&store, "localhost/b:1").unwrap().id, a.id);
    assert!(matches!(
        tag(&store, "localhost/a:1", &format!("localhost/c@{}", a.id)),
        Err(ImageError::Invalid { what: "tag", .. })
    ));

    // By ID, with two names: a conflict; by one name: only that name goes.
    assert!(matches!(
        remove(&store, &a.id.to_string(), false),
        Err(ImageError::Conflict { .. })
    ));
    assert_eq!(
        remove(&store, "localhost/b:1", false).unwrap(),
        [Removal::Untagged("localhost/b:1".into())]
    );
    // A container uses it: without force a conflict, with force it only loses its names.
    store.register_container("c1", &a.id).unwrap();
    assert!(matches!(
        remove(&store, "localhost/a:1", false),
        Err(ImageError::Conflict { .. })
    ));
    assert_eq!(
        remove(&store, "localhost/a:1", true).unwrap(),
        [Removal::Untagged("localhost/a:1".into())]
    );
    assert_eq!(find(&store, &a.id.to_string()).unwrap().names.len(), 0);
    store.unregister_container("c1").unwrap();
    assert_eq!(
        remove(&store, &a.id.to_string(), false).unwrap(),
        [Removal::Deleted(a.id.to_string())]
    );
    assert!(matches!(
        find(&store, &a.id.to_string()),
        Err(ImageError::NotFound { .. })
    ));
}

#[test]
fn history_is_newest_first() {
    let (_dir, store) = store();
    let config = image_config("2024-05-01T10:00:00Z", Value::Null);
    let record = commit(&store, &["docker.io/library/h:1"], &config, "h");
    let steps = history(&store, &record).unwrap();
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0].id, record.id.to_string());
    assert_eq!(steps[0].created_by, "CMD [\"sh\"]");
    assert_eq!(steps[0].tags, ["h:1"]);
    assert_eq!(steps[1].id, "<missing>");
    assert_eq!(steps[1].created, "2024-01-01T00:00:00Z");
    assert!(steps[1].tags.is_empty());
}
