//! gcr-oci driven by the real callers of an OCI runtime: Podman (`--runtime`, through conmon)
//! and containerd (`ctr run --runc-binary`, through its runc shim), against the fixture
//! registry and the private containerd of tests/fixtures/containerd.sh.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{in_ci, stderr, stdout};

fn oci_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gcr-oci"))
}

fn gcr_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gcr"))
}

/// Root and the tool; in CI a missing one fails, elsewhere it skips.
fn need(tool: &str) -> bool {
    if !nix::unistd::geteuid().is_root() {
        assert!(!in_ci(), "the OCI caller tests must run as root in CI");
        eprintln!("SKIP: not root");
        return false;
    }
    support::tool(tool).is_some()
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{}", std::process::id(), nanos % 1_000_000_000)
}

/// Podman with a store of its own (root, runroot and tmpdir in a temp dir: the machine's
/// store and /run/libpod stay untouched) and gcr-oci as runtime. gcr-oci keeps its default
/// state root (/run/gcr-oci): podman hands `--runtime-flag root=DIR` on to create, start,
/// exec and kill, but not to the `delete --force` of the `podman container cleanup` conmon
/// runs at exit, so a private root would leave every record (and cgroup) behind.
struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    fn new() -> Podman {
        Podman {
            dir: tempfile::Builder::new()
                .prefix("gcr-oci-podman-")
                .tempdir()
                .unwrap(),
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("podman");
        cmd.arg("--root")
            .arg(self.dir.path().join("storage"))
            .arg("--runroot")
            .arg(self.dir.path().join("run"))
            .arg("--tmpdir")
            .arg(self.dir.path().join("tmp"))
            .arg("--runtime")
            .arg(oci_bin())
            .args(args);
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).stdin(Stdio::null()).output().unwrap()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Not `podman system reset`: it also removes every network but the default one from
        // /etc/containers/networks, which belongs to the machine.
        let _ = self.run(&["rm", "--all", "--force", "--time", "0"]);
        // conmon and the `podman container cleanup` it starts (the runtime's delete) name
        // this store on their command lines: let them finish before the store goes.
        let dir = self.dir.path().display().to_string();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !procs_mentioning(&dir).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut points: Vec<&str> = info
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|p| p.starts_with(&format!("{dir}/")))
            .collect();
        points.sort_unstable_by(|a, b| b.cmp(a));
        for point in points {
            let _ = Command::new("umount").args(["-l", point]).status();
        }
    }
}

/// Pids of other processes whose command line contains `needle`.
fn procs_mentioning(needle: &str) -> Vec<u32> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            (pid != me && String::from_utf8_lossy(&cmdline).contains(needle)).then_some(pid)
        })
        .collect()
}

/// Removes the cgroup directories ctr's default cgroup path (/<namespace>[/<id>]) made in
/// every v1 hierarchy, when empty (the runtime's delete removes a container's own one).
fn remove_cgroups(relative: &str) {
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        let _ = std::fs::remove_dir(hierarchy.path().join(relative));
    }
}

#[test]
fn podman_runs_containers_with_gcr_oci() {
    let Some(registry) = support::registry() else {
        return;
    };
    if !need("podman") || !need("script") {
        return;
    }
    let image = format!("{registry}/busybox:latest");
    let p = Podman::new();
    let out = p.run(&["pull", "-q", "--tls-verify=false", &image]);
    assert!(out.status.success(), "pull: {}", stderr(&out));

    // Exit statuses are carried: true, false, a chosen one, a missing command.
    for (cmd, want) in [
        (vec!["true"], 0),
        (vec!["false"], 1),
        (vec!["sh", "-c", "echo out; exit 7"], 7),
        (vec!["/no/such/command"], 127),
    ] {
        let mut args = vec!["run", "--rm", &image];
        args.extend(cmd.iter().copied());
        let out = p.run(&args);
        assert_eq!(
            out.status.code(),
            Some(want),
            "podman run {cmd:?}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        if want == 7 {
            assert_eq!(stdout(&out), "out\n");
        }
    }

    // -it through script(1): the container's stdin and stdout are a pty (conmon's, from the
    // console socket). Its stdin is an open, empty pipe (a /dev/null stdin can lose output).
    let line = format!(
        "{} -it --rm {image} sh -c 'tty; echo in-a-tty'",
        shell_words(&p.cmd(&["run"]))
    );
    let mut child = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take();
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "podman run -it: {text}{}",
        stderr(&out)
    );
    assert!(text.contains("/dev/pts/"), "{text}");
    assert!(text.contains("in-a-tty"), "{text}");

    // -d, exec (status and output carried), stop, rm.
    let out = p.run(&["run", "-d", &image, "sleep", "60"]);
    assert!(out.status.success(), "run -d: {}", stderr(&out));
    let id = stdout(&out).trim().to_string();
    let out = p.run(&["exec", &id, "sh", "-c", "echo in-exec; exit 6"]);
    assert_eq!(out.status.code(), Some(6), "exec: {}", stderr(&out));
    assert_eq!(stdout(&out), "in-exec\n");
    let out = p.run(&["stop", "-t", "1", &id]);
    assert!(out.status.success(), "stop: {}", stderr(&out));
    let out = p.run(&["inspect", "-f", "{{.State.Status}}", &id]);
    assert_eq!(stdout(&out).trim(), "exited", "{}", stderr(&out));
    let out = p.run(&["rm", &id]);
    assert!(out.status.success(), "rm: {}", stderr(&out));

    // --memory: the container sees its own limit.
    let file = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "/sys/fs/cgroup/memory.max"
    } else {
        "/sys/fs/cgroup/memory/memory.limit_in_bytes"
    };
    let out = p.run(&["run", "--rm", "--memory", "64m", &image, "cat", file]);
    assert!(out.status.success(), "--memory: {}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "67108864");
}

/// A command as one shell line (for script -c).
fn shell_words(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| format!("'{}'", a.to_string_lossy().replace('\'', "'\\''")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The private containerd of the fixtures (started by tests/run.sh; started here when a
/// developer runs this test alone).
fn containerd_socket() -> Option<String> {
    if let Ok(sock) = std::env::var("GCR_TEST_CONTAINERD") {
        if !sock.is_empty() {
            return Some(sock);
        }
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/containerd.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("start")
        .output()
        .unwrap();
    if !out.status.success() {
        assert!(!in_ci(), "containerd.sh start failed: {}", stderr(&out));
        eprintln!("SKIP: containerd.sh start failed: {}", stderr(&out));
        return None;
    }
    Some(stdout(&out).trim().to_string())
}

struct Ctr {
    sock: String,
    namespace: String,
    runc_root: tempfile::TempDir,
    ids: Vec<String>,
}

impl Ctr {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.args(["--address", &self.sock, "--namespace", &self.namespace])
            .args(args);
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).stdin(Stdio::null()).output().unwrap()
    }

    fn task_status(&self, id: &str) -> String {
        let out = self.run(&["task", "ls"]);
        stdout(&out)
            .lines()
            .find(|l| l.split_whitespace().next() == Some(id))
            .and_then(|l| l.split_whitespace().nth(2).map(str::to_string))
            .unwrap_or_default()
    }

    fn wait_status(&self, id: &str, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.task_status(id) != want {
            assert!(
                Instant::now() < deadline,
                "task {id} is {:?}, not {want}",
                self.task_status(id)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Ctr {
    fn drop(&mut self) {
        for id in &self.ids {
            let _ = self.run(&["task", "kill", "-s", "SIGKILL", id]);
            std::thread::sleep(Duration::from_millis(100));
            let _ = self.run(&["task", "delete", "--force", id]);
            let _ = self.run(&["container", "rm", id]);
            remove_cgroups(&format!("{}/{id}", self.namespace));
        }
        let out = self.run(&["images", "ls", "-q"]);
        for image in stdout(&out).lines() {
            let _ = self.run(&["images", "rm", image]);
        }
        // containerd refuses to remove a namespace until its garbage collector has dropped
        // the image's content and snapshots, a moment after `images rm`.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self
            .run(&["namespaces", "rm", &self.namespace.clone()])
            .status
            .success()
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        // The namespace's parent cgroups (a fresh name each run: they would pile up).
        remove_cgroups(&self.namespace);
    }
}

#[test]
fn containerd_runs_containers_with_gcr_oci() {
    let Some(registry) = support::registry() else {
        return;
    };
    if !need("ctr") {
        return;
    }
    let Some(sock) = containerd_socket() else {
        return;
    };
    // The image: pulled by gcr, saved by gcr as a docker-archive, imported by ctr.
    let store = tempfile::tempdir().unwrap();
    let gcr = |args: &[&str]| {
        let out = Command::new(gcr_bin())
            .arg("--root")
            .arg(store.path())
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "gcr {args:?}: {}", stderr(&out));
    };
    let tag = "docker.io/library/busybox:gcr-oci-test";
    gcr(&["pull", "-q", &format!("{registry}/busybox:latest")]);
    gcr(&["tag", &format!("{registry}/busybox:latest"), tag]);
    let archive = store.path().join("busybox.tar");
    gcr(&["save", "-o", archive.to_str().unwrap(), tag]);

    let mut ctr = Ctr {
        sock,
        namespace: unique("gcr-oci-test"),
        runc_root: tempfile::tempdir().unwrap(),
        ids: Vec::new(),
    };
    let out = ctr.run(&["images", "import", archive.to_str().unwrap()]);
    assert!(out.status.success(), "ctr images import: {}", stderr(&out));
    let runtime = [
        "--runc-binary".to_string(),
        oci_bin().display().to_string(),
        "--runc-root".to_string(),
        ctr.runc_root.path().display().to_string(),
    ];
    let runtime: Vec<&str> = runtime.iter().map(String::as_str).collect();

    // run --rm: the output and the exit status.
    let id = unique("c1");
    ctr.ids.push(id.clone());
    let mut args = vec!["run", "--rm"];
    args.extend(&runtime);
    args.extend([tag, id.as_str(), "sh", "-c", "echo hi from gcr-oci; exit 3"]);
    let out = ctr.run(&args);
    assert_eq!(
        out.status.code(),
        Some(3),
        "ctr run: {}{}",
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(stdout(&out), "hi from gcr-oci\n");

    // run -d, task exec, ps, pause/resume, kill, delete.
    let id = unique("c2");
    ctr.ids.push(id.clone());
    let mut args = vec!["run", "-d"];
    args.extend(&runtime);
    args.extend([tag, id.as_str(), "sleep", "60"]);
    let out = ctr.run(&args);
    assert!(out.status.success(), "ctr run -d: {}", stderr(&out));
    ctr.wait_status(&id, "RUNNING");
    let out = ctr.run(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        &id,
        "sh",
        "-c",
        "echo in-exec; exit 5",
    ]);
    assert_eq!(out.status.code(), Some(5), "task exec: {}", stderr(&out));
    assert_eq!(stdout(&out), "in-exec\n");
    let out = ctr.run(&["task", "ps", &id]);
    assert!(out.status.success(), "task ps: {}", stderr(&out));
    let pids = stdout(&out);
    assert!(pids.lines().count() >= 2, "{pids}");
    let out = ctr.run(&["task", "pause", &id]);
    assert!(out.status.success(), "task pause: {}", stderr(&out));
    ctr.wait_status(&id, "PAUSED");
    let out = ctr.run(&["task", "resume", &id]);
    assert!(out.status.success(), "task resume: {}", stderr(&out));
    ctr.wait_status(&id, "RUNNING");
    let out = ctr.run(&["task", "kill", "-s", "SIGKILL", &id]);
    assert!(out.status.success(), "task kill: {}", stderr(&out));
    ctr.wait_status(&id, "STOPPED");
    let out = ctr.run(&["task", "delete", &id]);
    assert!(out.status.success(), "task delete: {}", stderr(&out));
    let out = ctr.run(&["container", "rm", &id]);
    assert!(out.status.success(), "container rm: {}", stderr(&out));
    ctr.ids.retain(|i| i != &id);
    // Nothing of gcr-oci's is left for the deleted containers.
    let left: Vec<_> = std::fs::read_dir(ctr.runc_root.path())
        .unwrap()
        .flatten()
        .flat_map(|ns| std::fs::read_dir(ns.path()).into_iter().flatten().flatten())
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "gcr-oci records left: {left:?}");
    // ... nor its cgroups (ctr's default path /<namespace>/<id>).
    let cgroups: Vec<_> = std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .map(|h| h.path().join(&ctr.namespace).join(&id))
        .filter(|d| d.exists())
        .collect();
    assert!(cgroups.is_empty(), "cgroups left: {cgroups:?}");
}
