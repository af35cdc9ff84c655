//! gcr-oci, the runc command line over gcr's runtime: the create/start split, state, kill,
//! delete, exec, console socket, hooks, namespaces by path, config.json fields, and the
//! errors runc's callers rely on. Real containers on a busybox bundle; as root (rootless at
//! the end, as the fixture user).

mod support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{in_ci, stderr, stdout};

fn oci_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gcr-oci"))
}

/// Root is needed for every test here but the rootless one; outside CI a non-root run skips.
fn need_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(!in_ci(), "the gcr-oci tests must run as root in CI");
    eprintln!("SKIP: not root");
    false
}

fn busybox_tar() -> PathBuf {
    let cache = std::env::var("GCR_TEST_FIXTURES")
        .unwrap_or_else(|_| "/var/cache/gcr-fixtures".to_string());
    let tar = Path::new(&cache).join("rootfs/busybox.tar");
    assert!(
        tar.is_file(),
        "{} is missing: run `bash tests/fixtures/setup.sh`",
        tar.display()
    );
    tar
}

/// A bundle (rootfs from the busybox fixture, config.json from `gcr-oci spec`, edited by
/// `edit`) and a state root, both removed on drop.
struct Bundle {
    dir: tempfile::TempDir,
    root: PathBuf,
}

impl Bundle {
    fn new(edit: impl FnOnce(&mut Value)) -> Bundle {
        let dir = tempfile::Builder::new()
            .prefix("gcr-oci-test-")
            .tempdir()
            .unwrap();
        let rootfs = dir.path().join("rootfs");
        std::fs::create_dir(&rootfs).unwrap();
        let status = Command::new("tar")
            .arg("-xf")
            .arg(busybox_tar())
            .arg("-C")
            .arg(&rootfs)
            .status()
            .unwrap();
        assert!(status.success());
        let out = Command::new(oci_bin())
            .args(["spec", "--bundle"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "spec: {}", stderr(&out));
        let path = dir.path().join("config.json");
        let mut config: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        config["process"]["terminal"] = json!(false);
        edit(&mut config);
        std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
        let root = dir.path().join("state");
        Bundle { dir, root }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(oci_bin());
        cmd.arg("--root").arg(&self.root).args(args);
        cmd.current_dir(self.path());
        cmd
    }

    /// Runs gcr-oci with its stdout and stderr in files, not pipes: a container it creates
    /// inherits them, as runc's callers expect, and would hold a pipe open.
    fn run(&self, args: &[&str]) -> Output {
        let out = tempfile::tempfile().unwrap();
        let err = tempfile::tempfile().unwrap();
        let status = self
            .cmd(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(err.try_clone().unwrap())
            .status()
            .unwrap();
        let read = |mut f: std::fs::File| {
            use std::io::Seek;
            f.rewind().unwrap();
            let mut v = Vec::new();
            f.read_to_end(&mut v).unwrap();
            v
        };
        Output {
            status,
            stdout: read(out),
            stderr: read(err),
        }
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "gcr-oci {args:?}: {:?}\n{}{}",
            out.status,
            stdout(&out),
            stderr(&out)
        );
        stdout(&out)
    }

    fn state(&self, id: &str) -> Value {
        serde_json::from_str(&self.ok(&["state", id])).unwrap()
    }

    fn wait_status(&self, id: &str, want: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let state = self.state(id);
            if state["status"] == want || Instant::now() > deadline {
                assert_eq!(state["status"], want, "{state}");
                return state;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        // Whatever a failed test left running goes.
        if let Ok(entries) = std::fs::read_dir(&self.root) {
            for e in entries.flatten() {
                let id = e.file_name().to_string_lossy().into_owned();
                let _ = self.run(&["delete", "--force", &id]);
            }
        }
    }
}

fn args(config: &mut Value, argv: &[&str]) {
    config["process"]["args"] = json!(argv);
}

/// A host directory bound at /out in the container (the test reads what it writes).
fn pre_made_out(config: &mut Value) -> PathBuf {
    let dir = tempfile::Builder::new()
        .prefix("gcr-oci-out-")
        .tempdir()
        .unwrap()
        .keep();
    config["mounts"].as_array_mut().unwrap().push(
        json!({"destination": "/out", "type": "bind", "source": dir, "options": ["rbind", "rw"]}),
    );
    dir
}

#[test]
fn create_waits_start_releases_and_the_runtime_does_not_stay() {
    if !need_root() {
        return;
    }
    let mut out_dir = PathBuf::new();
    let b = Bundle::new(|c| {
        args(
            c,
            &["sh", "-c", "echo started > /out/started; exec sleep 30"],
        );
        out_dir = pre_made_out(c);
    });
    let pid_file = b.path().join("pid");
    let begun = Instant::now();
    // `create` returns (its process is gone) while the container waits at its gate.
    b.ok(&[
        "create",
        "--bundle",
        b.path().to_str().unwrap(),
        "--pid-file",
        pid_file.to_str().unwrap(),
        "c1",
    ]);
    assert!(begun.elapsed() < Duration::from_secs(10));
    let pid_text = std::fs::read_to_string(&pid_file).unwrap();
    assert!(
        !pid_text.ends_with('\n'),
        "containerd's shim parses the pid file with Atoi"
    );
    let pid: i32 = pid_text.parse().unwrap();
    let state = b.state("c1");
    assert_eq!(state["status"], "created");
    assert_eq!(state["pid"], pid);
    assert_eq!(state["id"], "c1");
    assert_eq!(state["ociVersion"], "1.1.0");
    assert_eq!(
        Path::new(state["bundle"].as_str().unwrap()),
        b.path().canonicalize().unwrap()
    );
    // Not run yet: nothing written, and its parent is not a gcr-oci that stayed behind.
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !out_dir.join("started").exists(),
        "the command ran before start"
    );
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let ppid: i32 = status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let parent = std::fs::read_to_string(format!("/proc/{ppid}/cmdline")).unwrap_or_default();
    assert!(
        !parent.contains("gcr-oci"),
        "the container's parent is a gcr-oci process ({ppid}: {parent:?})"
    );
    // A second start is refused once started; state says running.
    b.ok(&["start", "c1"]);
    // start returns once the command was executed; sh writes the file a moment later.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !out_dir.join("started").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        std::fs::read_to_string(out_dir.join("started")).unwrap(),
        "started\n"
    );
    assert_eq!(b.state("c1")["status"], "running");
    let again = b.run(&["start", "c1"]);
    assert!(!again.status.success());
    // Deleting a running container needs --force.
    let refused = b.run(&["delete", "c1"]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("not stopped"),
        "{}",
        stderr(&refused)
    );
    b.ok(&["kill", "c1", "KILL"]);
    b.wait_status("c1", "stopped");
    b.ok(&["delete", "c1"]);
    assert!(!b.root.join("c1").exists());
    let _ = std::fs::remove_dir_all(out_dir);
}

#[test]
fn run_carries_the_exit_status_and_deletes() {
    if !need_root() {
        return;
    }
    let b = Bundle::new(|c| args(c, &["sh", "-c", "echo out; echo err >&2; exit 7"]));
    let out = b.run(&["run", "r1"]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert_eq!(stdout(&out), "out\n");
    assert!(stderr(&out).contains("err"));
    assert!(!b.root.join("r1").exists(), "run left its record");
    // A command that does not exist fails at create with runc's words (podman maps
    // "not found" to 127).
    let b = Bundle::new(|c| args(c, &["/no/such/command"]));
    let out = b.run(&["create", "r2"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no such file or directory"),
        "{}",
        stderr(&out)
    );
    assert!(
        !b.root.join("r2").exists(),
        "a failed create left its record"
    );
}

#[test]
fn bad_input_gives_runc_errors_and_leaves_nothing() {
    if !need_root() {
        return;
    }
    let b = Bundle::new(|c| args(c, &["sleep", "30"]));
    // No config.json.
    let empty = tempfile::tempdir().unwrap();
    let out = b.run(&["create", "--bundle", empty.path().to_str().unwrap(), "e1"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("config.json"), "{}", stderr(&out));
    assert!(!b.root.join("e1").exists());
    // Unknown ids.
    for cmd in [
        vec!["start", "nosuch"],
        vec!["state", "nosuch"],
        vec!["kill", "nosuch"],
        vec!["delete", "nosuch"],
        vec!["exec", "nosuch", "true"],
        vec!["pause", "nosuch"],
    ] {
        let out = b.run(&cmd);
        assert!(!out.status.success(), "{cmd:?} succeeded");
        assert!(
            stderr(&out).contains("does not exist"),
            "{cmd:?}: {}",
            stderr(&out)
        );
    }
    // delete --force of an unknown id succeeds (containerd's cleanup relies on it).
    b.ok(&["delete", "--force", "nosuch"]);
    // An id that is not a directory name.
    let out = b.run(&["create", "../x"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("invalid container id"));
    // An existing id: refused, the first container untouched.
    b.ok(&["create", "dup"]);
    let first = b.state("dup");
    let out = b.run(&["create", "dup"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("exists"), "{}", stderr(&out));
    assert_eq!(b.state("dup")["pid"], first["pid"]);
    b.ok(&["delete", "--force", "dup"]);
    // An unknown namespace type.
    let bad = Bundle::new(|c| {
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "nosuchns"}));
    });
    let out = bad.run(&["create", "ns1"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("nosuchns"), "{}", stderr(&out));
    assert!(!bad.root.join("ns1").exists());
    // A spec that cannot start cleans up its cgroup too.
    let broken = Bundle::new(|c| {
        args(c, &["true"]);
        c["root"]["path"] = json!("no-such-rootfs");
    });
    let out = broken.run(&["create", "b1"]);
    assert!(!out.status.success());
    assert!(!broken.root.join("b1").exists());
    assert!(!Path::new("/sys/fs/cgroup/memory/gcr-oci/b1").exists());
}

#[test]
fn exec_detached_and_foreground_ps_pause_resume_update() {
    if !need_root() {
        return;
    }
    let b = Bundle::new(|c| args(c, &["sleep", "60"]));
    b.ok(&["run", "--detach", "x1"]);
    let pid = b.wait_status("x1", "running")["pid"].as_i64().unwrap();
    // Foreground exec: its status.
    let out = b.run(&["exec", "x1", "sh", "-c", "echo in; exit 5"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert_eq!(stdout(&out), "in\n");
    // A foreground exec writes its pid file too.
    let fg_pid_file = b.path().join("fg.pid");
    b.ok(&[
        "exec",
        "--pid-file",
        fg_pid_file.to_str().unwrap(),
        "x1",
        "true",
    ]);
    let fg: i64 = std::fs::read_to_string(&fg_pid_file)
        .unwrap()
        .parse()
        .unwrap();
    assert!(fg > 0);
    // Detached exec with --process and a pid file: the process runs in the container.
    let process = b.path().join("process.json");
    std::fs::write(
        &process,
        json!({"args": ["sleep", "50"], "cwd": "/", "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}})
            .to_string(),
    )
    .unwrap();
    let exec_pid_file = b.path().join("exec.pid");
    b.ok(&[
        "exec",
        "--detach",
        "--process",
        process.to_str().unwrap(),
        "--pid-file",
        exec_pid_file.to_str().unwrap(),
        "x1",
    ]);
    let exec_pid: i64 = std::fs::read_to_string(&exec_pid_file)
        .unwrap()
        .parse()
        .unwrap();
    let ns = |p: i64| std::fs::read_link(format!("/proc/{p}/ns/pid")).unwrap();
    assert_eq!(
        ns(exec_pid),
        ns(pid),
        "the exec'd process is not in the container"
    );
    // ps lists both.
    let pids: Vec<i64> = serde_json::from_str(&b.ok(&["ps", "--format", "json", "x1"])).unwrap();
    assert!(pids.contains(&pid) && pids.contains(&exec_pid), "{pids:?}");
    let table = b.ok(&["ps", "x1"]);
    assert!(table.lines().next().unwrap().contains("PID"));
    assert!(table.contains("sleep 60"), "{table}");
    // pause / resume: the freezer.
    b.ok(&["pause", "x1"]);
    assert_eq!(b.state("x1")["status"], "paused");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    assert!(after.starts_with('D') || after.starts_with('S'), "{stat}");
    assert!(!b.run(&["exec", "x1", "true"]).status.success());
    b.ok(&["resume", "x1"]);
    assert_eq!(b.state("x1")["status"], "running");
    // update --resources: the cgroup's memory limit.
    let res = b.path().join("res.json");
    std::fs::write(&res, json!({"memory": {"limit": 104857600}}).to_string()).unwrap();
    b.ok(&["update", "--resources", res.to_str().unwrap(), "x1"]);
    b.ok(&["update", "--pids-limit", "77", "x1"]);
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let (limit_file, pids_file) = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        let path = cgroup.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
        (
            format!("/sys/fs/cgroup{path}/memory.max"),
            format!("/sys/fs/cgroup{path}/pids.max"),
        )
    } else {
        let find = |c: &str| {
            cgroup
                .lines()
                .find_map(|l| {
                    let mut parts = l.splitn(3, ':');
                    let (_, names, path) = (parts.next()?, parts.next()?, parts.next()?);
                    names.split(',').any(|n| n == c).then(|| path.to_string())
                })
                .unwrap()
        };
        (
            format!(
                "/sys/fs/cgroup/memory{}/memory.limit_in_bytes",
                find("memory")
            ),
            format!("/sys/fs/cgroup/pids{}/pids.max", find("pids")),
        )
    };
    assert_eq!(
        std::fs::read_to_string(limit_file).unwrap().trim(),
        "104857600"
    );
    assert_eq!(std::fs::read_to_string(pids_file).unwrap().trim(), "77");
    // kill --all reaches the exec'd process too.
    b.ok(&["kill", "--all", "x1", "9"]);
    b.wait_status("x1", "stopped");
    let deadline = Instant::now() + Duration::from_secs(5);
    while Path::new(&format!("/proc/{exec_pid}")).exists() && Instant::now() < deadline {
        let stat = std::fs::read_to_string(format!("/proc/{exec_pid}/stat")).unwrap_or_default();
        if stat.contains(") Z") {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    b.ok(&["delete", "x1"]);
}

/// A console socket served by Python (an independent receiver): takes the pty master from
/// the one SCM_RIGHTS message, reads the terminal until `until` appears, prints it.
const CONSOLE_RECEIVER: &str = r#"
import os, socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[1]); s.listen(1)
print("ready", flush=True)
c, _ = s.accept()
msg, fds, flags, addr = socket.recv_fds(c, 256, 1)
out = b""
deadline = time.time() + 10
while time.time() < deadline and sys.argv[2].encode() not in out:
    try:
        d = os.read(fds[0], 4096)
    except OSError:
        break
    if not d:
        break
    out += d
sys.stdout.write(out.decode(errors="replace"))
"#;

#[test]
fn console_socket_gets_the_pty_master() {
    if !need_root() {
        return;
    }
    let b = Bundle::new(|c| {
        c["process"]["terminal"] = json!(true);
        args(
            c,
            &[
                "sh",
                "-c",
                "tty; test -t 0 && echo stdin-is-a-tty; ls -l /dev/console; sleep 1",
            ],
        );
    });
    let sock = b.path().join("console.sock");
    // Without a console socket a detached terminal is refused, as runc does.
    let out = b.run(&["create", "t0"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("console-socket"), "{}", stderr(&out));
    let mut receiver = Command::new("python3")
        .args(["-c", CONSOLE_RECEIVER, sock.to_str().unwrap(), "console"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 (installed by tests/fixtures/setup.sh)");
    let mut ready = [0u8; 6];
    receiver
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut ready)
        .unwrap();
    b.ok(&["create", "--console-socket", sock.to_str().unwrap(), "t1"]);
    b.ok(&["start", "t1"]);
    let out = receiver.wait_with_output().unwrap();
    let text = stdout(&out);
    assert!(text.contains("/dev/pts/"), "{text}");
    assert!(text.contains("stdin-is-a-tty"), "{text}");
    assert!(text.contains("/dev/console"), "{text}");
    b.wait_status("t1", "stopped");
    b.ok(&["delete", "t1"]);
}

#[test]
fn hooks_run_in_order_with_the_state_on_stdin() {
    if !need_root() {
        return;
    }
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().to_path_buf();
    // Each hook appends its stage and its stdin; the in-container ones see the container's
    // filesystem only after pivot_root (startContainer), so they write to /out.
    let host_hook = |stage: &str| json!({"path": "/bin/sh", "args": ["sh", "-c", format!("echo {stage} $(cat) >> {}/hooks", log.display())]});
    let mut out_dir = PathBuf::new();
    let b = Bundle::new(|c| {
        args(c, &["sh", "-c", "echo command >> /out/hooks"]);
        out_dir = pre_made_out(c);
        let in_container = json!({"path": "/bin/sh", "args": ["sh", "-c", "echo startContainer $(cat) >> /out/hooks"]});
        let create_container = json!({"path": "/bin/sh", "args": ["sh", "-c", format!("echo createContainer $(cat) >> {}/hooks", out_dir.display())]});
        c["hooks"] = json!({
            "prestart": [host_hook("prestart")],
            "createRuntime": [host_hook("createRuntime")],
            "createContainer": [create_container],
            "startContainer": [in_container],
            "poststart": [host_hook("poststart")],
            "poststop": [host_hook("poststop")],
        });
    });
    b.ok(&["create", "h1"]);
    b.ok(&["start", "h1"]);
    b.wait_status("h1", "stopped");
    b.ok(&["delete", "h1"]);
    let host = std::fs::read_to_string(log.join("hooks")).unwrap();
    let inside = std::fs::read_to_string(out_dir.join("hooks")).unwrap();
    let stages: Vec<&str> = host.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(
        stages,
        ["prestart", "createRuntime", "poststart", "poststop"],
        "{host}"
    );
    let inner: Vec<&str> = inside
        .lines()
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert_eq!(
        inner,
        ["createContainer", "startContainer", "command"],
        "{inside}"
    );
    for line in host.lines().chain(inside.lines().take(2)) {
        let (_, state) = line.split_once(' ').unwrap();
        let state: Value = serde_json::from_str(state).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert_eq!(state["id"], "h1", "{line}");
        assert_eq!(state["ociVersion"], "1.1.0");
        assert!(
            state["pid"].as_i64().unwrap() > 0 || state["status"] == "stopped",
            "{line}"
        );
        assert!(state["bundle"]
            .as_str()
            .unwrap()
            .ends_with(b.path().file_name().unwrap().to_str().unwrap()));
    }
    // A failing createRuntime hook fails create and leaves nothing.
    let b = Bundle::new(|c| {
        c["hooks"] = json!({"createRuntime": [{"path": "/bin/false"}]});
    });
    let out = b.run(&["create", "h2"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("createRuntime"), "{}", stderr(&out));
    assert!(!b.root.join("h2").exists());
    let _ = std::fs::remove_dir_all(out_dir);
}

#[test]
fn namespaces_are_joined_by_path() {
    if !need_root() {
        return;
    }
    // The "sandbox": its own network and uts namespaces, hostname sandbox.
    let sandbox = Bundle::new(|c| {
        args(c, &["sleep", "60"]);
        c["hostname"] = json!("sandbox");
    });
    sandbox.ok(&["run", "--detach", "pod"]);
    let pod_pid = sandbox.wait_status("pod", "running")["pid"]
        .as_i64()
        .unwrap();
    let mut out_dir = PathBuf::new();
    let member = Bundle::new(|c| {
        args(c, &["sh", "-c", "hostname > /out/host; readlink /proc/self/ns/net > /out/net; readlink /proc/self/ns/ipc > /out/ipc"]);
        out_dir = pre_made_out(c);
        c.as_object_mut().unwrap().remove("hostname");
        let namespaces = c["linux"]["namespaces"].as_array_mut().unwrap();
        for ns in namespaces.iter_mut() {
            match ns["type"].as_str().unwrap() {
                "network" => ns["path"] = json!(format!("/proc/{pod_pid}/ns/net")),
                "uts" => ns["path"] = json!(format!("/proc/{pod_pid}/ns/uts")),
                _ => {}
            }
        }
    });
    let out = member.run(&["run", "m1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let read = |n: &str| {
        std::fs::read_to_string(out_dir.join(n))
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(read("host"), "sandbox");
    let link = |p: &str| {
        std::fs::read_link(p)
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    assert_eq!(read("net"), link(&format!("/proc/{pod_pid}/ns/net")));
    // Its ipc namespace is new: neither the pod's nor the host's.
    assert_ne!(read("ipc"), link(&format!("/proc/{pod_pid}/ns/ipc")));
    assert_ne!(read("ipc"), link("/proc/self/ns/ipc"));
    // A path that is not a namespace of that type is an error.
    let wrong = Bundle::new(|c| {
        for ns in c["linux"]["namespaces"].as_array_mut().unwrap() {
            if ns["type"] == "network" {
                ns["path"] = json!(format!("/proc/{pod_pid}/ns/uts"));
            }
        }
    });
    let out = wrong.run(&["run", "w1"]);
    assert!(!out.status.success());
    assert!(!wrong.root.join("w1").exists());
    sandbox.ok(&["delete", "--force", "pod"]);
    let _ = std::fs::remove_dir_all(out_dir);
}

#[test]
fn config_fields_are_honoured() {
    if !need_root() {
        return;
    }
    let script = "id; ulimit -n; grep -E '^(NoNewPrivs|CapEff)' /proc/self/status; \
        cat /proc/sys/net/ipv4/ip_forward; ls -ln /dev/mynull; echo x > /dev/mynull && echo devok; \
        echo keys=$(ls -ln /proc/keys | awk '{print $5 $6}'); (echo 1 > /proc/sys/net/ipv4/ip_forward) 2>/dev/null || echo sys-ro; \
        hostname; umask; (mkdir /tmp/denied 2>&1 || echo mkdir-denied); touch /rootro 2>/dev/null || echo root-ro";
    let b = Bundle::new(|c| {
        args(c, &["sh", "-c", script]);
        c["hostname"] = json!("fields");
        c["root"]["readonly"] = json!(true);
        c["mounts"]
            .as_array_mut()
            .unwrap()
            .push(json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev"]}));
        c["process"]["user"] =
            json!({"uid": 1000, "gid": 1000, "additionalGids": [5, 6], "umask": 63});
        c["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "hard": 321, "soft": 123}]);
        c["process"]["noNewPrivileges"] = json!(true);
        let caps = json!(["CAP_CHOWN"]);
        c["process"]["capabilities"] =
            json!({"bounding": caps, "effective": caps, "permitted": caps});
        c["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1"});
        c["linux"]["devices"] = json!([{"path": "/dev/mynull", "type": "c", "major": 1, "minor": 3, "fileMode": 438, "uid": 0, "gid": 0}]);
        c["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
        });
    });
    let out = b.run(&["run", "f1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("uid=1000 gid=1000 groups=5,6"), "{text}");
    assert!(text.contains("\n123\n"), "rlimit: {text}");
    assert!(text.contains("NoNewPrivs:\t1"), "{text}");
    assert!(
        text.contains("CapEff:\t0000000000000000"),
        "uid 1000 keeps no effective caps: {text}"
    );
    assert!(text.contains("\n1\n"), "sysctl: {text}");
    assert!(
        text.contains("1,   3") && text.contains("devok"),
        "device: {text}"
    );
    assert!(
        text.contains("keys=1,3"),
        "masked /proc/keys is /dev/null: {text}"
    );
    assert!(text.contains("sys-ro"), "read-only /proc/sys: {text}");
    assert!(text.contains("fields\n"), "{text}");
    assert!(text.contains("0077"), "umask: {text}");
    assert!(text.contains("mkdir-denied"), "seccomp: {text}");
    assert!(text.contains("root-ro"), "read-only root: {text}");
    // A sysctl outside the container's namespaces is refused.
    let b = Bundle::new(|c| c["linux"]["sysctl"] = json!({"kernel.panic": "1"}));
    let out = b.run(&["run", "f2"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("kernel.panic"), "{}", stderr(&out));
}

#[test]
fn spec_features_version_list() {
    if !need_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let run = |a: &[&str]| {
        Command::new(oci_bin())
            .args(a)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    assert!(run(&["spec"]).status.success());
    let spec: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap())
            .unwrap();
    assert_eq!(spec["root"]["path"], "rootfs");
    assert!(spec["linux"]["namespaces"].as_array().unwrap().len() >= 4);
    let again = run(&["spec"]);
    assert!(
        !again.status.success(),
        "an existing config.json was overwritten"
    );
    std::fs::remove_file(dir.path().join("config.json")).unwrap();
    assert!(run(&["spec", "--rootless"]).status.success());
    let rootless: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap())
            .unwrap();
    assert!(rootless["linux"]["uidMappings"].is_array());
    let features: Value = serde_json::from_str(&stdout(&run(&["features"]))).unwrap();
    assert_eq!(features["ociVersionMax"], "1.1.0");
    assert_eq!(features["hooks"].as_array().unwrap().len(), 6);
    assert!(features["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .contains(&json!("user")));
    let version = stdout(&run(&["--version"]));
    assert!(version.starts_with("gcr-oci version "), "{version}");
    assert!(version.contains("spec: 1.1.0"));
    let b = Bundle::new(|c| args(c, &["sleep", "30"]));
    b.ok(&["create", "l1"]);
    let list: Value = serde_json::from_str(&b.ok(&["list", "--format", "json"])).unwrap();
    assert_eq!(list[0]["id"], "l1");
    assert_eq!(list[0]["status"], "created");
    // delete of a created container kills it (runc does) without --force.
    b.ok(&["delete", "l1"]);
    assert!(b.ok(&["list", "-q"]).is_empty());
}

#[test]
fn log_file_gets_errors_as_json() {
    if !need_root() {
        return;
    }
    let b = Bundle::new(|c| args(c, &["/no/such"]));
    let log = b.path().join("log.json");
    let out = b.run(&[
        "--log",
        log.to_str().unwrap(),
        "--log-format",
        "json",
        "create",
        "j1",
    ]);
    assert!(!out.status.success());
    let text = std::fs::read_to_string(&log).unwrap();
    let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["level"], "error");
    assert!(last["msg"].as_str().unwrap().contains("/no/such"), "{text}");
}

#[test]
fn rootless_run_as_the_fixture_user() {
    let Some(user) = support::fixture_env("GCR_TEST_USER") else {
        return;
    };
    if !need_root() {
        return;
    }
    // The bundle lives where the user can reach it, owned by them.
    let dir = tempfile::Builder::new()
        .prefix("gcr-oci-rootless-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let bundle = dir.path().join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    let sh = format!(
        "set -e; cd {b}; mkdir rootfs; tar -xf {tar} -C rootfs --no-same-owner; {bin} spec --rootless; \
         sed -i 's/\"terminal\": true/\"terminal\": false/; s/\"sh\"$/\"sh\", \"-c\", \"id -u; cat \\/proc\\/self\\/uid_map; exit 4\"/' config.json; \
         XDG_RUNTIME_DIR={b}/run {bin} run rl1",
        b = bundle.display(),
        tar = busybox_tar().display(),
        bin = oci_bin().display()
    );
    let status = Command::new("chown")
        .args([&format!("{user}:{user}"), bundle.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = Command::new("runuser")
        .args(["-u", &user, "--", "sh", "-c", &sh])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let text = stdout(&out);
    assert!(text.starts_with("0\n"), "{text}");
    let uid = Command::new("id").args(["-u", &user]).output().unwrap();
    let uid = stdout(&uid).trim().to_string();
    assert!(
        text.lines()
            .nth(1)
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()
            == ["0", uid.as_str(), "1"],
        "{text}"
    );
}

#[test]
fn ambient_capabilities_beyond_inheritable_are_left_out_as_runc_does() {
    if !need_root() {
        return;
    }
    // runc's own `runc spec` asks for ambient capabilities without inheritable ones.
    let b = Bundle::new(|c| {
        args(
            c,
            &["sh", "-c", "grep -E '^Cap(Eff|Amb)' /proc/self/status"],
        );
        let caps = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
        c["process"]["capabilities"] =
            json!({"bounding": caps, "effective": caps, "permitted": caps, "ambient": caps});
    });
    let out = b.run(&["run", "a1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("CapEff:\t0000000020000420"), "{text}");
    assert!(text.contains("CapAmb:\t0000000000000000"), "{text}");
}
