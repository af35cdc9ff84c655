//! End-to-end tests: `gcr save` and `gcr load` (docker-archive and oci-archive): round trips,
//! standard input and output, interoperability with podman and with a Docker Engine both ways,
//! and hostile archives.

mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};
use support::{stderr, stdout, TestStore};

fn inspect(store: &TestStore, image: &str) -> Value {
    let out = store.ok(&["inspect", image]);
    let v: Value = serde_json::from_str(&out).expect("inspect json");
    v[0].clone()
}

fn fails(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(125),
        "expected failure\nstdout: {}\nstderr: {}",
        stdout(out),
        stderr(out)
    );
    stderr(out)
}

/// The store holds no image and `gcr system check` finds it consistent.
fn assert_empty_and_clean(store: &TestStore) {
    assert_eq!(store.ok(&["images", "-q"]).trim(), "", "an image was left");
    let out = store.run(&["system", "check"]);
    assert!(
        out.status.success(),
        "system check: {}{}",
        stdout(&out),
        stderr(&out)
    );
}

fn podman(args: &[&str]) -> Output {
    Command::new("podman")
        .args(args)
        .output()
        .expect("spawn podman")
}

fn podman_ok(args: &[&str]) -> String {
    let out = podman(args);
    assert!(
        out.status.success(),
        "podman {args:?} failed: {}",
        stderr(&out)
    );
    stdout(&out)
}

fn unique_name(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "localhost/gcr-test-archive/{what}:{}-{nanos}",
        std::process::id()
    )
}

#[test]
fn round_trips_keep_image_ids_names_and_content() {
    let Some(registry) = support::registry() else {
        return;
    };
    let source = TestStore::new();
    let oci = format!("{registry}/busybox:latest");
    let docker = format!("{registry}/busybox:v2s2");
    source.ok(&["pull", "-q", &oci]);
    source.ok(&["pull", "-q", &docker]);
    let id = inspect(&source, &oci)["Id"].as_str().unwrap().to_string();
    let docker_digest = inspect(&source, &docker)["Digest"]
        .as_str()
        .unwrap()
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    for format in ["docker-archive", "oci-archive"] {
        for image in [&oci, &docker] {
            let file = dir.path().join(format!("{format}.tar"));
            source.ok(&[
                "save",
                "--format",
                format,
                "-o",
                file.to_str().unwrap(),
                image,
            ]);
            let target = TestStore::new();
            let out = target.ok(&["load", "-i", file.to_str().unwrap()]);
            assert_eq!(out.trim(), format!("Loaded image: {image}"), "{format}");
            let loaded = inspect(&target, image);
            assert_eq!(loaded["Id"], id, "{format} {image}");
            if format == "oci-archive" && image == &docker {
                // The original Docker manifest travels with its OCI equivalent.
                assert_eq!(loaded["Digest"], docker_digest);
            }
            let ran = target.ok(&["run", "--rm", image, "cat", "/etc/passwd"]);
            assert!(ran.contains("root:"), "{ran}");
            let check = target.ok(&["system", "check"]);
            assert!(check.contains("consistent"), "{check}");
        }
    }
    // No temporary file is left beside the output.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("gcr-tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn save_to_stdout_and_load_from_stdin() {
    let Some(registry) = support::registry() else {
        return;
    };
    let source = TestStore::new();
    let image = format!("{registry}/busybox:latest");
    source.ok(&["pull", "-q", &image]);
    for format in ["docker-archive", "oci-archive"] {
        let saved = source
            .gcr()
            .args(["save", "--format", format, &image])
            .output()
            .unwrap();
        assert!(saved.status.success(), "{}", stderr(&saved));
        let target = TestStore::new();
        let mut child = target
            .gcr()
            .args(["load", "-q"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(&saved.stdout)
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(stdout(&out).trim(), image);
    }
}

#[test]
fn podman_loads_and_runs_what_gcr_saves() {
    let Some(registry) = support::registry() else {
        return;
    };
    if support::tool("podman").is_none() {
        return;
    }
    let store = TestStore::new();
    let image = format!("{registry}/busybox:latest");
    store.ok(&["pull", "-q", &image]);
    let id = inspect(&store, &image)["Id"].as_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    for format in ["docker-archive", "oci-archive"] {
        let name = unique_name(&format.replace('-', ""));
        store.ok(&["tag", &image, &name]);
        let file = dir.path().join("out.tar");
        store.ok(&[
            "save",
            "--format",
            format,
            "-o",
            file.to_str().unwrap(),
            &name,
        ]);
        let loaded = podman(&["load", "-i", file.to_str().unwrap()]);
        let podman_id = podman(&["image", "inspect", "--format", "{{.Id}}", &name]);
        let ran = podman(&["run", "--rm", &name, "echo", "from-gcr"]);
        let _ = podman(&["rmi", "-f", &name]);
        assert!(loaded.status.success(), "{format}: {}", stderr(&loaded));
        assert_eq!(
            format!("sha256:{}", stdout(&podman_id).trim()),
            id,
            "{format}"
        );
        assert!(ran.status.success(), "{format}: {}", stderr(&ran));
        assert_eq!(stdout(&ran).trim(), "from-gcr");
    }
}

#[test]
fn gcr_loads_and_runs_what_podman_saves() {
    let Some(registry) = support::registry() else {
        return;
    };
    if support::tool("podman").is_none() {
        return;
    }
    let image = format!("{registry}/busybox:latest");
    podman_ok(&["pull", "-q", "--tls-verify=false", &image]);
    let dir = tempfile::tempdir().unwrap();
    for format in ["docker-archive", "oci-archive"] {
        let file = dir.path().join(format!("{format}.tar"));
        podman_ok(&[
            "save",
            "--format",
            format,
            "-o",
            file.to_str().unwrap(),
            &image,
        ]);
        let store = TestStore::new();
        let out = store.ok(&["load", "-i", file.to_str().unwrap()]);
        assert_eq!(out.trim(), format!("Loaded image: {image}"), "{format}");
        // The image ID is the config digest the archive holds (podman converts the config
        // when it writes an OCI archive of an image it keeps with a Docker manifest).
        assert_eq!(
            inspect(&store, &image)["Id"],
            archive_config_digest(&file),
            "{format}"
        );
        let ran = store.ok(&["run", "--rm", &image, "echo", "from-podman"]);
        assert_eq!(ran.trim(), "from-podman");
        let check = store.ok(&["system", "check"]);
        assert!(check.contains("consistent"), "{check}");
    }
}

/// The config digest of the (only) image in a docker-archive or oci-archive file.
fn archive_config_digest(path: &Path) -> String {
    let member = |name: &str| -> Option<Vec<u8>> {
        let mut archive = tar::Archive::new(std::fs::File::open(path).unwrap());
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let entry_name = entry.path().unwrap().to_string_lossy().into_owned();
            if entry_name.trim_start_matches("./") == name {
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
                return Some(bytes);
            }
        }
        None
    };
    if let Some(manifest) = member("manifest.json") {
        let v: Value = serde_json::from_slice(&manifest).unwrap();
        return sha256(&member(v[0]["Config"].as_str().unwrap()).unwrap());
    }
    let index: Value = serde_json::from_slice(&member("index.json").unwrap()).unwrap();
    let digest = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest: Value =
        serde_json::from_slice(&member(&format!("blobs/sha256/{}", &digest[7..])).unwrap())
            .unwrap();
    manifest["config"]["digest"].as_str().unwrap().to_string()
}

// ---------------------------------------------------------------------------------------------
// Hostile archives

/// A tar with members written by raw header (the tar crate refuses `..` through set_path).
fn raw_tar(members: &[(&str, tar::EntryType, &str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, link, data) in members {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        if !link.is_empty() {
            h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{:x}", sha2::Sha256::digest(bytes))
}

/// A docker-archive whose one layer is `layer` (an uncompressed tar), named `evil:1`.
fn docker_archive_with_layer(layer: &[u8], diff_id: &str) -> Vec<u8> {
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    })
    .to_string();
    let config_name = format!("{}.json", &sha256(config.as_bytes())[7..]);
    let manifest = json!([{
        "Config": config_name,
        "RepoTags": ["localhost/evil:1"],
        "Layers": ["layer.tar"],
    }])
    .to_string();
    raw_tar(&[
        ("layer.tar", tar::EntryType::Regular, "", layer),
        (&config_name, tar::EntryType::Regular, "", config.as_bytes()),
        (
            "manifest.json",
            tar::EntryType::Regular,
            "",
            manifest.as_bytes(),
        ),
    ])
}

fn load_file(store: &TestStore, dir: &Path, name: &str, bytes: &[u8]) -> Output {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    store.run(&["load", "-i", path.to_str().unwrap()])
}

#[test]
fn hostile_archives_are_refused_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("a/b");
    std::fs::create_dir_all(&work).unwrap();
    let store = TestStore::new();

    // A member named with `..`.
    let manifest =
        br#"[{"Config":"c.json","RepoTags":["localhost/evil:1"],"Layers":["../../escape.tar"]}]"#;
    let evil = raw_tar(&[
        ("manifest.json", tar::EntryType::Regular, "", manifest),
        ("../../escape.tar", tar::EntryType::Regular, "", b"x"),
    ]);
    let err = fails(&load_file(&store, &work, "dotdot.tar", &evil));
    assert!(
        err.contains("\"../../escape.tar\"") && err.contains("refusing the archive"),
        "{err}"
    );
    assert!(!dir.path().join("escape.tar").exists());

    // manifest.json naming a path outside the archive (no such member).
    let evil = raw_tar(&[("manifest.json", tar::EntryType::Regular, "", manifest)]);
    let err = fails(&load_file(&store, &work, "ref.tar", &evil));
    assert!(err.contains("climbs out of the archive"), "{err}");

    // An absolute member name, and a symlink leaving the archive.
    let evil = raw_tar(&[
        ("manifest.json", tar::EntryType::Regular, "", b"[]"),
        ("/etc/evil", tar::EntryType::Regular, "", b"x"),
    ]);
    let err = fails(&load_file(&store, &work, "abs.tar", &evil));
    assert!(err.contains("absolute path"), "{err}");
    let evil = raw_tar(&[
        ("manifest.json", tar::EntryType::Regular, "", b"[]"),
        (
            "layer.tar",
            tar::EntryType::Symlink,
            "../../../etc/shadow",
            b"",
        ),
    ]);
    let err = fails(&load_file(&store, &work, "link.tar", &evil));
    assert!(err.contains("pointing out of the archive"), "{err}");

    // A layer whose own entries climb out: the store's unpacking refuses it.
    let layer = raw_tar(&[("../escaped-by-layer", tar::EntryType::Regular, "", b"pwned")]);
    let archive = docker_archive_with_layer(&layer, &sha256(&layer));
    let err = fails(&load_file(&store, &work, "layer.tar", &archive));
    assert!(err.contains("escaped-by-layer"), "{err}");
    assert!(!work.join("escaped-by-layer").exists());
    assert!(!store.root().join("escaped-by-layer").exists());

    // A layer that does not match the config's diff_id.
    let layer = raw_tar(&[("ok.txt", tar::EntryType::Regular, "", b"fine")]);
    let archive = docker_archive_with_layer(&layer, &sha256(b"something else"));
    let err = fails(&load_file(&store, &work, "diffid.tar", &archive));
    assert!(err.contains("sha256:"), "{err}");

    // Not an archive at all, and an archive of something else.
    let err = fails(&load_file(&store, &work, "text.tar", b"hello"));
    assert!(err.contains("text.tar"), "{err}");
    let other = raw_tar(&[("README", tar::EntryType::Regular, "", b"x")]);
    let err = fails(&load_file(&store, &work, "other.tar", &other));
    assert!(err.contains("neither a docker-archive"), "{err}");

    assert_empty_and_clean(&store);
    // A good archive of the same shape loads: the refusals above were about the hostility.
    let layer = raw_tar(&[("ok.txt", tar::EntryType::Regular, "", b"fine")]);
    let archive = docker_archive_with_layer(&layer, &sha256(&layer));
    let out = load_file(&store, &work, "good.tar", &archive);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "Loaded image: localhost/evil:1");
}

#[test]
fn bad_save_requests_say_what_to_do() {
    let store = TestStore::new();
    let out = store.run(&["save", "-o", "/nonexistent-dir/x.tar", "busybox"]);
    assert!(fails(&out).contains("image not known"), "{}", stderr(&out));
    let out = store.run(&["save", "--format", "zip", "-o", "x.tar", "busybox"]);
    assert!(
        fails(&out).contains("unknown archive format"),
        "{}",
        stderr(&out)
    );
    let out = store.run(&["load", "-i", "/nonexistent/archive.tar"]);
    assert!(
        fails(&out).contains("/nonexistent/archive.tar"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn rootless_save_and_load_round_trip() {
    use std::os::unix::fs::PermissionsExt;
    let Some(registry) = support::registry() else {
        return;
    };
    let Some(user) = support::fixture_env("GCR_TEST_USER") else {
        return;
    };
    if !nix::unistd::geteuid().is_root() {
        assert!(
            !support::in_ci(),
            "rootless tests run as root to switch to {user}"
        );
        eprintln!("SKIP: not root, cannot switch to {user}");
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("gcr-rootless-archive-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // The build directory may sit under a path the user cannot traverse: copy the binary.
    let bin = dir.path().join("gcr");
    std::fs::copy(support::gcr_bin(), &bin).unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let status = Command::new("chown")
        .arg(format!("{user}:"))
        .arg(&work)
        .status()
        .unwrap();
    assert!(status.success());
    let gcr = |store: &str, args: &[&str]| -> String {
        let out = Command::new("runuser")
            .args(["-u", &user, "--"])
            .arg(&bin)
            .arg("--root")
            .arg(work.join(store))
            .args(args)
            .current_dir(&work)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "gcr {args:?} as {user}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        stdout(&out)
    };
    let image = format!("{registry}/layered:latest");
    gcr("a", &["pull", "-q", &image]);
    for format in ["docker-archive", "oci-archive"] {
        gcr("a", &["save", "--format", format, "-o", "x.tar", &image]);
        let meta = std::fs::metadata(work.join("x.tar")).unwrap();
        assert_ne!(
            std::os::unix::fs::MetadataExt::uid(&meta),
            0,
            "owned by the user"
        );
        let store = format!("b-{format}");
        let out = gcr(&store, &["load", "-i", "x.tar"]);
        assert_eq!(out.trim(), format!("Loaded image: {image}"));
        // Same image (config, diff_ids) as the one saved; layers with owners, whiteouts and
        // opaque directories were unpacked through the user namespace.
        let id = |store: &str| -> (Value, Value) {
            let v: Value = serde_json::from_str(&gcr(store, &["inspect", &image])).unwrap();
            (v[0]["Id"].clone(), v[0]["RootFS"].clone())
        };
        assert_eq!(id(&store), id("a"), "{format}");
        let check = gcr(&store, &["system", "check"]);
        assert!(check.contains("consistent"), "{check}");
    }
}

#[test]
fn several_images_in_one_archive_and_images_saved_by_id() {
    let Some(registry) = support::registry() else {
        return;
    };
    let source = TestStore::new();
    let zstd = format!("{registry}/busybox:zstd");
    let layered = format!("{registry}/layered:latest");
    source.ok(&["pull", "-q", &zstd]);
    source.ok(&["pull", "-q", &layered]);
    let layered_id = inspect(&source, &layered)["Id"]
        .as_str()
        .unwrap()
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    for format in ["docker-archive", "oci-archive"] {
        let file = dir.path().join(format!("{format}.tar"));
        let file = file.to_str().unwrap();
        source.ok(&["save", "--format", format, "-o", file, &zstd, &layered]);
        let target = TestStore::new();
        let out = target.ok(&["load", "-i", file]);
        let mut lines: Vec<&str> = out.lines().collect();
        lines.sort();
        assert_eq!(
            lines,
            [
                format!("Loaded image: {zstd}"),
                format!("Loaded image: {layered}")
            ],
            "{format}"
        );
        for image in [&zstd, &layered] {
            assert_eq!(
                inspect(&target, image)["RootFS"],
                inspect(&source, image)["RootFS"],
                "{format} {image}"
            );
        }
        let ran = target.ok(&["run", "--rm", &zstd, "echo", "zstd-ok"]);
        assert_eq!(ran.trim(), "zstd-ok");

        // Saved by ID: the archive names nothing, the image arrives unnamed.
        source.ok(&["save", "--format", format, "-o", file, &layered_id]);
        let target = TestStore::new();
        let out = target.ok(&["load", "-i", file]);
        assert_eq!(
            out.trim(),
            format!("Loaded image ID: {layered_id}"),
            "{format}"
        );
        let check = target.ok(&["system", "check"]);
        assert!(check.contains("consistent"), "{check}");
    }
}

#[test]
fn a_name_with_a_digest_that_lies_is_refused() {
    let Some(registry) = support::registry() else {
        return;
    };
    let source = TestStore::new();
    let image = format!("{registry}/busybox:latest");
    source.ok(&["pull", "-q", &image]);
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("saved.tar");
    source.ok(&[
        "save",
        "--format",
        "oci-archive",
        "-o",
        saved.to_str().unwrap(),
        &image,
    ]);
    // Same archive, index.json naming the image by a digest it does not have.
    let lie = format!("{registry}/busybox@{}", sha256(b"another manifest"));
    let mut out = tar::Builder::new(Vec::new());
    let mut archive = tar::Archive::new(std::fs::File::open(&saved).unwrap());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
        if name == "index.json" {
            let mut index: Value = serde_json::from_slice(&data).unwrap();
            index["manifests"][0]["annotations"] = json!({
                "org.opencontainers.image.ref.name": lie,
            });
            data = index.to_string().into_bytes();
        }
        let mut header = entry.header().clone();
        header.set_size(data.len() as u64);
        header.set_cksum();
        out.append(&header, data.as_slice()).unwrap();
    }
    let target = TestStore::new();
    let path = dir.path().join("lie.tar");
    std::fs::write(&path, out.into_inner().unwrap()).unwrap();
    let err = fails(&target.run(&["load", "-i", path.to_str().unwrap()]));
    assert!(err.contains(&lie) && err.contains("has manifest"), "{err}");
    assert_empty_and_clean(&target);
}

// ---------------------------------------------------------------------------------------------
// Docker Engine interoperability

/// A private Docker Engine for one test (Debian's docker.io 20.10 and its containerd 1.6):
/// containerd and dockerd started here with their own sockets, data and state directories,
/// config files and cgroup parent, all under one temporary directory, and no networking of
/// their own (no bridge, no iptables rules, no IP forwarding: containers run with
/// `--network none`). Nothing of the machine's Docker setup is used or changed: no system
/// containerd, no `/etc/docker/daemon.json` or `key.json`, no `/var/lib/docker`, no
/// `/opt/containerd`. What the engine cannot be told to put elsewhere is removed by
/// [`DockerEngine::stop`] (also run on drop): the cgroup parent, and the empty
/// `/run/docker/plugins` (dockerd) and `/run/containerd/s` (containerd's shims) when they did
/// not exist before.
struct DockerEngine {
    dir: tempfile::TempDir,
    containerd: Option<std::process::Child>,
    dockerd: Option<std::process::Child>,
    /// `--cgroup-parent` (cgroupfs driver): containers' cgroups go below it.
    cgroup_parent: String,
    /// Host directories the engine creates itself, absent before it started (innermost first).
    created_dirs: Vec<std::path::PathBuf>,
    stopped: bool,
}

impl DockerEngine {
    /// Starts containerd and dockerd and waits until dockerd answers. None (the calling test
    /// skips) outside CI when docker.io is missing or the test is not root; a failure in CI.
    fn start() -> Option<DockerEngine> {
        support::tool("dockerd")?;
        support::tool("containerd")?;
        support::tool("docker")?;
        if !nix::unistd::geteuid().is_root() {
            assert!(!support::in_ci(), "the Docker Engine tests run as root");
            eprintln!("SKIP: not root, cannot start a Docker Engine");
            return None;
        }
        let started = std::time::Instant::now();
        // Short: unix socket paths (containerd's, dockerd's) must stay under 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix("gcr-dockerd-")
            .tempdir_in("/tmp")
            .unwrap();
        let d = dir.path().to_path_buf();
        let name = d.file_name().unwrap().to_string_lossy().into_owned();
        let created_dirs = [
            "/run/docker/plugins",
            "/run/docker",
            "/run/containerd/s",
            "/run/containerd",
        ]
        .iter()
        .map(std::path::PathBuf::from)
        .filter(|p| !p.exists())
        .collect();
        let mut engine = DockerEngine {
            dir,
            containerd: None,
            dockerd: None,
            cgroup_parent: format!("/{name}"),
            created_dirs,
            stopped: false,
        };
        // Our own containerd rather than the one dockerd would start: that one's config cannot
        // move the `opt` plugin's directory, which is /opt/containerd by default.
        let c = d.join("containerd");
        std::fs::create_dir(&c).unwrap();
        std::fs::create_dir(d.join("client")).unwrap();
        let config = format!(
            "version = 2\n\
             root = \"{c}/root\"\n\
             state = \"{c}/state\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{c}/containerd.sock\"\n\
             [ttrpc]\n  address = \"{c}/containerd.sock.ttrpc\"\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{c}/opt\"\n",
            c = c.display()
        );
        std::fs::write(c.join("config.toml"), config).unwrap();
        engine.containerd = Some(spawn_logged(
            Command::new("containerd")
                .arg("--config")
                .arg(c.join("config.toml")),
            &d.join("containerd.log"),
        ));
        let containerd_sock = c.join("containerd.sock");
        engine.wait_until("containerd's socket", |_| containerd_sock.exists());

        // key.json would go to /etc/docker: the config file moves it.
        std::fs::write(
            d.join("daemon.json"),
            json!({ "deprecated-key-path": d.join("key.json") }).to_string(),
        )
        .unwrap();
        let mut dockerd = Command::new("dockerd");
        dockerd
            .arg("--config-file")
            .arg(d.join("daemon.json"))
            .arg("--containerd")
            .arg(&containerd_sock)
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("dockerd.pid"))
            .arg("--host")
            .arg(format!("unix://{}", d.join("docker.sock").display()))
            // vfs: plain directories, no overlay mounts to leave behind (the images are
            // small). No docker0 bridge, no iptables chains, net.ipv4.ip_forward untouched.
            // cgroupfs: no systemd to ask; on a v1/v2 hybrid (as on the test machines) runc
            // puts containers in every v1 hierarchy and the unified one, below our parent.
            .args([
                "--storage-driver=vfs",
                "--bridge=none",
                "--iptables=false",
                "--ip-masq=false",
                "--ip-forward=false",
                "--exec-opt=native.cgroupdriver=cgroupfs",
            ])
            .arg(format!("--cgroup-parent={}", engine.cgroup_parent));
        engine.dockerd = Some(spawn_logged(&mut dockerd, &d.join("dockerd.log")));
        engine.wait_until("dockerd's API", |engine| {
            engine
                .docker(&["version", "--format", "{{.Server.Version}}"])
                .status
                .success()
        });
        let versions = engine.ok(&[
            "version",
            "--format",
            "{{.Server.Version}} (client {{.Client.Version}})",
        ]);
        eprintln!(
            "Docker Engine {} up in {} ms in {}",
            versions.trim(),
            started.elapsed().as_millis(),
            d.display()
        );
        Some(engine)
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Polls `ready` for up to 60 s; fails with the daemons' logs if one exits or time is up.
    fn wait_until(&mut self, what: &str, ready: impl Fn(&DockerEngine) -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if ready(self) {
                return;
            }
            let exited = [
                ("containerd", &mut self.containerd),
                ("dockerd", &mut self.dockerd),
            ]
            .into_iter()
            .find_map(|(name, child)| {
                let status = child.as_mut()?.try_wait().unwrap()?;
                Some((name, status))
            });
            if let Some((name, status)) = exited {
                panic!(
                    "{name} exited ({status}) before {what} was up\n{}",
                    self.logs()
                );
            }
            if std::time::Instant::now() > deadline {
                panic!("{what} not up after 60 s\n{}", self.logs());
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// The last lines of both daemons' logs, for failure messages.
    fn logs(&self) -> String {
        let mut out = String::new();
        for name in ["dockerd.log", "containerd.log"] {
            let text = std::fs::read_to_string(self.path().join(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(20)..];
            out.push_str(&format!("--- {name} (last {} lines)\n", tail.len()));
            for line in tail {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// A `docker` command talking to this engine only.
    fn docker(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .env(
                "DOCKER_HOST",
                format!("unix://{}", self.path().join("docker.sock").display()),
            )
            .env("DOCKER_CONFIG", self.path().join("client"))
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH")
            .args(args)
            .output()
            .expect("spawn docker")
    }

    /// Runs `docker ARGS`, asserts success and returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?} failed with {:?}\nstdout: {}\nstderr: {}\n{}",
            out.status,
            stdout(&out),
            stderr(&out),
            self.logs()
        );
        stdout(&out)
    }

    fn inspect(&self, image: &str) -> Value {
        let v: Value = serde_json::from_str(&self.ok(&["image", "inspect", image])).unwrap();
        v[0].clone()
    }

    /// Stops dockerd, then containerd (SIGTERM, SIGKILL after 30 s), and removes what they
    /// leave outside the temporary directory. Returns what had to be forced or could not be
    /// cleaned: empty when the engine shut down cleanly.
    fn stop(&mut self) -> Vec<String> {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        let mut problems = Vec::new();
        if std::mem::replace(&mut self.stopped, true) {
            return problems;
        }
        for (name, child) in [
            ("dockerd", self.dockerd.take()),
            ("containerd", self.containerd.take()),
        ] {
            let Some(mut child) = child else { continue };
            let pid = Pid::from_raw(child.id() as i32);
            let _ = kill(pid, Signal::SIGTERM);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            loop {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                if std::time::Instant::now() > deadline {
                    problems.push(format!("{name} ignored SIGTERM for 30 s: killed"));
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
        // Anything else started with our paths (containerd shims are not our children).
        let dir = self.path().as_os_str().as_encoded_bytes().to_vec();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            if pid != std::process::id() as i32 && cmdline.windows(dir.len()).any(|w| w == dir) {
                problems.push(format!(
                    "process {pid} left running: {}",
                    String::from_utf8_lossy(&cmdline).replace('\0', " ")
                ));
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                // A killed shim leaves its socket, named (containerd 1.6) by the sha256 of
                // "<containerd address>/<namespace>/<container id>".
                let args: Vec<String> = cmdline
                    .split(|b| *b == 0)
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect();
                let arg = |flag: &str| {
                    let i = args.iter().position(|a| a == flag)?;
                    args.get(i + 1).cloned()
                };
                if let (Some(address), Some(ns), Some(id)) =
                    (arg("-address"), arg("-namespace"), arg("-id"))
                {
                    let hash = sha256(format!("{address}/{ns}/{id}").as_bytes());
                    let _ = std::fs::remove_file(format!("/run/containerd/s/{}", &hash[7..]));
                }
            }
        }
        // Mounts below the directory (dockerd bind-mounts its data root onto itself when the
        // root mount is private, network namespaces of containers): unmounted on a clean stop.
        let prefix = format!("{}/", self.path().display());
        let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|m| m.starts_with(&prefix) || m == prefix.trim_end_matches('/'))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for mount in mounts {
            problems.push(format!("mount left: {mount}"));
            let _ = nix::mount::umount2(mount.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
        // The cgroup parent in every hierarchy (v1 controllers, named and unified ones).
        let mut cgroups = vec![Path::new("/sys/fs/cgroup").join(&self.cgroup_parent[1..])];
        if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
            for entry in entries.flatten() {
                cgroups.push(entry.path().join(&self.cgroup_parent[1..]));
            }
        }
        for cgroup in cgroups.iter().filter(|c| c.is_dir()) {
            if let Err(e) = remove_cgroup(cgroup) {
                problems.push(format!("cgroup {} not removed: {e}", cgroup.display()));
            }
        }
        for dir in &self.created_dirs {
            // Only while empty: anything else using them keeps them.
            let _ = std::fs::remove_dir(dir);
        }
        problems
    }
}

impl Drop for DockerEngine {
    fn drop(&mut self) {
        for problem in self.stop() {
            eprintln!("docker engine teardown: {problem}");
        }
    }
}

/// Spawns a daemon with its output in `log`, working directory `/`.
fn spawn_logged(cmd: &mut Command, log: &Path) -> std::process::Child {
    let file = std::fs::File::create(log).unwrap();
    cmd.current_dir("/")
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"))
}

/// Removes a cgroup directory and the cgroups below it, innermost first, killing what still
/// runs in them (containers of an engine that did not stop them).
fn remove_cgroup(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)?.flatten() {
        if entry.file_type()?.is_dir() {
            remove_cgroup(&entry.path())?;
        }
    }
    let procs = || std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !procs().trim().is_empty() && std::time::Instant::now() < deadline {
        for pid in procs().lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::fs::remove_dir(dir)
}

#[test]
fn docker_loads_what_gcr_saves_and_gcr_loads_what_docker_saves() {
    let Some(registry) = support::registry() else {
        return;
    };
    let Some(mut docker) = DockerEngine::start() else {
        return;
    };
    let source = TestStore::new();
    let pulled = format!("{registry}/busybox:latest");
    source.ok(&["pull", "-q", &pulled]);
    let image = "localhost/gcr-test-archive/docker:from-gcr";
    source.ok(&["tag", &pulled, image]);
    // Three layers with whiteouts, an opaque directory, hard links, owners.
    let layered = format!("{registry}/layered:latest");
    source.ok(&["pull", "-q", &layered]);
    let dir = tempfile::tempdir().unwrap();
    let sorted_lines = |out: &str| -> Vec<String> {
        let mut lines: Vec<String> = out.lines().map(str::to_string).collect();
        lines.sort();
        lines
    };

    // gcr -> Docker, both formats. Docker 20.10 knows only docker-archives: it loads gcr's
    // oci-archive through the manifest.json written beside the OCI layout (as Docker 25+
    // writes it; without it Docker 20.10 would fail on "blobs/json").
    // The same images (config digests, diff_ids) in Docker, and busybox runs.
    for format in ["oci-archive", "docker-archive"] {
        let from_gcr = dir.path().join(format!("from-gcr-{format}.tar"));
        source.ok(&[
            "save",
            "--format",
            format,
            "-o",
            from_gcr.to_str().unwrap(),
            image,
            &layered,
        ]);
        let out = docker.ok(&["load", "-i", from_gcr.to_str().unwrap()]);
        assert_eq!(
            sorted_lines(&out),
            [
                format!("Loaded image: {layered}"),
                format!("Loaded image: {image}")
            ],
            "{format}"
        );
        for name in [image, &layered] {
            let (ours, theirs) = (inspect(&source, name), docker.inspect(name));
            assert_eq!(theirs["Id"], ours["Id"], "{format} {name}");
            assert_eq!(theirs["RootFS"], ours["RootFS"], "{format} {name}");
            assert_eq!(theirs["Config"]["Cmd"], ours["Config"]["Cmd"], "{name}");
        }
        if format == "oci-archive" {
            docker.ok(&["rmi", image, &layered]);
        }
    }
    let run = ["run", "--network", "none", "--pull", "never"];
    let hi = docker.ok(&[&run[..], &["--rm", image, "echo", "hi"]].concat());
    assert_eq!(hi, "hi\n");
    // An image with a layer Docker wrote itself.
    let committed = "localhost/gcr-test-archive/docker:committed";
    let script = "echo by-docker > /by-docker";
    docker.ok(&[&run[..], &["--name", "gcr-test", image, "sh", "-c", script]].concat());
    docker.ok(&["commit", "gcr-test", committed]);
    docker.ok(&["rm", "gcr-test"]);

    // Docker -> gcr: three images in one archive (docker save writes busybox's layer once
    // and links to it from the committed image's directory): the same IDs and layers as in
    // Docker, and they run.
    let from_docker = dir.path().join("from-docker.tar");
    let saved = from_docker.to_str().unwrap();
    docker.ok(&["save", "-o", saved, image, committed, &layered]);
    let target = TestStore::new();
    let out = target.ok(&["load", "-i", saved]);
    assert_eq!(
        sorted_lines(&out),
        [
            format!("Loaded image: {layered}"),
            format!("Loaded image: {committed}"),
            format!("Loaded image: {image}")
        ]
    );
    for name in [image, committed, &layered] {
        let (ours, theirs) = (inspect(&target, name), docker.inspect(name));
        assert_eq!(ours["Id"], theirs["Id"], "{name}");
        assert_eq!(ours["RootFS"], theirs["RootFS"], "{name}");
    }
    assert_eq!(inspect(&target, image)["Id"], inspect(&source, image)["Id"]);
    let run = ["run", "--rm", "--network", "none"];
    let hi = target.ok(&[&run[..], &[image, "echo", "hi"]].concat());
    assert_eq!(hi, "hi\n");
    let by_docker = target.ok(&[&run[..], &[committed, "cat", "/by-docker"]].concat());
    assert_eq!(by_docker, "by-docker\n");
    let check = target.ok(&["system", "check"]);
    assert!(check.contains("consistent"), "{check}");

    let problems = docker.stop();
    assert!(problems.is_empty(), "{problems:#?}\n{}", docker.logs());
}
