//! Tests of loading (and of saving then loading again).

use std::io::Write;

use serde_json::json;

use super::*;
use crate::archive::save::TarOut;
use crate::archive::{ArchiveFormat, SaveRequest};
use crate::index::ImageRecord;
use crate::{OCI_CONFIG, OCI_MANIFEST};

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("root")).unwrap();
    (dir, store)
}

fn tar_of(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in members {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        // Raw names: the tar crate refuses to write `..` through set_path.
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn hostile_member_names_are_refused_before_anything_is_stored() {
    let (dir, store) = store();
    let archive = dir.path().join("evil.tar");
    std::fs::write(
        &archive,
        tar_of(&[("manifest.json", b"[]"), ("../../escape.tar", b"x")]),
    )
    .unwrap();
    let e = store
        .load_archive(&archive, &|n| Ok(n.to_string()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("climbs out"), "{e}");
    assert!(store.images().unwrap().is_empty());
    assert!(!dir.path().join("escape.tar").exists());
}

/// A one-layer image (gzip layer, OCI manifest) named `name`, made in `store`.
fn make_image(store: &Store, files: &[(&str, &[u8])], name: &str) -> ImageRecord {
    let mut t = crate::testutil::TarBuilder::new();
    for (n, d) in files {
        t.file(n, d);
    }
    let tar = t.finish();
    let mut w = store.layer_writer(crate::Compression::Gzip).unwrap();
    w.write_all(&tar).unwrap();
    let info = w.finish().unwrap();
    store
        .ingest_layer_from_blob(&LayerExpectation {
            digest: info.digest.clone(),
            size: info.size,
            media_type: info.media_type.clone(),
            diff_id: info.diff_id.clone(),
        })
        .unwrap();
    let config = json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [info.diff_id.as_str()]},
    })
    .to_string();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": Digest::of(config.as_bytes()).as_str(), "size": config.len()},
        "layers": [{"mediaType": info.media_type, "digest": info.digest.as_str(), "size": info.size}],
    })
    .to_string();
    store
        .commit_image(&[name.to_string()], manifest.as_bytes(), config.as_bytes())
        .unwrap()
}

#[test]
fn round_trips_in_both_formats_plain_and_compressed() {
    let (dir, source) = store();
    let record = make_image(&source, &[("hello.txt", b"hello")], "reg.example/a:1");
    let request = SaveRequest {
        record: record.clone(),
        names: vec!["reg.example/a:1".to_string()],
    };
    for format in [ArchiveFormat::DockerArchive, ArchiveFormat::OciArchive] {
        let mut bytes = Vec::new();
        source
            .save_archive(std::slice::from_ref(&request), format, &mut bytes)
            .unwrap();
        for compressed in [false, true] {
            let path = dir.path().join("archive");
            let data = if compressed {
                crate::testutil::gzip(&bytes)
            } else {
                bytes.clone()
            };
            std::fs::write(&path, data).unwrap();
            let target =
                Store::open(dir.path().join(format!("t-{format:?}-{compressed}"))).unwrap();
            let loaded = target.load_archive(&path, &|n| Ok(n.to_string())).unwrap();
            assert_eq!(
                loaded,
                vec![LoadedImage {
                    id: record.id.clone(),
                    names: vec!["reg.example/a:1".to_string()]
                }]
            );
            let got = target.resolve_image("reg.example/a:1").unwrap();
            assert_eq!(got.layers, record.layers);
            let file = target.layer_dir(&got.layers[0]).join("hello.txt");
            assert_eq!(std::fs::read(file).unwrap(), b"hello");
            assert!(target.check(false).unwrap().is_clean());
            // The spooled copy of a compressed archive is gone.
            assert_eq!(std::fs::read_dir(target.tmp_root()).unwrap().count(), 0);
        }
    }
}

#[test]
fn docker_archive_with_gzip_layer_members_loads() {
    let (dir, store) = store();
    let tar = crate::testutil::TarBuilder::new()
        .file("f", b"data")
        .finish();
    let diff_id = Digest::of(&tar);
    let config = json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [diff_id.as_str()]},
    })
    .to_string();
    let manifest =
        json!([{"Config": "c.json", "RepoTags": ["x/y:1"], "Layers": ["l/layer.tar"]}]).to_string();
    let mut out = Vec::new();
    {
        let mut t = TarOut::new(&mut out);
        t.bytes("manifest.json", manifest.as_bytes()).unwrap();
        t.bytes("c.json", config.as_bytes()).unwrap();
        t.bytes("l/layer.tar", &crate::testutil::gzip(&tar))
            .unwrap();
        t.finish().unwrap();
    }
    let path = dir.path().join("a.tar");
    std::fs::write(&path, out).unwrap();
    let loaded = store.load_archive(&path, &|n| Ok(n.to_string())).unwrap();
    assert_eq!(loaded[0].id, Digest::of(config.as_bytes()));
    let record = store.resolve_image("x/y:1").unwrap();
    assert_eq!(record.layers, vec![diff_id]);
    assert!(store.check(false).unwrap().is_clean());
}

#[test]
fn unknown_and_empty_archives() {
    let (dir, store) = store();
    let archive = dir.path().join("x.tar");
    std::fs::write(&archive, tar_of(&[("hello", b"x")])).unwrap();
    let e = store
        .load_archive(&archive, &|n| Ok(n.to_string()))
        .unwrap_err();
    assert!(matches!(e, ArchiveError::UnknownFormat { .. }), "{e}");
    std::fs::write(&archive, tar_of(&[("manifest.json", b"[]")])).unwrap();
    let e = store
        .load_archive(&archive, &|n| Ok(n.to_string()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("lists no image"), "{e}");
}
