//! Store-level tests: layout, blobs, ingestion (E8, E12, E14), images and index.json,
//! concurrency, check/repair, prune, import, and readability by skopeo and umoci.

use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

use crate::testutil::{gzip, zstd, TarBuilder};
use crate::{
    Digest, LayerExpectation, Store, StoreError, OCI_LAYER_GZIP, OCI_LAYER_TAR, OCI_LAYER_ZSTD,
};

fn store() -> (tempfile::TempDir, Store) {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path().join("root")).unwrap();
    (tmp, store)
}

/// A layer: (tar, compressed blob, expectation).
fn layer(tar: Vec<u8>, media_type: &str) -> (Vec<u8>, LayerExpectation) {
    let blob = match media_type {
        OCI_LAYER_GZIP | "application/vnd.docker.image.rootfs.diff.tar.gzip" => gzip(&tar),
        OCI_LAYER_ZSTD => zstd(&tar),
        _ => tar.clone(),
    };
    let expect = LayerExpectation {
        digest: Digest::of(&blob),
        size: blob.len() as u64,
        media_type: media_type.to_string(),
        diff_id: Digest::of(&tar),
    };
    (blob, expect)
}

fn simple_layer(file: &str, content: &[u8]) -> (Vec<u8>, LayerExpectation) {
    layer(
        TarBuilder::new().dir("etc").file(file, content).finish(),
        OCI_LAYER_GZIP,
    )
}

fn ingest(store: &Store, blob: &[u8], expect: &LayerExpectation) -> Result<(), StoreError> {
    store.ingest_layer(&mut &blob[..], expect, &mut |_| {})
}

/// Manifest and config for these layers (OCI, with or without the top-level mediaType).
fn documents(
    layers: &[&LayerExpectation],
    created: &str,
    with_media_type: bool,
) -> (Vec<u8>, Vec<u8>) {
    let config = json!({
        "created": created,
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.as_str()).collect::<Vec<_>>()},
    })
    .to_string()
    .into_bytes();
    let mut manifest = json!({
        "schemaVersion": 2,
        "config": {"mediaType": crate::OCI_CONFIG, "digest": Digest::of(&config).as_str(), "size": config.len()},
        "layers": layers.iter().map(|l| json!({"mediaType": l.media_type, "digest": l.digest.as_str(), "size": l.size})).collect::<Vec<_>>(),
    });
    if with_media_type {
        manifest["mediaType"] = json!(crate::OCI_MANIFEST);
    }
    (manifest.to_string().into_bytes(), config)
}

/// Store a one-layer image named `names`; returns its layer expectation.
fn image(
    store: &Store,
    names: &[&str],
    file: &str,
    created: &str,
) -> (LayerExpectation, crate::ImageRecord) {
    let (blob, expect) = simple_layer(file, file.as_bytes());
    ingest(store, &blob, &expect).unwrap();
    let (m, c) = documents(&[&expect], created, true);
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let rec = store.commit_image(&names, &m, &c).unwrap();
    (expect, rec)
}

fn tmp_is_empty(store: &Store) -> bool {
    fs::read_dir(store.root().join("tmp"))
        .unwrap()
        .next()
        .is_none()
}

fn nothing_stored(store: &Store, expect: &LayerExpectation) -> bool {
    !store.has_blob(&expect.digest)
        && !store.has_layer(&expect.diff_id)
        && fs::read_dir(store.root().join("layers"))
            .unwrap()
            .next()
            .is_none()
        && fs::read_dir(store.root().join("blobs/sha256"))
            .unwrap()
            .next()
            .is_none()
        && tmp_is_empty(store)
}

fn require_tool(name: &str) -> bool {
    let found = Command::new(name).arg("--version").output().is_ok();
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{name} is required when CI=true (tests/fixtures/setup.sh installs it)"
        );
        eprintln!("SKIPPED: {name} not installed");
    }
    found
}

/// Runs `cmd`, which must succeed: its standard output.
fn tool_output(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `skopeo inspect oci:ROOT:NAME`, which must succeed: its JSON.
fn skopeo_inspect(store: &Store, name: &str) -> Value {
    let root = store.root().display();
    let out = tool_output(
        Command::new("skopeo")
            .arg("inspect")
            .arg(format!("oci:{root}:{name}")),
    );
    serde_json::from_slice(&out).unwrap()
}

/// `umoci stat --json --image ROOT:NAME`, which must succeed: its output.
fn umoci_stat(store: &Store, name: &str) -> String {
    let root = store.root().display();
    let mut umoci = Command::new("umoci");
    umoci
        .args(["stat", "--json", "--image"])
        .arg(format!("{root}:{name}"));
    String::from_utf8_lossy(&tool_output(&mut umoci)).into_owned()
}

// ---- layout and blobs ----

#[test]
fn open_creates_an_oci_layout() {
    let (_t, store) = store();
    let root = store.root();
    for d in ["blobs/sha256", "layers", "containers", "cache", "tmp"] {
        assert!(root.join(d).is_dir(), "{d}");
    }
    let layout: Value =
        serde_json::from_slice(&fs::read(root.join("oci-layout")).unwrap()).unwrap();
    assert_eq!(layout["imageLayoutVersion"], "1.0.0");
    let index: Value = serde_json::from_slice(&fs::read(root.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(index["manifests"], json!([]));
    // Reopening keeps everything.
    let d = store.put_blob(b"hello").unwrap();
    let again = Store::open(root).unwrap();
    assert!(again.has_blob(&d));
}

#[test]
fn blobs_round_trip_and_are_verified() {
    let (_t, store) = store();
    let d = store.put_blob(b"content").unwrap();
    assert_eq!(d, Digest::of(b"content"));
    assert_eq!(store.read_blob(&d, 100).unwrap(), b"content");
    assert!(matches!(
        store.read_blob(&d, 3),
        Err(StoreError::TooLarge { .. })
    ));
    fs::write(store.blob_path(&d), b"tampered").unwrap();
    let err = store.read_blob(&d, 100).unwrap_err();
    assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
    let missing = Digest::of(b"missing");
    assert!(matches!(
        store.read_blob(&missing, 100),
        Err(StoreError::MissingBlob { .. })
    ));
}

#[test]
fn stale_tmp_entries_are_swept_live_ones_kept() {
    let (_t, store) = store();
    let tmp_root = store.root().join("tmp");
    // A dead entry: a directory without a held lock (its owner was killed).
    fs::create_dir(tmp_root.join("layer-1-dead")).unwrap();
    fs::write(tmp_root.join("layer-1-dead/blob"), b"partial").unwrap();
    fs::write(tmp_root.join("layer-1-dead.lock"), b"").unwrap();
    fs::create_dir(tmp_root.join("orphan-without-lock")).unwrap();
    // A live entry held by this process.
    let live = store.tmp_dir("live").unwrap();
    let reopened = Store::open(store.root()).unwrap();
    assert!(!tmp_root.join("layer-1-dead").exists());
    assert!(!tmp_root.join("layer-1-dead.lock").exists());
    assert!(!tmp_root.join("orphan-without-lock").exists());
    assert!(live.path().exists(), "a live entry must survive the sweep");
    drop(live);
    assert!(tmp_is_empty(&reopened));
}

#[test]
fn an_undeletable_stale_entry_does_not_break_open() {
    let (_t, store) = store();
    let stuck = store.root().join("tmp/layer-1-stuck");
    fs::create_dir(&stuck).unwrap();
    fs::write(stuck.join("f"), b"x").unwrap();
    // The immutable flag stands in for files owned by IDs this process cannot touch.
    let chattr = |flag: &str| {
        Command::new("chattr")
            .arg(flag)
            .arg(stuck.join("f"))
            .status()
            .expect("run chattr (e2fsprogs)")
            .success()
    };
    assert!(chattr("+i"), "chattr +i needs root and ext4/tmpfs");
    let reopened = Store::open(store.root());
    assert!(chattr("-i"));
    reopened.unwrap();
    assert!(stuck.exists());
    Store::open(store.root()).unwrap();
    assert!(!stuck.exists());
}

// ---- ingestion ----

#[test]
fn ingest_gzip_zstd_plain_and_sniffed_layers() {
    for media_type in [
        OCI_LAYER_GZIP,
        OCI_LAYER_ZSTD,
        OCI_LAYER_TAR,
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
    ] {
        let (_t, store) = store();
        let (blob, expect) = simple_layer("etc/hostname", media_type.as_bytes());
        let mut seen = 0;
        store
            .ingest_layer(&mut &blob[..], &expect, &mut |n| seen = n)
            .unwrap();
        assert_eq!(seen, blob.len() as u64);
        assert!(store.has_blob(&expect.digest));
        assert!(store.has_layer(&expect.diff_id));
        assert_eq!(
            fs::read(store.layer_dir(&expect.diff_id).join("etc/hostname")).unwrap(),
            media_type.as_bytes()
        );
        assert_eq!(fs::read(store.blob_path(&expect.digest)).unwrap(), blob);
        assert!(tmp_is_empty(&store));
        // Idempotent: a second ingest does not even read.
        let mut never = io::repeat(0).take(0);
        store
            .ingest_layer(&mut never, &expect, &mut |_| {})
            .unwrap();
    }
    // A generic media type is decided by magic bytes.
    for compress in [gzip as fn(&[u8]) -> Vec<u8>, zstd, |t: &[u8]| t.to_vec()] {
        let (_t, store) = store();
        let tar = TarBuilder::new().file("x", b"sniffed").finish();
        let blob = compress(&tar);
        let expect = LayerExpectation {
            digest: Digest::of(&blob),
            size: blob.len() as u64,
            media_type: "application/octet-stream".to_string(),
            diff_id: Digest::of(&tar),
        };
        ingest(&store, &blob, &expect).unwrap();
        assert_eq!(
            fs::read(store.layer_dir(&expect.diff_id).join("x")).unwrap(),
            b"sniffed"
        );
    }
}

#[test]
fn e12_diff_id_mismatch_leaves_nothing() {
    let (_t, store) = store();
    let (blob, mut expect) = simple_layer("etc/a", b"a");
    expect.diff_id = Digest::of(b"something else");
    let err = ingest(&store, &blob, &expect).unwrap_err();
    assert!(matches!(err, StoreError::DiffIdMismatch { .. }), "{err}");
    assert!(nothing_stored(&store, &expect));
}

#[test]
fn r1_digest_and_size_mismatches_leave_nothing() {
    let (_t, store) = store();
    let (blob, expect) = simple_layer("etc/a", b"a");
    // One flipped byte in the gzip trailer area (still decodes? maybe not): any error is fine,
    // but nothing may stay.
    let mut flipped = blob.clone();
    let last = flipped.len() - 5;
    flipped[last] ^= 0xff;
    assert!(ingest(&store, &flipped, &expect).is_err());
    assert!(nothing_stored(&store, &expect));
    // One byte short.
    let err = ingest(&store, &blob[..blob.len() - 1], &expect).unwrap_err();
    assert!(matches!(err, StoreError::SizeMismatch { .. }), "{err}");
    assert!(nothing_stored(&store, &expect));
    // One byte extra.
    let mut longer = blob.clone();
    longer.push(0);
    let err = ingest(&store, &longer, &expect).unwrap_err();
    assert!(matches!(err, StoreError::SizeMismatch { .. }), "{err}");
    assert!(nothing_stored(&store, &expect));
    // An endless body stops right after the announced size.
    let mut endless = io::Cursor::new(blob.clone()).chain(io::repeat(7));
    let err = store
        .ingest_layer(&mut endless, &expect, &mut |_| {})
        .unwrap_err();
    assert!(matches!(err, StoreError::SizeMismatch { .. }), "{err}");
    assert!(nothing_stored(&store, &expect));
    // Right size, wrong digest.
    let (other_blob, _) = simple_layer("etc/a", b"b");
    let mut wrong = expect.clone();
    wrong.size = other_blob.len() as u64;
    let err = ingest(&store, &other_blob, &wrong).unwrap_err();
    assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
    assert!(nothing_stored(&store, &wrong));
}

#[test]
fn e8_bad_compressed_streams_fail_cleanly() {
    let (_t, store) = store();
    // (d) gzip that decodes fine but is not a tar.
    let not_tar = gzip(&vec![b'A'; 100_000]);
    let expect = LayerExpectation {
        digest: Digest::of(&not_tar),
        size: not_tar.len() as u64,
        media_type: OCI_LAYER_GZIP.to_string(),
        diff_id: Digest::of(b"x"),
    };
    let err = ingest(&store, &not_tar, &expect).unwrap_err();
    assert!(matches!(err, StoreError::Unpack { .. }), "{err}");
    assert!(nothing_stored(&store, &expect));
    // (e) truncated gzip whose descriptor matches the truncated bytes.
    let (blob, _) = simple_layer("etc/big", &vec![9u8; 200_000]);
    let cut = &blob[..blob.len() / 2];
    let expect = LayerExpectation {
        digest: Digest::of(cut),
        size: cut.len() as u64,
        media_type: OCI_LAYER_GZIP.to_string(),
        diff_id: Digest::of(b"x"),
    };
    let err = ingest(&store, cut, &expect).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Decompress { .. } | StoreError::Unpack { .. }
        ),
        "{err}"
    );
    assert!(nothing_stored(&store, &expect));
    // (b) a zstd frame asking for a 2 GiB window is refused.
    let tar = TarBuilder::new().file("x", b"x").finish();
    let mut enc = zstd::stream::Encoder::new(Vec::new(), 1).unwrap();
    enc.set_parameter(zstd::zstd_safe::CParameter::WindowLog(31))
        .unwrap();
    enc.set_pledged_src_size(None).unwrap();
    enc.write_all(&tar).unwrap();
    let big_window = enc.finish().unwrap();
    let expect = LayerExpectation {
        digest: Digest::of(&big_window),
        size: big_window.len() as u64,
        media_type: OCI_LAYER_ZSTD.to_string(),
        diff_id: Digest::of(&tar),
    };
    let err = ingest(&store, &big_window, &expect).unwrap_err();
    assert!(matches!(err, StoreError::Decompress { .. }), "{err}");
    assert!(err.to_string().contains("window"), "{err}");
    assert!(nothing_stored(&store, &expect));
    // Media types that are not tar layers are never unpacked.
    let mut helm = expect.clone();
    helm.media_type = "application/vnd.cncf.helm.chart.content.v1.tar+gzip".to_string();
    assert!(matches!(
        ingest(&store, &big_window, &helm),
        Err(StoreError::UnsupportedMediaType { .. })
    ));
}

#[test]
fn e8_trailing_junk_is_hashed_not_unpacked() {
    let (_t, store) = store();
    let mut tar = TarBuilder::new().file("a", b"a").finish();
    // Junk after the end-of-archive marker, including something that looks like a header.
    tar.extend_from_slice(&TarBuilder::new().file("smuggled", b"x").finish());
    tar.extend(std::iter::repeat_n(0xAAu8, 3 * 1024 * 1024));
    let (blob, expect) = layer(tar, OCI_LAYER_GZIP);
    ingest(&store, &blob, &expect).unwrap();
    let dir = store.layer_dir(&expect.diff_id);
    assert!(dir.join("a").is_file());
    assert!(!dir.join("smuggled").exists());
    // The diff_id covers the junk: a diff_id of only the tar part is refused.
    let (_t2, store2) = self::store();
    let mut short = expect.clone();
    short.diff_id = Digest::of(&TarBuilder::new().file("a", b"a").finish());
    assert!(matches!(
        ingest(&store2, &blob, &short),
        Err(StoreError::DiffIdMismatch { .. })
    ));
}

#[test]
fn e14_hostile_digests_never_reach_the_filesystem() {
    for bad in [
        "sha256:../../../../tmp/x",
        "sha256:0123",
        "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
        "sha512:abcd",
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b785/855",
    ] {
        assert!(bad.parse::<Digest>().is_err(), "{bad}");
    }
    // A manifest naming a hostile digest is refused before anything is written.
    let (_t, store) = store();
    let config = br#"{"rootfs":{"type":"layers","diff_ids":["sha256:../../../../tmp/x"]}}"#;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": crate::OCI_MANIFEST,
        "config": {"mediaType": crate::OCI_CONFIG, "digest": Digest::of(config).as_str(), "size": config.len()},
        "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": "sha256:../../../../tmp/x", "size": 1}],
    })
    .to_string();
    let err = store
        .commit_image(&["x:latest".to_string()], manifest.as_bytes(), config)
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidManifest { .. }), "{err}");
    assert!(fs::read_dir(store.root().join("blobs/sha256"))
        .unwrap()
        .next()
        .is_none());
}

#[test]
fn concurrent_ingests_of_one_layer_both_succeed() {
    let (_t, store) = store();
    let big: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut b = TarBuilder::new();
    for i in 0..50 {
        b.file(&format!("d/f{i}"), &big[..40_000 + i * 1000]);
    }
    let (blob, expect) = layer(b.finish(), OCI_LAYER_GZIP);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            let blob = blob.clone();
            let expect = expect.clone();
            std::thread::spawn(move || ingest(&store, &blob, &expect))
        })
        .collect();
    for t in threads {
        t.join().unwrap().unwrap();
    }
    assert!(store.has_layer(&expect.diff_id));
    assert_eq!(
        fs::read_dir(store.root().join("layers")).unwrap().count(),
        1
    );
    assert_eq!(
        fs::read_dir(store.root().join("blobs/sha256"))
            .unwrap()
            .count(),
        1
    );
    assert!(tmp_is_empty(&store));
    assert!(store.check(false).unwrap().is_clean());
}

// ---- images and index.json ----

#[test]
fn index_json_round_trip_names_tags_and_resolution() {
    let (_t, store) = store();
    let (_, a) = image(
        &store,
        &["docker.io/library/a:1", "docker.io/library/a:latest"],
        "etc/a",
        "2024-01-01T00:00:00Z",
    );
    let (_, b) = image(
        &store,
        &["docker.io/library/b:1"],
        "etc/b",
        "2025-01-01T00:00:00Z",
    );
    assert_eq!(
        a.names,
        vec!["docker.io/library/a:1", "docker.io/library/a:latest"]
    );
    assert_eq!(a.layers.len(), 1);
    assert_eq!(a.architecture, "amd64");
    assert!(a.size > 0);

    // Reopen: everything comes back from disk.
    let store = Store::open(store.root()).unwrap();
    let images = store.images().unwrap();
    assert_eq!(images.len(), 2);
    assert_eq!(images[0].id, b.id, "newest first");
    let index: Value =
        serde_json::from_slice(&fs::read(store.root().join("index.json")).unwrap()).unwrap();
    let names: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            m["annotations"][crate::REF_NAME_ANNOTATION]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(names.len(), 3);
    assert!(names.contains(&"docker.io/library/a:latest"));

    // Resolution: full name, id, bare hex, manifest digest, prefix.
    for r in [
        "docker.io/library/a:1".to_string(),
        a.id.to_string(),
        a.id.hex().to_string(),
        a.manifest_digest.to_string(),
        a.id.hex()[..12].to_string(),
    ] {
        assert_eq!(store.resolve_image(&r).unwrap().id, a.id, "{r}");
    }
    assert!(matches!(
        store.resolve_image("nope"),
        Err(StoreError::ImageNotFound { .. })
    ));
    assert!(matches!(
        store.resolve_image("ab"),
        Err(StoreError::ImageNotFound { .. })
    ));

    // A name moves like docker tag; an image losing its last name stays, unnamed.
    store.tag(&a.id, "docker.io/library/b:1").unwrap();
    let b_now = store.resolve_image(&b.id.to_string()).unwrap();
    assert!(b_now.names.is_empty(), "{:?}", b_now.names);
    assert_eq!(store.images().unwrap().len(), 2);
    store.untag("docker.io/library/a:1").unwrap();
    assert!(matches!(
        store.untag("docker.io/library/a:1"),
        Err(StoreError::NameNotFound { .. })
    ));
    let a_now = store.resolve_image("docker.io/library/b:1").unwrap();
    assert_eq!(a_now.id, a.id);
    assert_eq!(
        a_now.names,
        vec!["docker.io/library/a:latest", "docker.io/library/b:1"]
    );
    assert_eq!(
        store.image_config_bytes(&a_now).unwrap(),
        store.read_blob(&a.id, 1 << 20).unwrap()
    );
    assert!(store.image_manifest_bytes(&a_now).is_ok());
    assert!(store.tag(&a.id, "bad name").is_err());
}

#[test]
fn commit_requires_layers_and_accepts_manifests_without_media_type() {
    let (_t, store) = store();
    let (blob, expect) = simple_layer("etc/x", b"x");
    let (m, c) = documents(&[&expect], "2024-01-01T00:00:00Z", false);
    let err = store
        .commit_image(&["x:1".to_string()], &m, &c)
        .unwrap_err();
    assert!(matches!(err, StoreError::MissingBlob { .. }), "{err}");
    ingest(&store, &blob, &expect).unwrap();
    let rec = store.commit_image(&["x:1".to_string()], &m, &c).unwrap();
    assert_eq!(rec.manifest_media_type, crate::OCI_MANIFEST);
    // Config not matching the manifest is refused.
    assert!(store.commit_image(&[], &m, b"{}").is_err());
    // An index is not an image manifest.
    assert!(store
        .commit_image(&[], br#"{"schemaVersion":2,"manifests":[]}"#, &c)
        .is_err());
}

#[test]
fn remove_image_keeps_shared_layers_and_respects_containers() {
    let (_t, store) = store();
    let (shared_blob, shared) = simple_layer("etc/shared", b"s");
    ingest(&store, &shared_blob, &shared).unwrap();
    let (own_blob, own) = simple_layer("etc/own", b"o");
    ingest(&store, &own_blob, &own).unwrap();
    let (m1, c1) = documents(&[&shared, &own], "2024-01-01T00:00:00Z", true);
    let (m2, c2) = documents(&[&shared], "2024-01-02T00:00:00Z", true);
    let one = store
        .commit_image(&["one:1".to_string()], &m1, &c1)
        .unwrap();
    let two = store
        .commit_image(&["two:1".to_string()], &m2, &c2)
        .unwrap();

    store.register_container("c1", &one.id).unwrap();
    assert_eq!(store.containers_using(&one.id).unwrap(), vec!["c1"]);
    let err = store.remove_image(&one.id, false).unwrap_err();
    assert!(matches!(err, StoreError::ImageInUse { .. }), "{err}");
    store.unregister_container("c1").unwrap();
    assert!(store.containers_using(&one.id).unwrap().is_empty());

    let removed = store.remove_image(&one.id, false).unwrap();
    assert_eq!(removed.untagged, vec!["one:1"]);
    assert!(removed.deleted.contains(&own.diff_id));
    assert!(!store.has_layer(&own.diff_id));
    assert!(!store.has_blob(&own.digest));
    assert!(store.has_layer(&shared.diff_id));
    assert!(store.has_blob(&shared.digest));
    assert!(!store.has_blob(&one.id));
    assert_eq!(store.resolve_image("two:1").unwrap().id, two.id);
    assert!(store.check(false).unwrap().is_clean());
    assert!(store.register_container("../evil", &two.id).is_err());
}

// ---- check, repair, prune, df ----

#[test]
fn check_finds_corrupt_blob_and_missing_layer_and_repair_removes_them() {
    let (_t, store) = store();
    let (a_layer, a) = image(&store, &["a:1"], "etc/a", "2024-01-01T00:00:00Z");
    let (b_layer, b) = image(&store, &["b:1"], "etc/b", "2024-01-01T00:00:00Z");
    let (_, c) = image(&store, &["c:1"], "etc/c", "2024-01-01T00:00:00Z");
    assert!(store.check(false).unwrap().is_clean());

    // Corrupt a's layer blob; delete b's unpacked layer; leave an incomplete layer dir.
    fs::write(store.blob_path(&a_layer.digest), b"corrupt").unwrap();
    fs::remove_dir_all(store.root().join("layers").join(b_layer.diff_id.hex())).unwrap();
    let incomplete = store
        .root()
        .join("layers")
        .join(Digest::of(b"partial").hex());
    fs::create_dir_all(incomplete.join("diff")).unwrap();

    let report = store.check(false).unwrap();
    let kinds: Vec<(&str, &str)> = report
        .problems
        .iter()
        .map(|p| (p.kind, p.subject.as_str()))
        .collect();
    assert_eq!(report.problems.len(), 4, "{kinds:?}");
    assert!(report
        .problems
        .iter()
        .any(|p| p.kind == "blob" && p.subject == a_layer.digest.hex()));
    assert!(report
        .problems
        .iter()
        .any(|p| p.kind == "layer" && p.subject == Digest::of(b"partial").hex()));
    assert!(report
        .problems
        .iter()
        .any(|p| p.kind == "image" && p.subject.contains("a:1")));
    assert!(report
        .problems
        .iter()
        .any(|p| p.kind == "image" && p.subject.contains("b:1")));
    assert!(report.problems.iter().all(|p| !p.repaired));

    let repaired = store.check(true).unwrap();
    assert!(repaired.problems.iter().all(|p| p.repaired));
    assert!(!store.has_blob(&a_layer.digest));
    assert!(!incomplete.exists());
    assert!(store.check(false).unwrap().is_clean());
    let left: Vec<_> = store.images().unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(left, vec![c.id.clone()]);
    assert!(matches!(
        store.resolve_image("a:1"),
        Err(StoreError::ImageNotFound { .. })
    ));
    assert!(matches!(
        store.resolve_image(&b.id.to_string()),
        Err(StoreError::ImageNotFound { .. })
    ));
    let _ = a;
    // Prune then removes what the broken images left behind.
    let pruned = store.prune(false).unwrap();
    assert!(pruned.blobs >= 2, "{pruned:?}");
    assert!(store.check(false).unwrap().is_clean());
}

#[test]
fn prune_removes_dangling_and_unreferenced_and_respects_leases() {
    let (_t, store) = store();
    let (_, kept) = image(&store, &["kept:1"], "etc/kept", "2024-01-01T00:00:00Z");
    let (_, used) = image(&store, &["used:1"], "etc/used", "2024-01-01T00:00:00Z");
    let (dangling_layer, dangling) = image(&store, &[], "etc/dangling", "2024-01-01T00:00:00Z");
    assert!(dangling.names.is_empty());
    store.register_container("c1", &used.id).unwrap();

    // An unreferenced layer from an interrupted pull, kept while a lease is held.
    let (orphan_blob, orphan) = simple_layer("etc/orphan", b"o");
    let lease = store.lease().unwrap();
    ingest(&store, &orphan_blob, &orphan).unwrap();
    let report = store.prune(false).unwrap();
    assert_eq!(report.images, vec![dangling.id.clone()]);
    assert!(store.has_layer(&orphan.diff_id), "leased content must stay");
    assert!(
        store.has_layer(&dangling_layer.diff_id),
        "leased content must stay"
    );
    drop(lease);

    let usage = store.disk_usage().unwrap();
    assert_eq!(
        usage.build_cache.count, 2,
        "the orphan and the pruned image's layer"
    );
    assert!(usage.build_cache.size >= store.layer_size(&orphan.diff_id));
    assert_eq!(usage.images.count, 2);
    assert_eq!(usage.images.active, 1);
    assert!(usage.images.size > usage.images.reclaimable && usage.images.reclaimable > 0);
    assert_eq!(usage.containers.count, 1);

    let report = store.prune(false).unwrap();
    assert!(report.images.is_empty());
    assert_eq!(report.layers, 2, "{report:?}");
    assert_eq!(store.disk_usage().unwrap().build_cache.count, 0);
    assert!(!store.has_layer(&orphan.diff_id));
    assert!(!store.has_blob(&orphan.digest));
    assert!(!store.has_layer(&dangling_layer.diff_id));

    let report = store.prune(true).unwrap();
    assert_eq!(report.images, vec![kept.id.clone()]);
    assert_eq!(report.untagged, vec!["kept:1"]);
    let left: Vec<_> = store.images().unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(left, vec![used.id.clone()]);
    assert!(store.check(false).unwrap().is_clean());
}

// ---- import ----

fn rootfs_tar() -> Vec<u8> {
    TarBuilder::new()
        .dir("bin")
        .file_mode("bin/sh", 0o755, b"#!fake shell")
        .symlink("bin/ash", "sh")
        .dir("etc")
        .file("etc/os-release", b"ID=gcr")
        .finish()
}

fn check_imported(store: &Store, path: &Path, name: &str) {
    let rec = store.import_archive(path, name).unwrap();
    assert_eq!(rec.names, vec![name.to_string()]);
    assert_eq!(rec.layers.len(), 1);
    assert_eq!(rec.os, "linux");
    assert_eq!(rec.architecture, crate::import::host_architecture());
    let dir = store.layer_dir(&rec.layers[0]);
    assert_eq!(fs::read(dir.join("etc/os-release")).unwrap(), b"ID=gcr");
    assert_eq!(fs::read_link(dir.join("bin/ash")).unwrap(), Path::new("sh"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(dir.join("bin/sh"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o755
    );
    let config: Value = serde_json::from_slice(&store.image_config_bytes(&rec).unwrap()).unwrap();
    assert_eq!(config["history"][0]["created_by"], "gcr import");
    assert_eq!(config["rootfs"]["diff_ids"][0], rec.layers[0].as_str());
    let manifest: Value =
        serde_json::from_slice(&store.image_manifest_bytes(&rec).unwrap()).unwrap();
    assert_eq!(manifest["layers"][0]["mediaType"], OCI_LAYER_GZIP);
}

#[test]
fn import_tar_tar_gz_tar_zst_and_zip() {
    let (t, store) = store();
    let tar = rootfs_tar();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("rootfs.tar", tar.clone()),
        ("rootfs.tar.gz", gzip(&tar)),
        ("rootfs.tar.zst", zstd(&tar)),
    ];
    for (file, bytes) in cases {
        let path = t.path().join(file);
        fs::write(&path, bytes).unwrap();
        check_imported(
            &store,
            &path,
            &format!("localhost/imported:{}", file.replace('.', "-")),
        );
    }
    // zip with a directory, an executable, a symlink and a file.
    let path = t.path().join("rootfs.zip");
    {
        let mut zip = zip::ZipWriter::new(fs::File::create(&path).unwrap());
        let opts = zip::write::SimpleFileOptions::default();
        zip.add_directory("bin/", opts.unix_permissions(0o755))
            .unwrap();
        zip.start_file("bin/sh", opts.unix_permissions(0o755))
            .unwrap();
        zip.write_all(b"#!fake shell").unwrap();
        zip.add_symlink("bin/ash", "sh", opts).unwrap();
        zip.start_file("etc/os-release", opts.unix_permissions(0o644))
            .unwrap();
        zip.write_all(b"ID=gcr").unwrap();
        zip.finish().unwrap();
    }
    check_imported(&store, &path, "localhost/imported:zip");
    // Not an archive, and a zip escaping its root.
    let junk = t.path().join("junk.bin");
    fs::write(&junk, vec![0x42u8; 10_000]).unwrap();
    assert!(matches!(
        store.import_archive(&junk, "x:1"),
        Err(StoreError::Archive { .. })
    ));
    let evil = t.path().join("evil.zip");
    {
        let mut zip = zip::ZipWriter::new(fs::File::create(&evil).unwrap());
        zip.start_file("../../evil", zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(b"x").unwrap();
        zip.finish().unwrap();
    }
    assert!(matches!(
        store.import_archive(&evil, "x:1"),
        Err(StoreError::Archive { .. })
    ));
    // A stored entry whose declared size is smaller than its data: the rest must not become
    // tar entries of the layer (here a hidden file), the import fails.
    let smuggling = t.path().join("smuggle.zip");
    {
        let hidden = TarBuilder::new()
            .file("hidden.txt", b"not in the zip")
            .finish();
        let mut data = vec![b'A'; 512];
        data.extend_from_slice(&hidden[..hidden.len() - 1024]);
        let mut zip = zip::ZipWriter::new(fs::File::create(&smuggling).unwrap());
        let stored = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        zip.start_file("a.txt", stored).unwrap();
        zip.write_all(&data).unwrap();
        zip.finish().unwrap();
    }
    let mut bytes = fs::read(&smuggling).unwrap();
    assert_eq!(&bytes[..4], b"PK\x03\x04");
    bytes[22..26].copy_from_slice(&512u32.to_le_bytes());
    let central = bytes.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
    bytes[central + 24..central + 28].copy_from_slice(&512u32.to_le_bytes());
    fs::write(&smuggling, &bytes).unwrap();
    let err = store.import_archive(&smuggling, "x:1").unwrap_err();
    assert!(err.to_string().contains("longer than"), "{err}");
    assert!(store.check(false).unwrap().is_clean());
}

// ---- other tools read the layout ----

#[test]
fn skopeo_and_umoci_read_the_store() {
    let (t, store) = store();
    let path = t.path().join("rootfs.tar");
    fs::write(&path, rootfs_tar()).unwrap();
    let rec = store.import_archive(&path, "localhost/tools:1").unwrap();
    let (_, unnamed) = image(&store, &[], "etc/unnamed", "2024-01-01T00:00:00Z");
    assert!(unnamed.names.is_empty());
    if require_tool("skopeo") {
        let v = skopeo_inspect(&store, "localhost/tools:1");
        assert_eq!(v["Digest"], rec.manifest_digest.as_str());
        assert_eq!(v["Layers"][0], rec.layer_blobs[0].as_str());
    }
    if require_tool("umoci") {
        assert!(umoci_stat(&store, "localhost/tools:1").contains("gcr import"));
    }
}

// ---- crashes ----

const CRASH_CHILD_ENV: &str = "GCR_STORAGE_CRASH_CHILD_ROOT";

/// The layer the crash child writes over and over: enough files that kills land mid-unpack.
fn crash_layer() -> (Vec<u8>, LayerExpectation) {
    let mut b = TarBuilder::new();
    for i in 0..400 {
        b.file(
            &format!("usr/share/f{:03}/{i}", i % 20),
            &vec![(i % 256) as u8; 3000],
        );
    }
    layer(b.finish(), OCI_LAYER_GZIP)
}

/// In the child: ingest, commit, remove, forever (until killed).
fn crash_child(root: &str) {
    let store = Store::open(root).unwrap();
    let (blob, expect) = crash_layer();
    let (m, c) = documents(&[&expect], "2024-01-01T00:00:00Z", true);
    loop {
        ingest(&store, &blob, &expect).unwrap();
        let rec = store
            .commit_image(&["crash:1".to_string()], &m, &c)
            .unwrap();
        store.remove_image(&rec.id, false).unwrap();
    }
}

#[test]
fn sigkill_at_any_moment_leaves_a_clean_store() {
    if let Ok(root) = std::env::var(CRASH_CHILD_ENV) {
        crash_child(&root);
        return;
    }
    use rand::Rng;
    let (_t, store) = store();
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::rng();
    for round in 0..25 {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "store_tests::sigkill_at_any_moment_leaves_a_clean_store",
                "--nocapture",
            ])
            .env(CRASH_CHILD_ENV, store.root())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(rng.random_range(20..400)));
        assert!(
            child.try_wait().unwrap().is_none(),
            "round {round}: the child died on its own"
        );
        child.kill().unwrap();
        child.wait().unwrap();
        let reopened = Store::open(store.root()).unwrap();
        let report = reopened.check(false).unwrap();
        assert!(report.is_clean(), "round {round}: {:?}", report.problems);
        assert!(tmp_is_empty(&reopened), "round {round}: tmp not swept");
    }
    // The next writer completes.
    let (blob, expect) = crash_layer();
    ingest(&store, &blob, &expect).unwrap();
    let (m, c) = documents(&[&expect], "2024-01-01T00:00:00Z", true);
    store
        .commit_image(&["crash:1".to_string()], &m, &c)
        .unwrap();
    assert!(store.check(false).unwrap().is_clean());
}

#[test]
fn docker_schema2_images_are_stored_and_skopeo_reads_them() {
    let (_t, store) = store();
    let (blob, expect) = layer(
        TarBuilder::new().file("etc/docker", b"v2s2").finish(),
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
    );
    ingest(&store, &blob, &expect).unwrap();
    let config = json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [expect.diff_id.as_str()]},
    })
    .to_string()
    .into_bytes();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": crate::DOCKER_MANIFEST,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": Digest::of(&config).as_str(), "size": config.len()},
        "layers": [{"mediaType": expect.media_type, "digest": expect.digest.as_str(), "size": expect.size}],
    })
    .to_string()
    .into_bytes();
    let rec = store
        .commit_image(&["localhost/docker:1".to_string()], &manifest, &config)
        .unwrap();
    // The record shows the registry's manifest; the layout lists an OCI equivalent.
    assert_eq!(rec.manifest_media_type, crate::DOCKER_MANIFEST);
    assert_eq!(rec.manifest_digest, Digest::of(&manifest));
    assert_eq!(store.image_manifest_bytes(&rec).unwrap(), manifest);
    assert_eq!(
        store
            .resolve_image(rec.manifest_digest.as_str())
            .unwrap()
            .id,
        rec.id
    );
    let index: Value =
        serde_json::from_slice(&fs::read(store.root().join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["mediaType"], crate::OCI_MANIFEST);
    assert!(store.check(false).unwrap().is_clean());
    if require_tool("skopeo") {
        let v = skopeo_inspect(&store, "localhost/docker:1");
        assert_eq!(v["Layers"][0], expect.digest.as_str());
    }
    if require_tool("umoci") {
        umoci_stat(&store, "localhost/docker:1");
    }
    // Removing it removes both manifests.
    store.remove_image(&rec.id, false).unwrap();
    assert!(!store.has_blob(&rec.manifest_digest));
    assert_eq!(
        fs::read_dir(store.root().join("blobs/sha256"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn build_dirs_and_placed_layer_dirs() {
    let (_t, store) = store();
    let work = store.build_dir("build-step").unwrap();
    let upper = work.path().join("upper");
    fs::create_dir_all(upper.join("etc")).unwrap();
    fs::write(upper.join("etc/built"), b"built").unwrap();
    let tar = TarBuilder::new()
        .dir("etc")
        .file("etc/built", b"built")
        .finish();
    let diff_id = Digest::of(&tar);
    assert!(store.place_layer_dir(&upper, &diff_id, 5).unwrap());
    assert!(store.has_layer(&diff_id));
    assert_eq!(
        fs::read(store.layer_dir(&diff_id).join("etc/built")).unwrap(),
        b"built"
    );
    assert_eq!(store.layer_size(&diff_id), 5);
    // Already present: the second directory stays where it is.
    fs::create_dir_all(upper.join("etc")).unwrap();
    assert!(!store.place_layer_dir(&upper, &diff_id, 5).unwrap());
    assert!(upper.exists());
    let path = work.path().to_path_buf();
    drop(work);
    assert!(!path.exists());
    assert!(tmp_is_empty(&store));
}

#[test]
fn e2_symlinks_of_a_lower_layer_cannot_redirect_an_upper_layer() {
    let (t, store) = store();
    let outside = t.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("passwd"), b"host").unwrap();
    let target = outside.to_str().unwrap().to_string();
    let (b1, l1) = layer(
        TarBuilder::new()
            .symlink("etc", &target)
            .symlink("rel", "../../../../../../../../outside")
            .finish(),
        OCI_LAYER_GZIP,
    );
    let (b2, l2) = layer(
        TarBuilder::new()
            .file("etc/passwd", b"pwned")
            .file("rel/passwd", b"pwned")
            .finish(),
        OCI_LAYER_GZIP,
    );
    ingest(&store, &b1, &l1).unwrap();
    ingest(&store, &b2, &l2).unwrap();
    assert_eq!(fs::read(outside.join("passwd")).unwrap(), b"host");
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 1);
    let upper = store.layer_dir(&l2.diff_id);
    assert!(fs::symlink_metadata(upper.join("etc")).unwrap().is_dir());
    assert_eq!(fs::read(upper.join("etc/passwd")).unwrap(), b"pwned");
    assert_eq!(
        fs::read_link(store.layer_dir(&l1.diff_id).join("etc")).unwrap(),
        outside
    );
}

/// Two layers whose upper one deletes `f` and makes `d` opaque, mounted with real OverlayFS.
fn whiteout_layers(store: &Store) -> (LayerExpectation, LayerExpectation) {
    let (b1, lower) = layer(
        TarBuilder::new()
            .dir("d")
            .file("d/a", b"a")
            .file("d/b", b"b")
            .file("f", b"f")
            .file("kept", b"kept")
            .finish(),
        OCI_LAYER_GZIP,
    );
    let (b2, upper) = layer(
        TarBuilder::new()
            .dir("d")
            .file("d/.wh..wh..opq", b"")
            .file("d/c", b"c")
            .file(".wh.f", b"")
            .finish(),
        OCI_LAYER_GZIP,
    );
    ingest(store, &b1, &lower).unwrap();
    ingest(store, &b2, &upper).unwrap();
    (lower, upper)
}

fn merged_listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for top in ["", "d"] {
        let mut names: Vec<String> = fs::read_dir(dir.join(top))
            .unwrap()
            .map(|e| format!("{top}/{}", e.unwrap().file_name().to_string_lossy()))
            .collect();
        names.sort();
        out.extend(names);
    }
    out
}

#[test]
fn whiteouts_and_opaque_dirs_work_in_a_real_overlay_mount() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root to mount OverlayFS"
    );
    let (t, store) = store();
    let (lower, upper) = whiteout_layers(&store);
    let mnt = t.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let opts = format!(
        "lowerdir={}:{}",
        store.layer_dir(&upper.diff_id).display(),
        store.layer_dir(&lower.diff_id).display()
    );
    nix::mount::mount(
        Some("overlay"),
        &mnt,
        Some("overlay"),
        nix::mount::MsFlags::MS_RDONLY,
        Some(opts.as_str()),
    )
    .unwrap();
    let listing = merged_listing(&mnt);
    nix::mount::umount2(&mnt, nix::mount::MntFlags::MNT_DETACH).unwrap();
    assert_eq!(listing, vec!["/d", "/kept", "d/c"]);

    // Rootless: the same layers in a user namespace with `userxattr`.
    let script = format!(
        "mount -t overlay overlay -o {opts},userxattr {m} && ls -A {m} {m}/d",
        m = mnt.display()
    );
    let out = Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c", &script])
        .output()
        .expect("run unshare (util-linux)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let names: Vec<&str> = text.split_whitespace().collect();
    assert!(names.contains(&"kept") && names.contains(&"c"), "{text}");
    assert!(
        !names.contains(&"f") && !names.contains(&"a") && !names.contains(&"b"),
        "{text}"
    );
}

#[test]
fn concurrent_commits_lose_no_name() {
    let (_t, store) = store();
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            std::thread::spawn(move || {
                let file = format!("etc/f{i}");
                for round in 0..5 {
                    image(
                        &store,
                        &[&format!("localhost/n{i}:{round}")],
                        &file,
                        "2024-01-01T00:00:00Z",
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut names: Vec<String> = store
        .images()
        .unwrap()
        .into_iter()
        .flat_map(|r| r.names)
        .collect();
    names.sort();
    assert_eq!(names.len(), 40, "{names:?}");
    assert!(store.check(false).unwrap().is_clean());
}

// ---- a blob is only ever paired with the layer it unpacks to ----

#[test]
fn a_stored_layer_is_not_reused_for_a_blob_that_does_not_unpack_to_it() {
    let (_t, store) = store();
    let (private_blob, private) = simple_layer("secret", b"private");
    let (public_blob, public) = simple_layer("public", b"public");
    ingest(&store, &private_blob, &private).unwrap();
    ingest(&store, &public_blob, &public).unwrap();
    assert!(store.layer_comes_from(&private.digest, &private.diff_id));
    // A manifest that pairs the public blob with the private layer's diff_id: both are
    // stored, but the blob was never seen to unpack to that layer.
    let lie = LayerExpectation {
        diff_id: private.diff_id.clone(),
        ..public.clone()
    };
    assert!(!store.layer_comes_from(&lie.digest, &lie.diff_id));
    let err = ingest(&store, &public_blob, &lie).unwrap_err();
    assert!(matches!(err, StoreError::DiffIdMismatch { .. }), "{err}");
    let err = store.ingest_layer_from_blob(&lie).unwrap_err();
    assert!(matches!(err, StoreError::DiffIdMismatch { .. }), "{err}");
    assert!(!store.layer_comes_from(&lie.digest, &lie.diff_id));
    // A layer with no record of its blob (an older store, or a lost marker) is checked once
    // from the stored blob and then known.
    fs::remove_dir_all(
        store
            .root()
            .join("layers")
            .join(public.diff_id.hex())
            .join("from"),
    )
    .unwrap();
    store.ingest_layer_from_blob(&public).unwrap();
    assert!(store.layer_comes_from(&public.digest, &public.diff_id));
    // `system check` finds an image that pairs them wrongly (committed behind the pull's back).
    let (m, c) = documents(&[&lie], "2024-01-01T00:00:00Z", true);
    store
        .commit_image(&["localhost/mixed:1".to_string()], &m, &c)
        .unwrap();
    let report = store.check(false).unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.kind == "image" && p.detail.contains("is not the layer")),
        "{report:?}"
    );
}
