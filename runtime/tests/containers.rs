//! Real containers on a busybox rootfs: namespaces, mounts, hardening, exit codes.
//! Runs as root; `GCR_TEST_ROOTLESS_CHILD=1` is set when the same binary runs again as the
//! unprivileged fixture user (via runuser) for the rootless cases.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use gcr_runtime::{docker_default_spec, run_container, RootfsSource, RunOptions, Spec};

fn in_ci() -> bool {
    std::env::var("CI").map(|v| v == "true").unwrap_or(false)
}

/// A busybox rootfs made from busybox-static.
fn busybox_rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for d in ["bin", "sbin", "usr/bin", "usr/sbin", "etc", "tmp", "root"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    let list = Command::new("/bin/busybox")
        .arg("--list-full")
        .output()
        .unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet == "bin/busybox" || applet.is_empty() {
            continue;
        }
        let _ = std::os::unix::fs::symlink("/bin/busybox", root.join(applet));
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\nbob:x:1000:1000::/home/bob:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(
        root.join("etc/group"),
        "root:x:0:\nwheel:x:10:root\nbob:x:1000:\nstaff:x:50:bob\nnogroup:x:65534:\n",
    )
    .unwrap();
    std::fs::write(root.join("notexec"), "#!/bin/sh\necho hi\n").unwrap();
    root
}

struct Fixture {
    _dir: tempfile::TempDir,
    rootfs: PathBuf,
    state: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::Builder::new()
        .prefix("gcr-rt-")
        .tempdir()
        .unwrap();
    let rootfs = busybox_rootfs(dir.path());
    let state = dir.path().join("state");
    Fixture {
        _dir: dir,
        rootfs,
        state,
    }
}

const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn spec_for(args: &[&str]) -> Spec {
    let mut spec = docker_default_spec();
    let mut p = spec.process().clone().unwrap();
    p.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
    spec.set_process(Some(p));
    spec
}

/// Runs `sh -c SCRIPT` with stdout captured through a file in the state dir.
fn run_sh(f: &Fixture, spec: Spec, opts_edit: impl FnOnce(&mut RunOptions)) -> (i32, String) {
    let out = f.state.join("out.txt");
    std::fs::create_dir_all(&f.state).unwrap();
    std::fs::set_permissions(&f.state, std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut spec = spec;
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    mounts.push(gcr_runtime::bind_mount(&f.state, Path::new("/out"), false));
    spec.set_mounts(Some(mounts));
    let mut opts = RunOptions::new(
        RootfsSource::Directory(f.rootfs.clone()),
        ID,
        f.state.clone(),
    );
    opts_edit(&mut opts);
    let code = match run_container(&spec, &opts) {
        Ok(c) => c,
        Err(e) => {
            return (e.exit_code(), format!("ERROR: {e}"));
        }
    };
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    (code, text)
}

fn sh(script: &str) -> Spec {
    spec_for(&[
        "/bin/sh",
        "-c",
        &format!("exec > /out/out.txt 2>&1; {script}"),
    ])
}

type TestFn = fn() -> Result<(), String>;

macro_rules! check {
    ($cond:expr, $($fmt:tt)*) => {
        if !$cond {
            return Err(format!($($fmt)*));
        }
    };
}

fn t_exit_code_and_pid1() -> Result<(), String> {
    let f = fixture();
    let (code, out) = run_sh(&f, sh("echo pid=$$; hostname; exit 7"), |_| {});
    check!(code == 7, "exit code {code}, output {out}");
    check!(out.contains("pid=1"), "not pid 1: {out}");
    check!(out.contains("0123456789ab"), "hostname: {out}");
    Ok(())
}

fn t_not_found_and_not_executable() -> Result<(), String> {
    let f = fixture();
    let (code, out) = run_sh(&f, spec_for(&["nosuchcmd"]), |_| {});
    check!(code == 127, "not found gave {code}: {out}");
    check!(out.contains("executable file not found"), "{out}");
    let (code, out) = run_sh(&f, spec_for(&["/notexec"]), |_| {});
    check!(code == 126, "not executable gave {code}: {out}");
    let (code, out) = run_sh(&f, spec_for(&["/nonexistent/x"]), |_| {});
    check!(code == 127, "missing path gave {code}: {out}");
    Ok(())
}

fn t_hardening() -> Result<(), String> {
    let f = fixture();
    let script = "grep -E '^(CapEff|CapBnd|CapInh|CapAmb|Seccomp|NoNewPrivs):' /proc/self/status; \
        unshare -U true && echo UNSHARE_OK; mount -t tmpfs t /tmp && echo MOUNT_OK; \
        wc -c < /proc/keys; ls /proc/acpi | wc -l; echo 1 > /proc/sys/kernel/domainname && echo SYSCTL_WRITE; \
        ls /proc/self/fd | tr '\\n' ' '; echo; readlink /proc/1/exe; \
        touch /sys/x 2>/dev/null && echo SYS_WRITE; echo done";
    let (code, out) = run_sh(&f, sh(script), |_| {});
    check!(code == 0, "exit {code}: {out}");
    check!(out.contains("CapEff:\t00000000a80425fb"), "caps: {out}");
    check!(
        out.contains("CapInh:\t0000000000000000") && out.contains("CapAmb:\t0000000000000000"),
        "inh/amb: {out}"
    );
    check!(out.contains("Seccomp:\t2"), "seccomp: {out}");
    check!(
        !out.contains("UNSHARE_OK") && !out.contains("MOUNT_OK"),
        "unshare/mount allowed: {out}"
    );
    check!(
        out.contains("\n0\n0\n"),
        "/proc/keys or /proc/acpi not masked: {out}"
    );
    check!(
        !out.contains("SYSCTL_WRITE") && !out.contains("SYS_WRITE"),
        "/proc/sys or /sys writable: {out}"
    );
    check!(
        out.contains("0 1 2 3 \n") || out.contains("0 1 2 \n"),
        "fds: {out}"
    );
    check!(out.contains("done"), "{out}");
    Ok(())
}

fn t_mounts_and_dev() -> Result<(), String> {
    let f = fixture();
    let script = "ls /dev | tr '\\n' ' '; echo; cat /etc/hostname; grep -c localhost /etc/hosts; \
        grep ' /proc ' /proc/mounts; grep ' /dev ' /proc/mounts; grep -c . /proc/mounts; \
        echo x > /dev/null && echo NULL_OK; head -c 4 /dev/zero | wc -c; ip link 2>/dev/null | grep -c UP";
    let (code, out) = run_sh(&f, sh(script), |_| {});
    check!(code == 0, "exit {code}: {out}");
    for dev in [
        "full", "null", "ptmx", "pts", "random", "shm", "mqueue", "tty", "urandom", "zero", "fd",
        "stdin",
    ] {
        check!(out.contains(dev), "/dev/{dev} missing: {out}");
    }
    check!(out.contains("NULL_OK"), "{out}");
    check!(
        out.contains("proc /proc proc rw,nosuid,nodev,noexec"),
        "proc flags: {out}"
    );
    Ok(())
}

fn t_user_env_cwd() -> Result<(), String> {
    let f = fixture();
    let mut spec = sh("id; echo HOME=$HOME; pwd; echo FOO=$FOO");
    let mut p = spec.process().clone().unwrap();
    let mut env = p.env().clone().unwrap();
    env.push("FOO=bar baz".into());
    p.set_env(Some(env));
    p.set_cwd("/work/dir".into());
    spec.set_process(Some(p));
    let (code, out) = run_sh(&f, spec, |o| o.user = Some("bob".into()));
    check!(code == 0, "exit {code}: {out}");
    check!(
        out.contains("uid=1000(bob) gid=1000(bob) groups=50(staff),1000(bob)"),
        "id: {out}"
    );
    check!(
        out.contains("HOME=/home/bob") && out.contains("/work/dir") && out.contains("FOO=bar baz"),
        "{out}"
    );
    let (code, out) = run_sh(&f, sh("grep CapEff /proc/self/status"), |o| {
        o.user = Some("1234:1234".into())
    });
    check!(
        code == 0 && out.contains("CapEff:\t0000000000000000"),
        "non-root caps: {code} {out}"
    );
    let (code, out) = run_sh(&f, sh("true"), |o| o.user = Some("nosuchuser".into()));
    check!(
        code == 125 && out.contains("nosuchuser"),
        "bad user: {code} {out}"
    );
    Ok(())
}

fn t_init_reaps() -> Result<(), String> {
    let f = fixture();
    let (code, out) = run_sh(
        &f,
        sh("echo pid=$$; (sleep 0 &) ; sleep 0.2; ps -o pid,stat,comm | grep -c ' Z ' ; exit 3"),
        |o| o.init = true,
    );
    check!(code == 3, "exit {code}: {out}");
    check!(
        !out.contains("pid=1\n"),
        "command should not be pid 1 with init: {out}"
    );
    check!(out.trim_end().ends_with('0'), "zombies: {out}");
    Ok(())
}

fn t_readonly_and_volumes() -> Result<(), String> {
    let f = fixture();
    let vol = f.state.parent().unwrap().join("vol");
    std::fs::create_dir_all(&vol).unwrap();
    std::fs::write(vol.join("in.txt"), "hello").unwrap();
    let mut spec = sh(
        "cat /data/in.txt; echo; touch /data/x && echo RO_BROKEN; touch /etc/x && echo ROOT_RW; \
        touch /scratch/y && echo TMPFS_OK; grep ' /scratch ' /proc/mounts",
    );
    let mut mounts = spec.mounts().clone().unwrap();
    mounts.push(gcr_runtime::bind_mount(&vol, Path::new("/data"), true));
    mounts.push(gcr_runtime::tmpfs_mount(Path::new("/scratch"), "size=1m"));
    spec.set_mounts(Some(mounts));
    let mut root = spec.root().clone().unwrap();
    root.set_readonly(Some(true));
    spec.set_root(Some(root));
    let (code, out) = run_sh(&f, spec, |_| {});
    check!(code == 0, "exit {code}: {out}");
    check!(
        out.contains("hello")
            && !out.contains("RO_BROKEN")
            && !out.contains("ROOT_RW")
            && out.contains("TMPFS_OK"),
        "{out}"
    );
    check!(out.contains("nosuid,nodev,noexec"), "tmpfs flags: {out}");
    Ok(())
}

fn t_hostile_proc_symlink() -> Result<(), String> {
    let f = fixture();
    let target = f.state.parent().unwrap().join("hostdir");
    std::fs::create_dir_all(&target).unwrap();
    std::os::unix::fs::symlink(&target, f.rootfs.join("proc")).unwrap();
    let (code, out) = run_sh(&f, sh("true"), |_| {});
    check!(
        code == 125 && out.contains("symlink"),
        "proc symlink: {code} {out}"
    );
    std::fs::remove_file(f.rootfs.join("proc")).unwrap();
    // /etc/hosts pointing at a host path is resolved inside the rootfs.
    std::os::unix::fs::symlink(target.join("pwn"), f.rootfs.join("etc/hosts")).unwrap();
    let (code, out) = run_sh(&f, sh("cat /etc/hosts"), |_| {});
    check!(
        !target.join("pwn").exists(),
        "a file was created on the host"
    );
    check!(code == 0 || code == 125, "{code} {out}");
    Ok(())
}

fn t_mounts_do_not_leak() -> Result<(), String> {
    let before = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .count();
    let f = fixture();
    let _ = run_sh(&f, sh("true"), |_| {});
    let _ = run_sh(&f, spec_for(&["nosuchcmd"]), |_| {});
    let after = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .count();
    check!(before == after, "mount count changed: {before} -> {after}");
    Ok(())
}

fn tests() -> Vec<(&'static str, TestFn)> {
    vec![
        ("exit_code_and_pid1", t_exit_code_and_pid1),
        (
            "not_found_and_not_executable",
            t_not_found_and_not_executable,
        ),
        ("hardening", t_hardening),
        ("mounts_and_dev", t_mounts_and_dev),
        ("user_env_cwd", t_user_env_cwd),
        ("init_reaps", t_init_reaps),
        ("readonly_and_volumes", t_readonly_and_volumes),
        ("hostile_proc_symlink", t_hostile_proc_symlink),
        ("mounts_do_not_leak", t_mounts_do_not_leak),
        ("rootful_user_namespace", t_rootful_user_namespace),
        ("overlay_rootfs", t_overlay_rootfs),
        ("pids_and_memory_limits", t_pids_and_memory_limits),
        ("signal_forwarding", t_signal_forwarding),
    ]
}

fn t_rootful_user_namespace() -> Result<(), String> {
    if !nix::unistd::Uid::effective().is_root() || std::env::var_os(ROOTLESS_CHILD).is_some() {
        return Ok(());
    }
    let f = fixture();
    // The rootfs stays owned by ids 0..N on disk (in a 0700 temporary directory): the runtime
    // idmaps it into the namespace and opens every mount source before the child enters it.
    let mut spec = sh(
        "cat /proc/self/uid_map; id -u; stat -c %u:%g /bin/busybox; touch /made-inside; grep CapEff /proc/self/status",
    );
    gcr_runtime::set_user_namespace(&mut spec, &[(0, 200000, 65536)], &[(0, 200000, 65536)]);
    let (code, out) = run_sh(&f, spec, |_| {});
    check!(code == 0, "exit {code}: {out}");
    check!(out.contains("200000") && out.contains("\n0\n"), "{out}");
    check!(
        out.contains("\n0:0\n"),
        "image files not shown as root's: {out}"
    );
    let made = std::fs::symlink_metadata(f.rootfs.join("made-inside"));
    check!(
        matches!(&made, Ok(m) if std::os::unix::fs::MetadataExt::uid(m) == 0),
        "a file the container's root made is not stored as id 0: {made:?}"
    );
    Ok(())
}

fn t_overlay_rootfs() -> Result<(), String> {
    let f = fixture();
    let base = f.state.parent().unwrap().to_path_buf();
    let (upper, work) = (base.join("upper"), base.join("work"));
    std::fs::create_dir_all(&upper).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    let top = base.join("top");
    std::fs::create_dir_all(top.join("etc")).unwrap();
    std::fs::write(top.join("etc/motd"), "from the top layer").unwrap();
    let userxattr = std::env::var_os(ROOTLESS_CHILD).is_some();
    let out = f.state.join("out.txt");
    std::fs::create_dir_all(&f.state).unwrap();
    std::fs::set_permissions(&f.state, std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut spec =
        sh("cat /etc/motd; echo; echo new > /etc/created; rm /bin/vi; grep ' / ' /proc/mounts");
    let mut mounts = spec.mounts().clone().unwrap();
    mounts.push(gcr_runtime::bind_mount(&f.state, Path::new("/out"), false));
    spec.set_mounts(Some(mounts));
    let rootfs = RootfsSource::Overlay {
        lower: vec![top, f.rootfs.clone()],
        upper: upper.clone(),
        work,
        userxattr,
    };
    let opts = RunOptions::new(rootfs, ID, f.state.clone());
    let code = run_container(&spec, &opts).map_err(|e| e.to_string())?;
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    check!(code == 0, "exit {code}: {text}");
    check!(
        text.contains("from the top layer") && text.contains("overlay"),
        "{text}"
    );
    check!(
        upper.join("etc/created").exists(),
        "write did not reach the upper dir"
    );
    check!(
        f.rootfs.join("bin/vi").symlink_metadata().is_ok(),
        "lower dir was modified"
    );
    let mounted = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    check!(
        !mounted.contains(&f.state.display().to_string()),
        "overlay mount leaked to the caller"
    );
    Ok(())
}

fn t_pids_and_memory_limits() -> Result<(), String> {
    let f = fixture();
    let mut spec = sh("cat /proc/self/cgroup | grep -E 'pids|memory'; for i in 1 2 3 4 5 6 7 8; do sleep 1 & done 2>&1; echo spawned");
    let res = oci_spec::runtime::LinuxResourcesBuilder::default()
        .pids(
            oci_spec::runtime::LinuxPidsBuilder::default()
                .limit(4)
                .build()
                .unwrap(),
        )
        .memory(
            oci_spec::runtime::LinuxMemoryBuilder::default()
                .limit(64i64 << 20)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let mut linux = spec.linux().clone().unwrap();
    linux.set_resources(Some(res));
    spec.set_linux(Some(linux));
    let (code, out) = run_sh(&f, spec, |_| {});
    if std::env::var_os(ROOTLESS_CHILD).is_some() {
        // Rootless: no delegated cgroups here, the limits are skipped with a warning.
        check!(code == 0, "rootless run with limits failed: {code} {out}");
        return Ok(());
    }
    check!(code != 125, "exit {code}: {out}");
    check!(
        out.contains("pids:/\n") && out.contains("memory:/\n"),
        "cgroup namespace root: {out}"
    );
    check!(
        out.contains("can't fork") || out.contains("Resource temporarily unavailable"),
        "pids limit not enforced: {out}"
    );
    check!(
        !Path::new("/sys/fs/cgroup/pids/gcr").join(ID).exists(),
        "cgroup left behind"
    );
    Ok(())
}

fn t_signal_forwarding() -> Result<(), String> {
    let f = fixture();
    let me = std::process::id();
    let mut killer = Command::new("sh")
        .arg("-c")
        .arg(format!("sleep 0.5; kill -TERM {me}"))
        .spawn()
        .map_err(|e| e.to_string())?;
    let (code, out) = run_sh(
        &f,
        sh("trap 'echo got TERM; exit 42' TERM; sleep 5 & wait"),
        |_| {},
    );
    let _ = killer.wait();
    check!(
        code == 42 && out.contains("got TERM"),
        "signal not forwarded: {code} {out}"
    );
    // With --init, the init forwards it to the command.
    let mut killer = Command::new("sh")
        .arg("-c")
        .arg(format!("sleep 0.5; kill -TERM {me}"))
        .spawn()
        .map_err(|e| e.to_string())?;
    let (code, out) = run_sh(
        &f,
        sh("trap 'echo got TERM; exit 43' TERM; sleep 5 & wait"),
        |o| o.init = true,
    );
    let _ = killer.wait();
    check!(
        code == 43 && out.contains("got TERM"),
        "init did not forward: {code} {out}"
    );
    Ok(())
}

const ROOTLESS_CHILD: &str = "GCR_TEST_ROOTLESS_CHILD";

/// Runs this test binary again as the unprivileged fixture user (rootless mode).
fn run_rootless(filter: &[String]) -> bool {
    let user = std::env::var("GCR_TEST_USER").unwrap_or_else(|_| "gcrtest".into());
    let exists = nix::unistd::User::from_name(&user).ok().flatten().is_some();
    if !exists || Command::new("runuser").arg("--help").output().is_err() {
        let msg =
            format!("rootless cases need the user {user} (tests/fixtures/setup.sh) and runuser");
        if in_ci() {
            println!("FAIL: {msg}");
            return false;
        }
        println!("SKIP: {msg}");
        return true;
    }
    let mut exe = std::env::current_exe().unwrap();
    // The target dir may sit where the test user cannot reach it (a 0700 home): use a copy.
    let reachable = Command::new("runuser")
        .args(["-u", &user, "--", "test", "-x"])
        .arg(&exe)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let copy_dir = tempfile::Builder::new()
        .prefix("gcr-rt-bin-")
        .tempdir()
        .unwrap();
    if !reachable {
        std::fs::set_permissions(copy_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let copy = copy_dir.path().join("containers");
        std::fs::copy(&exe, &copy).unwrap();
        exe = copy;
    }
    println!("\n--- rootless, as {user} ---");
    let status = Command::new("runuser")
        .args(["-u", &user, "--"])
        .arg(exe)
        .args(filter)
        .env(ROOTLESS_CHILD, "1")
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
    if !nix::unistd::Uid::effective().is_root() {
        if !rootless_child {
            let verdict = if in_ci() { "FAIL" } else { "SKIP" };
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
        eprintln!(
            "{}: /bin/busybox missing (apt-get install busybox-static)",
            if in_ci() { "FAIL" } else { "SKIP" }
        );
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
