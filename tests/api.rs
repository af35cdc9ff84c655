//! `gcr system service`: the Docker Engine API on a socket, driven by the real docker client
//! and curl. The endpoints not done yet must answer 501 naming themselves.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{gcr_bin, stderr, stdout};

/// A service on a private socket over a private store; stopped on drop.
struct ServiceUnderTest {
    dir: tempfile::TempDir,
    child: Child,
}

impl ServiceUnderTest {
    fn start(extra: &[&str]) -> ServiceUnderTest {
        let dir = tempfile::Builder::new()
            .prefix("gcr-api-test-")
            .tempdir()
            .unwrap();
        let sock = dir.path().join("gcr.sock");
        let child = Command::new(gcr_bin())
            .arg("--root")
            .arg(dir.path().join("store"))
            .args(["system", "service"])
            .args(extra)
            .arg(format!("unix://{}", sock.display()))
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
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
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
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
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
        ("GET", "/v1.41/containers/json"),
        ("POST", "/containers/create"),
        ("GET", "/v1.41/images/json"),
        ("POST", "/v1.41/build"),
    ] {
        let (status, text) = s.curl(method, path);
        assert_eq!(status, 501, "{method} {path}: {text}");
        let body = text.rsplit("\r\n\r\n").next().unwrap();
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        let message = json["message"].as_str().unwrap();
        assert!(message.contains(&format!("{method} {path}")), "{message}");
    }
    // The docker client shows the message and fails: never a wrong success.
    let out = s.docker(&["ps"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("does not implement GET /v1.41/containers/json"),
        "{}",
        stderr(&out)
    );
    // The service keeps serving after them.
    assert_eq!(s.curl("GET", "/_ping").0, 200);
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
