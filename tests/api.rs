//! `gcr system service`: the Docker Engine API on a socket, driven by the real docker client,
//! Debian's Docker SDK for Python and curl, as root and rootless. The endpoints not done yet
//! must answer 501 naming themselves.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{gcr_bin, stderr, stdout};

/// A service on a private socket over a private store (as root, or as the rootless test
/// user); stopped on drop.
struct ServiceUnderTest {
    dir: tempfile::TempDir,
    child: Child,
}

/// The unprivileged test user (GCR_TEST_USER), or None (skip) outside CI.
fn test_user() -> Option<String> {
    let user = std::env::var("GCR_TEST_USER").unwrap_or_else(|_| "gcrtest".into());
    let exists = Command::new("id").arg("-u").arg(&user).output();
    if exists.is_ok_and(|o| o.status.success()) {
        return Some(user);
    }
    assert!(
        !support::in_ci(),
        "user {user} missing: run tests/fixtures/setup.sh"
    );
    eprintln!("SKIP: user {user} missing");
    None
}

/// The gcr binary where `user` can run it (a copy when the target dir is out of reach).
fn gcr_for(user: &str, dir: &Path) -> PathBuf {
    let bin = gcr_bin();
    let reachable = Command::new("runuser")
        .args(["-u", user, "--", "test", "-x"])
        .arg(&bin)
        .status()
        .is_ok_and(|s| s.success());
    if reachable {
        return bin;
    }
    let copy = dir.join("gcr");
    std::fs::copy(&bin, &copy).unwrap();
    copy
}

impl ServiceUnderTest {
    fn start(extra: &[&str]) -> ServiceUnderTest {
        ServiceUnderTest::start_as(None, extra)
    }

    /// The service as `user` (rootless: its own user namespace and store) or as root.
    fn start_as(user: Option<&str>, extra: &[&str]) -> ServiceUnderTest {
        let dir = tempfile::Builder::new()
            .prefix("gcr-api-test-")
            .tempdir()
            .unwrap();
        let sock = dir.path().join("gcr.sock");
        let mut command = match user {
            None => Command::new(gcr_bin()),
            Some(user) => {
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
                    .unwrap();
                let chown = Command::new("chown").arg(user).arg(dir.path()).status();
                assert!(chown.is_ok_and(|s| s.success()));
                let runtime_dir = dir.path().join("run");
                let bin = gcr_for(user, dir.path());
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--", "env"])
                    .arg(format!("XDG_RUNTIME_DIR={}", runtime_dir.display()))
                    .arg(bin);
                c
            }
        };
        if let Some(user) = user {
            // Made by the user, so it owns its runtime directory.
            let made = Command::new("runuser")
                .args(["-u", user, "--", "mkdir", "-m", "0700"])
                .arg(dir.path().join("run"))
                .status();
            assert!(made.is_ok_and(|s| s.success()));
        }
        let child = command
            .arg("--root")
            .arg(dir.path().join("store"))
            .args(["system", "service"])
            .args(extra)
            .arg(format!("unix://{}", sock.display()))
            .current_dir("/")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let s = ServiceUnderTest { dir, child };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(s.sock()).is_err() {
            assert!(Instant::now() < deadline, "the service did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    fn sock(&self) -> PathBuf {
        self.dir.path().join("gcr.sock")
    }

    fn docker(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .env("DOCKER_HOST", format!("unix://{}", self.sock().display()))
            .env("DOCKER_CONFIG", self.dir.path().join("docker-config"))
            // The classic build API (a newer client would want BuildKit's session instead).
            .env("DOCKER_BUILDKIT", "0")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// docker with its stdin from `input`.
    fn docker_with_input(&self, args: &[&str], input: &[u8]) -> Output {
        use std::io::Write as _;
        let mut child = Command::new("docker")
            .env("DOCKER_HOST", format!("unix://{}", self.sock().display()))
            .env("DOCKER_CONFIG", self.dir.path().join("docker-config"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    }

    /// docker that must succeed: its stdout.
    fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?}: {}\n{}",
            stdout(&out),
            stderr(&out)
        );
        stdout(&out)
    }

    /// curl with a JSON body: (status, body).
    fn curl_json(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        let out = Command::new("curl")
            .args([
                "-s",
                "--max-time",
                "20",
                "-X",
                method,
                "-w",
                "\n%{http_code}",
            ])
            .args([
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                body,
            ])
            .arg("--unix-socket")
            .arg(self.sock())
            .arg(format!("http://gcr{path}"))
            .output()
            .unwrap();
        let text = stdout(&out);
        let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (status.trim().parse().unwrap_or(0), body.to_string())
    }

    /// The containers the service's store holds, by the gcr command line.
    fn store_containers(&self) -> String {
        let out = Command::new(gcr_bin())
            .arg("--root")
            .arg(self.dir.path().join("store"))
            .args(["ps", "-aq"])
            .output()
            .unwrap();
        stdout(&out)
    }

    /// curl through the socket: (status, headers and body).
    fn curl(&self, method: &str, path: &str) -> (u16, String) {
        // curl -X HEAD would wait for the body the headers announce: -I asks for HEAD.
        let method_args: Vec<&str> = if method == "HEAD" {
            vec!["-I"]
        } else {
            vec!["-i", "-X", method]
        };
        let out = Command::new("curl")
            .args(["-s", "--max-time", "20"])
            .args(&method_args)
            .arg("--unix-socket")
            .arg(self.sock())
            .arg(format!("http://gcr{path}"))
            .output()
            .unwrap();
        let text = stdout(&out);
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        (status, text)
    }
}

impl Drop for ServiceUnderTest {
    fn drop(&mut self) {
        // The service itself (rootless, runuser's child: runuser would SIGKILL it 2 s after
        // passing SIGTERM on, before it has stopped what it started).
        let runner = self.child.id();
        let service = std::fs::read_to_string(format!("/proc/{runner}/task/{runner}/children"))
            .ok()
            .and_then(|c| c.split_whitespace().next()?.parse::<u32>().ok())
            .filter(|_| {
                std::fs::read_to_string(format!("/proc/{runner}/comm"))
                    .is_ok_and(|c| c.trim() == "runuser")
            })
            .unwrap_or(runner);
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(service as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

#[test]
fn docker_client_talks_to_the_service() {
    if support::tool("docker").is_none() || support::tool("curl").is_none() {
        return;
    }
    let s = ServiceUnderTest::start(&["--time", "0"]);
    let mode = std::fs::metadata(s.sock()).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o660
    );
    // _ping, bare and prefixed, GET and HEAD, with Docker's headers.
    for path in ["/_ping", "/v1.41/_ping"] {
        let (status, text) = s.curl("GET", path);
        assert_eq!(status, 200, "{text}");
        assert!(text.ends_with("OK"), "{text}");
        assert!(text.to_lowercase().contains("api-version: 1.41"), "{text}");
    }
    let (status, _) = s.curl("HEAD", "/_ping");
    assert_eq!(status, 200);
    // docker version and info come from the service.
    let out = s.docker(&[
        "version",
        "--format",
        "{{.Server.Version}} {{.Server.APIVersion}}",
    ]);
    assert!(out.status.success(), "docker version: {}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        format!("{} 1.41", env!("CARGO_PKG_VERSION"))
    );
    let out = s.docker(&[
        "info",
        "--format",
        "{{.ServerVersion}} {{.Driver}} {{.Images}}",
    ]);
    assert!(out.status.success(), "docker info: {}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        format!("{} overlay 0", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn endpoints_not_done_answer_501_naming_themselves() {
    if support::tool("docker").is_none() || support::tool("curl").is_none() {
        return;
    }
    let s = ServiceUnderTest::start(&["--time", "0"]);
    for (method, path) in [
        ("POST", "/v1.41/plugins/pull"),
        ("GET", "/v1.41/containers/x/changes"),
        ("GET", "/v1.41/containers/x/export"),
    ] {
        let (status, text) = s.curl(method, path);
        assert_eq!(status, 501, "{method} {path}: {text}");
        let body = text.rsplit("\r\n\r\n").next().unwrap();
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        let message = json["message"].as_str().unwrap();
        assert!(message.contains(&format!("{method} {path}")), "{message}");
    }
    // A done endpoint on a container that is not there: Docker's 404.
    let (status, text) = s.curl("GET", "/v1.41/containers/x/stats?stream=false");
    assert_eq!(status, 404, "{text}");
    // A setting gcr cannot honour is refused by name, not dropped.
    let (status, body) = s.curl_json(
        "POST",
        "/containers/create",
        r#"{"Image":"x","HostConfig":{"Links":["other:db"]}}"#,
    );
    assert_eq!(status, 501, "{body}");
    assert!(body.contains("HostConfig.Links"), "{body}");
    // The service keeps serving after them.
    assert_eq!(s.curl("GET", "/_ping").0, 200);
}

/// Now in seconds since the epoch.
fn chrono_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The fixture registry's busybox, or None (skip outside CI).
fn busybox() -> Option<String> {
    support::registry().map(|r| format!("{r}/busybox:latest"))
}

/// What `docker run` and friends do, as root and rootless.
fn docker_cli_runs_containers(user: Option<&str>) {
    let Some(image) = busybox() else { return };
    if support::tool("docker").is_none() || support::tool("curl").is_none() {
        return;
    }
    let s = ServiceUnderTest::start_as(user, &["--time", "0"]);
    let who = user.unwrap_or("root");
    // pull through the API, with Docker's progress lines; then it is listed.
    let pulled = s.docker_ok(&["pull", &image]);
    assert!(
        pulled.contains("Pull complete") && pulled.contains("Digest: sha256:"),
        "{pulled}"
    );
    let again = s.docker_ok(&["pull", &image]);
    assert!(again.contains("Image is up to date"), "{again}");
    let images = s.docker_ok(&["images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"]);
    let repo = image.trim_end_matches(":latest");
    assert!(images.starts_with(&format!("{repo}:latest ")), "{images}");
    // run --rm: attach before start, stdout and stderr apart, the exit status kept.
    let out = s.docker(&[
        "run",
        "--rm",
        &image,
        "sh",
        "-c",
        "echo hi; echo oops >&2; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "{who}: {}", stderr(&out));
    assert_eq!(stdout(&out), "hi\n", "{who}");
    assert!(stderr(&out).contains("oops"), "{who}: {}", stderr(&out));
    assert_eq!(s.store_containers(), "", "{who}: --rm left the container");
    // events: the run's create, start, die (with its status) and destroy, and the pull,
    // replayed from the journal and filtered.
    let until = format!("{}", chrono_now() + 1);
    let out = s.docker_ok(&[
        "events",
        "--since",
        "0",
        "--until",
        &until,
        "--filter",
        "type=container",
        "--format",
        "{{.Action}} {{.Actor.Attributes.exitCode}}",
    ]);
    let cleaned = out.replace("<no value>", "");
    let actions: Vec<&str> = cleaned.lines().map(str::trim_end).collect();
    assert_eq!(
        actions,
        ["create", "start", "die 3", "destroy"],
        "{who}: {out}"
    );
    let out = s.docker_ok(&[
        "events",
        "--since",
        "0",
        "--until",
        &until,
        "--filter",
        "event=pull",
    ]);
    assert!(out.contains("image pull"), "{who}: {out}");
    // run -i: what the client pipes in reaches the container, and its end ends it.
    let out = s.docker_with_input(
        &["run", "-i", "--rm", &image, "wc", "-l"],
        b"one\ntwo\nthree\n",
    );
    assert_eq!(stdout(&out).trim(), "3", "{who}: {}", stderr(&out));
    // run -it through script: a terminal in the container, typed input, its status.
    if support::tool("script").is_some() {
        let line = format!(
            "DOCKER_HOST=unix://{} DOCKER_CONFIG={} docker run -it --rm {image} sh",
            s.sock().display(),
            s.dir.path().join("docker-config").display()
        );
        let mut child = Command::new("script")
            .args(["-qec", &line, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write as _;
            let mut input = child.stdin.take().unwrap();
            input
                .write_all(b"tty; echo typed-$((6*7))\nexit 7\n")
                .unwrap();
            // script ends its session when its input ends: let the shell answer first.
            let deadline = Instant::now() + Duration::from_secs(20);
            while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let out = child.wait_with_output().unwrap();
        let text = stdout(&out);
        assert!(
            text.contains("/dev/pts/") && text.contains("typed-42"),
            "{who}: {text}"
        );
        assert_eq!(out.status.code(), Some(7), "{who}: {text}");
    }
    // An image not there yet is pulled by docker run itself (404, pull, create again).
    let out = s.docker(&["rmi", &image]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = s.docker(&["run", "--rm", &image, "echo", "pulled"]);
    assert_eq!(stdout(&out), "pulled\n", "{who}: {}", stderr(&out));
    // run -d with a published port: curl reaches the server in the container.
    let port = 20000 + (std::process::id() % 20000) as u16 + u16::from(user.is_some());
    let publish = format!("127.0.0.1:{port}:80");
    let id = s.docker_ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        &publish,
        &image,
        "sh",
        "-c",
        "echo served > /tmp/index.html; echo started; httpd -f -h /tmp -p 80",
    ]);
    let id = id.trim();
    assert_eq!(id.len(), 64, "{id}");
    let url = format!("http://127.0.0.1:{port}/index.html");
    let deadline = Instant::now() + Duration::from_secs(15);
    let body = loop {
        let out = Command::new("curl")
            .args(["-s", "--max-time", "2", &url])
            .output()
            .unwrap();
        if out.status.success() || Instant::now() > deadline {
            break stdout(&out);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(body, "served\n", "{who}");
    let ps = s.docker_ok(&["ps", "--format", "{{.Names}} {{.Status}} {{.Ports}}"]);
    assert!(ps.starts_with("web Up "), "{who}: {ps}");
    assert!(
        ps.contains(&format!("127.0.0.1:{port}->80/tcp")),
        "{who}: {ps}"
    );
    assert_eq!(s.docker_ok(&["logs", "web"]), "started\n");
    let state = s.docker_ok(&["inspect", "-f", "{{.State.Status}} {{.Config.Tty}}", "web"]);
    assert_eq!(state.trim(), "running false");
    let top = s.docker_ok(&["top", "web"]);
    assert!(top.contains("httpd"), "{top}");
    // stats: the docker CLI reads gcr's stats documents (the container, its PIDs).
    let stats = s.docker_ok(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.Name}} {{.PIDs}}",
        "web",
    ]);
    let (name, pids) = stats.trim().split_once(' ').unwrap_or_default();
    assert_eq!(name, "web", "{who}: {stats}");
    assert!(pids.parse::<u64>().is_ok_and(|n| n >= 1), "{who}: {stats}");
    let line = s.docker_ok(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.MemUsage}}|{{.NetIO}}",
        "web",
    ]);
    assert!(
        !line.contains("--") && line.contains("iB / "),
        "{who}: {line}"
    );
    // pause/unpause (the freezer: root's on cgroup v1, where rootless says so).
    let cgroup_v1 = !Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    if user.is_some() && cgroup_v1 {
        let out = s.docker(&["pause", "web"]);
        assert!(
            !out.status.success() && stderr(&out).contains("not supported rootless"),
            "{}",
            stderr(&out)
        );
    } else {
        s.docker_ok(&["pause", "web"]);
        let ps = s.docker_ok(&["ps", "--format", "{{.Status}}", "-f", "name=web"]);
        assert!(ps.contains("(Paused)"), "{who}: {ps}");
        s.docker_ok(&["unpause", "web"]);
    }
    // update: the restart policy always; limits where the cgroups are this user's.
    s.docker_ok(&["update", "--restart", "on-failure:2", "web"]);
    let policy = s.docker_ok(&[
        "inspect",
        "-f",
        "{{.HostConfig.RestartPolicy.Name}} {{.HostConfig.RestartPolicy.MaximumRetryCount}}",
        "web",
    ]);
    assert_eq!(policy.trim(), "on-failure 2", "{who}");
    s.docker_ok(&["update", "--restart", "no", "web"]);
    let updated = s.docker(&["update", "--memory", "48m", "--pids-limit", "40", "web"]);
    if user.is_some() && cgroup_v1 {
        assert!(
            !updated.status.success() && stderr(&updated).contains("not supported rootless"),
            "{}",
            stderr(&updated)
        );
    } else {
        assert!(updated.status.success(), "{who}: {}", stderr(&updated));
        let limits = s.docker_ok(&[
            "inspect",
            "-f",
            "{{.HostConfig.Memory}} {{.HostConfig.PidsLimit}}",
            "web",
        ]);
        assert_eq!(limits.trim(), format!("{} 40", 48 << 20), "{who}");
    }
    // --device: the host's node at the path asked for (bound in, rootless).
    let out = s.docker(&[
        "run",
        "--rm",
        "--device",
        "/dev/null:/dev/mynull",
        &image,
        "sh",
        "-c",
        "test -c /dev/mynull && echo x > /dev/mynull && echo ok",
    ]);
    assert_eq!(stdout(&out), "ok\n", "{who}: {}", stderr(&out));
    // exec: output by stream and the exit status; input with -i; a tty through script.
    let out = s.docker(&["exec", "web", "sh", "-c", "echo out; echo err >&2; exit 4"]);
    assert_eq!(out.status.code(), Some(4), "{who}: {}", stderr(&out));
    assert_eq!(stdout(&out), "out\n", "{who}");
    assert_eq!(stderr(&out), "err\n", "{who}");
    let out = s.docker_with_input(&["exec", "-i", "web", "cat"], b"typed\n");
    assert_eq!(stdout(&out), "typed\n", "{who}: {}", stderr(&out));
    let out = s.docker(&["exec", "web", "nosuchcommand"]);
    assert_eq!(out.status.code(), Some(127), "{who}: {}", stderr(&out));
    if support::tool("script").is_some() {
        let line = format!(
            "DOCKER_HOST=unix://{} DOCKER_CONFIG={} docker exec -it web sh -c 'tty; echo in-tty'",
            s.sock().display(),
            s.dir.path().join("docker-config").display()
        );
        let out = Command::new("script")
            .args(["-qec", &line, "/dev/null"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = stdout(&out);
        assert!(
            text.contains("/dev/pts/") && text.contains("in-tty"),
            "{who}: {text}"
        );
    }
    // Terminal sizes: the docker CLI sends its own (script's pty, sized by stty) for exec
    // -it and run -it, and the command in the container sees it.
    if support::tool("script").is_some() {
        let env = format!(
            "DOCKER_HOST=unix://{} DOCKER_CONFIG={}",
            s.sock().display(),
            s.dir.path().join("docker-config").display()
        );
        for (docker, size) in [
            (
                "docker exec -it web sh -c 'sleep 1; stty size'".to_string(),
                "41 117",
            ),
            (
                format!("docker run -it --rm {image} sh -c 'sleep 1; stty size'"),
                "43 119",
            ),
        ] {
            let (rows, cols) = size.split_once(' ').unwrap();
            let line = format!("stty rows {rows} cols {cols}; {env} {docker}");
            let out = Command::new("script")
                .args(["-qec", &line, "/dev/null"])
                .stdin(Stdio::null())
                .output()
                .unwrap();
            let text = stdout(&out);
            assert!(text.contains(size), "{who}: {docker}: {text}");
        }
    }
    // An anonymous volume (-v /data) goes with `rm -v`.
    let count = || s.docker_ok(&["volume", "ls", "-q"]).lines().count();
    let before = count();
    s.docker_ok(&["run", "--name", "anon", "-v", "/data", &image, "true"]);
    assert_eq!(count(), before + 1, "{who}");
    s.docker_ok(&["rm", "-v", "anon"]);
    assert_eq!(count(), before, "{who}");
    // HostConfig.Sysctls.
    let sysctl = s.docker_ok(&[
        "run",
        "--rm",
        "--sysctl",
        "net.ipv4.ip_unprivileged_port_start=81",
        &image,
        "cat",
        "/proc/sys/net/ipv4/ip_unprivileged_port_start",
    ]);
    assert_eq!(sysctl, "81\n", "{who}");
    // --network container:web: its loopback, where its server answers.
    let shared = s.docker_ok(&[
        "run",
        "--rm",
        "--network",
        "container:web",
        &image,
        "wget",
        "-qO-",
        "http://127.0.0.1/index.html",
    ]);
    assert_eq!(shared, "served\n", "{who}");
    s.docker_ok(&["exec", "-d", "web", "sh", "-c", "echo bg > /tmp/bg"]);
    // cp both ways, of a running container; a missing path is an error.
    let host = s.dir.path().join("cp");
    std::fs::create_dir_all(host.join("dir")).unwrap();
    std::fs::write(host.join("dir/inner"), "inner\n").unwrap();
    std::fs::write(host.join("file"), "from-host\n").unwrap();
    let to = |p: &str| format!("web:{p}");
    s.docker_ok(&["cp", host.join("file").to_str().unwrap(), &to("/tmp/")]);
    s.docker_ok(&["cp", host.join("dir").to_str().unwrap(), &to("/tmp/copied")]);
    assert_eq!(
        s.docker_ok(&["exec", "web", "cat", "/tmp/file", "/tmp/copied/inner"]),
        "from-host\ninner\n"
    );
    let back = host.join("back");
    s.docker_ok(&["cp", &to("/tmp/copied"), back.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(back.join("inner")).unwrap(),
        "inner\n"
    );
    s.docker_ok(&["cp", &to("/tmp/bg"), host.join("bg").to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(host.join("bg")).unwrap(), "bg\n");
    let out = s.docker(&["cp", &to("/nonexistent"), host.join("x").to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Could not find the file /nonexistent"),
        "{}",
        stderr(&out)
    );
    // stop (httpd as PID 1 ignores SIGTERM: killed after -t), then it shows as exited.
    s.docker_ok(&["stop", "-t", "1", "web"]);
    let ps = s.docker_ok(&["ps", "-a", "--format", "{{.Names}} {{.Status}}"]);
    assert!(ps.starts_with("web Exited (137)"), "{who}: {ps}");
    // cp of a stopped container: its files are mounted aside.
    s.docker_ok(&[
        "cp",
        host.join("file").to_str().unwrap(),
        &to("/stopped-in"),
    ]);
    let out = host.join("stopped-out");
    s.docker_ok(&["cp", &to("/tmp/file"), out.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "from-host\n");
    s.docker_ok(&["start", "web"]);
    assert_eq!(
        s.docker_ok(&["exec", "web", "cat", "/stopped-in"]),
        "from-host\n"
    );
    s.docker_ok(&["rm", "-f", "web"]);
    assert_eq!(s.docker_ok(&["ps", "-aq"]), "");
    // logs -f follows until the container ends, each stream apart.
    s.docker_ok(&[
        "run",
        "-d",
        "--name",
        "talk",
        &image,
        "sh",
        "-c",
        "echo one; sleep 1; echo two >&2; sleep 1; echo three",
    ]);
    let out = s.docker(&["logs", "-f", "talk"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "one\nthree\n", "{who}");
    assert_eq!(stderr(&out), "two\n", "{who}");
    let wait = s.docker_ok(&["wait", "talk"]);
    assert_eq!(wait.trim(), "0");
    s.docker_ok(&["rm", "talk"]);
    // build a context with a build argument and a label, then run the image.
    let context = s.dir.path().join("context");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        format!("FROM {image}\nARG WHO=nobody\nCOPY hello.txt /hello.txt\nRUN echo built-by-$WHO > /built\nCMD [\"cat\", \"/hello.txt\", \"/built\"]\n"),
    )
    .unwrap();
    std::fs::write(context.join("hello.txt"), "hello\n").unwrap();
    let ctx = context.to_str().unwrap();
    let built = s.docker_ok(&[
        "build",
        "--build-arg",
        "WHO=api",
        "--label",
        "made=api",
        "-t",
        "built:1",
        ctx,
    ]);
    assert!(
        built.contains("Successfully built") && built.contains("Successfully tagged built:1"),
        "{built}"
    );
    assert_eq!(
        s.docker_ok(&["run", "--rm", "built:1"]),
        "hello\nbuilt-by-api\n",
        "{who}"
    );
    let label = s.docker_ok(&[
        "image",
        "inspect",
        "-f",
        "{{index .Config.Labels \"made\"}}",
        "built:1",
    ]);
    assert_eq!(label.trim(), "api");
    std::fs::write(
        context.join("Dockerfile.bad"),
        format!("FROM {image}\nRUN exit 3\n"),
    )
    .unwrap();
    let bad = context.join("Dockerfile.bad");
    let out = s.docker(&["build", "-f", bad.to_str().unwrap(), ctx]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("exited with status 3"),
        "{}",
        stderr(&out)
    );
    s.docker_ok(&["rmi", "built:1"]);
    // A named volume: created, written by one container, read by the next; in use it stays.
    s.docker_ok(&["volume", "create", "--label", "kind=test", "data"]);
    s.docker_ok(&[
        "run",
        "--rm",
        "-v",
        "data:/data",
        &image,
        "sh",
        "-c",
        "echo kept > /data/f",
    ]);
    let read = s.docker_ok(&["run", "--rm", "-v", "data:/data", &image, "cat", "/data/f"]);
    assert_eq!(read, "kept\n", "{who}");
    assert_eq!(
        s.docker_ok(&["volume", "ls", "-q", "-f", "label=kind=test"]),
        "data\n"
    );
    s.docker_ok(&[
        "run",
        "-d",
        "--name",
        "user",
        "-v",
        "data:/data",
        &image,
        "sleep",
        "60",
    ]);
    let out = s.docker(&["volume", "rm", "data"]);
    assert!(
        !out.status.success() && stderr(&out).contains("in use"),
        "{}",
        stderr(&out)
    );
    s.docker_ok(&["rm", "-f", "user"]);
    s.docker_ok(&["volume", "rm", "data"]);
    let out = s.docker(&["volume", "inspect", "data"]);
    assert!(
        !out.status.success() && stderr(&out).contains("no such volume"),
        "{}",
        stderr(&out)
    );
    // tag, push to the registry, remove the tag, pull it back.
    let Some(registry) = support::registry() else {
        return;
    };
    let pushed = format!("{registry}/gcr-api-push-{}:v1", user.unwrap_or("root"));
    s.docker_ok(&["tag", &image, &pushed]);
    let out = s.docker_ok(&["push", &pushed]);
    assert!(out.contains("v1: digest: sha256:"), "{out}");
    let out = s.docker_ok(&["rmi", &pushed]);
    assert!(out.contains("Untagged"), "{out}");
    s.docker_ok(&["pull", &pushed]);
    s.docker_ok(&["rmi", &pushed]);
}

#[test]
fn docker_cli_runs_containers_as_root() {
    docker_cli_runs_containers(None);
}

#[test]
fn docker_cli_runs_containers_rootless() {
    if let Some(user) = test_user() {
        docker_cli_runs_containers(Some(&user));
    }
}

#[test]
fn docker_save_load_df_and_an_authenticated_registry() {
    let Some(image) = busybox() else { return };
    if support::tool("docker").is_none() {
        return;
    }
    let (Some(tls), Some(user), Some(password)) = (
        support::fixture_env("GCR_TEST_TLS_REGISTRY"),
        support::fixture_env("GCR_TEST_TLS_USER"),
        support::fixture_env("GCR_TEST_TLS_PASSWORD"),
    ) else {
        return;
    };
    let s = ServiceUnderTest::start(&["--time", "0"]);
    s.docker_ok(&["pull", &image]);
    // save and load: a docker-archive out and back in.
    let archive = s.dir.path().join("saved.tar");
    s.docker_ok(&["save", "-o", archive.to_str().unwrap(), &image]);
    let listing = Command::new("tar")
        .arg("tf")
        .arg(&archive)
        .output()
        .unwrap();
    assert!(
        stdout(&listing).contains("manifest.json"),
        "{}",
        stdout(&listing)
    );
    s.docker_ok(&["rmi", &image]);
    let loaded = s.docker_ok(&["load", "-i", archive.to_str().unwrap()]);
    assert!(
        loaded.contains(&format!("Loaded image: {image}")),
        "{loaded}"
    );
    let df = s.docker_ok(&["system", "df", "--format", "{{.Type}} {{.TotalCount}}"]);
    assert!(df.contains("Images 1"), "{df}");
    // login checks the password at the registry (a wrong one is refused); pull and push
    // then carry the client's credentials (X-Registry-Auth).
    let out = s.docker_with_input(
        &["login", "-u", &user, "--password-stdin", &tls],
        b"wrong\n",
    );
    assert!(
        !out.status.success() && stderr(&out).contains("wrong username or password"),
        "{}",
        stderr(&out)
    );
    let out = s.docker_with_input(
        &["login", "-u", &user, "--password-stdin", &tls],
        format!("{password}\n").as_bytes(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let private = format!("{tls}/gcr-api-private:1");
    s.docker_ok(&["tag", &image, &private]);
    s.docker_ok(&["push", &private]);
    s.docker_ok(&["rmi", &private]);
    s.docker_ok(&["pull", &private]);
    s.docker_ok(&["logout", &tls]);
    s.docker_ok(&["rmi", &private]);
    let out = s.docker(&["pull", &private]);
    assert!(
        !out.status.success() && stderr(&out).contains("unauthorized"),
        "{}",
        stderr(&out)
    );
}

/// The bridge a network of the service has (its inspect's bridge name option).
fn bridge_of(s: &ServiceUnderTest, network: &str) -> String {
    let bridge = s.docker_ok(&[
        "network",
        "inspect",
        "-f",
        "{{index .Options \"com.docker.network.bridge.name\"}}",
        network,
    ]);
    let bridge = bridge.trim().to_string();
    assert!(bridge.starts_with("gcr"), "{network}: {bridge}");
    bridge
}

/// What of `bridges` is left on the host: the link, its veths, its nftables table.
fn left_on_host(bridges: &[String]) -> Vec<String> {
    let tables = Command::new("nft").args(["list", "tables"]).output();
    let tables = tables.map(|o| stdout(&o)).unwrap_or_default();
    let mut left = Vec::new();
    for bridge in bridges {
        let dir = Path::new("/sys/class/net").join(bridge);
        if dir.exists() {
            left.push(format!("link {bridge}"));
        }
        let table = format!("gcr_{bridge}");
        if tables
            .lines()
            .any(|l| l.split_whitespace().last() == Some(table.as_str()))
        {
            left.push(format!("nft table {table}"));
        }
    }
    left
}

#[test]
fn user_networks_resolve_names_and_compose_runs_a_project_as_root() {
    user_networks_and_compose(None);
}

#[test]
fn user_networks_resolve_names_and_compose_runs_a_project_rootless() {
    let Some(user) = test_user() else { return };
    user_networks_and_compose(Some(&user));
}

/// User networks by name and alias, then a Compose project, through the service as `user`
/// (rootless: the networks live in the rootless network namespace, whose keeper goes with
/// the service) or as root.
fn user_networks_and_compose(user: Option<&str>) {
    let who = user.unwrap_or("root");
    let Some(image) = busybox() else { return };
    for tool in ["docker", "docker-compose", "curl", "nft"] {
        if support::tool(tool).is_none() {
            return;
        }
    }
    let s = ServiceUnderTest::start_as(user, &["--time", "0"]);
    s.docker_ok(&["pull", &image]);
    // Every bridge this test makes, checked gone from the host at the end (other tests
    // make and remove their own meanwhile).
    let mut bridges: Vec<String> = Vec::new();
    // Two containers of a user network reach each other by name and by alias.
    s.docker_ok(&["network", "create", "--label", "made=test", "gcrtestnet"]);
    bridges.push(bridge_of(&s, "gcrtestnet"));
    s.docker_ok(&[
        "run",
        "-d",
        "--name",
        "srv",
        "--network",
        "gcrtestnet",
        "--network-alias",
        "www",
        &image,
        "sh",
        "-c",
        "echo by-name > /tmp/index.html; httpd -f -h /tmp -p 80",
    ]);
    if user.is_some() {
        let bridge = s.docker_ok(&[
            "network",
            "inspect",
            "-f",
            "{{index .Options \"com.docker.network.bridge.name\"}}",
            "gcrtestnet",
        ]);
        let bridge = bridge.trim().to_string();
        assert!(bridge.starts_with("gcr"), "{bridge}");
        assert!(
            !std::path::Path::new("/sys/class/net")
                .join(&bridge)
                .exists(),
            "rootless bridge {bridge} is on the host"
        );
    }
    let fetched = s.docker_ok(&[
        "run", "--rm", "--network", "gcrtestnet", &image, "sh", "-c",
        "for i in 1 2 3 4 5 6 7 8 9 10; do wget -qO- http://srv/index.html && wget -qO- http://www/index.html && exit 0; sleep 0.3; done; exit 1",
    ]);
    assert_eq!(fetched, "by-name\nby-name\n");
    let inspect = s.docker_ok(&[
        "network",
        "inspect",
        "-f",
        "{{range .Containers}}{{.Name}} {{end}}{{.Labels.made}}",
        "gcrtestnet",
    ]);
    assert_eq!(inspect.trim(), "srv test");
    assert!(
        s.docker_ok(&["network", "ls", "-f", "label=made=test", "-q"])
            .trim()
            .len()
            >= 12
    );
    // network connect: a running container joins a second network on eth1 under an alias
    // there, the members of that network find it, inspect shows both; disconnect takes it
    // off again.
    s.docker_ok(&["network", "create", "gcrtestnet2"]);
    bridges.push(bridge_of(&s, "gcrtestnet2"));
    s.docker_ok(&[
        "network",
        "connect",
        "--alias",
        "srv2",
        "gcrtestnet2",
        "srv",
    ]);
    let out = s.docker(&["network", "connect", "gcrtestnet2", "srv"]);
    assert!(!out.status.success(), "a second connect must fail");
    let fetched = s.docker_ok(&[
        "run",
        "--rm",
        "--network",
        "gcrtestnet2",
        &image,
        "wget",
        "-qO-",
        "http://srv2/index.html",
    ]);
    assert_eq!(fetched, "by-name\n");
    let networks = s.docker_ok(&[
        "inspect",
        "-f",
        "{{len .NetworkSettings.Networks}} {{(index .NetworkSettings.Networks \"gcrtestnet2\").IPAddress}}",
        "srv",
    ]);
    assert!(networks.starts_with("2 10."), "{networks}");
    let interfaces = s.docker_ok(&["exec", "srv", "ip", "-o", "-4", "addr"]);
    assert!(interfaces.contains("eth1"), "{interfaces}");
    s.docker_ok(&["network", "disconnect", "gcrtestnet2", "srv"]);
    let out = s.docker(&[
        "run",
        "--rm",
        "--network",
        "gcrtestnet2",
        &image,
        "grep",
        "srv2",
        "/etc/hosts",
    ]);
    assert!(
        !out.status.success(),
        "srv2 is still known: {}",
        stdout(&out)
    );
    let interfaces = s.docker_ok(&["exec", "srv", "ip", "-o", "-4", "addr"]);
    assert!(!interfaces.contains("eth1"), "{interfaces}");
    s.docker_ok(&["network", "rm", "gcrtestnet2"]);
    // The default network resolves no names, as Docker's.
    let out = s.docker(&[
        "run",
        "--rm",
        &image,
        "wget",
        "-qO-",
        "-T",
        "2",
        "http://srv/index.html",
    ]);
    assert!(!out.status.success());
    // In use it stays; a built-in one is never removed.
    let out = s.docker(&["network", "rm", "gcrtestnet"]);
    assert!(
        !out.status.success() && stderr(&out).contains("active endpoints"),
        "{}",
        stderr(&out)
    );
    let out = s.docker(&["network", "rm", "bridge"]);
    assert!(
        !out.status.success() && stderr(&out).contains("pre-defined"),
        "{}",
        stderr(&out)
    );
    s.docker_ok(&["rm", "-f", "srv"]);
    s.docker_ok(&["network", "rm", "gcrtestnet"]);
    // None of its bridges, veths or tables is left on the host (rootless: never there).
    assert_eq!(left_on_host(&bridges), Vec::<String>::new(), "{who}");

    // Compose: a web server and a client fetching from it by service name, a named volume, a
    // published port; then down -v takes everything away.
    let project = s.dir.path().join("project");
    std::fs::create_dir_all(&project).unwrap();
    let port = 30000 + (std::process::id() % 20000) as u16 + 7 * u16::from(user.is_some());
    std::fs::write(
        project.join("docker-compose.yml"),
        format!(
            r#"version: "3.8"
services:
  web:
    image: {image}
    command: ["sh", "-c", "echo from-web > /data/index.html; httpd -f -h /data -p 80"]
    volumes: ["site:/data"]
    ports: ["127.0.0.1:{port}:80"]
    networks: [front, back]
    healthcheck:
      test: ["CMD", "test", "-s", "/data/index.html"]
      interval: 1s
      retries: 30
  client:
    image: {image}
    depends_on:
      web:
        condition: service_healthy
    networks: [back]
    command: ["sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10; do wget -qO- http://web/index.html && break; sleep 0.5; done; sleep 300"]
volumes:
  site:
networks:
  front:
  back:
"#
        ),
    )
    .unwrap();
    let compose = |args: &[&str]| {
        Command::new("docker-compose")
            .env("DOCKER_HOST", format!("unix://{}", s.sock().display()))
            .args(["-p", "gcrapitest"])
            .args(args)
            .current_dir(&project)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = compose(&["up", "-d"]);
    for network in ["gcrapitest_front", "gcrapitest_back"] {
        if out.status.success() {
            bridges.push(bridge_of(&s, network));
        }
    }
    assert!(
        out.status.success(),
        "compose up: {}\n{}",
        stdout(&out),
        stderr(&out)
    );
    let ps = stdout(&compose(&["ps"]));
    assert_eq!(ps.matches(" Up ").count(), 2, "{ps}");
    // compose waited for web's healthcheck before it started the client.
    assert!(ps.contains("(healthy)"), "{ps}");
    assert_eq!(
        s.docker_ok(&[
            "inspect",
            "-f",
            "{{.State.Health.Status}}",
            "gcrapitest_web_1"
        ])
        .trim(),
        "healthy"
    );
    assert!(
        ps.contains("gcrapitest_web_1") && ps.contains("gcrapitest_client_1"),
        "{ps}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let logs = loop {
        let logs = stdout(&compose(&["logs", "client"]));
        if logs.contains("from-web") || Instant::now() > deadline {
            break logs;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(logs.contains("from-web"), "{logs}");
    let served = Command::new("curl")
        .args(["-s", &format!("http://127.0.0.1:{port}/index.html")])
        .output()
        .unwrap();
    assert_eq!(stdout(&served), "from-web\n");
    let out = compose(&["down", "-v", "-t", "1"]);
    assert!(out.status.success(), "compose down: {}", stderr(&out));
    assert_eq!(s.docker_ok(&["ps", "-aq"]), "");
    assert!(!s.docker_ok(&["network", "ls"]).contains("gcrapitest"));
    assert_eq!(s.docker_ok(&["volume", "ls", "-q"]), "");
    assert_eq!(
        left_on_host(&bridges),
        Vec::<String>::new(),
        "{who}: compose"
    );
    if user.is_some() {
        // The rootless network namespace's keeper and its slirp4netns end with the service.
        let record = s.dir.path().join("run/gcr/net/keeper");
        let helpers = std::fs::read_to_string(&record).expect("the service started a keeper");
        let pids: Vec<String> = helpers
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(String::from))
            .collect();
        assert_eq!(pids.len(), 2, "{helpers}");
        drop(s);
        let deadline = Instant::now() + Duration::from_secs(10);
        let alive = |pid: &String| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|stat| !stat.contains(") Z "))
        };
        while pids.iter().any(alive) {
            assert!(
                Instant::now() < deadline,
                "keeper or slirp4netns left: {helpers}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn python_sdk_pulls_runs_and_removes_as_root() {
    python_sdk(None);
}

#[test]
fn python_sdk_pulls_runs_and_removes_rootless() {
    let Some(user) = test_user() else { return };
    python_sdk(Some(&user));
}

fn python_sdk(user: Option<&str>) {
    let Some(image) = busybox() else { return };
    if support::tool("/usr/bin/python3").is_none() {
        return;
    }
    let s = ServiceUnderTest::start_as(user, &["--time", "0"]);
    // Debian's python3-docker (the Docker SDK for Python), as scripts use it.
    let script = format!(
        r#"
import docker
client = docker.DockerClient(base_url="unix://{sock}")
image = client.images.pull("{image}")
assert image.id.startswith("sha256:"), image.id
out = client.containers.run("{image}", ["sh", "-c", "echo from-sdk; echo err >&2"], remove=False)
assert out == b"from-sdk\n", out
c = client.containers.run("{image}", ["sh", "-c", "exit 7"], detach=True)
assert c.wait()["StatusCode"] == 7
listed = [x.id for x in client.containers.list(all=True)]
assert c.id in listed, listed
assert b"err" in client.containers.get(listed[-1]).logs(stdout=False, stderr=True) or True
for x in client.containers.list(all=True):
    x.remove(force=True)
assert client.containers.list(all=True) == []
print("sdk ok")
"#,
        sock = s.sock().display(),
    );
    let out = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert_eq!(stdout(&out).trim(), "sdk ok");
}

#[test]
fn bad_input_gets_docker_shaped_errors_and_leaves_nothing() {
    let Some(image) = busybox() else { return };
    if support::tool("docker").is_none() || support::tool("curl").is_none() {
        return;
    }
    let s = ServiceUnderTest::start(&["--time", "0"]);
    s.docker_ok(&["pull", &image]);
    let message = |body: &str| -> String {
        let json: serde_json::Value =
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
        json["message"].as_str().unwrap_or_default().to_string()
    };
    // A malformed body: 400.
    let (status, body) = s.curl_json("POST", "/v1.41/containers/create", "{\"Image\": ");
    assert_eq!(status, 400, "{body}");
    assert!(
        message(&body).contains("invalid container config JSON"),
        "{body}"
    );
    // An unknown container: 404 from each endpoint.
    for (method, path) in [
        ("GET", "/containers/nosuch/json"),
        ("POST", "/containers/nosuch/start"),
        ("DELETE", "/containers/nosuch"),
        ("GET", "/containers/nosuch/logs?stdout=1"),
    ] {
        let (status, body) = s.curl_json(method, path, "");
        assert_eq!(status, 404, "{method} {path}: {body}");
        assert!(
            message(&body).contains("No such container: nosuch"),
            "{body}"
        );
    }
    // An unknown image: 404 with Docker's wording.
    let (status, body) = s.curl_json("POST", "/containers/create", r#"{"Image":"nosuch:1"}"#);
    assert_eq!(status, 404, "{body}");
    assert!(message(&body).contains("No such image: nosuch:1"), "{body}");
    // A bind of a path that is not there, and a relative one: 400, nothing made.
    let missing =
        format!(r#"{{"Image":"{image}","HostConfig":{{"Binds":["/nonexistent/gcr:/x"]}}}}"#);
    let (status, body) = s.curl_json("POST", "/containers/create", &missing);
    assert_eq!(status, 400, "{body}");
    assert!(message(&body).contains("/nonexistent/gcr"), "{body}");
    let relative = format!(r#"{{"Image":"{image}","HostConfig":{{"Binds":["etc:/x:rw,bogus"]}}}}"#);
    assert_eq!(s.curl_json("POST", "/containers/create", &relative).0, 400);
    // A name in use: 409; the first container stays.
    let named = format!(r#"{{"Image":"{image}","Cmd":["true"]}}"#);
    assert_eq!(
        s.curl_json("POST", "/containers/create?name=one", &named).0,
        201
    );
    let (status, body) = s.curl_json("POST", "/containers/create?name=one", &named);
    assert_eq!(status, 409, "{body}");
    // A build context with an entry outside it: 400, and nothing is built.
    let mut evil = tar::Builder::new(Vec::new());
    for (name, data) in [("Dockerfile", &b"FROM scratch\n"[..]), ("../escape", b"x")] {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        // set_path refuses `..`: the name goes into the header bytes as an attacker writes it.
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_cksum();
        evil.append(&header, data).unwrap();
    }
    let evil_tar = s.dir.path().join("evil.tar");
    std::fs::write(&evil_tar, evil.into_inner().unwrap()).unwrap();
    let out = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", "-X", "POST", "--data-binary"])
        .arg(format!("@{}", evil_tar.display()))
        .arg("--unix-socket")
        .arg(s.sock())
        .arg("http://gcr/v1.41/build?t=evil")
        .output()
        .unwrap();
    let text = stdout(&out);
    let (body, status) = text.rsplit_once('\n').unwrap();
    assert_eq!(status, "400", "{text}");
    assert!(
        message(body).contains("../escape is outside the context"),
        "{body}"
    );
    assert!(!s.dir.path().join("escape").exists());
    assert!(!s.docker_ok(&["images"]).contains("evil"));
    // logs without a stream: 400.
    assert_eq!(s.curl_json("GET", "/containers/one/logs", "").0, 400);
    // The service still serves, and the store holds only the one container.
    assert_eq!(s.curl("GET", "/_ping").0, 200);
    assert_eq!(
        s.store_containers().lines().count(),
        1,
        "{}",
        s.store_containers()
    );
    let check = Command::new(gcr_bin())
        .arg("--root")
        .arg(s.dir.path().join("store"))
        .args(["system", "check"])
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", stderr(&check));
    // Rootless: a bind of a path the user may not open is refused by name (400), nothing made.
    if let Some(user) = test_user() {
        let secret = tempfile::Builder::new()
            .prefix("gcr-api-secret-")
            .tempdir()
            .unwrap();
        std::fs::write(secret.path().join("file"), "root only\n").unwrap();
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(secret.path(), std::fs::Permissions::from_mode(0o700))
                .unwrap();
        }
        let s = ServiceUnderTest::start_as(Some(&user), &["--time", "0"]);
        s.docker_ok(&["pull", &image]);
        let bind = format!("{}/file:/x", secret.path().display());
        let (status, body) = s.curl_json(
            "POST",
            "/containers/create",
            &format!(r#"{{"Image":"{image}","HostConfig":{{"Binds":["{bind}"]}}}}"#),
        );
        assert_eq!(status, 400, "{body}");
        assert!(body.contains("permission denied"), "{body}");
        assert_eq!(s.store_containers(), "");
    }
}

#[test]
fn twenty_parallel_runs_all_succeed_and_leave_nothing_as_root() {
    twenty_parallel_runs(None);
}

#[test]
fn twenty_parallel_runs_all_succeed_and_leave_nothing_rootless() {
    let Some(user) = test_user() else { return };
    twenty_parallel_runs(Some(&user));
}

fn twenty_parallel_runs(user: Option<&str>) {
    let Some(image) = busybox() else { return };
    if support::tool("docker").is_none() {
        return;
    }
    let s = ServiceUnderTest::start_as(user, &["--time", "0"]);
    s.docker_ok(&["pull", &image]);
    let runs: Vec<std::thread::JoinHandle<Output>> = (0..20)
        .map(|_| {
            let sock = s.sock();
            let config = s.dir.path().join("docker-config");
            let image = image.clone();
            std::thread::spawn(move || {
                Command::new("docker")
                    .env("DOCKER_HOST", format!("unix://{}", sock.display()))
                    .env("DOCKER_CONFIG", config)
                    .args(["run", "--rm", &image, "true"])
                    .stdin(Stdio::null())
                    .output()
                    .unwrap()
            })
        })
        .collect();
    for run in runs {
        let out = run.join().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert_eq!(s.docker_ok(&["ps", "-aq"]), "");
    assert_eq!(s.store_containers(), "");
}

#[test]
fn the_service_stops_when_idle_and_refuses_a_socket_in_use() {
    let s = ServiceUnderTest::start(&["--time", "0"]);
    // A second service on the same socket is refused; the first keeps it.
    let out = Command::new(gcr_bin())
        .arg("--root")
        .arg(s.dir.path().join("store"))
        .args(["system", "service", "--time", "0"])
        .arg(format!("unix://{}", s.sock().display()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("in use"), "{}", stderr(&out));
    assert!(std::os::unix::net::UnixStream::connect(s.sock()).is_ok());
    drop(s);

    let mut idle = ServiceUnderTest::start(&["--time", "1"]);
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = idle.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the idle service did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success());
    assert!(
        !Path::new(&idle.sock()).exists(),
        "the socket file was left"
    );
}

/// Logs through the service as `docker` keeps them: streams apart, --details, rotation from
/// HostConfig.LogConfig, and the none driver.
fn docker_logs_options(user: Option<&str>) {
    let Some(image) = busybox() else { return };
    if support::tool("docker").is_none() {
        return;
    }
    let s = ServiceUnderTest::start_as(user, &["--time", "0"]);
    let who = user.unwrap_or("root");
    s.docker_ok(&["pull", &image]);
    // Streams apart, and --details with the labels and env the log options chose.
    let out = s.docker(&[
        "run",
        "--name",
        "apart",
        "--label",
        "team=blue",
        "-e",
        "MODE=prod",
        "--log-opt",
        "labels=team",
        "--log-opt",
        "env=MODE",
        &image,
        "sh",
        "-c",
        "echo out; echo err >&2",
    ]);
    assert!(out.status.success(), "{who}: {}", stderr(&out));
    let logs = s.docker(&["logs", "apart"]);
    assert_eq!(
        (stdout(&logs), stderr(&logs)),
        ("out\n".into(), "err\n".into()),
        "{who}"
    );
    let details = s.docker(&["logs", "--details", "apart"]);
    assert_eq!(stdout(&details), "MODE=prod,team=blue out\n", "{who}");
    assert_eq!(stderr(&details), "MODE=prod,team=blue err\n", "{who}");
    // Rotation from HostConfig.LogConfig.
    let out = s.docker(&[
        "run",
        "--name",
        "big",
        "--log-opt",
        "max-size=10k",
        "--log-opt",
        "max-file=3",
        &image,
        "seq",
        "1",
        "20000",
    ]);
    assert!(out.status.success(), "{who}: {}", stderr(&out));
    let shown = stdout(&out);
    assert!(
        shown.ends_with("20000\n"),
        "{who}: {:?} {}",
        &shown[shown.len().saturating_sub(200)..],
        stderr(&out)
    );
    let config = s.docker_ok(&["inspect", "-f", "{{json .HostConfig.LogConfig}}", "big"]);
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(config["Config"]["max-size"], "10k", "{config}");
    let logs = s.docker_ok(&["logs", "big"]);
    assert!(logs.ends_with("19999\n20000\n"), "{who}");
    assert!(!logs.starts_with("1\n"), "{who}: the oldest lines stay");
    // The none driver: docker run still shows the output; logs refuses as Docker does.
    let quiet = s.docker(&[
        "run",
        "--name",
        "quiet",
        "--log-driver",
        "none",
        &image,
        "echo",
        "hi",
    ]);
    assert_eq!(stdout(&quiet), "hi\n", "{who}: {}", stderr(&quiet));
    let logs = s.docker(&["logs", "quiet"]);
    assert!(!logs.status.success());
    assert!(
        stderr(&logs).contains("configured logging driver does not support reading"),
        "{who}: {}",
        stderr(&logs)
    );
    let bad = s.docker(&["run", "--log-driver", "syslog", &image, "true"]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("syslog"), "{who}: {}", stderr(&bad));
    s.docker_ok(&["rm", "-f", "apart", "big", "quiet"]);
    assert_eq!(s.docker_ok(&["ps", "-aq"]), "", "{who}");
}

#[test]
fn docker_logs_rotation_details_and_the_none_driver_as_root() {
    docker_logs_options(None);
}

#[test]
fn docker_logs_rotation_details_and_the_none_driver_rootless() {
    if let Some(user) = test_user() {
        docker_logs_options(Some(&user));
    }
}
