//! The container lifecycle through gcr-containers' API alone (no gcr binary): create, run,
//! start, stop, kill, wait, exec, logs, rename, remove, on a real store with a busybox image
//! and real namespaces. Runs as root, then again as the unprivileged fixture user (runuser,
//! `GCR_TEST_ROOTLESS_CHILD=1`) inside gcr's rootless user namespace.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use gcr_containers::{
    ContainerError, CreateOptions, ExecRequest, ImageSource, NetworkChoice, State, Tail,
};

const ROOTLESS_CHILD: &str = "GCR_TEST_ROOTLESS_CHILD";
const IMAGE: &str = "localhost/gcr-test/busybox:latest";

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

macro_rules! check {
    ($cond:expr, $($fmt:tt)*) => {
        if !$cond {
            return Err(format!($($fmt)*));
        }
    };
}

/// A store holding a busybox image made from busybox-static (imported, as `gcr import`).
struct Fixture {
    _dir: tempfile::TempDir,
    store: gcr_storage::Store,
    image: gcr_storage::ImageRecord,
}

fn fixture() -> Result<Fixture, String> {
    let dir = tempfile::Builder::new()
        .prefix("gcr-lifecycle-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let root = dir.path().join("rootfs");
    for d in ["bin", "sbin", "usr/bin", "usr/sbin", "etc", "tmp", "root"] {
        std::fs::create_dir_all(root.join(d)).map_err(|e| e.to_string())?;
    }
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777))
        .map_err(|e| e.to_string())?;
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).map_err(|e| e.to_string())?;
    let list = Command::new("/bin/busybox")
        .arg("--list-full")
        .output()
        .map_err(|e| e.to_string())?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "bin/busybox" && !applet.is_empty() {
            let _ = std::os::unix::fs::symlink("/bin/busybox", root.join(applet));
        }
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")
        .map_err(|e| e.to_string())?;
    let archive = dir.path().join("rootfs.tar");
    let status = Command::new("tar")
        .arg("-cf")
        .arg(&archive)
        .arg("-C")
        .arg(&root)
        .arg(".")
        .status()
        .map_err(|e| e.to_string())?;
    check!(status.success(), "tar failed");
    let store = gcr_storage::Store::open(dir.path().join("store")).map_err(|e| e.to_string())?;
    let image = store
        .import_archive(&archive, IMAGE)
        .map_err(|e| e.to_string())?;
    Ok(Fixture {
        _dir: dir,
        store,
        image,
    })
}

fn options(f: &Fixture, command: &[&str]) -> CreateOptions {
    let mut opts = CreateOptions::new(ImageSource::Image {
        record: Box::new(f.image.clone()),
        reference: IMAGE.into(),
    });
    opts.command = command.iter().map(|s| s.to_string()).collect();
    opts.network = NetworkChoice::None;
    opts
}

fn logs_of(c: &gcr_containers::Container) -> Result<String, String> {
    let mut out = Vec::new();
    let mut sink = |record: &gcr_containers::logfile::LogRecord| {
        out.extend_from_slice(&record.data);
        Ok(())
    };
    let options = gcr_containers::LogOptions {
        tail: Tail::All,
        ..Default::default()
    };
    gcr_containers::logs(c, &options, &mut sink).map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) -> Result<(), String> {
    for _ in 0..250 {
        if done() {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Err(format!("timed out waiting for {what}"))
}

fn t_foreground_run_keeps_status_and_output() -> Result<(), String> {
    let f = fixture()?;
    let opts = options(&f, &["sh", "-c", "echo out-$HOSTNAME; exit 7"]);
    let (launch, _) = gcr_containers::create(&f.store, opts).map_err(|e| e.to_string())?;
    let id = launch.id.clone();
    let code = launch.run_attached().map_err(|e| e.to_string())?;
    check!(code == 7, "exit status {code}");
    let c = gcr_containers::lookup(&f.store, &id[..8]).map_err(|e| e.to_string())?;
    check!(c.state() == State::Exited, "state {:?}", c.state());
    check!(c.exit_code() == Some(7), "recorded {:?}", c.exit_code());
    let log = logs_of(&c)?;
    check!(log.contains(&format!("out-{}", &id[..12])), "log: {log:?}");
    gcr_containers::remove(&f.store, &c, false).map_err(|e| e.to_string())?;
    check!(
        gcr_containers::list(&f.store)
            .map_err(|e| e.to_string())?
            .is_empty(),
        "container left after remove"
    );
    Ok(())
}

fn t_rm_container_leaves_nothing() -> Result<(), String> {
    let f = fixture()?;
    let mut opts = options(&f, &["true"]);
    opts.remove = true;
    let (launch, _) = gcr_containers::create(&f.store, opts).map_err(|e| e.to_string())?;
    check!(
        gcr_containers::list(&f.store)
            .map_err(|e| e.to_string())?
            .len()
            == 1,
        "no record while it runs"
    );
    let code = launch.run_attached().map_err(|e| e.to_string())?;
    check!(code == 0, "exit status {code}");
    check!(
        gcr_containers::list(&f.store)
            .map_err(|e| e.to_string())?
            .is_empty(),
        "--rm container still listed"
    );
    // The image is free again: removing it must not be refused.
    f.store
        .remove_image(&f.image.id, false)
        .map_err(|e| format!("image still in use: {e}"))?;
    Ok(())
}

fn t_start_failures_keep_their_status() -> Result<(), String> {
    let f = fixture()?;
    let (launch, _) = gcr_containers::create(&f.store, options(&f, &["nosuchcommand"]))
        .map_err(|e| e.to_string())?;
    match launch.start_detached() {
        Err(ContainerError::StartFailed { code, message }) => {
            check!(code == 127, "code {code}: {message}");
            check!(message.contains("not found"), "{message}");
        }
        other => return Err(format!("a missing command started: {other:?}")),
    }
    let no_command = gcr_containers::create(&f.store, options(&f, &[]));
    check!(
        matches!(no_command, Err(ContainerError::Invalid(_))),
        "an image without CMD and no command was accepted"
    );
    Ok(())
}

fn t_detached_lifecycle() -> Result<(), String> {
    let f = fixture()?;
    let mut opts = options(
        &f,
        &[
            "sh",
            "-c",
            "echo started; trap 'exit 3' TERM; sleep 60 & wait",
        ],
    );
    opts.name = Some("web".into());
    opts.labels.insert("tier".into(), "front".into());
    let (launch, _) = gcr_containers::create(&f.store, opts).map_err(|e| e.to_string())?;
    let id = launch.id.clone();
    launch.start_detached().map_err(|e| e.to_string())?;
    let c = gcr_containers::lookup(&f.store, "web").map_err(|e| e.to_string())?;
    check!(c.id == id, "name lookup found {}", c.id);
    check!(c.state() == State::Running, "state {:?}", c.state());
    check!(c.alive(), "not alive after start");

    // A second container may not take the name.
    let mut twin = options(&f, &["true"]);
    twin.name = Some("web".into());
    check!(
        matches!(
            gcr_containers::create(&f.store, twin),
            Err(ContainerError::NameInUse { .. })
        ),
        "duplicate name accepted"
    );

    // exec runs in its namespaces and returns the command's status.
    let request = ExecRequest {
        command: vec!["sh".into(), "-c".into(), "test -d /proc/1 && exit 4".into()],
        ..Default::default()
    };
    let code = gcr_containers::exec(&c, &request).map_err(|e| e.to_string())?;
    check!(code == 4, "exec status {code}");

    let filters =
        gcr_containers::Filters::parse(&["label=tier=front".into()]).map_err(|e| e.to_string())?;
    check!(filters.matches(&c, &|_| None), "label filter missed it");

    // stop: SIGTERM, which the script turns into status 3; stopped by hand.
    gcr_containers::stop(&f.store, &c, Some(10)).map_err(|e| e.to_string())?;
    let c = gcr_containers::lookup(&f.store, "web").map_err(|e| e.to_string())?;
    check!(c.state() == State::Exited, "after stop: {:?}", c.state());
    check!(c.exit_code() == Some(3), "stop status {:?}", c.exit_code());
    check!(logs_of(&c)?.contains("started"), "no output logged");

    // start again from the record; kill; wait gives 128+9.
    gcr_containers::prepare_start(&f.store, &c)
        .and_then(|l| l.start_detached())
        .map_err(|e| e.to_string())?;
    let c = gcr_containers::lookup(&f.store, "web").map_err(|e| e.to_string())?;
    check!(c.alive(), "not running after start");
    wait_until("the second start's output", || {
        logs_of(&c).is_ok_and(|l| l.matches("started").count() == 2)
    })?;
    gcr_containers::kill(&f.store, &c, nix::sys::signal::Signal::SIGKILL)
        .map_err(|e| e.to_string())?;
    let code = gcr_containers::wait(&c).map_err(|e| e.to_string())?;
    check!(code == 137, "wait after kill: {code}");

    gcr_containers::rename(&f.store, &c, "api").map_err(|e| e.to_string())?;
    let c = gcr_containers::lookup(&f.store, "api").map_err(|e| e.to_string())?;
    check!(
        gcr_containers::lookup(&f.store, "web").is_err(),
        "old name still found"
    );
    gcr_containers::remove(&f.store, &c, false).map_err(|e| e.to_string())?;
    check!(
        gcr_containers::list(&f.store)
            .map_err(|e| e.to_string())?
            .is_empty(),
        "container left"
    );
    Ok(())
}

fn t_rm_force_kills_a_running_container() -> Result<(), String> {
    let f = fixture()?;
    let mut opts = options(&f, &["sleep", "60"]);
    opts.restart = "always".into();
    let (launch, _) = gcr_containers::create(&f.store, opts).map_err(|e| e.to_string())?;
    let id = launch.id.clone();
    launch.start_detached().map_err(|e| e.to_string())?;
    let c = gcr_containers::lookup(&f.store, &id).map_err(|e| e.to_string())?;
    let pid = c.pid().ok_or("no PID recorded")?;
    check!(
        matches!(
            gcr_containers::remove(&f.store, &c, false),
            Err(ContainerError::State(_))
        ),
        "a running container was removed without force"
    );
    gcr_containers::remove(&f.store, &c, true).map_err(|e| e.to_string())?;
    check!(
        gcr_containers::lookup(&f.store, &id).is_err(),
        "still listed after rm -f"
    );
    wait_until("the container's process to end", || {
        !Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z"))
    })?;
    Ok(())
}

fn t_created_then_started() -> Result<(), String> {
    let f = fixture()?;
    let (launch, _) =
        gcr_containers::create(&f.store, options(&f, &["sh", "-c", "echo hello; exit 5"]))
            .map_err(|e| e.to_string())?;
    let id = launch.leave_created().map_err(|e| e.to_string())?;
    let c = gcr_containers::lookup(&f.store, &id).map_err(|e| e.to_string())?;
    check!(c.state() == State::Created, "state {:?}", c.state());
    let code = gcr_containers::prepare_start(&f.store, &c)
        .and_then(|l| l.run_attached())
        .map_err(|e| e.to_string())?;
    check!(code == 5, "exit status {code}");
    let c = gcr_containers::lookup(&f.store, &id).map_err(|e| e.to_string())?;
    check!(c.state() == State::Exited, "state {:?}", c.state());
    let removed = gcr_containers::remove_stopped(&f.store).map_err(|e| e.to_string())?;
    check!(removed == [id], "prune removed {removed:?}");
    Ok(())
}

type TestFn = fn() -> Result<(), String>;

fn tests() -> Vec<(&'static str, TestFn)> {
    vec![
        (
            "foreground_run_keeps_status_and_output",
            t_foreground_run_keeps_status_and_output,
        ),
        ("rm_container_leaves_nothing", t_rm_container_leaves_nothing),
        (
            "start_failures_keep_their_status",
            t_start_failures_keep_their_status,
        ),
        ("detached_lifecycle", t_detached_lifecycle),
        (
            "rm_force_kills_a_running_container",
            t_rm_force_kills_a_running_container,
        ),
        ("created_then_started", t_created_then_started),
    ]
}

/// Runs this binary again as the fixture user for the rootless cases.
fn run_rootless(filter: &[String]) -> bool {
    let user = std::env::var("GCR_TEST_USER").unwrap_or_else(|_| "gcrtest".into());
    let exists = nix::unistd::User::from_name(&user).ok().flatten().is_some();
    if !exists || Command::new("runuser").arg("--help").output().is_err() {
        let msg =
            format!("rootless cases need the user {user} (tests/fixtures/setup.sh) and runuser");
        println!("{}: {msg}", if in_ci() { "FAIL" } else { "SKIP" });
        return !in_ci();
    }
    // The target dir may sit where the test user cannot reach it: run a copy.
    let copy_dir = tempfile::Builder::new()
        .prefix("gcr-lifecycle-bin-")
        .tempdir()
        .expect("a temporary directory");
    std::fs::set_permissions(copy_dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod of the copy's directory");
    let exe: PathBuf = copy_dir.path().join("lifecycle");
    std::fs::copy(std::env::current_exe().expect("own path"), &exe).expect("copy of the test");
    println!("\n--- rootless, as {user} ---");
    let status = Command::new("runuser")
        .args(["-u", &user, "--"])
        .arg(&exe)
        .args(filter)
        .env(ROOTLESS_CHILD, "1")
        .env("TMPDIR", "/tmp")
        .current_dir("/")
        .status();
    matches!(status, Ok(s) if s.success())
}

fn main() {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let rootless_child = std::env::var_os(ROOTLESS_CHILD).is_some();
    let verdict = if in_ci() { "FAIL" } else { "SKIP" };
    if !nix::unistd::Uid::effective().is_root() {
        if !rootless_child {
            eprintln!(
                "{verdict}: run these tests as root (they rerun themselves as the test user)"
            );
            std::process::exit(if in_ci() { 1 } else { 0 });
        }
        match gcr_runtime::userns::enter_rootless_userns() {
            Ok(gcr_runtime::userns::Rootless::Entered {
                subordinate: true, ..
            }) => {}
            other => {
                eprintln!("FAIL: rootless user namespace: {other:?}");
                std::process::exit(1);
            }
        }
    }
    if !Path::new("/bin/busybox").exists() {
        eprintln!("{verdict}: /bin/busybox missing (apt-get install busybox-static)");
        std::process::exit(if in_ci() { 1 } else { 0 });
    }
    let mut failed = 0;
    let mut ran = 0;
    for (name, t) in tests() {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        ran += 1;
        match t() {
            Ok(()) => println!("test {name} ... ok"),
            Err(e) => {
                failed += 1;
                println!("test {name} ... FAILED\n  {e}");
            }
        }
    }
    println!("\n{ran} tests, {failed} failed");
    if !rootless_child && !run_rootless(&filter) {
        failed += 1;
    }
    if failed > 0 {
        std::process::exit(1);
    }
}
