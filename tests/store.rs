//! End-to-end tests: the store (`gcr system check|df|prune`, crash safety of `gcr import`).
//! They build rootfs archives with the system `tar` and need no registry.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::{stderr, stdout, TestStore};

/// A rootfs tar with `files` regular files of `size` bytes each (content depends on `seed`).
fn rootfs_tar(dir: &Path, name: &str, seed: u8, files: usize, size: usize) -> PathBuf {
    let src = dir.join(format!("{name}-src"));
    fs::create_dir_all(src.join("etc")).unwrap();
    fs::write(src.join("etc/seed"), [seed]).unwrap();
    for i in 0..files {
        let sub = src.join(format!("usr/share/d{}", i % 16));
        fs::create_dir_all(&sub).unwrap();
        let content: Vec<u8> = (0..size)
            .map(|j| (j as u8).wrapping_mul(seed) ^ (i as u8))
            .collect();
        fs::write(sub.join(format!("f{i}")), content).unwrap();
    }
    let tar = dir.join(format!("{name}.tar"));
    let status = Command::new("tar")
        .arg("-C")
        .arg(&src)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .expect("run tar");
    assert!(status.success());
    tar
}

fn import(store: &TestStore, tar: &Path, name: &str) -> String {
    store
        .ok(&["import", "-q", tar.to_str().unwrap(), name])
        .trim()
        .to_string()
}

/// The (layer blob digest, diff_id) of an image, read from the OCI layout itself.
fn layer_of(store: &TestStore, name: &str) -> (String, String) {
    let root = store.root();
    let index: Value = serde_json::from_slice(&fs::read(root.join("index.json")).unwrap()).unwrap();
    let manifest_digest = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == name)
        .unwrap_or_else(|| panic!("{name} not in index.json"))["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let blob = |d: &str| {
        root.join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let manifest: Value =
        serde_json::from_slice(&fs::read(blob(&manifest_digest)).unwrap()).unwrap();
    let config: Value = serde_json::from_slice(
        &fs::read(blob(manifest["config"]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    (
        manifest["layers"][0]["digest"]
            .as_str()
            .unwrap()
            .to_string(),
        config["rootfs"]["diff_ids"][0]
            .as_str()
            .unwrap()
            .to_string(),
    )
}

fn hex(digest: &str) -> &str {
    digest.trim_start_matches("sha256:")
}

fn count_entries(dir: &Path) -> usize {
    fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// The TOTAL column of one `gcr system df` row.
fn df_total(store: &TestStore, kind: &str) -> u64 {
    let out = store.ok(&["system", "df"]);
    let line = out
        .lines()
        .find(|l| l.starts_with(kind))
        .unwrap_or_else(|| panic!("no {kind} row in:\n{out}"));
    line[kind.len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn system_check_finds_a_corrupt_blob_and_a_missing_layer_and_repair_removes_them() {
    let store = TestStore::new();
    let scratch = tempfile::tempdir().unwrap();
    let a = rootfs_tar(scratch.path(), "a", 3, 20, 1000);
    let b = rootfs_tar(scratch.path(), "b", 5, 20, 1000);
    let c = rootfs_tar(scratch.path(), "c", 7, 20, 1000);
    import(&store, &a, "localhost/check-a:1");
    import(&store, &b, "localhost/check-b:1");
    let c_id = import(&store, &c, "localhost/check-c:1");

    let out = store.ok(&["system", "check"]);
    assert!(out.contains("consistent"), "{out}");

    let (a_blob, _) = layer_of(&store, "localhost/check-a:1");
    let (_, b_layer) = layer_of(&store, "localhost/check-b:1");
    let blob_path = store.root().join("blobs/sha256").join(hex(&a_blob));
    let mut bytes = fs::read(&blob_path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    fs::write(&blob_path, bytes).unwrap();
    fs::remove_dir_all(store.root().join("layers").join(hex(&b_layer))).unwrap();

    let out = store.run(&["system", "check"]);
    assert!(!out.status.success(), "check must fail on a broken store");
    let report = stdout(&out);
    assert!(
        report.contains(hex(&a_blob)),
        "corrupt blob not named:\n{report}"
    );
    assert!(report.contains("localhost/check-a:1"), "{report}");
    assert!(
        report.contains("localhost/check-b:1") && report.contains(hex(&b_layer)),
        "{report}"
    );
    assert!(!report.contains("localhost/check-c:1"), "{report}");
    assert!(stderr(&out).contains("--repair"), "{}", stderr(&out));

    store.ok(&["system", "check", "--repair"]);
    let out = store.ok(&["system", "check"]);
    assert!(out.contains("consistent"), "{out}");
    assert!(!blob_path.exists());
    let listed: Value = serde_json::from_str(&store.ok(&["images", "--format", "json"])).unwrap();
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["Id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![c_id.as_str()]);
    assert!(store.run(&["inspect", "localhost/check-a:1"]).status.code() != Some(0));
    assert!(store.run(&["inspect", "localhost/check-b:1"]).status.code() != Some(0));
    // The repaired store works again: the same archive imports cleanly.
    import(&store, &a, "localhost/check-a:1");
    store.ok(&["system", "check"]);
}

#[test]
fn system_df_and_prune_reclaim_dangling_then_all_images() {
    let store = TestStore::new();
    let scratch = tempfile::tempdir().unwrap();
    let a = rootfs_tar(scratch.path(), "a", 11, 10, 5000);
    let b = rootfs_tar(scratch.path(), "b", 13, 10, 5000);
    let a_id = import(&store, &a, "localhost/prune:1");
    // Taking the name away leaves the first image dangling.
    let b_id = import(&store, &b, "localhost/prune:1");
    assert_eq!(df_total(&store, "Images"), 2);

    let refused = store
        .gcr()
        .args(["system", "prune"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        !refused.status.success(),
        "prune without -f off a terminal must refuse"
    );
    assert_eq!(df_total(&store, "Images"), 2);

    let out = store.ok(&["system", "prune", "-f"]);
    assert!(out.contains(&format!("Deleted: {a_id}")), "{out}");
    assert!(!out.contains(&b_id), "{out}");
    assert_eq!(df_total(&store, "Images"), 1);
    store.ok(&["inspect", "localhost/prune:1"]);
    assert_eq!(count_entries(&store.root().join("layers")), 1);

    let out = store.ok(&["system", "prune", "-a", "-f"]);
    assert!(out.contains("Untagged: localhost/prune:1"), "{out}");
    assert!(out.contains(&format!("Deleted: {b_id}")), "{out}");
    assert_eq!(df_total(&store, "Images"), 0);
    assert_eq!(count_entries(&store.root().join("layers")), 0);
    assert_eq!(count_entries(&store.root().join("blobs/sha256")), 0);
    let index: Value =
        serde_json::from_slice(&fs::read(store.root().join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"], serde_json::json!([]));
    store.ok(&["system", "check"]);
}

#[test]
fn import_killed_at_any_moment_leaves_a_store_that_checks_clean() {
    let store = TestStore::new();
    let scratch = tempfile::tempdir().unwrap();
    // Big enough that kills land while hashing, compressing and unpacking.
    let tar = rootfs_tar(scratch.path(), "big", 17, 600, 20_000);
    let mut killed_early = 0;
    for round in 0..12u64 {
        let mut child = store
            .gcr()
            .args(["import", "-q", tar.to_str().unwrap(), "localhost/killed:1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(30 + round * 60));
        if child.try_wait().unwrap().is_none() {
            killed_early += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
        let out = store.run(&["system", "check"]);
        assert!(
            out.status.success(),
            "round {round}: check not clean after SIGKILL\n{}{}",
            stdout(&out),
            stderr(&out)
        );
        let tmp = store.root().join("tmp");
        assert_eq!(count_entries(&tmp), 0, "round {round}: tmp not swept");
        // Start every round from an empty store so each kill hits an import in progress.
        store.ok(&["system", "prune", "-a", "-f"]);
    }
    assert!(
        killed_early >= 3,
        "the import was too fast to be killed mid-way"
    );
    import(&store, &tar, "localhost/killed:1");
    store.ok(&["system", "check"]);
}
