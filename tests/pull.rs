//! End-to-end tests: `gcr pull`, `gcr login`, `gcr logout` against the fixture registries
//! (tests/fixtures), and against small fault-injecting HTTP registries started by the tests
//! themselves (real HTTP on loopback, serving the fixture busybox image with one thing broken).
//!
//! Digests are checked against skopeo, a client independent of gcr.

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{stderr, stdout, TestStore};

// ---------------------------------------------------------------------------------------------
// Helpers

/// A store plus an isolated HOME and auth file, so no real credentials leak into a test.
struct Env {
    store: TestStore,
    home: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            store: TestStore::new(),
            home: tempfile::Builder::new()
                .prefix("gcr-test-home-")
                .tempdir()
                .expect("create temp home"),
        }
    }

    fn auth_file(&self) -> PathBuf {
        self.home.path().join("auth.json")
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = self.store.gcr();
        cmd.args(args)
            .env("HOME", self.home.path())
            .env("REGISTRY_AUTH_FILE", self.auth_file())
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("DOCKER_CONFIG");
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("spawn gcr")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "gcr {args:?} failed with {:?}\nstdout: {}\nstderr: {}",
            out.status,
            stdout(&out),
            stderr(&out)
        );
        stdout(&out)
    }

    /// Runs `gcr ARGS`, expects failure, and returns the single `error:` line.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "gcr {args:?} should have failed\nstdout: {}\nstderr: {}",
            stdout(&out),
            stderr(&out)
        );
        let err = stderr(&out);
        let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error")).collect();
        assert_eq!(lines.len(), 1, "expected one error line, got:\n{err}");
        lines[0].to_string()
    }

    /// Names of the images in the store (from `gcr images --format json`).
    fn image_names(&self) -> Vec<String> {
        let json = self.ok(&["images", "--format", "json"]);
        let list: Value = serde_json::from_str(&json).expect("images json");
        let mut names = Vec::new();
        for image in list.as_array().expect("images array") {
            for n in image["Names"].as_array().into_iter().flatten() {
                names.push(n.as_str().unwrap_or_default().to_string());
            }
        }
        names.sort();
        names
    }

    /// `Digest` (manifest digest) of the image named `name`.
    fn image_digest(&self, name: &str) -> Option<String> {
        let json = self.ok(&["images", "--format", "json"]);
        let list: Value = serde_json::from_str(&json).expect("images json");
        list.as_array()?
            .iter()
            .find(|i| {
                i["Names"]
                    .as_array()
                    .is_some_and(|ns| ns.iter().any(|n| n == name))
            })
            .and_then(|i| i["Digest"].as_str().map(str::to_string))
    }

    /// Asserts `gcr system check` finds the store consistent.
    fn check_clean(&self) {
        let out = self.run(&["system", "check"]);
        assert!(
            out.status.success(),
            "system check not clean\nstdout: {}\nstderr: {}",
            stdout(&out),
            stderr(&out)
        );
    }

    /// Entries under the store's tmp/ and blobs/ (to assert nothing was left half-written).
    fn blob_count(&self) -> usize {
        std::fs::read_dir(self.store.root().join("blobs/sha256"))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

fn registry_or_skip() -> Option<String> {
    support::registry()
}

fn tls_registry_or_skip() -> Option<(String, String, String)> {
    let reg = support::fixture_env("GCR_TEST_TLS_REGISTRY")?;
    let user = support::fixture_env("GCR_TEST_TLS_USER")?;
    let pass = support::fixture_env("GCR_TEST_TLS_PASSWORD")?;
    Some((reg, user, pass))
}

fn fixtures_or_skip() -> Option<PathBuf> {
    support::fixture_env("GCR_TEST_FIXTURES").map(PathBuf::from)
}

fn sha256_hex(bytes: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run sha256sum");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(bytes)
        .expect("write to sha256sum");
    let out = child.wait_with_output().expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("sha256sum output")
        .to_string()
}

/// The raw manifest (or index) of `reference` as skopeo sees it.
fn skopeo_raw(reference: &str) -> Vec<u8> {
    let out = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--raw"])
        .arg(format!("docker://{reference}"))
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo inspect {reference}: {}",
        stderr(&out)
    );
    out.stdout
}

fn skopeo_digest(reference: &str) -> String {
    format!("sha256:{}", sha256_hex(&skopeo_raw(reference)))
}

/// The digest of the index entry for `platform` ("os/arch[/variant]") in `index`.
fn index_entry(index: &[u8], platform: &str) -> String {
    let v: Value = serde_json::from_slice(index).expect("index json");
    for m in v["manifests"].as_array().expect("manifests") {
        let p = &m["platform"];
        let mut s = format!(
            "{}/{}",
            p["os"].as_str().unwrap_or(""),
            p["architecture"].as_str().unwrap_or("")
        );
        if let Some(var) = p["variant"].as_str() {
            s.push('/');
            s.push_str(var);
        }
        if s == platform {
            return m["digest"].as_str().expect("digest").to_string();
        }
    }
    panic!("no {platform} in index");
}

// ---------------------------------------------------------------------------------------------
// The fixture registries

#[test]
fn pulls_every_format_and_lists_it() {
    let Some(reg) = registry_or_skip() else {
        return;
    };
    let env = Env::new();
    let refs = [
        "busybox:latest",
        "busybox:v2s2",
        "busybox:zstd",
        "busybox:uncompressed",
        "layered:latest",
        "debian:bookworm",
        "debian:bookworm-oci",
    ];
    for r in refs {
        let full = format!("{reg}/{r}");
        let out = env.ok(&["pull", &full]);
        let expected = skopeo_digest(&full);
        assert!(
            out.contains(&expected),
            "pull {full}: output does not name the manifest digest {expected}:\n{out}"
        );
        assert_eq!(env.image_digest(&full).as_deref(), Some(expected.as_str()));
    }
    let names = env.image_names();
    for r in refs {
        assert!(
            names.contains(&format!("{reg}/{r}")),
            "{r} not in {names:?}"
        );
    }
    // The table lists repository and tag.
    let table = env.ok(&["images"]);
    assert!(
        table.contains(&format!("{reg}/busybox")) && table.contains("zstd"),
        "{table}"
    );
    env.check_clean();

    // Pulling again reuses everything: no new blob, still consistent.
    let blobs = env.blob_count();
    env.ok(&["pull", &format!("{reg}/busybox:latest")]);
    env.ok(&["pull", "-q", &format!("{reg}/debian:bookworm")]);
    assert_eq!(env.blob_count(), blobs);
    env.check_clean();
}

#[test]
fn quiet_pull_prints_only_the_name() {
    let Some(reg) = registry_or_skip() else {
        return;
    };
    let env = Env::new();
    let out = env.run(&["pull", "-q", &format!("{reg}/busybox")]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), format!("{reg}/busybox:latest"));
    assert!(stderr(&out).trim().is_empty(), "{}", stderr(&out));

    // The same registry by the name localhost: loopback, so plain HTTP too.
    let port = reg.rsplit(':').next().unwrap_or_default();
    let by_name = format!("localhost:{port}/busybox:latest");
    let out = env.run(&["pull", "-q", &by_name]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), by_name);
}

#[test]
fn picks_the_platform_from_an_index() {
    let Some(reg) = registry_or_skip() else {
        return;
    };
    for tag in ["latest", "v2s2"] {
        let full = format!("{reg}/multi:{tag}");
        let index = skopeo_raw(&full);
        let cases = [
            (None, "linux/amd64"),
            (Some("linux/amd64"), "linux/amd64"),
            (Some("linux/arm64"), "linux/arm64/v8"),
            (Some("linux/arm64/v8"), "linux/arm64/v8"),
            (Some("linux/aarch64"), "linux/arm64/v8"),
            (Some("linux/arm"), "linux/arm/v7"),
            (Some("linux/arm/v7"), "linux/arm/v7"),
            (Some("linux/arm/v6"), "linux/arm/v6"),
        ];
        for (flag, entry) in cases {
            let env = Env::new();
            let mut args = vec!["pull"];
            if let Some(p) = flag {
                args.extend(["--platform", p]);
            }
            args.push(&full);
            env.ok(&args);
            assert_eq!(
                env.image_digest(&full),
                Some(index_entry(&index, entry)),
                "--platform {flag:?} on {full} should pick {entry}"
            );
            let inspect = env.ok(&["inspect", &full]);
            let arch = entry.split('/').nth(1).unwrap_or_default();
            assert!(inspect.contains(&format!("\"{arch}\"")), "{inspect}");
            env.check_clean();
        }

        let env = Env::new();
        let err = env.fails(&["pull", "--platform", "linux/s390x", &full]);
        for p in [
            "linux/amd64",
            "linux/arm64/v8",
            "linux/arm/v7",
            "linux/arm/v6",
            "linux/s390x",
        ] {
            assert!(err.contains(p), "{err}");
        }
        assert!(err.contains(&full), "{err}");
        assert!(env.image_names().is_empty());
        let err = env.fails(&["pull", "--platform", "linux/arm/v5", &full]);
        assert!(err.contains("linux/arm/v6"), "{err}");
    }
    let env = Env::new();
    let err = env.fails(&["pull", "--platform", "linux", &format!("{reg}/multi")]);
    assert!(err.contains("linux"), "{err}");
    // A single-platform image asked for another platform is refused.
    let err = env.fails(&[
        "pull",
        "--platform",
        "linux/arm64",
        &format!("{reg}/busybox"),
    ]);
    assert!(
        err.contains("linux/amd64") && err.contains("arm64"),
        "{err}"
    );
}

#[test]
fn pulls_by_digest() {
    let Some(reg) = registry_or_skip() else {
        return;
    };
    let env = Env::new();
    let digest = skopeo_digest(&format!("{reg}/busybox:v2s2"));
    let by_digest = format!("{reg}/busybox@{digest}");
    env.ok(&["pull", &by_digest]);
    assert_eq!(env.image_names(), vec![by_digest.clone()]);
    assert_eq!(env.image_digest(&by_digest), Some(digest.clone()));

    // name:tag@digest: the digest decides, and names the image.
    let env = Env::new();
    env.ok(&["pull", &format!("{reg}/busybox:nonexistent-tag@{digest}")]);
    assert_eq!(env.image_names(), vec![by_digest.clone()]);

    // An index by digest: the platform's manifest is stored under the index digest.
    let env = Env::new();
    let index = skopeo_raw(&format!("{reg}/multi:latest"));
    let index_digest = format!("sha256:{}", sha256_hex(&index));
    let name = format!("{reg}/multi@{index_digest}");
    env.ok(&["pull", "--platform", "linux/arm64", &name]);
    assert_eq!(
        env.image_digest(&name),
        Some(index_entry(&index, "linux/arm64/v8"))
    );

    // A digest the registry does not have.
    let env = Env::new();
    let missing = format!("{reg}/busybox@sha256:{}", "0".repeat(64));
    let err = env.fails(&["pull", &missing]);
    assert!(
        err.contains("manifest unknown") && err.contains(&missing),
        "{err}"
    );
    env.check_clean();
}

#[test]
fn a_layer_bigger_than_the_cap_is_refused_and_nothing_is_left() {
    let Some(reg) = registry_or_skip() else {
        return;
    };
    let env = Env::new();
    // busybox's layer holds ~2 MiB of content: with a 64 KiB cap the unpack stops, as it
    // would for a decompression bomb, and the store stays clean.
    let out = env
        .cmd(&["pull", "-q", &format!("{reg}/busybox:latest")])
        .env("GCR_MAX_LAYER_SIZE", "64K")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("GCR_MAX_LAYER_SIZE=65536") && err.contains("decompression bomb"),
        "{err}"
    );
    assert!(env.image_names().is_empty());
    env.check_clean();
}

#[test]
fn unknown_images_and_bad_references_fail_clearly() {
    let Some(reg) = registry_or_skip() else {
        return;
    };
    let env = Env::new();
    let err = env.fails(&["pull", &format!("{reg}/busybox:no-such-tag")]);
    assert!(err.contains(&format!("{reg}/busybox:no-such-tag")), "{err}");
    assert!(err.contains("manifest unknown"), "{err}");
    let err = env.fails(&["pull", &format!("{reg}/no/such/image")]);
    assert!(
        err.contains("manifest unknown") && err.contains("no/such/image"),
        "{err}"
    );
    for bad in ["Busybox", "busybox:", "busybox@sha256:abc", "a//b", ""] {
        let err = env.fails(&["pull", bad]);
        assert!(err.contains("invalid"), "{bad:?}: {err}");
    }
    let err = env.fails(&["pull", "Busybox"]);
    assert!(err.contains("lowercase"), "{err}");
    // Nothing is listed, nothing is left half-written.
    assert!(env.image_names().is_empty());
    env.check_clean();
}

#[test]
fn login_logout_and_auth_failures() {
    let Some((tls, user, pass)) = tls_registry_or_skip() else {
        return;
    };
    let env = Env::new();
    let private = format!("{tls}/private/busybox:latest");

    // Anonymous: unauthorized, with the hint.
    let err = env.fails(&["pull", &private]);
    assert!(err.contains(&private), "{err}");
    assert!(err.contains("unauthorized"), "{err}");
    assert!(err.contains(&format!("gcr login {tls}")), "{err}");

    // A wrong password is refused and nothing is written.
    let err = env.fails(&["login", "-u", &user, "-p", "wrong-password", &tls]);
    assert!(err.contains("wrong username or password"), "{err}");
    assert!(
        !env.auth_file().exists(),
        "a failed login wrote the auth file"
    );

    // The right password (from stdin): saved 0600 in REGISTRY_AUTH_FILE, keeping other keys.
    std::fs::write(env.auth_file(), r#"{"auths": {}, "other": "kept"}"#).unwrap();
    let mut child = env
        .cmd(&["login", "-u", &user, "--password-stdin", &tls])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn gcr login");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{pass}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "login failed: {}", stderr(&out));
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(env.auth_file())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }
    let saved: Value = serde_json::from_slice(&std::fs::read(env.auth_file()).unwrap()).unwrap();
    assert_eq!(saved["other"], "kept");
    assert!(saved["auths"][&tls]["auth"].is_string(), "{saved}");

    // Now the pull works, over verified TLS with the certs.d CA.
    env.ok(&["pull", &private]);
    assert_eq!(env.image_names(), vec![private.clone()]);

    // A stale password in the auth file is reported as such.
    let bad =
        serde_json::json!({"auths": {tls.clone(): {"auth": base64(&format!("{user}:nope"))}}});
    std::fs::write(env.auth_file(), bad.to_string()).unwrap();
    let err = env.fails(&["pull", &private]);
    assert!(
        err.contains("unauthorized") && err.contains("gcr login"),
        "{err}"
    );

    // Credentials from a Docker config.json (in HOME) when no auth file has them.
    let docker_env = Env::new();
    let docker_dir = docker_env.home.path().join(".docker");
    std::fs::create_dir_all(&docker_dir).unwrap();
    let cfg =
        serde_json::json!({"auths": {tls.clone(): {"auth": base64(&format!("{user}:{pass}"))}}});
    std::fs::write(docker_dir.join("config.json"), cfg.to_string()).unwrap();
    docker_env.ok(&["pull", &private]);
    assert_eq!(docker_env.image_names(), vec![private.clone()]);

    // Logout removes them; the pull is unauthorized again.
    env.ok(&["login", "-u", &user, "-p", &pass, &tls]);
    env.ok(&["logout", &tls]);
    let saved: Value = serde_json::from_slice(&std::fs::read(env.auth_file()).unwrap()).unwrap();
    assert!(saved["auths"].get(&tls).is_none(), "{saved}");
    let fresh = Env::new();
    std::fs::copy(env.auth_file(), fresh.auth_file()).unwrap();
    let err = fresh.fails(&["pull", &private]);
    assert!(err.contains("unauthorized"), "{err}");
    env.check_clean();
}

fn base64(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = match chunk.len() {
            3 => (u32::from(chunk[0]) << 16) | (u32::from(chunk[1]) << 8) | u32::from(chunk[2]),
            2 => (u32::from(chunk[0]) << 16) | (u32::from(chunk[1]) << 8),
            _ => u32::from(chunk[0]) << 16,
        };
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Forwards connections from `listen` to `target` (to reach the TLS registry under a name
/// that is not in certs.d).
fn forward(listen: SocketAddr, target: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind(listen).expect("bind forwarder");
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(client) = conn else { continue };
            let Ok(server) = TcpStream::connect(target) else {
                continue;
            };
            let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let (mut c1, mut s1) = (client, server);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c1, &mut s1);
                let _ = s1.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut s2, &mut c2);
                let _ = c2.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    addr
}

/// The machine's host name and an address it resolves to: a name for a local server that is
/// neither in certs.d nor loopback by name, so gcr must treat it as a remote registry.
fn host_name_address() -> (String, std::net::IpAddr) {
    let host = String::from_utf8_lossy(&Command::new("hostname").output().unwrap().stdout)
        .trim()
        .to_string();
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), 0))
        .ok()
        .and_then(|mut a| a.find(|a| a.is_ipv4()))
        .unwrap_or_else(|| panic!("host name {host:?} does not resolve"));
    (host, addr.ip())
}

#[test]
fn tls_failures_name_certs_d_and_tls_verify_false_gets_past_them() {
    let Some((tls, _, _)) = tls_registry_or_skip() else {
        return;
    };
    let target: SocketAddr = tls.parse().expect("GCR_TEST_TLS_REGISTRY is ip:port");
    // Verified HTTPS fails on the self-signed CA (no certs.d entry for this name).
    let (host, ip) = host_name_address();
    let port = forward(SocketAddr::new(ip, 0), target).port();
    let image = format!("{host}:{port}/private/busybox:latest");
    let env = Env::new();
    let err = env.fails(&["pull", &image]);
    assert!(err.contains(&image), "{err}");
    assert!(err.contains("tls"), "{err}");
    assert!(
        err.contains(&format!("/etc/containers/certs.d/{host}:{port}")),
        "{err}"
    );
    assert!(err.contains("--tls-verify=false"), "{err}");
    // Without verification the connection is made and the registry's auth is what stops us.
    let err = env.fails(&["pull", "--tls-verify=false", &image]);
    assert!(err.contains("unauthorized"), "{err}");
}

#[test]
fn plain_http_is_only_for_loopback_or_tls_verify_false() {
    let Some((server, _)) = fault_server_or_skip() else {
        return;
    };
    // The same plain-HTTP registry under a non-loopback name: HTTPS is required...
    let (host, ip) = host_name_address();
    let port = forward(SocketAddr::new(ip, 0), server.addr).port();
    let image = format!("{host}:{port}/good:latest");
    let env = Env::new();
    let err = env.fails(&["pull", &image]);
    assert!(err.contains(&image) && err.contains("tls"), "{err}");
    assert!(env.image_names().is_empty());
    // ...unless verification is off, which falls back to HTTP.
    env.ok(&["pull", "--tls-verify=false", &image]);
    assert_eq!(env.image_names(), vec![image]);
    // Under its loopback address it is plain HTTP without asking.
    env.ok(&["pull", &format!("{}/good:latest", server.host())]);
    env.check_clean();
}

// ---------------------------------------------------------------------------------------------
// A fault-injecting registry: real HTTP on loopback, the fixture busybox image, one fault per
// repository name.

#[derive(Clone)]
struct Blobs {
    manifest: Vec<u8>,
    manifest_digest: String,
    config: Vec<u8>,
    config_digest: String,
    layer: Vec<u8>,
    layer_digest: String,
}

/// The busybox image (tag latest) from the fixture OCI layout.
fn busybox_blobs(fixtures: &Path) -> Blobs {
    let layout = fixtures.join("oci/busybox");
    let read = |d: &str| {
        std::fs::read(
            layout
                .join("blobs/sha256")
                .join(d.trim_start_matches("sha256:")),
        )
        .expect("read layout blob")
    };
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let entry = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == "latest")
        .expect("latest in busybox layout")
        .clone();
    let manifest_digest = entry["digest"].as_str().unwrap().to_string();
    let manifest = read(&manifest_digest);
    let m: Value = serde_json::from_slice(&manifest).unwrap();
    let config_digest = m["config"]["digest"].as_str().unwrap().to_string();
    let layer_digest = m["layers"][0]["digest"].as_str().unwrap().to_string();
    Blobs {
        config: read(&config_digest),
        layer: read(&layer_digest),
        manifest,
        manifest_digest,
        config_digest,
        layer_digest,
    }
}

impl Blobs {
    /// The same image with a config whose diff_id is wrong (manifest rewritten to match).
    fn with_wrong_diff_id(&self) -> Blobs {
        let mut cfg: Value = serde_json::from_slice(&self.config).unwrap();
        cfg["rootfs"]["diff_ids"][0] = Value::String(format!("sha256:{}", "e".repeat(64)));
        self.with_config(serde_json::to_vec(&cfg).unwrap())
    }

    /// The same image with a 5 MiB config.
    fn with_huge_config(&self) -> Blobs {
        let mut config = self.config.clone();
        config.resize(5 * 1024 * 1024, b' ');
        self.with_config(config)
    }

    fn with_config(&self, config: Vec<u8>) -> Blobs {
        let config_digest = format!("sha256:{}", sha256_hex(&config));
        let mut m: Value = serde_json::from_slice(&self.manifest).unwrap();
        m["config"]["digest"] = Value::String(config_digest.clone());
        m["config"]["size"] = Value::from(config.len());
        let manifest = serde_json::to_vec(&m).unwrap();
        Blobs {
            manifest_digest: format!("sha256:{}", sha256_hex(&manifest)),
            manifest,
            config,
            config_digest,
            ..self.clone()
        }
    }
}

#[derive(Default)]
struct Seen {
    /// Requests per path.
    hits: HashMap<String, usize>,
    /// For each request: (path, had an Authorization header).
    auth: Vec<(String, bool)>,
    /// Bytes of the slow layer sent so far.
    slow_sent: usize,
    /// The start of every `Range: bytes=N-` request.
    ranges: Vec<u64>,
}

#[derive(Clone, Default)]
struct FaultConfig {
    /// Basic auth required on every /v2/ request.
    basic_auth: Option<String>,
    /// Blob requests are redirected (307) to this server.
    redirect_blobs_to: Option<SocketAddr>,
    /// The bearer-token flow: /v2/ requests need `Bearer <TOKEN>`, issued by /token.
    bearer: Option<BearerConfig>,
    /// This server's own address (set by `start`), for the token realm.
    own_addr: Option<SocketAddr>,
}

#[derive(Clone, Default)]
struct BearerConfig {
    /// `user:password` the token service requires (anonymous tokens when None).
    credentials: Option<String>,
    /// The token service answers with a 5 MiB body.
    huge_token: bool,
    /// The token service is OAuth2's: tokens only for a POST with this refresh token (an
    /// identity token from `docker login`).
    refresh_token: Option<String>,
}

const TOKEN: &str = "gcr-test-token";

struct FaultServer {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

impl FaultServer {
    fn start(blobs: Blobs, mut config: FaultConfig) -> FaultServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fault server");
        let addr = listener.local_addr().unwrap();
        config.own_addr = Some(addr);
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let bad = blobs.with_wrong_diff_id();
        let huge = blobs.with_huge_config();
        {
            let seen = Arc::clone(&seen);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let (blobs, bad, huge, seen, config) = (
                        blobs.clone(),
                        bad.clone(),
                        huge.clone(),
                        Arc::clone(&seen),
                        config.clone(),
                    );
                    std::thread::spawn(move || {
                        let _ = serve(conn, [&blobs, &bad, &huge], &seen, &config);
                    });
                }
            });
        }
        FaultServer { addr, seen, stop }
    }

    fn host(&self) -> String {
        self.addr.to_string()
    }

    fn hits(&self, path_part: &str) -> usize {
        let seen = self.seen.lock().unwrap();
        seen.hits
            .iter()
            .filter(|(p, _)| p.contains(path_part))
            .map(|(_, n)| n)
            .sum()
    }
}

struct Request {
    method: String,
    path: String,
    /// The body, when Content-Length announced one.
    body: Vec<u8>,
    authorization: Option<String>,
    /// `Range: bytes=N-`
    range_from: Option<u64>,
}

fn read_request(conn: &mut BufReader<TcpStream>) -> std::io::Result<Request> {
    let mut line = String::new();
    conn.read_line(&mut line)?;
    let method = line.split_whitespace().next().unwrap_or("GET").to_string();
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut authorization = None;
    let mut range_from = None;
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        if conn.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("authorization") {
                authorization = Some(v.trim().to_string());
            }
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0).min(1 << 20);
            }
            if k.eq_ignore_ascii_case("range") {
                range_from = v
                    .trim()
                    .strip_prefix("bytes=")
                    .and_then(|r| r.strip_suffix('-'))
                    .and_then(|n| n.parse().ok());
            }
        }
    }
    let mut body = vec![0u8; length];
    std::io::Read::read_exact(conn, &mut body)?;
    Ok(Request {
        method,
        path,
        body,
        authorization,
        range_from,
    })
}

fn respond(
    conn: &mut TcpStream,
    status: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    conn.write_all(head.as_bytes())?;
    conn.write_all(body)?;
    conn.flush()
}

fn serve(
    conn: TcpStream,
    [good, bad, huge]: [&Blobs; 3],
    seen: &Mutex<Seen>,
    config: &FaultConfig,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let req = read_request(&mut reader)?;
    let mut conn = conn;
    let first_time = {
        let mut s = seen.lock().unwrap();
        s.auth.push((req.path.clone(), req.authorization.is_some()));
        s.ranges.extend(req.range_from);
        let n = s.hits.entry(req.path.clone()).or_default();
        *n += 1;
        *n == 1
    };
    if let Some(bearer) = &config.bearer {
        if req.path.starts_with("/token") {
            if let Some(refresh) = &bearer.refresh_token {
                let form = String::from_utf8_lossy(&req.body).into_owned();
                let fields: Vec<&str> = form.split('&').collect();
                let granted = req.method == "POST"
                    && fields.contains(&"grant_type=refresh_token")
                    && fields.contains(&format!("refresh_token={refresh}").as_str())
                    && fields.iter().any(|f| f.starts_with("scope=repository"));
                if !granted {
                    return respond(
                        &mut conn,
                        "401 Unauthorized",
                        &[],
                        b"{\"error\":\"invalid_grant\"}",
                    );
                }
                return respond(
                    &mut conn,
                    "200 OK",
                    &[],
                    format!("{{\"access_token\":\"{TOKEN}\",\"expires_in\":300}}").as_bytes(),
                );
            }
            if let Some(creds) = &bearer.credentials {
                if req.authorization.as_deref() != Some(&format!("Basic {}", base64(creds))) {
                    return respond(&mut conn, "401 Unauthorized", &[], b"{\"details\":\"bad\"}");
                }
            }
            if bearer.huge_token {
                let mut body = b"{\"token\":\"".to_vec();
                body.resize(5 * 1024 * 1024, b'x');
                body.extend_from_slice(b"\"}");
                return respond(&mut conn, "200 OK", &[], &body);
            }
            return respond(
                &mut conn,
                "200 OK",
                &[],
                format!("{{\"token\":\"{TOKEN}\"}}").as_bytes(),
            );
        }
        if req.path.starts_with("/v2/")
            && req.authorization.as_deref() != Some(&format!("Bearer {TOKEN}"))
        {
            let realm = format!(
                r#"Bearer realm="http://{}/token",service="fault-registry""#,
                config.own_addr.expect("own address")
            );
            return respond(
                &mut conn,
                "401 Unauthorized",
                &[("WWW-Authenticate", realm)],
                b"",
            );
        }
    }
    if let Some(expected) = &config.basic_auth {
        let ok = req.authorization.as_deref() == Some(&format!("Basic {}", base64(expected)));
        if !ok && req.path.starts_with("/v2/") {
            return respond(
                &mut conn,
                "401 Unauthorized",
                &[("WWW-Authenticate", r#"Basic realm="fault""#.to_string())],
                br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
            );
        }
    }
    // The redirect target ("a CDN"): /cdn/<digest>.
    if let Some(rest) = req.path.strip_prefix("/cdn/") {
        let digest = rest.split('?').next().unwrap_or(rest);
        let body = if digest == good.layer_digest {
            &good.layer
        } else if digest == good.config_digest {
            &good.config
        } else {
            return respond(&mut conn, "404 Not Found", &[], b"");
        };
        return respond(&mut conn, "200 OK", &[], body);
    }
    if req.path == "/v2/" || req.path == "/v2" {
        return respond(&mut conn, "200 OK", &[], b"{}");
    }
    let Some(rest) = req.path.strip_prefix("/v2/") else {
        return respond(&mut conn, "404 Not Found", &[], b"");
    };
    let (repo, kind, reference) = if let Some((repo, r)) = rest.split_once("/manifests/") {
        (repo, "manifest", r)
    } else if let Some((repo, r)) = rest.split_once("/blobs/") {
        (repo, "blob", r)
    } else {
        return respond(&mut conn, "404 Not Found", &[], b"");
    };
    let blobs = match repo {
        "baddiffid" => bad,
        "hugeconfig" => huge,
        _ => good,
    };
    let manifest_headers = |digest: &str| {
        vec![
            (
                "Content-Type",
                "application/vnd.oci.image.manifest.v1+json".to_string(),
            ),
            ("Docker-Content-Digest", digest.to_string()),
        ]
    };

    match (repo, kind) {
        ("broken", _) => respond(&mut conn, "500 Internal Server Error", &[], b"oops"),
        ("flaky", _) if first_time => respond(&mut conn, "503 Service Unavailable", &[], b""),
        ("slowdown", "manifest") if first_time => respond(
            &mut conn,
            "429 Too Many Requests",
            &[("Retry-After", "2".to_string())],
            b"",
        ),
        ("wrongdigest", "manifest") => {
            // By tag: the header lies. By digest: a different manifest than asked for.
            let header = format!("sha256:{}", "1".repeat(64));
            respond(
                &mut conn,
                "200 OK",
                &manifest_headers(&header),
                &blobs.manifest,
            )
        }
        ("endlesserror", "manifest") => {
            conn.write_all(b"HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\n{\"errors\":[")?;
            let chunk = vec![b' '; 64 * 1024];
            loop {
                conn.write_all(&chunk)?;
            }
        }
        ("redirectloop", "blob") => {
            let own = config.own_addr.expect("own address");
            respond(
                &mut conn,
                "307 Temporary Redirect",
                &[("Location", format!("http://{own}{}", req.path))],
                b"",
            )
        }
        ("helm", "manifest") => {
            // An OCI artifact: a Helm chart's config type.
            let mut m: Value = serde_json::from_slice(&blobs.manifest).unwrap();
            m["config"]["mediaType"] =
                Value::String("application/vnd.cncf.helm.config.v1+json".into());
            let body = serde_json::to_vec(&m).unwrap();
            let digest = format!("sha256:{}", sha256_hex(&body));
            respond(&mut conn, "200 OK", &manifest_headers(&digest), &body)
        }
        ("nested", "manifest") => {
            // An index whose only entry is another index.
            let index = format!(
                r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"sha256:{}","size":100}}]}}"#,
                "3".repeat(64)
            );
            respond(
                &mut conn,
                "200 OK",
                &[(
                    "Content-Type",
                    "application/vnd.oci.image.index.v1+json".to_string(),
                )],
                index.as_bytes(),
            )
        }
        ("bigmanifest", "manifest") => {
            let mut big = b"{\"schemaVersion\":2,\"pad\":\"".to_vec();
            big.resize(6 * 1024 * 1024, b'a');
            big.extend_from_slice(b"\"}");
            respond(&mut conn, "200 OK", &manifest_headers(""), &big)
        }
        ("endlessmanifest", "manifest") => {
            conn.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nConnection: close\r\n\r\n{\"schemaVersion\":2,\"pad\":\"",
            )?;
            let chunk = vec![b'a'; 64 * 1024];
            loop {
                conn.write_all(&chunk)?;
            }
        }
        (_, "manifest") => {
            if reference != "latest" && reference != blobs.manifest_digest {
                return respond(
                    &mut conn,
                    "404 Not Found",
                    &[],
                    br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
                );
            }
            respond(
                &mut conn,
                "200 OK",
                &manifest_headers(&blobs.manifest_digest),
                &blobs.manifest,
            )
        }
        (_, "blob") => {
            if let Some(cdn) = config.redirect_blobs_to {
                return respond(
                    &mut conn,
                    "307 Temporary Redirect",
                    &[(
                        "Location",
                        format!("http://{cdn}/cdn/{reference}?sig=secret"),
                    )],
                    b"",
                );
            }
            if reference == blobs.config_digest {
                return respond(&mut conn, "200 OK", &[], &blobs.config);
            }
            if reference != blobs.layer_digest {
                return respond(&mut conn, "404 Not Found", &[], b"");
            }
            let layer = &blobs.layer;
            match repo {
                "truncated" => {
                    conn.write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
                            layer.len()
                        )
                        .as_bytes(),
                    )?;
                    conn.write_all(&layer[..layer.len() / 2])?;
                    conn.flush()
                }
                "cutonce" => match req.range_from {
                    // The first answer stops after a third; a Range request gets the rest.
                    None => {
                        conn.write_all(
                            format!(
                                "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
                                layer.len()
                            )
                            .as_bytes(),
                        )?;
                        conn.write_all(&layer[..layer.len() / 3])?;
                        conn.flush()
                    }
                    Some(from) => {
                        let from = (from as usize).min(layer.len());
                        respond(
                            &mut conn,
                            "206 Partial Content",
                            &[(
                                "Content-Range",
                                format!("bytes {from}-{}/{}", layer.len() - 1, layer.len()),
                            )],
                            &layer[from..],
                        )
                    }
                },
                "shortblob" => {
                    // A whole, well-formed answer that is simply not the announced blob.
                    respond(&mut conn, "200 OK", &[], &layer[..layer.len() / 2])
                }
                "flipped" => {
                    // A byte of the gzip header's mtime: still valid gzip, different digest.
                    let mut copy = layer.clone();
                    copy[4] ^= 0x01;
                    respond(&mut conn, "200 OK", &[], &copy)
                }
                "endless" => {
                    conn.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")?;
                    conn.write_all(layer)?;
                    let junk = vec![0u8; 64 * 1024];
                    loop {
                        conn.write_all(&junk)?;
                    }
                }
                "slow" => {
                    conn.write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
                            layer.len()
                        )
                        .as_bytes(),
                    )?;
                    for piece in layer.chunks(32 * 1024) {
                        conn.write_all(piece)?;
                        conn.flush()?;
                        seen.lock().unwrap().slow_sent += piece.len();
                        std::thread::sleep(Duration::from_millis(60));
                    }
                    Ok(())
                }
                _ => respond(&mut conn, "200 OK", &[], layer),
            }
        }
        _ => respond(&mut conn, "404 Not Found", &[], b""),
    }
}

fn fault_server_or_skip() -> Option<(FaultServer, Blobs)> {
    let fixtures = fixtures_or_skip()?;
    let blobs = busybox_blobs(&fixtures);
    Some((
        FaultServer::start(blobs.clone(), FaultConfig::default()),
        blobs,
    ))
}

/// After a failed pull: nothing listed, and the store is consistent.
fn assert_nothing_half_written(env: &Env) {
    assert!(env.image_names().is_empty(), "{:?}", env.image_names());
    env.check_clean();
    let tmp = env.store.root().join("tmp");
    let leftovers: Vec<_> = std::fs::read_dir(&tmp)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "left in tmp/: {leftovers:?}");
}

#[test]
fn the_fault_server_serves_a_good_image() {
    let Some((server, blobs)) = fault_server_or_skip() else {
        return;
    };
    let env = Env::new();
    let image = format!("{}/good:latest", server.host());
    let out = env.ok(&["pull", &image]);
    assert!(out.contains(&blobs.manifest_digest), "{out}");
    assert_eq!(env.image_names(), vec![image]);
    env.check_clean();
}

#[test]
fn digest_mismatches_are_refused() {
    let Some((server, blobs)) = fault_server_or_skip() else {
        return;
    };
    let env = Env::new();
    // By tag, with a Docker-Content-Digest header that does not match the body.
    let image = format!("{}/wrongdigest:latest", server.host());
    let err = env.fails(&["pull", &image]);
    assert!(
        err.contains(&image) && err.contains("digest mismatch"),
        "{err}"
    );
    // By digest, when the registry returns other content.
    let want = format!("sha256:{}", "2".repeat(64));
    let image = format!("{}/wrongdigest@{want}", server.host());
    let err = env.fails(&["pull", &image]);
    assert!(
        err.contains("digest mismatch") && err.contains(&want),
        "{err}"
    );
    assert!(err.contains(&blobs.manifest_digest), "{err}");
    // A layer blob with one flipped byte: refused, not retried.
    let image = format!("{}/flipped:latest", server.host());
    let err = env.fails(&["pull", &image]);
    assert!(
        err.contains(&image) && err.contains("digest mismatch"),
        "{err}"
    );
    assert!(err.contains(&blobs.layer_digest), "{err}");
    assert_eq!(
        server.hits(&format!("flipped/blobs/{}", blobs.layer_digest)),
        1
    );
    // An artifact is not an image.
    let image = format!("{}/helm:latest", server.host());
    let err = env.fails(&["pull", &image]);
    assert!(
        err.contains("not a container image") && err.contains("helm"),
        "{err}"
    );
    // An index of indexes: said as such, not as "no image for the platform".
    let image = format!("{}/nested:latest", server.host());
    let err = env.fails(&["pull", &image]);
    assert!(err.contains("an index inside an index"), "{err}");
    // A complete answer shorter than the descriptor: the wrong blob, refused at once.
    let image = format!("{}/shortblob:latest", server.host());
    let err = env.fails(&["pull", &image]);
    assert!(err.contains("size mismatch"), "{err}");
    assert_eq!(
        server.hits(&format!("shortblob/blobs/{}", blobs.layer_digest)),
        1
    );
    // A config whose diff_id does not match the layer content.
    let image = format!("{}/baddiffid:latest", server.host());
    let err = env.fails(&["pull", &image]);
    assert!(err.contains(&image) && err.contains("diff_id"), "{err}");
    assert_nothing_half_written(&env);
}

#[test]
fn oversized_manifests_are_capped() {
    let Some((server, _)) = fault_server_or_skip() else {
        return;
    };
    let env = Env::new();
    // An endless error body is not read to its end.
    let image = format!("{}/endlesserror:latest", server.host());
    let err = env.fails(&["pull", &image]);
    assert!(
        err.contains(&image) && err.contains("manifest unknown"),
        "{err}"
    );
    // A redirect loop stops.
    let image = format!("{}/redirectloop:latest", server.host());
    let err = env.fails(&["pull", &image]);
    assert!(err.contains(&image) && err.contains("redirects"), "{err}");
    for repo in ["bigmanifest", "endlessmanifest", "hugeconfig"] {
        let image = format!("{}/{repo}:latest", server.host());
        let err = env.fails(&["pull", &image]);
        assert!(err.contains(&image), "{err}");
        assert!(err.contains("larger than the 4 MiB limit"), "{err}");
    }
    assert!(env
        .fails(&["pull", &format!("{}/hugeconfig", server.host())])
        .contains("config"));
    assert_nothing_half_written(&env);
}

#[test]
fn truncated_and_endless_blobs_fail_and_leave_nothing() {
    let Some((server, blobs)) = fault_server_or_skip() else {
        return;
    };
    let env = Env::new();
    let image = format!("{}/truncated:latest", server.host());
    let err = env.fails(&["pull", &image]);
    assert!(err.contains(&image) && err.contains("truncated"), "{err}");
    assert!(err.contains(&blobs.layer_digest), "{err}");
    // Truncation is transient: it was retried before giving up.
    assert!(err.contains("gave up after 5 attempts"), "{err}");
    // Each attempt also asked for the rest with a Range request, which this registry
    // answers with the whole blob again (200): not resumable, so a fresh attempt follows.
    assert_eq!(
        server.hits(&format!("truncated/blobs/{}", blobs.layer_digest)),
        10
    );

    let image = format!("{}/endless:latest", server.host());
    let err = env.fails(&["pull", &image]);
    assert!(err.contains(&image) && err.contains("longer than"), "{err}");
    // Not retried: the registry is wrong, not the network.
    assert_eq!(
        server.hits(&format!("endless/blobs/{}", blobs.layer_digest)),
        1
    );
    assert_nothing_half_written(&env);

    // A retry against a sane registry completes into the same store.
    env.ok(&["pull", &format!("{}/good:latest", server.host())]);
    env.check_clean();
}

#[test]
fn a_cut_blob_is_resumed_with_a_range_request() {
    let Some((server, blobs)) = fault_server_or_skip() else {
        return;
    };
    let env = Env::new();
    env.ok(&["pull", &format!("{}/cutonce:latest", server.host())]);
    // One plain request, cut after a third; then the rest from where it stopped: nothing
    // already received was fetched again.
    assert_eq!(
        server.hits(&format!("cutonce/blobs/{}", blobs.layer_digest)),
        2
    );
    let ranges = server.seen.lock().unwrap().ranges.clone();
    assert_eq!(ranges, [(blobs.layer.len() / 3) as u64], "{ranges:?}");
    env.ok(&[
        "run",
        "--rm",
        &format!("{}/cutonce:latest", server.host()),
        "true",
    ]);
    env.check_clean();
}

#[test]
fn server_errors_are_retried() {
    let Some((server, blobs)) = fault_server_or_skip() else {
        return;
    };
    let env = Env::new();
    // Every path answers 503 once, then works.
    let image = format!("{}/flaky:latest", server.host());
    env.ok(&["pull", &image]);
    assert_eq!(env.image_names(), vec![image]);
    assert_eq!(server.hits("flaky/manifests/latest"), 2);
    assert_eq!(
        server.hits(&format!("flaky/blobs/{}", blobs.layer_digest)),
        2
    );
    env.check_clean();

    // 429 with Retry-After: the next attempt waits as long as asked, not the short backoff.
    let env = Env::new();
    let image = format!("{}/slowdown:latest", server.host());
    let started = std::time::Instant::now();
    env.ok(&["pull", &image]);
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(1900),
        "Retry-After ignored: {:?}",
        started.elapsed()
    );
    assert_eq!(server.hits("slowdown/manifests/latest"), 2);

    // Always 500: gives up with the status.
    let env = Env::new();
    let image = format!("{}/broken:latest", server.host());
    let err = env.fails(&["pull", &image]);
    assert!(err.contains(&image) && err.contains("500"), "{err}");
    assert!(err.contains("gave up after 5 attempts"), "{err}");
    assert_nothing_half_written(&env);
}

#[test]
fn credentials_do_not_follow_redirects_to_other_hosts() {
    let Some(fixtures) = fixtures_or_skip() else {
        return;
    };
    let blobs = busybox_blobs(&fixtures);
    let cdn = FaultServer::start(blobs.clone(), FaultConfig::default());
    let registry = FaultServer::start(
        blobs.clone(),
        FaultConfig {
            basic_auth: Some("alice:s3cret".to_string()),
            redirect_blobs_to: Some(cdn.addr),
            ..FaultConfig::default()
        },
    );
    let env = Env::new();
    let image = format!("{}/private:latest", registry.host());
    // Anonymous: refused by the registry.
    let err = env.fails(&["pull", &image]);
    assert!(err.contains("unauthorized"), "{err}");
    // With credentials in the auth file: the registry sees them, the CDN never does.
    let auth = serde_json::json!({"auths": {registry.host(): {"auth": base64("alice:s3cret")}}});
    std::fs::write(env.auth_file(), auth.to_string()).unwrap();
    env.ok(&["pull", &image]);
    let reg_seen = registry.seen.lock().unwrap();
    assert!(
        reg_seen
            .auth
            .iter()
            .any(|(p, had)| p.contains("/manifests/") && *had),
        "the registry never got credentials: {:?}",
        reg_seen.auth
    );
    let cdn_seen = cdn.seen.lock().unwrap();
    assert!(
        cdn_seen.auth.iter().any(|(p, _)| p.starts_with("/cdn/")),
        "the blobs were not fetched through the redirect: {:?}",
        cdn_seen.auth
    );
    assert!(
        cdn_seen.auth.iter().all(|(_, had)| !had),
        "credentials were sent to the redirect target: {:?}",
        cdn_seen.auth
    );
}

// ---------------------------------------------------------------------------------------------
// Crashes and concurrency

#[test]
fn sigkill_mid_download_leaves_a_clean_store_and_the_next_pull_completes() {
    let Some((server, blobs)) = fault_server_or_skip() else {
        return;
    };
    let env = Env::new();
    let slow = format!("{}/slow:latest", server.host());
    let mut child = env
        .cmd(&["pull", &slow])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn gcr pull");
    // Wait until part of the layer has been sent, then kill.
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.seen.lock().unwrap().slow_sent < blobs.layer.len() / 4 {
        assert!(
            Instant::now() < deadline,
            "the slow layer download never started"
        );
        if let Ok(Some(status)) = child.try_wait() {
            panic!("gcr pull ended before it was killed: {status:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().expect("SIGKILL gcr pull");
    let _ = child.wait();
    assert!(env.image_names().is_empty());
    env.check_clean();
    env.ok(&["pull", &format!("{}/good:latest", server.host())]);
    env.check_clean();
    assert_eq!(env.image_names().len(), 1);
}

#[test]
fn sigkill_at_various_moments_of_a_real_pull() {
    let Some(reg) = registry_or_skip() else {
        return;
    };
    let image = format!("{reg}/debian:bookworm");
    let env = Env::new();
    for delay_ms in [150u64, 600, 1500, 3000] {
        let mut child = env
            .cmd(&["pull", &image])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn gcr pull");
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        env.check_clean();
        // A pull that finished before the kill is fine; start over for the next moment.
        if !env.image_names().is_empty() {
            env.ok(&["rmi", &image]);
            env.ok(&["system", "prune", "-a", "-f"]);
        }
    }
    env.ok(&["pull", &image]);
    env.check_clean();
    assert_eq!(env.image_names(), vec![image]);
}

#[test]
fn concurrent_pulls_of_one_image_both_succeed() {
    let Some(reg) = registry_or_skip() else {
        return;
    };
    let env = Env::new();
    let image = format!("{reg}/debian:bookworm");
    let children: Vec<_> = (0..2)
        .map(|_| {
            env.cmd(&["pull", &image])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn gcr pull")
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "a concurrent pull failed: {}",
            stderr(&out)
        );
    }
    assert_eq!(env.image_names(), vec![image.clone()]);
    env.check_clean();
    // Stored once: one image, one unpacked layer, no copy left behind in tmp/.
    let ids = env.ok(&["images", "-q"]);
    assert_eq!(ids.lines().count(), 1, "{ids}");
    let layers = std::fs::read_dir(env.store.root().join("layers")).map(|d| d.count());
    assert_eq!(layers.ok(), Some(1));
    let leftovers = std::fs::read_dir(env.store.root().join("tmp")).map(|d| d.count());
    assert_eq!(leftovers.unwrap_or(0), 0);
}

#[test]
fn the_busybox_layer_is_read_once_per_pull() {
    // Layers are streamed once: one GET per missing blob, none for blobs already present.
    let Some((server, blobs)) = fault_server_or_skip() else {
        return;
    };
    let env = Env::new();
    env.ok(&["pull", &format!("{}/good:latest", server.host())]);
    assert_eq!(
        server.hits(&format!("good/blobs/{}", blobs.layer_digest)),
        1
    );
    env.ok(&["pull", &format!("{}/good:latest", server.host())]);
    assert_eq!(
        server.hits(&format!("good/blobs/{}", blobs.layer_digest)),
        1
    );
    // A blob stored without its unpacked layer (a pull killed between the two renames) is
    // unpacked from the store, not downloaded again.
    let layers = env.store.root().join("layers");
    let unpacked: Vec<PathBuf> = std::fs::read_dir(&layers)
        .expect("layers dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    assert_eq!(unpacked.len(), 1, "{unpacked:?}");
    std::fs::remove_dir_all(&unpacked[0]).unwrap();
    env.ok(&["pull", &format!("{}/good:latest", server.host())]);
    assert_eq!(
        server.hits(&format!("good/blobs/{}", blobs.layer_digest)),
        1
    );
    assert!(unpacked[0].join("diff/bin/busybox").exists());
    env.check_clean();
}

#[test]
fn bearer_token_flow_anonymous_and_with_credentials() {
    let Some(fixtures) = fixtures_or_skip() else {
        return;
    };
    let blobs = busybox_blobs(&fixtures);

    // Anonymous tokens (like Docker Hub's public images).
    let open = FaultServer::start(
        blobs.clone(),
        FaultConfig {
            bearer: Some(BearerConfig::default()),
            ..FaultConfig::default()
        },
    );
    let env = Env::new();
    let image = format!("{}/library/thing:latest", open.host());
    env.ok(&["pull", &image]);
    assert_eq!(env.image_names(), vec![image]);
    {
        let seen = open.seen.lock().unwrap();
        let token_requests: Vec<&String> = seen
            .hits
            .keys()
            .filter(|p| p.starts_with("/token"))
            .collect();
        assert!(
            token_requests
                .iter()
                .any(|p| p.contains("scope=repository%3Alibrary%2Fthing%3Apull")
                    && p.contains("service=fault-registry")),
            "{token_requests:?}"
        );
    }

    // A token service that wants credentials.
    let closed = FaultServer::start(
        blobs.clone(),
        FaultConfig {
            bearer: Some(BearerConfig {
                credentials: Some("bob:hunter2".to_string()),
                ..BearerConfig::default()
            }),
            ..FaultConfig::default()
        },
    );
    let env = Env::new();
    let image = format!("{}/team/app:latest", closed.host());
    let err = env.fails(&["pull", &image]);
    assert!(
        err.contains(&image) && err.contains("unauthorized"),
        "{err}"
    );
    assert!(
        err.contains(&format!("gcr login {}", closed.host())),
        "{err}"
    );
    let err = env.fails(&["login", "-u", "bob", "-p", "wrong", &closed.host()]);
    assert!(err.contains("wrong username or password"), "{err}");
    assert!(!env.auth_file().exists());
    env.ok(&["login", "-u", "bob", "-p", "hunter2", &closed.host()]);
    env.ok(&["pull", &image]);
    assert_eq!(env.image_names(), vec![image.clone()]);
    env.ok(&["logout", &closed.host()]);
    let fresh = Env::new();
    std::fs::copy(env.auth_file(), fresh.auth_file()).unwrap();
    let err = fresh.fails(&["pull", &image]);
    assert!(err.contains("unauthorized"), "{err}");

    // An identity token (OAuth2 refresh token) saved by `docker login`: traded with a POST.
    let oauth = FaultServer::start(
        blobs.clone(),
        FaultConfig {
            bearer: Some(BearerConfig {
                refresh_token: Some("refresh-me".to_string()),
                ..BearerConfig::default()
            }),
            ..FaultConfig::default()
        },
    );
    let env = Env::new();
    let image = format!("{}/team/oauth:latest", oauth.host());
    let err = env.fails(&["pull", &image]);
    assert!(err.contains("unauthorized"), "{err}");
    std::fs::write(
        env.auth_file(),
        format!(
            r#"{{"auths": {{"{}": {{"identitytoken": "refresh-me"}}}}}}"#,
            oauth.host()
        ),
    )
    .unwrap();
    env.ok(&["pull", &image]);
    assert_eq!(env.image_names(), vec![image]);

    // A token response over the cap.
    let huge = FaultServer::start(
        blobs,
        FaultConfig {
            bearer: Some(BearerConfig {
                huge_token: true,
                ..BearerConfig::default()
            }),
            ..FaultConfig::default()
        },
    );
    let env = Env::new();
    let image = format!("{}/x:latest", huge.host());
    let err = env.fails(&["pull", &image]);
    assert!(err.contains(&image), "{err}");
    assert!(
        err.contains("token response") && err.contains("4 MiB"),
        "{err}"
    );
    assert_nothing_half_written(&env);
}

#[test]
fn rootless_pull_as_an_unprivileged_user() {
    let Some(reg) = registry_or_skip() else {
        return;
    };
    let Some(user) = support::fixture_env("GCR_TEST_USER") else {
        return;
    };
    let env = Env::new();
    let chown = Command::new("chown")
        .arg("-R")
        .arg(&user)
        .arg(env.store.root())
        .arg(env.home.path())
        .status()
        .expect("run chown");
    assert!(chown.success(), "chown to {user} failed");
    let run_as_user = |args: &[&str]| -> Output {
        Command::new("runuser")
            .args(["-u", &user, "--", "env"])
            .arg(format!("HOME={}", env.home.path().display()))
            .arg(format!("REGISTRY_AUTH_FILE={}", env.auth_file().display()))
            .arg(support::gcr_bin())
            .arg("--root")
            .arg(env.store.root())
            .args(args)
            .output()
            .expect("run gcr as the test user")
    };
    for image in [
        format!("{reg}/busybox:latest"),
        format!("{reg}/layered:latest"),
    ] {
        let out = run_as_user(&["pull", &image]);
        assert!(
            out.status.success(),
            "rootless pull of {image} failed:\n{}",
            stderr(&out)
        );
        assert!(
            stdout(&out).contains(&skopeo_digest(&image)),
            "{}",
            stdout(&out)
        );
    }
    let out = run_as_user(&["system", "check"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let out = run_as_user(&["images", "--format", "json"]);
    let list: Value = serde_json::from_slice(&out.stdout).expect("images json");
    assert_eq!(list.as_array().map(Vec::len), Some(2), "{list}");
}

/// A distribution registry of its own that demands a client certificate (mutual TLS), on a
/// free loopback port, with certificates made by openssl: `certs/` holds the CA and a client
/// certificate and key, `ca-only/` just the CA.
struct MutualTlsRegistry {
    child: std::process::Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Drop for MutualTlsRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl MutualTlsRegistry {
    fn start() -> Option<MutualTlsRegistry> {
        support::tool("docker-registry")?;
        support::tool("openssl")?;
        let dir = tempfile::Builder::new()
            .prefix("gcr-mtls-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        let sh = |script: &str| {
            let out = Command::new("sh")
                .arg("-c")
                .arg(script)
                .current_dir(d)
                .output()
                .unwrap();
            assert!(out.status.success(), "{script}: {}", stderr(&out));
        };
        let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
        sh(&format!(
            "openssl req -x509 -new {ec} -keyout ca.key -out ca.crt -days 2 -subj '/CN=mtls CA' \
             -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign"
        ));
        for (name, usage, san) in [
            ("server", "serverAuth", "subjectAltName=IP:127.0.0.1"),
            ("client", "clientAuth", "subjectAltName=DNS:gcr-client"),
        ] {
            sh(&format!(
                "openssl req -new {ec} -keyout {name}.key -out {name}.csr -subj /CN={name} && \
                 printf 'extendedKeyUsage={usage}\\n{san}\\n' > {name}.ext && \
                 openssl x509 -req -in {name}.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
                 -out {name}.crt -days 2 -extfile {name}.ext"
            ));
        }
        sh(
            "mkdir certs ca-only && cp ca.crt certs/ && cp ca.crt ca-only/ && \
            cp client.crt certs/client.cert && cp client.key certs/client.key",
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        std::fs::write(
            d.join("config.yml"),
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {root}/storage\n\
                 http:\n  addr: 127.0.0.1:{port}\n  tls:\n    certificate: {root}/server.crt\n    key: {root}/server.key\n\
                 \x20   clientcas:\n      - {root}/ca.crt\n",
                root = d.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(d.join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(d.join("config.yml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let registry = MutualTlsRegistry { child, dir, port };
        for _ in 0..100 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(registry);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "the mutual-TLS registry did not start: {}",
            std::fs::read_to_string(registry.dir.path().join("registry.log")).unwrap_or_default()
        );
    }

    fn dir(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

#[test]
fn client_certificates_from_cert_dir_reach_a_mutual_tls_registry() {
    let Some(reg) = registry_or_skip() else {
        return;
    };
    let Some(mtls) = MutualTlsRegistry::start() else {
        return;
    };
    let env = Env::new();
    env.ok(&["pull", "-q", &format!("{reg}/busybox:latest")]);
    let target = format!("127.0.0.1:{}/gcr/busybox:mtls", mtls.port);
    // Without the client certificate the registry refuses the TLS handshake.
    let out = env.run(&[
        "push",
        "--cert-dir",
        &mtls.dir("ca-only"),
        &format!("{reg}/busybox:latest"),
        &target,
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).to_lowercase().contains("tls") || stderr(&out).contains("certificate"),
        "{}",
        stderr(&out)
    );
    env.ok(&[
        "push",
        "-q",
        "--cert-dir",
        &mtls.dir("certs"),
        &format!("{reg}/busybox:latest"),
        &target,
    ]);
    let other = Env::new();
    let out = other.run(&["pull", "--cert-dir", &mtls.dir("ca-only"), &target]);
    assert!(!out.status.success(), "pulled without a client certificate");
    other.ok(&["pull", "-q", "--cert-dir", &mtls.dir("certs"), &target]);
    assert_eq!(
        other.ok(&["run", "--rm", "--network", "none", &target, "echo", "hi"]),
        "hi\n"
    );
    other.check_clean();
}
