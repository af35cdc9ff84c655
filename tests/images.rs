//! End-to-end tests: images, tag, rmi, inspect, history and import against the fixture registry.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::Value;
use support::{fixture_env, registry, stderr, stdout, TestStore};

/// The config digest the registry's manifest names (what `Id` must be).
fn registry_config_digest(registry: &str, repo: &str, tag: &str) -> String {
    let out = std::process::Command::new("skopeo")
        .args([
            "inspect",
            "--tls-verify=false",
            "--raw",
            &format!("docker://{registry}/{repo}:{tag}"),
        ])
        .output()
        .expect("run skopeo (installed by tests/fixtures/setup.sh)");
    assert!(out.status.success(), "skopeo failed: {}", stderr(&out));
    let manifest: Value = serde_json::from_slice(&out.stdout).expect("manifest JSON");
    manifest["config"]["digest"]
        .as_str()
        .expect("config digest")
        .to_string()
}

fn inspect(store: &TestStore, image: &str) -> Value {
    let text = store.ok(&["inspect", image]);
    let list: Value = serde_json::from_str(&text).expect("inspect prints JSON");
    list[0].clone()
}

#[test]
fn images_lists_pulled_image_with_docker_columns_json_and_quiet() {
    let Some(reg) = registry() else { return };
    let store = TestStore::new();
    let name = format!("{reg}/busybox:latest");
    store.ok(&["pull", "-q", &name]);

    let table = store.ok(&["images"]);
    let mut lines = table.lines();
    let header = lines.next().expect("header line");
    for column in ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"] {
        assert!(header.contains(column), "missing column {column}: {header}");
    }
    let row = lines.next().expect("one image row");
    let config = registry_config_digest(&reg, "busybox", "latest");
    let short = &config["sha256:".len().."sha256:".len() + 12];
    assert!(row.starts_with(&format!("{reg}/busybox")), "{row}");
    assert!(row.contains("latest") && row.contains(short), "{row}");

    let json: Value = serde_json::from_str(&store.ok(&["images", "--format", "json"])).unwrap();
    assert_eq!(json[0]["Id"], config.as_str());
    assert_eq!(json[0]["Names"][0], name.as_str());

    assert_eq!(store.ok(&["images", "-q"]).trim(), short);
}

#[test]
fn inspect_reports_config_digest_tags_platform_and_layers() {
    let Some(reg) = registry() else { return };
    let store = TestStore::new();
    let name = format!("{reg}/busybox:v2s2");
    store.ok(&["pull", "-q", &name]);
    let info = inspect(&store, &name);
    assert_eq!(
        info["Id"],
        registry_config_digest(&reg, "busybox", "v2s2").as_str()
    );
    assert_eq!(info["RepoTags"][0], name.as_str());
    assert_eq!(info["Architecture"], "amd64");
    assert_eq!(info["Os"], "linux");
    assert_eq!(info["Config"]["Cmd"][0], "sh");
    assert_eq!(info["RootFS"]["Type"], "layers");
    assert_eq!(info["RootFS"]["Layers"].as_array().unwrap().len(), 1);
    // The ID prefix finds the same image.
    let id = info["Id"].as_str().unwrap();
    let by_id = inspect(&store, &id["sha256:".len().."sha256:".len() + 8]);
    assert_eq!(by_id["Id"], info["Id"]);
}

#[test]
fn tag_and_rmi_keep_shared_layers() {
    let Some(reg) = registry() else { return };
    let store = TestStore::new();
    let busybox = format!("{reg}/busybox:latest");
    let multi = format!("{reg}/multi:latest");
    store.ok(&["pull", "-q", &busybox]);
    store.ok(&["pull", "-q", "--platform", "linux/amd64", &multi]);
    let busybox_layer = inspect(&store, &busybox)["RootFS"]["Layers"][0]
        .as_str()
        .unwrap()
        .to_string();
    let multi_layers = inspect(&store, &multi)["RootFS"]["Layers"].clone();
    assert_eq!(
        multi_layers[0],
        busybox_layer.as_str(),
        "fixture shares the busybox layer"
    );

    // tag: a second name for the same image.
    store.ok(&["tag", &busybox, "localhost/mine:v1"]);
    let info = inspect(&store, "localhost/mine:v1");
    assert_eq!(info["Id"], inspect(&store, &busybox)["Id"]);
    assert!(store.ok(&["images"]).contains("localhost/mine"));

    // rmi of one of two names only untags.
    let out = store.ok(&["rmi", "localhost/mine:v1"]);
    assert!(out.contains("Untagged: localhost/mine:v1"), "{out}");
    assert!(!store
        .run(&["inspect", "localhost/mine:v1"])
        .status
        .success());
    store.ok(&["inspect", &busybox]);

    // Removing busybox keeps the layer multi still uses.
    let out = store.ok(&["rmi", &busybox]);
    assert!(out.contains("Deleted: sha256:"), "{out}");
    assert!(!store.run(&["inspect", &busybox]).status.success());
    let layer_dir = store
        .root()
        .join("layers")
        .join(&busybox_layer["sha256:".len()..]);
    assert!(layer_dir.is_dir(), "shared layer removed with busybox");
    store.ok(&["inspect", &multi]);
    let check = store.run(&["system", "check"]);
    assert!(check.status.success(), "{}", stdout(&check));

    // Removing the last user of the layer removes it.
    store.ok(&["rmi", &multi]);
    assert!(!layer_dir.exists(), "unused layer left behind");
    assert_eq!(store.ok(&["images", "-q"]).trim(), "");
}

#[test]
fn history_lists_config_history_newest_first() {
    let Some(reg) = registry() else { return };
    let store = TestStore::new();
    let name = format!("{reg}/layered:latest");
    store.ok(&["pull", "-q", &name]);
    let out = store.ok(&["history", &name]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("IMAGE"), "{out}");
    let info = inspect(&store, &name);
    let history = info["History"].as_array().expect("history in config");
    assert_eq!(lines.len() - 1, history.len(), "{out}");
    let id = info["Id"].as_str().unwrap();
    assert!(
        lines[1].starts_with(&id["sha256:".len().."sha256:".len() + 12]),
        "newest entry carries the image id: {out}"
    );
    let json: Value =
        serde_json::from_str(&store.ok(&["history", "--format", "json", &name])).unwrap();
    assert_eq!(json.as_array().unwrap().len(), history.len());
}

#[test]
fn unknown_images_give_one_clear_error() {
    let store = TestStore::new();
    for args in [
        vec!["inspect", "nosuchimage:v9"],
        vec!["rmi", "nosuchimage:v9"],
        vec!["history", "nosuchimage:v9"],
        vec!["tag", "nosuchimage:v9", "other:v1"],
    ] {
        let out = store.run(&args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = stderr(&out);
        assert!(
            err.contains("nosuchimage:v9") && err.starts_with("error:"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}

fn busybox_tar() -> Option<PathBuf> {
    let dir = fixture_env("GCR_TEST_FIXTURES")?;
    Some(Path::new(&dir).join("rootfs/busybox.tar"))
}

/// A zip of a few busybox files, made here.
fn make_zip(dir: &Path) -> PathBuf {
    let path = dir.join("rootfs.zip");
    let file = std::fs::File::create(&path).unwrap();
    let mut zip = zip::ZipWriter::new(file);
    let options = zip::write::SimpleFileOptions::default().unix_permissions(0o755);
    zip.add_directory("bin/", options).unwrap();
    zip.start_file("bin/hello.sh", options).unwrap();
    zip.write_all(b"#!/bin/sh\necho hello from zip\n").unwrap();
    zip.start_file("etc/motd", options.unix_permissions(0o644))
        .unwrap();
    zip.write_all(b"welcome\n").unwrap();
    zip.finish().unwrap();
    path
}

#[test]
fn import_turns_archives_into_one_layer_images() {
    let Some(tar) = busybox_tar() else { return };
    let store = TestStore::new();
    let scratch = tempfile::tempdir().unwrap();
    let zip = make_zip(scratch.path());
    // xz and bzip2 as the command-line tools write them (Debian's rootfs tarballs are .tar.xz).
    let compressed_by = |tool: &str, ext: &str| {
        let path = scratch.path().join(format!("busybox.tar.{ext}"));
        let out = std::process::Command::new(tool)
            .arg("-c")
            .arg(&tar)
            .output()
            .unwrap_or_else(|e| panic!("{tool} missing ({e}): run tests/fixtures/setup.sh"));
        assert!(out.status.success(), "{tool} failed");
        std::fs::write(&path, out.stdout).unwrap();
        path
    };
    let cases = [
        (tar.clone(), "localhost/imported:tar"),
        (tar.with_extension("tar.gz"), "localhost/imported:gz"),
        (tar.with_extension("tar.zst"), "localhost/imported:zst"),
        (compressed_by("xz", "xz"), "localhost/imported:xz"),
        (compressed_by("bzip2", "bz2"), "localhost/imported:bz2"),
        (zip, "localhost/imported:zip"),
    ];
    for (archive, name) in &cases {
        let out = store.ok(&["import", "-q", archive.to_str().unwrap(), name]);
        assert!(out.trim().starts_with("sha256:"), "{out}");
        let info = inspect(&store, name);
        assert_eq!(info["RootFS"]["Layers"].as_array().unwrap().len(), 1);
        assert_eq!(info["Os"], "linux");
        let layer = info["RootFS"]["Layers"][0].as_str().unwrap();
        let diff = store
            .root()
            .join("layers")
            .join(&layer["sha256:".len()..])
            .join("diff");
        let probe = if name.ends_with("zip") {
            "bin/hello.sh"
        } else {
            "bin/busybox"
        };
        assert!(diff.join(probe).is_file(), "{name}: {probe} missing");
    }
    // The same tar compressed any way is the same layer.
    let diff_id = |name: &str| inspect(&store, name)["RootFS"]["Layers"][0].clone();
    assert_eq!(
        diff_id("localhost/imported:tar"),
        diff_id("localhost/imported:gz")
    );
    for other in ["zst", "xz", "bz2"] {
        assert_eq!(
            diff_id("localhost/imported:tar"),
            diff_id(&format!("localhost/imported:{other}")),
            "{other}"
        );
    }
    // And the import's diff_id is the sha256 of the uncompressed tar.
    let tar_bytes = std::fs::read(&tar).unwrap();
    let expected = format!("sha256:{}", sha256_hex(&tar_bytes));
    assert_eq!(diff_id("localhost/imported:tar"), expected.as_str());

    let missing = store.run(&["import", "/nonexistent/rootfs.tar", "localhost/x"]);
    assert!(!missing.status.success());
    assert!(stderr(&missing).contains("/nonexistent/rootfs.tar"));
    let garbage = scratch.path().join("garbage.tar");
    std::fs::write(&garbage, b"this is not an archive at all").unwrap();
    let bad = store.run(&["import", garbage.to_str().unwrap(), "localhost/x"]);
    assert!(!bad.status.success());
    assert!(!stderr(&bad).contains("panicked"), "{}", stderr(&bad));
    assert!(store.run(&["inspect", "localhost/x"]).status.code() != Some(0));
    store.ok(&["system", "check"]);
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn pull_progress_bars_on_a_terminal_plain_lines_otherwise_nothing_when_quiet() {
    let Some(reg) = registry() else { return };
    let name = format!("{reg}/busybox:latest");

    // A terminal (made by script(1)): indicatif bars, one per layer.
    let store = TestStore::new();
    let log = store.root().join("typescript");
    let command = format!(
        "{} --root {} pull {name}",
        support::gcr_bin().display(),
        store.root().display()
    );
    let out = std::process::Command::new("script")
        .args(["-qc", &command])
        .arg(&log)
        .output()
        .expect("run script(1)");
    assert!(out.status.success(), "{}", stderr(&out));
    let screen = std::fs::read_to_string(&log).unwrap();
    assert!(screen.contains("[=="), "no progress bar drawn: {screen}");
    assert!(screen.contains("done"), "{screen}");

    // Not a terminal: plain lines on stderr.
    let store = TestStore::new();
    let out = store.run(&["pull", &name]);
    assert!(out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("Copying blob") && !err.contains("[=="),
        "{err}"
    );
    assert!(stdout(&out).contains(&name));

    // Quiet: only the name, nothing on stderr.
    let store = TestStore::new();
    let out = store.run(&["pull", "-q", &name]);
    assert!(out.status.success());
    assert_eq!(stdout(&out).trim(), name);
    assert_eq!(stderr(&out), "");
}

#[test]
fn images_filters_by_repository_reference_dangling_and_label() {
    let Some(reg) = registry() else { return };
    let store = TestStore::new();
    let busybox = format!("{reg}/busybox:latest");
    store.ok(&["pull", "-q", &busybox]);
    store.ok(&["tag", &busybox, "localhost/app:1"]);
    store.ok(&["tag", &busybox, "localhost/app:2"]);
    let names = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["images", "--format", "{{.Repository}}:{{.Tag}}"];
        all.extend_from_slice(args);
        let mut v: Vec<String> = store.ok(&all).lines().map(String::from).collect();
        v.sort();
        v
    };
    assert_eq!(
        names(&["localhost/app"]),
        ["localhost/app:1", "localhost/app:2"]
    );
    assert_eq!(names(&["localhost/app:2"]), ["localhost/app:2"]);
    assert_eq!(names(&["-f", "reference=*app:1"]), ["localhost/app:1"]);
    // Patterns match the name as Docker shows it (here with its registry).
    assert_eq!(
        names(&["-f", "reference=*/busybox*"]),
        vec![busybox.clone()]
    );
    assert_eq!(names(&["-f", "reference=busy*"]), Vec::<String>::new());
    assert_eq!(names(&["-f", "dangling=true"]), Vec::<String>::new());
    assert_eq!(names(&["-a"]).len(), 3);
    // A label of the image's config (the fixture's busybox has none; a built one has).
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Containerfile"),
        format!("FROM {busybox}\nLABEL tier=web\n"),
    )
    .unwrap();
    store.ok(&[
        "build",
        "-q",
        "-t",
        "localhost/labelled:1",
        &ctx.path().display().to_string(),
    ]);
    assert_eq!(names(&["-f", "label=tier=web"]), ["localhost/labelled:1"]);
    assert_eq!(names(&["-f", "label=tier"]), ["localhost/labelled:1"]);
    assert_eq!(names(&["-f", "label=tier=db"]), Vec::<String>::new());
    // The same image under two manifests (loaded from an archive, then pulled) is one row,
    // not a named one and a dangling one.
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("bb.tar");
    store.ok(&["save", "-o", &archive.display().to_string(), &busybox]);
    store.ok(&["rmi", "-f", &busybox]);
    store.ok(&["load", "-i", &archive.display().to_string()]);
    store.ok(&["pull", "-q", &busybox]);
    assert_eq!(names(&["-f", "dangling=true"]), Vec::<String>::new());
    assert_eq!(names(&[&busybox]), vec![busybox.clone()]);
    // Docker Hub names show as Docker shows them.
    store.ok(&["tag", &busybox, "plainname"]);
    assert_eq!(names(&["plainname"]), ["plainname:latest"]);
    assert_eq!(names(&["-f", "reference=plain*"]), ["plainname:latest"]);
    // An unknown filter is an error.
    let out = store.run(&["images", "-f", "colour=red"]);
    assert_eq!(out.status.code(), Some(125));
}
