//! End-to-end tests: `gcr push` against the fixture registries. What gcr pushes is read back
//! with skopeo (a client independent of gcr), pulled back by gcr, run by podman, and the
//! registry's access log tells which requests were made (uploads, mounts, HEADs).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::{stderr, stdout, TestStore};

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

    fn run(&self, args: &[&str]) -> Output {
        let mut cmd = self.store.gcr();
        cmd.args(args)
            .env("HOME", self.home.path())
            .env("REGISTRY_AUTH_FILE", self.auth_file())
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("DOCKER_CONFIG");
        cmd.output().expect("spawn gcr")
    }

    /// Runs gcr, asserts success, returns (stdout, stderr).
    fn ok(&self, args: &[&str]) -> (String, String) {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "gcr {args:?} failed with {:?}\nstdout: {}\nstderr: {}",
            out.status,
            stdout(&out),
            stderr(&out)
        );
        (stdout(&out), stderr(&out))
    }

    /// A fresh image (config created now, so nothing of it is in any registry repository)
    /// named `name`, made by `gcr import` of the fixture busybox rootfs.
    fn fresh_image(&self, name: &str) -> Option<()> {
        let fixtures = support::fixture_env("GCR_TEST_FIXTURES")?;
        let tar = Path::new(&fixtures).join("rootfs/busybox.tar");
        self.ok(&["import", "-q", tar.to_str().unwrap(), name]);
        Some(())
    }

    fn image_id(&self, name: &str) -> String {
        let (out, _) = self.ok(&["inspect", name]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("inspect json");
        v[0]["Id"]
            .as_str()
            .or_else(|| v[0]["id"].as_str())
            .unwrap_or_else(|| panic!("no Id in {out}"))
            .to_string()
    }
}

/// A repository name no other test run uses.
fn unique_repo(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("gcr-test-push/{what}-{}-{nanos}", std::process::id())
}

/// The manifest digest skopeo reads for `reference` (sha256 of the raw manifest).
fn skopeo_digest(reference: &str, extra: &[&str]) -> String {
    use sha2::Digest as _;
    let out = Command::new("skopeo")
        .args(["inspect", "--raw"])
        .args(extra)
        .arg(format!("docker://{reference}"))
        .output()
        .expect("spawn skopeo");
    assert!(
        out.status.success(),
        "skopeo inspect {reference} failed: {}",
        stderr(&out)
    );
    format!("sha256:{:x}", sha2::Sha256::digest(&out.stdout))
}

/// Access-log lines of the plain registry about `repo` whose request line starts with
/// `request` (e.g. `"PUT /v2/REPO/blobs/uploads/`).
fn registry_log(repo: &str) -> Option<Vec<String>> {
    let fixtures = support::fixture_env("GCR_TEST_FIXTURES")?;
    let log = Path::new(&fixtures).join("log/registry-plain.log");
    let text = std::fs::read_to_string(&log)
        .unwrap_or_else(|e| panic!("cannot read the registry log {}: {e}", log.display()));
    Some(
        text.lines()
            .filter(|l| l.contains(&format!(" /v2/{repo}/")) && l.contains("\" 20"))
            .map(str::to_string)
            .collect(),
    )
}

fn count(lines: &[String], needle: &str) -> usize {
    lines.iter().filter(|l| l.contains(needle)).count()
}

#[test]
fn push_to_a_fresh_repo_then_repush_skips_every_blob() {
    let Some(registry) = support::registry() else {
        return;
    };
    let env = Env::new();
    if env.fresh_image("local/push-fresh:1").is_none() {
        return;
    }
    let repo = unique_repo("fresh");
    let dest = format!("{registry}/{repo}:1");
    let digest_file = env.home.path().join("digest");
    let (out, err) = env.ok(&[
        "push",
        "--digestfile",
        digest_file.to_str().unwrap(),
        "local/push-fresh:1",
        &dest,
    ]);
    let digest = std::fs::read_to_string(&digest_file).unwrap();
    assert!(
        out.contains(&format!("1: digest: {digest} size: ")),
        "{out}"
    );
    // Layer and config uploaded, nothing found or mounted.
    assert_eq!(err.matches(" bytes)").count(), 2, "{err}");
    assert!(
        !err.contains("already exists") && !err.contains("mounted"),
        "{err}"
    );
    let Some(log) = registry_log(&repo) else {
        return;
    };
    assert_eq!(count(&log, &format!("\"PUT /v2/{repo}/blobs/uploads/")), 2);
    assert_eq!(count(&log, &format!("\"PUT /v2/{repo}/manifests/1 ")), 1);

    // Again: every blob is found by HEAD, none is uploaded, the manifest is put again.
    let (out2, err2) = env.ok(&["push", "local/push-fresh:1", &dest]);
    assert_eq!(out2, out);
    assert_eq!(err2.matches("skipped: already exists").count(), 2, "{err2}");
    assert!(!err2.contains(" bytes)"), "{err2}");
    let log = registry_log(&repo).unwrap();
    assert_eq!(count(&log, &format!("\"PUT /v2/{repo}/blobs/uploads/")), 2);
    assert_eq!(count(&log, &format!("\"POST /v2/{repo}/blobs/uploads/")), 2);
    assert_eq!(count(&log, &format!("\"PUT /v2/{repo}/manifests/1 ")), 2);
}

#[test]
fn cross_repository_mount_from_the_images_other_name() {
    let Some(registry) = support::registry() else {
        return;
    };
    let env = Env::new();
    if env.fresh_image("local/push-mount:1").is_none() {
        return;
    }
    let first = unique_repo("mount-src");
    let second = unique_repo("mount-dst");
    env.ok(&[
        "push",
        "local/push-mount:1",
        &format!("{registry}/{first}:1"),
    ]);
    // The image is known under a name in `first` on the same registry: a source to mount from.
    env.ok(&[
        "tag",
        "local/push-mount:1",
        &format!("{registry}/{first}:1"),
    ]);
    let (_, err) = env.ok(&[
        "push",
        "local/push-mount:1",
        &format!("{registry}/{second}:1"),
    ]);
    assert_eq!(
        err.matches(&format!("mounted from {first}")).count(),
        2,
        "{err}"
    );
    let Some(log) = registry_log(&second) else {
        return;
    };
    assert_eq!(
        count(
            &log,
            &format!("\"POST /v2/{second}/blobs/uploads/?mount=sha256:")
        ),
        2,
        "{log:#?}"
    );
    assert_eq!(
        count(&log, &format!("\"PUT /v2/{second}/blobs/uploads/")),
        0
    );
    assert_eq!(
        count(&log, &format!("\"PATCH /v2/{second}/blobs/uploads/")),
        0
    );
}

#[test]
fn pushed_image_reads_back_identically_in_skopeo_and_gcr_and_runs_in_podman() {
    let Some(registry) = support::registry() else {
        return;
    };
    if support::tool("skopeo").is_none() || support::tool("podman").is_none() {
        return;
    }
    let env = Env::new();
    if env.fresh_image("local/push-back:1").is_none() {
        return;
    }
    let repo = unique_repo("back");
    let dest = format!("{registry}/{repo}:1");
    let digest_file = env.home.path().join("digest");
    env.ok(&[
        "push",
        "-q",
        "--digestfile",
        digest_file.to_str().unwrap(),
        "local/push-back:1",
        &dest,
    ]);
    let digest = std::fs::read_to_string(&digest_file).unwrap();
    assert_eq!(skopeo_digest(&dest, &["--tls-verify=false"]), digest);

    // gcr pulls the same digest and image ID into another store.
    let other = Env::new();
    let (out, _) = other.ok(&["pull", &dest]);
    assert!(out.contains(&format!("Digest: {digest}")), "{out}");
    assert_eq!(other.image_id(&dest), env.image_id("local/push-back:1"));
    let (ran, _) = other.ok(&["run", "--rm", &dest, "echo", "pulled-back"]);
    assert_eq!(ran.trim(), "pulled-back");

    // podman pulls and runs it.
    let out = Command::new("podman")
        .args([
            "run",
            "--rm",
            "--tls-verify=false",
            &dest,
            "echo",
            "hello-podman",
        ])
        .output()
        .expect("spawn podman");
    let _ = Command::new("podman").args(["rmi", "-f", &dest]).output();
    assert!(out.status.success(), "podman run failed: {}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "hello-podman");
}

#[test]
fn docker_schema2_manifest_is_pushed_byte_for_byte() {
    let Some(registry) = support::registry() else {
        return;
    };
    if support::tool("skopeo").is_none() {
        return;
    }
    let env = Env::new();
    let source = format!("{registry}/busybox:v2s2");
    env.ok(&["pull", "-q", &source]);
    let repo = unique_repo("v2s2");
    let dest = format!("{registry}/{repo}:v2s2");
    env.ok(&["push", &source, &dest]);
    let original = skopeo_digest(&source, &["--tls-verify=false"]);
    assert_eq!(skopeo_digest(&dest, &["--tls-verify=false"]), original);
}

#[test]
fn chunked_upload_streams_patches() {
    let Some(registry) = support::registry() else {
        return;
    };
    let env = Env::new();
    if env.fresh_image("local/push-chunks:1").is_none() {
        return;
    }
    let repo = unique_repo("chunks");
    let dest = format!("{registry}/{repo}:1");
    env.ok(&[
        "push",
        "--chunk-size",
        "200000",
        "local/push-chunks:1",
        &dest,
    ]);
    let Some(log) = registry_log(&repo) else {
        return;
    };
    // The ~1.3 MB layer in 200 kB chunks, the config in one.
    assert!(
        count(&log, &format!("\"PATCH /v2/{repo}/blobs/uploads/")) >= 7,
        "{log:#?}"
    );
    let other = Env::new();
    other.ok(&["pull", "-q", &dest]);
    assert_eq!(other.image_id(&dest), env.image_id("local/push-chunks:1"));
}

#[test]
fn push_to_the_tls_registry_needs_login() {
    let Some(registry) = support::fixture_env("GCR_TEST_TLS_REGISTRY") else {
        return;
    };
    let (Some(user), Some(password)) = (
        support::fixture_env("GCR_TEST_TLS_USER"),
        support::fixture_env("GCR_TEST_TLS_PASSWORD"),
    ) else {
        return;
    };
    let env = Env::new();
    if env.fresh_image("local/push-tls:1").is_none() {
        return;
    }
    let dest = format!("{registry}/{}:1", unique_repo("tls"));
    let out = env.run(&["push", "local/push-tls:1", &dest]);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("unauthorized") && err.contains(&format!("gcr login {registry}")),
        "{err}"
    );
    env.ok(&["login", "-u", &user, "-p", &password, &registry]);
    let (out, _) = env.ok(&["push", "local/push-tls:1", &dest]);
    assert!(out.contains("1: digest: sha256:"), "{out}");
    let (_, err) = env.ok(&["push", "local/push-tls:1", &dest]);
    assert_eq!(err.matches("skipped: already exists").count(), 2, "{err}");

    // Pulled back with the same credentials: same image.
    let (pulled, _) = env.ok(&["pull", "-q", &dest]);
    assert_eq!(pulled.trim(), dest);
    assert_eq!(env.image_id(&dest), env.image_id("local/push-tls:1"));
}

#[test]
fn bad_pushes_say_what_to_do() {
    let Some(registry) = support::registry() else {
        return;
    };
    let env = Env::new();
    let out = env.run(&["push", "local/absent:1", &format!("{registry}/x:1")]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("image not known: local/absent:1"),
        "{}",
        stderr(&out)
    );
    if env.fresh_image("local/push-bad:1").is_none() {
        return;
    }
    // No destination and the name is not a registry one: it would go to Docker Hub, which is
    // allowed, but an ID is not a name.
    let id = env.image_id("local/push-bad:1");
    let short = &id["sha256:".len().."sha256:".len() + 12];
    let out = env.run(&["push", short]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("give a destination"),
        "{}",
        stderr(&out)
    );
    let out = env.run(&["push", "local/push-bad:1", "local/UPPER:1"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("invalid destination"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn built_image_pushed_runs_under_podman_with_its_deletions() {
    let Some(registry) = support::registry() else {
        return;
    };
    if support::tool("podman").is_none() {
        return;
    }
    let env = Env::new();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Containerfile"),
        format!(
            "FROM {registry}/busybox:latest\n\
             RUN echo built > /built.txt && rm -rf /etc/group\n\
             RUN head -c 3000000 /dev/urandom > /rand && md5sum /rand > /rand.md5\n\
             CMD [\"cat\", \"/built.txt\"]\n"
        ),
    )
    .unwrap();
    env.ok(&[
        "build",
        "-q",
        "-t",
        "local/push-built:1",
        ctx.path().to_str().unwrap(),
    ]);
    let dest = format!("{registry}/{}:1", unique_repo("built"));
    let (_, err) = env.ok(&["push", "local/push-built:1", &dest]);
    // The base layer comes from the busybox repository by mount, the new one is uploaded.
    assert!(err.contains("mounted from busybox"), "{err}");
    let cmd = podman(&["run", "--rm", "--tls-verify=false", &dest]);
    let gone = podman(&[
        "run",
        "--rm",
        &dest,
        "sh",
        "-c",
        "test -e /etc/group || echo gone",
    ]);
    // A layer over 1 MiB is several gzip members (gcr compresses blocks in parallel): podman
    // must read all of them.
    let intact = podman(&["run", "--rm", &dest, "md5sum", "-c", "/rand.md5"]);
    let _ = podman(&["rmi", "-f", &dest]);
    assert!(cmd.status.success(), "podman run: {}", stderr(&cmd));
    assert_eq!(stdout(&cmd).trim(), "built");
    assert!(
        intact.status.success() && stdout(&intact).contains("OK"),
        "multi-member layer damaged: {}{}",
        stdout(&intact),
        stderr(&intact)
    );
    assert_eq!(stdout(&gone).trim(), "gone", "{}", stderr(&gone));
}

fn podman(args: &[&str]) -> Output {
    Command::new("podman")
        .args(args)
        .output()
        .expect("spawn podman")
}

// ---------------------------------------------------------------------------------------------
// The bearer-token flow, through a proxy in front of the plain registry that demands tokens
// (the fixture registries only know anonymous and basic auth).

/// What the token proxy saw.
#[derive(Default)]
struct ProxyLog {
    /// The `scope` parameters of each token request.
    token_scopes: Vec<Vec<String>>,
    /// Requests refused for want of a token with the right scope.
    refused: usize,
}

/// Starts the proxy: `/token?scope=..` issues `tok|SCOPE|SCOPE..`; `/v2/` requests need a
/// bearer token whose scopes cover the repository (push for writes, pull on the source of a
/// mount) and are then forwarded to `upstream` with `Connection: close`.
fn start_token_proxy(upstream: String) -> (String, std::sync::Arc<std::sync::Mutex<ProxyLog>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let log = std::sync::Arc::new(std::sync::Mutex::new(ProxyLog::default()));
    let (proxy_addr, shared) = (addr.clone(), log.clone());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut client) = conn else { continue };
            let upstream = upstream.clone();
            let addr = proxy_addr.clone();
            let log = shared.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(client.try_clone().unwrap());
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                    return;
                }
                let mut headers = Vec::new();
                let mut length = 0usize;
                let mut token = None;
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    let line = line.trim_end().to_string();
                    if line.is_empty() {
                        break;
                    }
                    let lower = line.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                    if let Some(v) = line.strip_prefix("authorization: Bearer ") {
                        token = Some(v.to_string());
                    } else if lower.starts_with("connection:") {
                        continue;
                    }
                    headers.push(line);
                }
                let mut body = vec![0u8; length];
                reader.read_exact(&mut body).unwrap();
                let mut parts = request_line.split_whitespace();
                let method = parts.next().unwrap_or("").to_string();
                let target = parts.next().unwrap_or("").to_string();
                if let Some(query) = target.strip_prefix("/token?") {
                    let scopes: Vec<String> = query
                        .split('&')
                        .filter_map(|p| p.strip_prefix("scope="))
                        .map(|s| {
                            s.replace("%3A", ":")
                                .replace("%2C", ",")
                                .replace("%2F", "/")
                        })
                        .collect();
                    let reply = format!("{{\"token\":\"tok|{}\"}}", scopes.join("|"));
                    log.lock().unwrap().token_scopes.push(scopes);
                    let _ = write!(
                        client,
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                        reply.len()
                    );
                    return;
                }
                // The scopes this request needs.
                let path = target.split('?').next().unwrap_or("");
                let mut needed = Vec::new();
                if let Some(rest) = path.strip_prefix("/v2/") {
                    let repo = ["/blobs/", "/manifests/"]
                        .iter()
                        .find_map(|k| rest.find(k).map(|i| &rest[..i]));
                    if let Some(repo) = repo {
                        let action = if method == "GET" || method == "HEAD" {
                            "pull"
                        } else {
                            "push"
                        };
                        needed.push((repo.to_string(), action));
                        if let Some(from) = target.split("from=").nth(1) {
                            needed.push((from.split('&').next().unwrap().to_string(), "pull"));
                        }
                    }
                }
                let granted: Vec<String> = token
                    .as_deref()
                    .and_then(|t| t.strip_prefix("tok|"))
                    .map(|t| t.split('|').map(str::to_string).collect())
                    .unwrap_or_default();
                let allowed = (path == "/v2/" && token.is_some())
                    || (!needed.is_empty()
                        && needed.iter().all(|(repo, action)| {
                            granted.iter().any(|g| {
                                g.strip_prefix(&format!("repository:{repo}:"))
                                    .is_some_and(|a| a.split(',').any(|x| x == *action))
                            })
                        }));
                if !allowed {
                    log.lock().unwrap().refused += 1;
                    let scope = needed
                        .first()
                        .map(|(r, a)| format!(",scope=\"repository:{r}:{a}\""))
                        .unwrap_or_default();
                    let _ = write!(
                        client,
                        "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"http://{addr}/token\",service=\"proxy\"{scope}\r\nDocker-Distribution-Api-Version: registry/2.0\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                    return;
                }
                let mut server = std::net::TcpStream::connect(&upstream).unwrap();
                let mut head = request_line.clone();
                for h in headers.iter().filter(|h| !h.starts_with("authorization:")) {
                    head.push_str(h);
                    head.push_str("\r\n");
                }
                head.push_str("Connection: close\r\n\r\n");
                server.write_all(head.as_bytes()).unwrap();
                server.write_all(&body).unwrap();
                let _ = std::io::copy(&mut server, &mut client);
            });
        }
    });
    (addr, log)
}

#[test]
fn bearer_tokens_with_push_scope_and_the_mount_source() {
    let Some(registry) = support::registry() else {
        return;
    };
    let (proxy, log) = start_token_proxy(registry.clone());
    let env = Env::new();
    if env.fresh_image("local/push-bearer:1").is_none() {
        return;
    }
    let first = unique_repo("bearer-a");
    let second = unique_repo("bearer-b");
    let (out, _) = env.ok(&["push", "local/push-bearer:1", &format!("{proxy}/{first}:1")]);
    assert!(out.contains("1: digest: sha256:"), "{out}");
    {
        let log = log.lock().unwrap();
        assert!(
            log.token_scopes
                .iter()
                .any(|s| s == &[format!("repository:{first}:pull,push")]),
            "{:?}",
            log.token_scopes
        );
    }
    // Mounting from `first` needs a token for both repositories, asked for in one request.
    env.ok(&["tag", "local/push-bearer:1", &format!("{proxy}/{first}:1")]);
    let (_, err) = env.ok(&[
        "push",
        "local/push-bearer:1",
        &format!("{proxy}/{second}:1"),
    ]);
    assert_eq!(
        err.matches(&format!("mounted from {first}")).count(),
        2,
        "{err}"
    );
    let scopes = log.lock().unwrap().token_scopes.clone();
    assert!(
        scopes.iter().any(|s| s
            == &[
                format!("repository:{second}:pull,push"),
                format!("repository:{first}:pull")
            ]),
        "{scopes:?}"
    );
    // Every repository was first refused without a token.
    assert!(log.lock().unwrap().refused >= 2);
    // Read back through the proxy with a pull token.
    let other = Env::new();
    other.ok(&["pull", "-q", &format!("{proxy}/{second}:1")]);
    assert_eq!(
        other.image_id(&format!("{proxy}/{second}:1")),
        env.image_id("local/push-bearer:1")
    );
}
