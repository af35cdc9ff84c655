//! End-to-end tests: `gcr run`, as root and as the unprivileged fixture user (rootless).
//!
//! Most cases use `--rootfs DIR` with a busybox rootfs made from busybox-static, so they need
//! no registry; the image cases use the fixture registry's busybox. Hardening is checked from
//! inside the container (capabilities, seccomp, masked and read-only paths, fds), and every
//! failure case checks that no mount and no container directory is left behind.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use support::{in_ci, stderr, stdout, TestStore};

// ---------------------------------------------------------------------------------------------
// Helpers

/// Docker's default capability set as /proc/PID/status prints it.
const DOCKER_CAPS: &str = "00000000a80425fb";

/// A busybox rootfs from busybox-static, with a user database gcr's `-u` reads.
struct Rootfs {
    dir: tempfile::TempDir,
}

impl Rootfs {
    fn new() -> Option<Rootfs> {
        if !Path::new("/bin/busybox").exists() {
            let msg =
                "/bin/busybox missing: apt-get install busybox-static (tests/fixtures/setup.sh)";
            if in_ci() {
                panic!("{msg}");
            }
            eprintln!("SKIP: {msg}");
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("gcr-run-rootfs-")
            .tempdir()
            .expect("temp dir");
        let root = dir.path();
        for d in [
            "bin", "sbin", "usr/bin", "usr/sbin", "etc", "tmp", "root", "home/bob", "proc", "sys",
            "dev",
        ] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777))
            .unwrap();
        std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
        let list = Command::new("/bin/busybox")
            .arg("--list-full")
            .output()
            .unwrap();
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            if applet != "bin/busybox" && !applet.is_empty() {
                let _ = std::os::unix::fs::symlink("/bin/busybox", root.join(applet));
            }
        }
        std::fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nbob:x:1000:1000::/home/bob:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            root.join("etc/group"),
            "root:x:0:\nwheel:x:10:root\nbob:x:1000:\nstaff:x:50:bob\n",
        )
        .unwrap();
        std::fs::write(root.join("notexec"), "#!/bin/sh\necho hi\n").unwrap();
        Some(Rootfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn arg(&self) -> String {
        self.path().display().to_string()
    }

    /// Hands the rootfs to `user` (rootless: container root is that user).
    fn chown(&self, user: &str) {
        let ok = Command::new("chown")
            .arg("-hR")
            .arg(format!("{user}:{user}"))
            .arg(self.path())
            .status();
        assert!(
            matches!(ok, Ok(s) if s.success()),
            "chown of the rootfs failed"
        );
    }
}

/// Who runs gcr: root, or the rootless fixture user through runuser.
#[derive(Clone, Copy, PartialEq, Debug)]
enum As {
    Root,
    Rootless,
}

fn test_user() -> Option<String> {
    let user = std::env::var("GCR_TEST_USER").unwrap_or_else(|_| "gcrtest".into());
    let exists = Command::new("id")
        .arg("-u")
        .arg(&user)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if exists {
        return Some(user);
    }
    let msg = format!("user {user} missing: run tests/fixtures/setup.sh");
    if in_ci() {
        panic!("{msg}");
    }
    eprintln!("SKIP: {msg}");
    None
}

/// A store and a rootfs usable by `who`.
struct Setup {
    who: As,
    user: String,
    store: TestStore,
    rootfs: Rootfs,
}

impl Setup {
    fn new(who: As) -> Option<Setup> {
        let rootfs = Rootfs::new()?;
        let store = TestStore::new();
        let user = match who {
            As::Root => "root".to_string(),
            As::Rootless => {
                let user = test_user()?;
                rootfs.chown(&user);
                let ok = Command::new("chown")
                    .arg("-R")
                    .arg(&user)
                    .arg(store.root())
                    .status();
                assert!(matches!(ok, Ok(s) if s.success()));
                user
            }
        };
        Some(Setup {
            who,
            user,
            store,
            rootfs,
        })
    }

    fn cmd(&self) -> Command {
        let mut cmd = match self.who {
            As::Root => Command::new(support::gcr_bin()),
            As::Rootless => {
                let mut c = Command::new("runuser");
                c.args(["-u", &self.user, "--"]).arg(gcr_for(&self.user));
                c
            }
        };
        cmd.arg("--root").arg(self.store.root()).current_dir("/");
        cmd
    }

    /// `gcr run --rm --rootfs ROOTFS ARGS...` (options go before `--rootfs`'s command).
    fn run(&self, opts: &[&str], command: &[&str]) -> Output {
        let mut cmd = self.cmd();
        cmd.arg("run")
            .arg("--rm")
            .args(opts)
            .arg("--rootfs")
            .arg(self.rootfs.path())
            .args(command);
        cmd.output().expect("spawn gcr")
    }

    fn sh(&self, opts: &[&str], script: &str) -> Output {
        self.run(opts, &["/bin/sh", "-c", script])
    }
}

/// The gcr binary as `user` can run it: cargo's, or a copy when the target dir is out of the
/// user's reach (e.g. under a 0700 home).
fn gcr_for(user: &str) -> std::path::PathBuf {
    static COPY: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    let bin = support::gcr_bin();
    let reachable = Command::new("runuser")
        .args(["-u", user, "--", "test", "-x"])
        .arg(&bin)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if reachable {
        return bin;
    }
    COPY.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("gcr-e2e-bin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let copy = dir.join("gcr");
        std::fs::copy(&bin, &copy).unwrap();
        copy
    })
    .clone()
}

fn mounts_mentioning(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .map(String::from)
        .collect()
}

/// Nothing of this setup is mounted on the host and no container record is left.
fn assert_no_leftovers(s: &Setup) {
    let root = s.store.root().display().to_string();
    assert!(
        mounts_mentioning(&root).is_empty(),
        "mounts left: {:?}",
        mounts_mentioning(&root)
    );
    let rootfs = s.rootfs.arg();
    assert!(
        mounts_mentioning(&rootfs).is_empty(),
        "rootfs mounts left: {:?}",
        mounts_mentioning(&rootfs)
    );
    let containers = s.store.root().join("containers");
    if let Ok(entries) = std::fs::read_dir(&containers) {
        let left: Vec<_> = entries.flatten().map(|e| e.file_name()).collect();
        assert!(
            left.is_empty(),
            "container records left after --rm: {left:?}"
        );
    }
}

fn both(test: fn(&Setup)) {
    for who in [As::Root, As::Rootless] {
        let Some(s) = Setup::new(who) else { continue };
        eprintln!("--- as {who:?}");
        test(&s);
        assert_no_leftovers(&s);
    }
}

fn expect(out: &Output, code: i32) -> String {
    let text = stdout(out);
    assert_eq!(
        out.status.code(),
        Some(code),
        "expected exit {code}\nstdout: {text}\nstderr: {}",
        stderr(out)
    );
    text
}

// ---------------------------------------------------------------------------------------------
// Process: exit codes, PID 1, hostname, env, cwd, user

#[test]
fn exit_status_is_the_containers() {
    both(|s| {
        expect(&s.sh(&[], "exit 3"), 3);
        expect(&s.run(&[], &["true"]), 0);
        // Killed by a signal: 128 + N, as a shell reports it.
        expect(&s.sh(&["--init"], "kill -KILL $$"), 137);
    });
}

#[test]
fn not_found_127_not_executable_126_with_one_line() {
    both(|s| {
        let out = s.run(&[], &["nosuchcommand"]);
        expect(&out, 127);
        let err = stderr(&out);
        assert!(
            err.contains("nosuchcommand") && err.contains("not found"),
            "{err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "one clear line: {err}");
        let out = s.run(&[], &["/notexec"]);
        expect(&out, 126);
        assert!(
            stderr(&out).contains("permission denied"),
            "{}",
            stderr(&out)
        );
        expect(&s.run(&[], &["/etc"]), 126);
        expect(&s.run(&[], &["/no/such/path"]), 127);
        // An empty command word (ENTRYPOINT [""]): not found, not "/bin/ is a directory".
        let out = s.run(&["--entrypoint", ""], &[""]);
        expect(&out, 127);
        assert!(
            stderr(&out).contains("\"\": executable file not found"),
            "{}",
            stderr(&out)
        );
    });
}

#[test]
fn gcr_failures_are_125() {
    both(|s| {
        let out = s.run(&["--network", "bogus"], &["true"]);
        expect(&out, 125);
        let out = s.run(&["-v", "/nonexistent-gcr-volume:/x"], &["true"]);
        expect(&out, 125);
        assert!(
            stderr(&out).contains("/nonexistent-gcr-volume"),
            "{}",
            stderr(&out)
        );
        let out = s.run(&["-u", "nosuchuser"], &["true"]);
        expect(&out, 125);
        assert!(stderr(&out).contains("nosuchuser"), "{}", stderr(&out));
        let out = s.run(&["--cap-add", "NOT_A_CAP"], &["true"]);
        expect(&out, 125);
        let mut cmd = s.cmd();
        let out = cmd
            .args(["run", "--rm", "--rootfs", "/nonexistent-gcr-rootfs", "true"])
            .output()
            .unwrap();
        expect(&out, 125);
        assert!(
            stderr(&out).contains("/nonexistent-gcr-rootfs"),
            "{}",
            stderr(&out)
        );
    });
}

#[test]
fn command_is_pid_1_with_its_own_hostname() {
    both(|s| {
        let out = expect(&s.sh(&[], "echo $$; hostname; cat /etc/hostname"), 0);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.first(), Some(&"1"), "{out}");
        let host = nix_hostname();
        assert!(
            lines.get(1).is_some_and(|h| h.len() == 12 && *h != host),
            "{out}"
        );
        assert_eq!(lines.get(1), lines.get(2), "{out}");
        let out = expect(
            &s.sh(
                &["--hostname", "box1", "--network", "none"],
                "hostname; grep box1 /etc/hosts",
            ),
            0,
        );
        assert!(
            out.starts_with("box1\n") && out.lines().count() == 2,
            "{out}"
        );
        // Host processes are invisible.
        let out = expect(&s.sh(&[], "ls /proc | grep -c '^[0-9]'"), 0);
        assert!(out.trim().parse::<u32>().unwrap_or(99) <= 3, "{out}");
    });
}

fn nix_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn env_workdir_and_user() {
    both(|s| {
        let envfile = s.store.root().join("envfile");
        std::fs::write(&envfile, "# comment\nFROM_FILE=yes\n").unwrap();
        std::fs::set_permissions(&envfile, std::fs::Permissions::from_mode(0o644)).unwrap();
        let out = expect(
            &s.sh(
                &[
                    "-e",
                    "A=1 2",
                    "--env-file",
                    &envfile.display().to_string(),
                    "-w",
                    "/work/here",
                ],
                "echo A=$A; echo F=$FROM_FILE; pwd; echo HOME=$HOME; id",
            ),
            0,
        );
        assert!(
            out.contains("A=1 2\nF=yes\n/work/here\nHOME=/root\nuid=0(root) gid=0(root)"),
            "{out}"
        );
        let out = expect(
            &s.sh(
                &["-u", "bob"],
                "id; echo HOME=$HOME; grep CapEff /proc/self/status",
            ),
            0,
        );
        assert!(
            out.contains("uid=1000(bob) gid=1000(bob) groups=50(staff),1000(bob)"),
            "{out}"
        );
        assert!(
            out.contains("HOME=/home/bob") && out.contains("CapEff:\t0000000000000000"),
            "{out}"
        );
        let out = expect(&s.sh(&["-u", "1234:1234"], "id -u; id -g"), 0);
        assert_eq!(out, "1234\n1234\n");
        expect(&s.run(&["-u", "2147483648"], &["true"]), 125);
    });
}

// ---------------------------------------------------------------------------------------------
// Hardening, checked from inside

#[test]
fn docker_default_hardening() {
    both(|s| {
        let script = "grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status; \
            unshare -U true 2>/dev/null && echo UNSHARE_ALLOWED; \
            mount -t tmpfs none /mnt 2>/dev/null && echo MOUNT_ALLOWED; \
            echo x 2>/dev/null > /proc/sys/kernel/domainname && echo PROCSYS_WRITABLE; \
            echo x 2>/dev/null > /proc/sysrq-trigger && echo SYSRQ_WRITABLE; \
            touch /sys/kernel/x 2>/dev/null && echo SYS_WRITABLE; \
            grep -E ' (cgroup|cgroup2) ' /proc/mounts | grep -v ' ro,' && echo CGROUP_RW; \
            touch /sys/fs/cgroup/x 2>/dev/null && echo CGROUPFS_WRITABLE; \
            echo keys=$(wc -c < /proc/keys) acpi=$(ls /proc/acpi | wc -l); \
            (ls /proc/1/fd > /tmp/fds); echo fds=$(tr '\\n' ' ' < /tmp/fds); \
            grep -E ' /(proc|dev|dev/shm|dev/mqueue|dev/pts|sys) ' /proc/mounts";
        let out = expect(&s.sh(&[], script), 0);
        assert!(out.contains(&format!("CapEff:\t{DOCKER_CAPS}")), "{out}");
        assert!(out.contains(&format!("CapBnd:\t{DOCKER_CAPS}")), "{out}");
        assert!(
            out.contains("CapInh:\t0000000000000000") && out.contains("CapAmb:\t0000000000000000"),
            "{out}"
        );
        assert!(
            out.contains("NoNewPrivs:\t0") && out.contains("Seccomp:\t2"),
            "{out}"
        );
        for bad in [
            "UNSHARE_ALLOWED",
            "MOUNT_ALLOWED",
            "PROCSYS_WRITABLE",
            "SYSRQ_WRITABLE",
            "SYS_WRITABLE",
            "CGROUP_RW",
            "CGROUPFS_WRITABLE",
        ] {
            assert!(!out.contains(bad), "{bad}: {out}");
        }
        assert!(out.contains("keys=0 acpi=0"), "masked paths: {out}");
        assert!(
            out.contains("fds=0 1 2\n"),
            "only stdio reaches PID 1: {out}"
        );
        assert!(
            out.contains("proc /proc proc rw,nosuid,nodev,noexec"),
            "{out}"
        );
        assert!(out.contains(" /sys sysfs ro,nosuid,nodev,noexec"), "{out}");
        assert!(
            out.contains("/dev/shm tmpfs rw,nosuid,nodev,noexec"),
            "{out}"
        );
        assert!(out.contains(" /dev tmpfs rw,nosuid"), "{out}");
    });
}

#[test]
fn dev_has_the_standard_nodes_only() {
    both(|s| {
        let out = expect(
            &s.sh(
                &[],
                "ls /dev | tr '\\n' ' '; echo; echo x > /dev/null && head -c 3 /dev/zero | wc -c",
            ),
            0,
        );
        assert!(
            out.starts_with("core fd full mqueue null ptmx pts random shm stderr stdin stdout tty urandom zero \n"),
            "{out}"
        );
        assert!(out.ends_with("3\n"), "{out}");
    });
}

#[test]
fn privileged_caps_and_security_opts() {
    both(|s| {
        let status = "grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status";
        let out = expect(&s.sh(&["--privileged"], status), 0);
        assert!(
            out.contains("Seccomp:\t0") && !out.contains(&format!("CapEff:\t{DOCKER_CAPS}")),
            "{out}"
        );
        let out = expect(
            &s.sh(&["--cap-drop", "ALL", "--cap-add", "CHOWN"], status),
            0,
        );
        assert!(out.contains("CapEff:\t0000000000000001"), "{out}");
        let out = expect(&s.sh(&["--cap-drop", "NET_RAW"], status), 0);
        assert!(out.contains("CapEff:\t00000000a80405fb"), "{out}");
        let out = expect(&s.sh(&["--security-opt", "no-new-privileges"], status), 0);
        assert!(
            out.contains("NoNewPrivs:\t1") && out.contains("Seccomp:\t2"),
            "{out}"
        );
        let out = expect(&s.sh(&["--security-opt", "seccomp=unconfined"], status), 0);
        assert!(out.contains("Seccomp:\t0"), "{out}");
        // No SELinux here: label=disable is accepted (as Docker), an unknown option is not.
        expect(&s.sh(&["--security-opt", "label=disable"], "true"), 0);
        let bad = s.sh(&["--security-opt", "nonsense=1"], "true");
        assert_eq!(bad.status.code(), Some(125), "{}", stderr(&bad));
        assert!(stderr(&bad).contains("nonsense"), "{}", stderr(&bad));
        // A profile file in Docker's format.
        let profile = s.store.root().join("profile.json");
        std::fs::write(
            &profile,
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO"}]}"#,
        )
        .unwrap();
        std::fs::set_permissions(&profile, std::fs::Permissions::from_mode(0o644)).unwrap();
        let opt = format!("seccomp={}", profile.display());
        let out = s.sh(
            &["--security-opt", &opt],
            "mkdir /tmp/d && echo MKDIR_OK; echo done",
        );
        let text = expect(&out, 0);
        assert!(
            text.contains("done") && !text.contains("MKDIR_OK"),
            "{text}"
        );
    });
}

#[test]
fn no_new_privileges_blocks_setuid() {
    both(|s| {
        // busybox su is setuid-free here; check the flag instead of a setuid escalation.
        let out = expect(
            &s.sh(
                &["--security-opt", "no-new-privileges", "-u", "bob"],
                "grep NoNewPrivs /proc/self/status",
            ),
            0,
        );
        assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    });
}

#[test]
fn subordinate_ids_work_inside() {
    // Rootless: the whole subuid/subgid range is mapped, so chown to other ids works.
    both(|s| {
        let out = expect(
            &s.sh(
                &[],
                "touch /tmp/f && chown 100:100 /tmp/f && stat -c %u:%g /tmp/f; \
                 chown 65000:65000 /tmp/f && stat -c %u:%g /tmp/f; cat /proc/self/setgroups",
            ),
            0,
        );
        assert_eq!(out, "100:100\n65000:65000\nallow\n");
    });
}

#[test]
fn gcr_binary_cannot_be_reached_from_inside() {
    // CVE-2019-5736: with --init, PID 1 is a gcr process; its /proc/1/exe must not open.
    both(|s| {
        let before = std::fs::read(support::gcr_bin()).unwrap();
        let out = expect(
            &s.sh(
                &["--init"],
                "head -c 1 /proc/1/exe >/dev/null 2>&1 && echo EXE_READABLE; \
                 echo x 2>/dev/null >> /proc/1/exe && echo EXE_WRITABLE; \
                 readlink /proc/1/fd/0 >/dev/null 2>&1 && echo FD_LINKS_READABLE; \
                 readlink /proc/1/exe >/dev/null 2>&1 && echo EXE_LINK_READABLE; echo done",
            ),
            0,
        );
        assert_eq!(out, "done\n");
        assert!(
            std::fs::read(support::gcr_bin()).unwrap() == before,
            "gcr binary changed"
        );
    });
}

// ---------------------------------------------------------------------------------------------
// Filesystem: volumes, tmpfs, read-only, hostile rootfs

#[test]
fn volumes_tmpfs_and_read_only_root() {
    both(|s| {
        let vol = s.store.root().join("vol");
        std::fs::create_dir_all(&vol).unwrap();
        std::fs::write(vol.join("in.txt"), "from the host").unwrap();
        let ro = format!("{}:/data:ro", vol.display());
        let rw = format!("{}:/rw", vol.display());
        if s.who == As::Rootless {
            let _ = Command::new("chown")
                .arg("-R")
                .arg(&s.user)
                .arg(&vol)
                .status();
        }
        let out = expect(
            &s.sh(
                &["-v", &ro, "-v", &rw, "--tmpfs", "/scratch", "--read-only"],
                "cat /data/in.txt; echo; touch /data/x 2>/dev/null && echo DATA_WRITABLE; \
                 echo written > /rw/out.txt; touch /etc/x 2>/dev/null && echo ROOT_WRITABLE; \
                 touch /scratch/y && echo SCRATCH_OK; grep ' /scratch ' /proc/mounts",
            ),
            0,
        );
        assert!(out.starts_with("from the host\n"), "{out}");
        assert!(
            !out.contains("DATA_WRITABLE") && !out.contains("ROOT_WRITABLE"),
            "{out}"
        );
        assert!(
            out.contains("SCRATCH_OK") && out.contains("nosuid,nodev,noexec"),
            "{out}"
        );
        assert_eq!(
            std::fs::read_to_string(vol.join("out.txt")).unwrap(),
            "written\n"
        );
    });
}

#[test]
fn hostile_rootfs_cannot_redirect_mounts() {
    both(|s| {
        let outside = s.store.root().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        // /proc as a symlink to a host directory: refused.
        std::fs::remove_dir(s.rootfs.path().join("proc")).unwrap();
        std::os::unix::fs::symlink(&outside, s.rootfs.path().join("proc")).unwrap();
        let out = s.run(&[], &["true"]);
        expect(&out, 125);
        assert!(stderr(&out).contains("symlink"), "{}", stderr(&out));
        std::fs::remove_file(s.rootfs.path().join("proc")).unwrap();
        std::fs::create_dir(s.rootfs.path().join("proc")).unwrap();
        // /etc/hosts and /dev as symlinks to host paths resolve inside the rootfs.
        std::os::unix::fs::symlink(outside.join("hosts"), s.rootfs.path().join("etc/hosts"))
            .unwrap();
        std::fs::remove_dir(s.rootfs.path().join("dev")).unwrap();
        std::os::unix::fs::symlink(&outside, s.rootfs.path().join("dev")).unwrap();
        if s.who == As::Rootless {
            let _ = Command::new("chown")
                .arg("-hR")
                .arg(&s.user)
                .arg(s.rootfs.path())
                .status();
        }
        let out = s.run(&[], &["true"]);
        assert!(
            matches!(out.status.code(), Some(0) | Some(125)),
            "{}",
            stderr(&out)
        );
        let entries: Vec<_> = std::fs::read_dir(&outside)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(
            entries.is_empty(),
            "the container wrote to the host: {entries:?}"
        );
    });
}

// ---------------------------------------------------------------------------------------------
// init, network, tty

#[test]
fn init_reaps_zombies_and_forwards_exit() {
    both(|s| {
        let out = expect(
            &s.sh(&["--init"], "echo $$; sh -c 'sleep 0 & exec sleep 0.3' & sleep 0.6; ps -o stat | grep -c '^Z'; exit 4"),
            4,
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_ne!(
            lines.first(),
            Some(&"1"),
            "with --init the command is not PID 1: {out}"
        );
        assert_eq!(lines.last(), Some(&"0"), "zombies left: {out}");
    });
}

#[test]
fn network_none_and_host() {
    both(|s| {
        let out = expect(
            &s.sh(
                &["--network", "none"],
                "ls /sys/class/net | tr '\\n' ' '; echo; cat /etc/resolv.conf",
            ),
            0,
        );
        assert!(out.starts_with("lo \n"), "{out}");
        assert!(
            !out.contains("nameserver 127."),
            "loopback resolver kept: {out}"
        );
        // Other tests add and remove veths meanwhile: the container sees the host's links,
        // so every link present both before and after, and none that was never there.
        let host_links = || -> std::collections::BTreeSet<String> {
            std::fs::read_dir("/sys/class/net")
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        };
        let before = host_links();
        let out = expect(&s.sh(&["--network", "host"], "ls /sys/class/net"), 0);
        let after = host_links();
        let seen: std::collections::BTreeSet<String> =
            out.split_whitespace().map(str::to_string).collect();
        for link in before.intersection(&after) {
            assert!(seen.contains(link), "host link {link} missing: {out}");
        }
        for link in &seen {
            assert!(
                before.contains(link) || after.contains(link),
                "link {link} is not the host's: {out}"
            );
        }
        assert!(seen.len() > 1, "only loopback: {out}");
    });
}

#[test]
fn tty_gets_a_pty_in_the_container() {
    if Command::new("script").arg("--version").output().is_err() {
        assert!(!in_ci(), "script (util-linux) missing");
        return;
    }
    both(|s| {
        let mut gcr = format!(
            "{} --root {} run --rm -t --rootfs {} sh -c 'tty; stty size'",
            support::gcr_bin().display(),
            s.store.root().display(),
            s.rootfs.arg()
        );
        if s.who == As::Rootless {
            gcr = gcr.replacen(
                &support::gcr_bin().display().to_string(),
                &format!("runuser -u {} -- {}", s.user, gcr_for(&s.user).display()),
                1,
            );
        }
        let out = Command::new("script")
            .args(["-qec", &format!("stty cols 77 rows 11; {gcr}"), "/dev/null"])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let text = stdout(&out);
        assert!(text.contains("/dev/pts/0"), "{text} {}", stderr(&out));
        assert!(text.contains("11 77"), "window size: {text}");
    });
}

#[test]
fn interactive_stdin_reaches_the_container() {
    both(|s| {
        let mut cmd = s.cmd();
        cmd.args(["run", "--rm", "-i", "--rootfs"])
            .arg(s.rootfs.path())
            .args(["sh", "-c", "read x; echo got $x"]);
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(expect(&out, 0), "got hello\n");
        // Without -i, stdin is empty.
        let out = s.sh(&[], "cat; echo end");
        assert_eq!(expect(&out, 0), "end\n");
    });
}

#[test]
fn signals_are_forwarded() {
    both(|s| {
        let mut cmd = s.cmd();
        cmd.args(["run", "--rm", "--rootfs"])
            .arg(s.rootfs.path())
            .args([
                "sh",
                "-c",
                "trap 'echo got TERM; exit 42' TERM; echo ready; sleep 10 & wait",
            ]);
        cmd.stdout(std::process::Stdio::piped());
        let child = cmd.spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(700));
        // Signal gcr itself (under runuser, its child: runuser would re-raise the signal on
        // itself after forwarding it); gcr forwards it to the container.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(gcr_pid(s, &child).to_string())
            .status();
        let out = child.wait_with_output().unwrap();
        let text = expect(&out, 42);
        assert!(text.contains("got TERM"), "{text}");
    });
}

// ---------------------------------------------------------------------------------------------
// Images from the fixture registry

fn image() -> Option<String> {
    support::registry().map(|r| format!("{r}/busybox:latest"))
}

#[test]
fn runs_an_image_and_removes_it() {
    let Some(image) = image() else { return };
    for who in [As::Root, As::Rootless] {
        let Some(s) = Setup::new(who) else { continue };
        let mut cmd = s.cmd();
        let out = cmd
            .args([
                "run",
                "--rm",
                "--network",
                "none",
                &image,
                "sh",
                "-c",
                "echo hi; echo $$; touch /new",
            ])
            .output()
            .unwrap();
        assert_eq!(expect(&out, 0), "hi\n1\n", "{who:?}");
        assert_no_leftovers(&s);
        // The layers are untouched by the container's write.
        let out = s
            .cmd()
            .args([
                "run",
                "--rm",
                &image,
                "sh",
                "-c",
                "test -e /new && echo LEAKED; echo ok",
            ])
            .output()
            .unwrap();
        assert_eq!(expect(&out, 0), "ok\n");
        let out = s
            .cmd()
            .args(["run", "--rm", &image, "nosuchcommand"])
            .output()
            .unwrap();
        expect(&out, 127);
        assert_no_leftovers(&s);
    }
}

#[test]
fn missing_image_is_125() {
    let Some(reg) = support::registry() else {
        return;
    };
    let s = Setup::new(As::Root).unwrap_or_else(|| panic!("setup"));
    let out = s
        .cmd()
        .args([
            "run",
            "--rm",
            &format!("{reg}/no-such-image:latest"),
            "true",
        ])
        .output()
        .unwrap();
    expect(&out, 125);
    assert!(stderr(&out).contains("no-such-image"), "{}", stderr(&out));
    assert_no_leftovers(&s);
}

/// Waits up to 10 s for `dir` to be empty (or missing); returns what is left.
fn wait_empty(dir: &Path) -> Vec<std::ffi::OsString> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let left: Vec<_> = std::fs::read_dir(dir)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        if left.is_empty() || std::time::Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn rm_deletes_the_upper_dir_after_exit_and_without_rm_the_container_stays() {
    let Some(image) = image() else { return };
    for who in [As::Root, As::Rootless] {
        let Some(s) = Setup::new(who) else { continue };
        // The container writes; its output is read to EOF, so nothing may hold the pipe.
        let out = s
            .cmd()
            .args([
                "run",
                "--rm",
                &image,
                "sh",
                "-c",
                "dd if=/dev/zero of=/big bs=1M count=8 2>/dev/null; echo wrote",
            ])
            .output()
            .unwrap();
        assert_eq!(expect(&out, 0), "wrote\n", "{who:?}");
        assert_no_leftovers(&s);
        let tmp = s.store.root().join("tmp");
        assert!(
            wait_empty(&tmp).is_empty(),
            "{who:?}: files of the --rm container left in tmp/"
        );
        let check = s.cmd().args(["system", "check"]).output().unwrap();
        assert!(check.status.success(), "{who:?}: {}", stdout(&check));

        // Without --rm the container is kept, as Docker keeps it, and keeps its image in use.
        let out = s.cmd().args(["run", &image, "true"]).output().unwrap();
        expect(&out, 0);
        let kept = std::fs::read_dir(s.store.root().join("containers"))
            .unwrap()
            .count();
        assert_eq!(kept, 1, "{who:?}");
        let rmi = s.cmd().args(["rmi", &image]).output().unwrap();
        assert!(
            !rmi.status.success(),
            "{who:?}: rmi of an image in use succeeded"
        );
    }
}

#[test]
fn memory_pids_and_cpu_limits_reach_the_cgroup() {
    let Some(image) = image() else { return };
    let Some(s) = Setup::new(As::Root) else {
        return;
    };
    // Works on v1 (this machine), v2 and hybrid: read whichever file the container sees.
    let script = "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max; \
                  cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max;";
    let out = s
        .cmd()
        .args([
            "run",
            "--rm",
            "-m",
            "16m",
            "--pids-limit",
            "12",
            "--cpus",
            "0.5",
            &image,
            "sh",
            "-c",
            script,
        ])
        .output()
        .unwrap();
    let text = expect(&out, 0);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], (16u64 << 20).to_string(), "{text}");
    assert_eq!(lines[1], "12", "{text}");
    let bad = s
        .cmd()
        .args(["run", "--rm", "-m", "lots", &image, "true"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(125));
    assert!(stderr(&bad).contains("--memory"), "{}", stderr(&bad));
}

/// "20.37MiB" (the docker CLI's binary sizes) in bytes.
fn binary_bytes(text: &str) -> f64 {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale = match unit {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        other => panic!("unit {other:?} in {text:?}"),
    };
    number.parse::<f64>().unwrap() * scale
}

/// A /proc/PID/status field as a number (kB for sizes).
fn status_number(pid: &str, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn stats_numbers_are_the_cgroups_or_said_to_come_from_proc() {
    let Some(image) = image() else { return };
    for who in [As::Root, As::Rootless] {
        let Some(s) = Setup::new(who) else { continue };
        let gcr = |args: &[&str]| s.cmd().args(args).output().unwrap();
        let id = expect(
            &gcr(&[
                "run",
                "-d",
                "--name",
                "st",
                "-m",
                "64m",
                &image,
                "sh",
                "-c",
                "dd if=/dev/zero of=/dev/shm/x bs=1M count=20 2>/dev/null; touch /tmp/done; sleep 60",
            ]),
            0,
        )
        .trim()
        .to_string();
        let info: serde_json::Value =
            serde_json::from_str(&expect(&gcr(&["inspect", "st"]), 0)).unwrap();
        let pid1 = info[0]["State"]["Pid"].as_i64().unwrap().to_string();
        // Until the 20 MiB are written (the shell then runs sleep).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !Path::new(&format!("/proc/{pid1}/root/tmp/done")).exists() {
            assert!(std::time::Instant::now() < deadline, "dd did not finish");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        let out = gcr(&["stats", "--no-stream", "--format", "json", "st"]);
        let row: serde_json::Value = serde_json::from_str(expect(&out, 0).trim()).unwrap();
        let note = stderr(&out);
        assert_eq!(row["Name"], "st", "{row}");
        assert_eq!(row["ID"], &id[..12], "{row}");
        assert!(row["CPUPerc"].as_str().unwrap().ends_with('%'), "{row}");
        let (used, limit) = row["MemUsage"].as_str().unwrap().split_once(" / ").unwrap();
        let used = binary_bytes(used);
        let pids: u64 = row["PIDs"].as_str().unwrap().parse().unwrap();
        let (rx, _) = row["NetIO"].as_str().unwrap().split_once(" / ").unwrap();
        assert!(rx.ends_with('B'), "{row}");
        if who == As::Root {
            // The container's own groups: v1 (this machine) or v2.
            let v1 = format!("/sys/fs/cgroup/memory/gcr/{id}");
            let (usage_file, pids_file) = if Path::new(&v1).is_dir() {
                (
                    format!("{v1}/memory.usage_in_bytes"),
                    format!("/sys/fs/cgroup/pids/gcr/{id}/pids.current"),
                )
            } else {
                (
                    format!("/sys/fs/cgroup/gcr/{id}/memory.current"),
                    format!("/sys/fs/cgroup/gcr/{id}/pids.current"),
                )
            };
            let read = |f: &str| -> f64 {
                std::fs::read_to_string(f)
                    .unwrap_or_else(|e| panic!("{f}: {e}"))
                    .trim()
                    .parse()
                    .unwrap()
            };
            let usage = read(&usage_file);
            assert!(
                usage > 20.0 * 1048576.0,
                "the cgroup counts the tmpfs file: {usage}"
            );
            assert!(
                (used - usage).abs() <= usage * 0.1,
                "stats {used} vs {usage_file} {usage}: {row}"
            );
            assert_eq!(limit, "64MiB", "{row}");
            assert_eq!(pids as f64, read(&pids_file), "{row}");
            assert!(
                note.is_empty(),
                "figures from its cgroup need no note: {note}"
            );
            // The other formats show the same reading.
            let text = stdout(&gcr(&[
                "stats",
                "--no-stream",
                "--format",
                "{{.Name}}: {{.MemUsage}}",
            ]));
            assert!(
                text.starts_with("st: ") && text.contains("/ 64MiB"),
                "{text}"
            );
            let table = stdout(&gcr(&["stats", "--no-stream"]));
            assert!(
                table.starts_with("CONTAINER ID   NAME   CPU %")
                    && table.contains("MEM USAGE / LIMIT")
                    && table.contains(&id[..12]),
                "{table}"
            );
        } else {
            // Rootless on cgroup v1: no cgroup. Counted from /proc, and said so: resident
            // memory of its processes, the host's memory as the limit, their tasks.
            let theirs = std::fs::read_link(format!("/proc/{pid1}/ns/pid")).unwrap();
            let members: Vec<String> = std::fs::read_dir("/proc")
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|p| p.parse::<u32>().is_ok())
                .filter(|p| {
                    std::fs::read_link(format!("/proc/{p}/ns/pid")).ok() == Some(theirs.clone())
                })
                .collect();
            let rss: u64 = members
                .iter()
                .map(|p| status_number(p, "VmRSS:") * 1024)
                .sum();
            let threads: u64 = members.iter().map(|p| status_number(p, "Threads:")).sum();
            assert!(
                (used - rss as f64).abs() <= rss as f64 * 0.1,
                "stats {used} vs resident {rss}: {row}"
            );
            let host = status_number_meminfo() as f64;
            let limit = binary_bytes(limit);
            assert!(
                (limit - host).abs() <= host * 0.001,
                "{limit} vs MemTotal {host}: {row}"
            );
            assert_eq!(pids, threads, "{row}");
            assert!(
                note.contains("no cgroup of its own") && note.contains("64 MiB is not enforced"),
                "{note}"
            );
        }
        // A container that is not running shows Docker's zeros with -a, none without.
        expect(&gcr(&["rm", "-f", "st"]), 0);
        let out = gcr(&["create", "--name", "idle", &image, "true"]);
        expect(&out, 0);
        assert_eq!(
            expect(&gcr(&["stats", "--no-stream", "--format", "{{.Name}}"]), 0),
            ""
        );
        let all = expect(
            &gcr(&[
                "stats",
                "-a",
                "--no-stream",
                "--format",
                "{{.Name}} {{.MemUsage}} {{.PIDs}}",
            ]),
            0,
        );
        assert_eq!(all, "idle 0B / 0B 0\n");
        let missing = gcr(&["stats", "--no-stream", "nosuch"]);
        assert_ne!(missing.status.code(), Some(0));
        assert!(
            stderr(&missing).contains("no such container"),
            "{}",
            stderr(&missing)
        );
        expect(&gcr(&["rm", "idle"]), 0);
        assert_no_leftovers(&s);
    }
}

/// The machine's memory (MemTotal), bytes.
fn status_number_meminfo() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap()
        * 1024
}

#[test]
fn images_with_more_layers_than_one_page_of_mount_options_run() {
    let Some(image) = image() else { return };
    for who in [As::Root, As::Rootless] {
        let Some(s) = Setup::new(who) else { continue };
        // 70 COPY layers: their lower dirs do not fit in mount(2)'s 4096-byte options.
        let context = tempfile::tempdir().unwrap();
        let mut containerfile = format!("FROM {image}\n");
        for i in 1..=70 {
            std::fs::write(context.path().join(format!("f{i}")), format!("layer {i}\n")).unwrap();
            containerfile.push_str(&format!("COPY f{i} /f{i}\n"));
        }
        std::fs::write(context.path().join("Containerfile"), containerfile).unwrap();
        std::fs::set_permissions(context.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        for entry in std::fs::read_dir(context.path()).unwrap().flatten() {
            std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let out = s
            .cmd()
            .args(["build", "-q", "-t", "localhost/many:70"])
            .arg(context.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{who:?}: build failed: {}",
            stderr(&out)
        );
        let out = s
            .cmd()
            .args([
                "run",
                "--rm",
                "localhost/many:70",
                "sh",
                "-c",
                "cat /f1 /f70; ls / | grep -c '^f[0-9]'",
            ])
            .output()
            .unwrap();
        assert_eq!(expect(&out, 0), "layer 1\nlayer 70\n70\n", "{who:?}");
        assert_no_leftovers(&s);
    }
}

#[test]
fn kept_containers_are_listed_named_and_removed() {
    let Some(image) = image() else { return };
    let Some(s) = Setup::new(As::Root) else {
        return;
    };
    let run = |args: &[&str]| s.cmd().arg("run").args(args).output().unwrap();
    expect(&run(&["--name", "kept", &image, "sh", "-c", "exit 3"]), 3);
    let dup = run(&["--name", "kept", &image, "true"]);
    assert_eq!(dup.status.code(), Some(125));
    assert!(stderr(&dup).contains("already used"), "{}", stderr(&dup));

    // A running container: its gcr run is alive.
    let mut sleeper = s
        .cmd()
        .args(["run", "--name", "sleeper", &image, "sleep", "60"])
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let ps = |args: &[&str]| {
        let out = s.cmd().arg("ps").args(args).output().unwrap();
        stdout(&out)
    };
    while !ps(&[]).contains("sleeper") && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let running = ps(&[]);
    assert!(
        running.contains("sleeper") && running.contains("Up"),
        "{running}"
    );
    assert!(
        !running.contains("kept"),
        "exited container listed without -a: {running}"
    );
    let all = ps(&["-a"]);
    assert!(all.contains("kept") && all.contains("Exited (3)"), "{all}");

    // The image stays in use while a container exists.
    let rmi = s.cmd().args(["rmi", &image]).output().unwrap();
    assert!(!rmi.status.success());
    let rm = s.cmd().args(["rm", "sleeper"]).output().unwrap();
    assert!(!rm.status.success(), "removed a running container");
    assert!(stderr(&rm).contains("is running"), "{}", stderr(&rm));
    let rm = s
        .cmd()
        .args(["rm", "-f", "sleeper", "kept"])
        .output()
        .unwrap();
    assert!(rm.status.success(), "{}", stderr(&rm));
    let status = sleeper.wait().unwrap();
    assert!(!status.success(), "the killed gcr run exited cleanly");
    assert_eq!(ps(&["-a", "-q"]).trim(), "");
    assert_no_leftovers(&s);
    let rmi = s.cmd().args(["rmi", &image]).output().unwrap();
    assert!(rmi.status.success(), "{}", stderr(&rmi));
}

// ---------------------------------------------------------------------------------------------
// Detached containers: run -d, logs, stop, kill, wait

#[test]
fn detached_containers_log_stop_kill_and_wait() {
    let Some(image) = image() else { return };
    for who in [As::Root, As::Rootless] {
        let Some(s) = Setup::new(who) else { continue };
        let gcr = |args: &[&str]| s.cmd().args(args).output().unwrap();
        // -d prints the full ID at once and leaves the container running.
        let started = std::time::Instant::now();
        let out = gcr(&[
            "run",
            "-d",
            "--name",
            "bg",
            &image,
            "sh",
            "-c",
            "echo out; echo err >&2; trap 'echo got-term; exit 3' TERM; while :; do sleep 0.1; done",
        ]);
        let id = expect(&out, 0).trim().to_string();
        assert_eq!(id.len(), 64, "{id}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        let ps = stdout(&gcr(&["ps"]));
        assert!(ps.contains("bg") && ps.contains("Up"), "{who:?}: {ps}");
        // inspect knows containers too, in Docker's shape.
        let info: serde_json::Value =
            serde_json::from_str(&expect(&gcr(&["inspect", "bg"]), 0)).unwrap();
        assert_eq!(info[0]["Id"], id.as_str());
        assert_eq!(info[0]["Name"], "/bg");
        assert_eq!(info[0]["State"]["Running"], true);
        assert!(info[0]["State"]["Pid"].as_i64().unwrap_or(0) > 0, "{info}");
        // A reader that goes away early ends gcr quietly (SIGPIPE), with no panic.
        let mut reader = s
            .cmd()
            .args(["inspect", "bg", "bg", "bg", "bg", "bg", "bg", "bg", "bg"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(reader.stdout.take());
        let quiet = reader.wait_with_output().unwrap();
        assert!(!stderr(&quiet).contains("panicked"), "{}", stderr(&quiet));
        // Output goes to the log, each stream kept apart (logs writes them back to its own
        // stdout and stderr, as docker logs).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let logs = loop {
            let logs = gcr(&["logs", "bg"]);
            if stderr(&logs).contains("err") || std::time::Instant::now() > deadline {
                break logs;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        assert_eq!(expect(&logs, 0), "out\n", "{who:?}");
        assert_eq!(stderr(&logs), "err\n", "{who:?}");
        let last = gcr(&["logs", "--tail", "1", &id[..12]]);
        assert_eq!(
            (stdout(&last), stderr(&last)),
            (String::new(), "err\n".to_string())
        );
        // -t puts each line's time first; --since a time after them shows none.
        let timed = gcr(&["logs", "-t", "bg"]);
        let line = stdout(&timed);
        let (time, text) = line.trim_end().split_once(' ').unwrap();
        assert!(time.ends_with('Z') && time.contains('T'), "{line:?}");
        assert_eq!(text, "out");
        let later = gcr(&["logs", "--since", "2099-01-01T00:00:00Z", "bg"]);
        assert_eq!(expect(&later, 0), "");
        assert_eq!(expect(&gcr(&["logs", "--since", "10m", "bg"]), 0), "out\n");
        // stop sends SIGTERM (the trap answers), the status is recorded, logs -f ends.
        assert_eq!(expect(&gcr(&["stop", "bg"]), 0), "bg\n");
        assert_eq!(expect(&gcr(&["wait", "bg"]), 0), "3\n");
        let followed = gcr(&["logs", "-f", "bg"]);
        assert_eq!(expect(&followed, 0), "out\ngot-term\n");
        assert_eq!(stderr(&followed), "err\n");
        assert!(stdout(&gcr(&["ps", "-a"])).contains("Exited (3)"));

        // A PID 1 that ignores SIGTERM is killed after -t seconds: 137.
        expect(
            &gcr(&["run", "-d", "--name", "stubborn", &image, "sleep", "300"]),
            0,
        );
        let stopping = std::time::Instant::now();
        expect(&gcr(&["stop", "-t", "1", "stubborn"]), 0);
        assert!(stopping.elapsed() < std::time::Duration::from_secs(20));
        assert_eq!(expect(&gcr(&["wait", "stubborn"]), 0), "137\n");

        // kill -s, and a killed container's status.
        expect(
            &gcr(&["run", "-d", "--name", "victim", &image, "sleep", "300"]),
            0,
        );
        expect(&gcr(&["kill", "-s", "KILL", "victim"]), 0);
        assert_eq!(expect(&gcr(&["wait", "victim"]), 0), "137\n");
        let again = gcr(&["kill", "victim"]);
        assert!(stderr(&again).contains("not running"), "{}", stderr(&again));

        // --rm -d removes the container when it ends; a missing command fails at once.
        expect(
            &gcr(&["run", "-d", "--rm", "--name", "brief", &image, "true"]),
            0,
        );
        let bad = gcr(&["run", "-d", &image, "nosuchcommand"]);
        assert_eq!(bad.status.code(), Some(127), "{}", stderr(&bad));
        let nolog = gcr(&["logs", "nosuch"]);
        assert!(stderr(&nolog).contains("no such container"));

        expect(&gcr(&["rm", "-f", "bg", "stubborn", "victim"]), 0);
        // Whatever is left (the failed start) goes too; then nothing remains.
        for id in stdout(&gcr(&["ps", "-a", "-q"])).lines() {
            expect(&gcr(&["rm", "-f", id]), 0);
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while stdout(&gcr(&["ps", "-a", "-q"])).trim() != "" && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert_no_leftovers(&s);
    }
}

#[test]
fn stopped_containers_start_again_on_their_own_files() {
    let Some(image) = image() else { return };
    for who in [As::Root, As::Rootless] {
        let Some(s) = Setup::new(who) else { continue };
        let gcr = |args: &[&str]| s.cmd().args(args).output().unwrap();
        // Each start appends to a file in the container's own upper dir and to its log.
        let script = "echo x >> /count; echo run $(wc -l < /count); trap 'exit 0' TERM; \
                      while :; do sleep 0.1; done";
        expect(
            &gcr(&["run", "-d", "--name", "again", &image, "sh", "-c", script]),
            0,
        );
        let logs_until = |needle: &str| {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                let logs = stdout(&gcr(&["logs", "again"]));
                if logs.contains(needle) || std::time::Instant::now() > deadline {
                    return logs;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        };
        assert_eq!(logs_until("run 1"), "run 1\n", "{who:?}");
        expect(&gcr(&["stop", "again"]), 0);
        assert_eq!(expect(&gcr(&["start", "again"]), 0), "again\n");
        assert!(stdout(&gcr(&["ps"])).contains("again"));
        assert_eq!(logs_until("run 2"), "run 1\nrun 2\n", "{who:?}");
        assert_eq!(expect(&gcr(&["restart", "again"]), 0), "again\n");
        assert_eq!(logs_until("run 3"), "run 1\nrun 2\nrun 3\n", "{who:?}");
        // Starting a running container changes nothing; start -a stays and returns the status.
        assert_eq!(expect(&gcr(&["start", "again"]), 0), "again\n");
        expect(&gcr(&["stop", "again"]), 0);
        expect(
            &gcr(&["run", "--name", "once", &image, "sh", "-c", "exit 4"]),
            4,
        );
        let attached = gcr(&["start", "-a", "once"]);
        assert_eq!(attached.status.code(), Some(4), "{}", stderr(&attached));
        // create: prepared, listed as Created, files copied in before the first start.
        let id = expect(
            &gcr(&["create", "--name", "fresh", &image, "cat", "/given"]),
            0,
        );
        assert_eq!(id.trim().len(), 64);
        assert!(stdout(&gcr(&["ps", "-a"])).contains("Created"));
        let given = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(given.path(), "handed over\n").unwrap();
        std::fs::set_permissions(given.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
        let given_path = given.path().display().to_string();
        expect(&gcr(&["cp", &given_path, "fresh:/given"]), 0);
        assert_eq!(expect(&gcr(&["start", "-a", "fresh"]), 0), "handed over\n");
        expect(&gcr(&["rm", "again", "once", "fresh"]), 0);
        assert_no_leftovers(&s);
    }
}

#[test]
fn commit_makes_an_image_of_a_containers_changes() {
    let Some(image) = image() else { return };
    for who in [As::Root, As::Rootless] {
        let Some(s) = Setup::new(who) else { continue };
        let gcr = |args: &[&str]| s.cmd().args(args).output().unwrap();
        // A file added, one removed (a whiteout in the layer), an owner within the range.
        let script = "echo committed > /hello && chown 1000:1000 /hello && rm /bin/vi";
        expect(
            &gcr(&["run", "--name", "changed", &image, "sh", "-c", script]),
            0,
        );
        let out = gcr(&[
            "commit",
            "-q",
            "-m",
            "my change",
            "-a",
            "Jane <jane@example.com>",
            "-c",
            "CMD [\"cat\", \"/hello\"]",
            "-c",
            "ENV A=1",
            "changed",
            "localhost/committed:v1",
        ]);
        let id = expect(&out, 0).trim().to_string();
        assert!(id.starts_with("sha256:"), "{id}");
        assert_eq!(
            expect(&gcr(&["run", "--rm", "localhost/committed:v1"]), 0),
            "committed\n"
        );
        let out = gcr(&[
            "run",
            "--rm",
            "localhost/committed:v1",
            "sh",
            "-c",
            "stat -c %u:%g /hello; test -e /bin/vi || echo vi-gone; echo $A",
        ]);
        assert_eq!(expect(&out, 0), "1000:1000\nvi-gone\n1\n", "{who:?}");
        let info: serde_json::Value =
            serde_json::from_str(&expect(&gcr(&["inspect", "localhost/committed:v1"]), 0)).unwrap();
        let info = if info.is_array() {
            info[0].clone()
        } else {
            info
        };
        assert_eq!(info["Author"], "Jane <jane@example.com>", "{info}");
        let base: serde_json::Value =
            serde_json::from_str(&expect(&gcr(&["inspect", &image]), 0)).unwrap();
        let base = if base.is_array() {
            base[0].clone()
        } else {
            base
        };
        assert_eq!(
            info["RootFS"]["Layers"].as_array().unwrap().len(),
            base["RootFS"]["Layers"].as_array().unwrap().len() + 1
        );
        // Bad changes are refused before anything is written.
        let bad = gcr(&["commit", "-c", "RUN true", "changed"]);
        assert_eq!(bad.status.code(), Some(125));
        assert!(stderr(&bad).contains("--change"), "{}", stderr(&bad));
        let check = expect(&gcr(&["system", "check"]), 0);
        assert!(check.contains("consistent"), "{check}");
        expect(&gcr(&["rm", "changed"]), 0);
        expect(&gcr(&["rmi", "localhost/committed:v1"]), 0);
        assert_no_leftovers(&s);
    }
}

#[test]
fn named_volumes_persist_start_with_the_images_files_and_are_managed() {
    let Some(image) = image() else { return };
    for who in [As::Root, As::Rootless] {
        let Some(s) = Setup::new(who) else { continue };
        let gcr = |args: &[&str]| s.cmd().args(args).output().unwrap();
        // A new volume gets what the image has at the mount point (owners and modes too).
        let out = gcr(&[
            "run",
            "--rm",
            "-v",
            "etcvol:/etc",
            &image,
            "sh",
            "-c",
            "cat /etc/passwd | head -1; stat -c %a /etc; echo kept > /etc/added",
        ]);
        assert_eq!(
            expect(&out, 0),
            "root:x:0:0:root:/root:/bin/sh\n755\n",
            "{who:?}"
        );
        // It outlives the container, at another path too.
        let out = gcr(&[
            "run",
            "--rm",
            "-v",
            "etcvol:/data:ro",
            &image,
            "cat",
            "/data/added",
        ]);
        assert_eq!(expect(&out, 0), "kept\n");
        // nocopy: a new volume stays empty.
        let out = gcr(&[
            "run",
            "--rm",
            "-v",
            "bare:/etc:nocopy",
            &image,
            "sh",
            "-c",
            "test -e /etc/passwd || echo empty",
        ]);
        assert_eq!(expect(&out, 0), "empty\n");
        assert_eq!(expect(&gcr(&["volume", "ls", "-q"]), 0), "bare\netcvol\n");
        // A volume in use is kept; then removed; prune removes the unused rest.
        expect(
            &gcr(&[
                "run",
                "--name",
                "holder",
                "-v",
                "etcvol:/data",
                &image,
                "true",
            ]),
            0,
        );
        // system df counts volumes and which are in use.
        let df = expect(&gcr(&["system", "df"]), 0);
        let row: Vec<&str> = df
            .lines()
            .find(|l| l.starts_with("Local Volumes"))
            .unwrap_or_else(|| panic!("{df}"))
            .split_whitespace()
            .collect();
        assert_eq!(&row[2..4], ["2", "1"], "{df}");
        let busy = gcr(&["volume", "rm", "etcvol"]);
        assert!(!busy.status.success());
        assert!(stderr(&busy).contains("holder"), "{}", stderr(&busy));
        expect(&gcr(&["rm", "holder"]), 0);
        assert_eq!(expect(&gcr(&["volume", "rm", "etcvol"]), 0), "etcvol\n");
        assert_eq!(
            expect(&gcr(&["volume", "prune", "-f"]), 0),
            "Deleted volume bare\n"
        );
        assert_eq!(expect(&gcr(&["volume", "ls", "-q"]), 0), "");
        assert_eq!(expect(&gcr(&["volume", "create", "left"]), 0), "left\n");
        let pruned = expect(&gcr(&["system", "prune", "-f", "--volumes"]), 0);
        assert!(pruned.contains("Deleted volume: left"), "{pruned}");
        let bad = gcr(&["run", "--rm", "-v", "-x:/data", &image, "true"]);
        assert_eq!(bad.status.code(), Some(125));
        // -p with the host network: a warning, as Docker gives; with none: refused.
        let out = gcr(&[
            "run",
            "--rm",
            "--network",
            "host",
            "-p",
            "8080:80",
            &image,
            "true",
        ]);
        expect(&out, 0);
        assert!(
            stderr(&out).contains("published ports are discarded"),
            "{}",
            stderr(&out)
        );
        let out = gcr(&[
            "run",
            "--rm",
            "--network",
            "none",
            "-p",
            "8080:80",
            &image,
            "true",
        ]);
        assert_eq!(out.status.code(), Some(125));
        assert_no_leftovers(&s);
    }
}

#[test]
fn cp_copies_both_ways_running_or_stopped_and_stays_inside() {
    let Some(image) = image() else { return };
    for who in [As::Root, As::Rootless] {
        let Some(s) = Setup::new(who) else { continue };
        let gcr = |args: &[&str]| s.cmd().args(args).output().unwrap();
        let host = tempfile::tempdir().unwrap();
        std::fs::set_permissions(host.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let h = |p: &str| host.path().join(p).display().to_string();
        std::fs::create_dir_all(host.path().join("dir/sub")).unwrap();
        std::fs::write(host.path().join("dir/a"), "from host\n").unwrap();
        std::fs::write(host.path().join("dir/sub/b"), "deep\n").unwrap();
        if who == As::Rootless {
            let ok = Command::new("chown")
                .args(["-R", &s.user])
                .arg(host.path())
                .status();
            assert!(matches!(ok, Ok(st) if st.success()));
        }
        // A container with a file, and a symlink to / that must not lead out.
        let script = "mkdir /data && echo inside > /data/f && ln -s / /escape && \
                      ln -s /data/f /link; trap 'exit 0' TERM; while :; do sleep 0.1; done";
        expect(
            &gcr(&["run", "-d", "--name", "box", &image, "sh", "-c", script]),
            0,
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !gcr(&["exec", "box", "test", "-L", "/escape"])
            .status
            .success()
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        // Out of a running container, into a new path and into an existing directory.
        expect(&gcr(&["cp", "box:/data", &h("out")]), 0);
        assert_eq!(
            std::fs::read_to_string(host.path().join("out/f")).unwrap(),
            "inside\n"
        );
        expect(&gcr(&["cp", "box:/escape/etc/hostname", &h("hostname")]), 0);
        let theirs = stdout(&gcr(&["exec", "box", "cat", "/etc/hostname"]));
        assert_eq!(
            std::fs::read_to_string(host.path().join("hostname")).unwrap(),
            theirs
        );
        // In: a tree into an existing directory (keeps its name), a file to a new path.
        expect(&gcr(&["cp", &h("dir"), "box:/data"]), 0);
        expect(&gcr(&["cp", &h("dir/a"), "box:/new/place.txt"]), 0);
        let out = gcr(&[
            "exec",
            "box",
            "sh",
            "-c",
            "cat /data/dir/a /data/dir/sub/b /new/place.txt; stat -c %u:%g /data/dir/a",
        ]);
        assert_eq!(
            expect(&out, 0),
            "from host\ndeep\nfrom host\n0:0\n",
            "{who:?}"
        );
        // `SRC/.`: a directory's contents, into a new directory or merged into one.
        expect(&gcr(&["cp", "box:/data/.", &h("contents")]), 0);
        expect(&gcr(&["cp", "box:/data/.", &h("out")]), 0);
        for copied in ["contents/f", "out/f", "out/dir/a"] {
            assert!(host.path().join(copied).is_file(), "{who:?}: no {copied}");
        }
        assert!(!host.path().join("contents/data").exists(), "{who:?}");
        expect(&gcr(&["cp", &h("dir/."), "box:/merged"]), 0);
        expect(&gcr(&["cp", &h("dir/."), "box:/merged"]), 0);
        let out = gcr(&["exec", "box", "sh", "-c", "cd /merged && find . | sort"]);
        assert_eq!(expect(&out, 0), ".\n./a\n./sub\n./sub/b\n", "{who:?}");
        let bad = gcr(&["cp", "box:/data/f/.", &h("nothing")]);
        assert_eq!(bad.status.code(), Some(125), "{who:?}");
        assert!(stderr(&bad).contains("not a directory"), "{}", stderr(&bad));
        // -L follows a symlink that is the source; without it the link itself is copied.
        expect(&gcr(&["cp", "box:/link", &h("link")]), 0);
        expect(&gcr(&["cp", "-L", "box:/link", &h("followed")]), 0);
        assert!(host.path().join("link").is_symlink());
        assert_eq!(
            std::fs::read_to_string(host.path().join("followed")).unwrap(),
            "inside\n"
        );
        assert!(!host.path().join("followed").is_symlink());
        // `-`: a tar stream out on stdout (the container's owners) and in from stdin.
        let entries = |tar_bytes: &[u8]| -> Vec<(String, u64, u64)> {
            tar::Archive::new(tar_bytes)
                .entries()
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    let h = e.header();
                    let path = e.path().unwrap().display().to_string();
                    (path, h.uid().unwrap(), h.size().unwrap())
                })
                .collect()
        };
        let out = gcr(&["cp", "box:/data", "-"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let listed = entries(&out.stdout);
        assert!(
            listed.contains(&("data/f".into(), 0, 7)),
            "{who:?}: {listed:?}"
        );
        assert!(listed.iter().any(|e| e.0 == "data/dir/sub/b"), "{listed:?}");
        let mut stream = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(9);
        header.set_mode(0o640);
        header.set_entry_type(tar::EntryType::Regular);
        stream
            .append_data(&mut header, "t/x", &b"from tar\n"[..])
            .unwrap();
        let stream = stream.into_inner().unwrap();
        let mut child = s
            .cmd()
            .args(["cp", "-", "box:/fromtar"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), &stream).unwrap();
        expect(&child.wait_with_output().unwrap(), 0);
        let out = gcr(&["exec", "box", "stat", "-c", "%a %u", "/fromtar/t/x"]);
        assert_eq!(expect(&out, 0), "640 0\n", "{who:?}");
        // A stopped container: its files are still there to copy, both ways.
        expect(&gcr(&["stop", "box"]), 0);
        let out = gcr(&["cp", "box:/data/.", "-"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert!(
            entries(&out.stdout).contains(&("f".into(), 0, 7)),
            "{who:?}"
        );
        expect(&gcr(&["cp", "box:/data/f", &h("stopped.txt")]), 0);
        assert_eq!(
            std::fs::read_to_string(host.path().join("stopped.txt")).unwrap(),
            "inside\n"
        );
        expect(&gcr(&["cp", &h("dir/a"), "box:/while-stopped"]), 0);
        expect(&gcr(&["start", "box"]), 0);
        let out = gcr(&["exec", "box", "cat", "/while-stopped"]);
        assert_eq!(expect(&out, 0), "from host\n", "{who:?}");
        let bad = gcr(&["cp", &h("dir"), &h("other")]);
        assert_eq!(bad.status.code(), Some(125));
        expect(&gcr(&["rm", "-f", "box"]), 0);
        assert_no_leftovers(&s);
    }
}

/// The pid of the gcr that `child` runs: itself, or rootless its child under runuser (which
/// would re-raise a signal on itself after forwarding it, or not forward it at all).
fn gcr_pid(s: &Setup, child: &std::process::Child) -> i32 {
    let pid = child.id();
    if s.who != As::Rootless {
        return pid as i32;
    }
    let children = format!("/proc/{pid}/task/{pid}/children");
    std::fs::read_to_string(children)
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .expect("runuser has started gcr")
}

#[test]
fn attach_follows_the_output_forwards_signals_and_ends_with_the_status() {
    use std::io::BufRead as _;
    let Some(image) = image() else { return };
    for who in [As::Root, As::Rootless] {
        let Some(s) = Setup::new(who) else { continue };
        let gcr = |args: &[&str]| s.cmd().args(args).output().unwrap();
        let script = "echo before; trap 'echo got INT; exit 7' INT; \
                      while :; do echo tick; sleep 0.1; done";
        expect(
            &gcr(&["run", "-d", "--name", "talk", &image, "sh", "-c", script]),
            0,
        );
        // The old output is in the log before anyone attaches.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !stdout(&gcr(&["logs", "talk"])).contains("tick")
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let attach = |extra: &[&str]| {
            let mut child = s
                .cmd()
                .arg("attach")
                .args(extra)
                .arg("talk")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            // A line through attach: it follows the output (and forwards signals) now.
            let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
            assert_eq!(lines.next().unwrap().unwrap(), "tick", "{who:?}");
            (child, lines)
        };
        // Without the signal proxy, Ctrl-C ends attach and leaves the container running.
        let (child, _lines) = attach(&["--sig-proxy=false"]);
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(gcr_pid(&s, &child)),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
        let out = child.wait_with_output().unwrap();
        // Rootless, runuser reports gcr's death by SIGINT as 130.
        assert!(
            matches!(out.status.code(), None | Some(130)),
            "{who:?}: attach ignored SIGINT: {:?}",
            out.status
        );
        assert!(stdout(&gcr(&["ps"])).contains("talk"), "{who:?}");
        // With it, SIGINT reaches the container, whose last words and status come through.
        let (mut child, lines) = attach(&[]);
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(gcr_pid(&s, &child)),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
        let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
        assert_eq!(rest.last().map(String::as_str), Some("got INT"), "{who:?}");
        assert!(
            !rest.iter().any(|l| l == "before"),
            "{who:?}: old output replayed"
        );
        assert_eq!(child.wait().unwrap().code(), Some(7), "{who:?}");
        let bad = gcr(&["attach", "talk"]);
        assert_eq!(bad.status.code(), Some(125));
        assert!(stderr(&bad).contains("not running"), "{}", stderr(&bad));
        expect(&gcr(&["rm", "talk"]), 0);
        // A container run with --rm: attach still gets its status before it goes.
        expect(
            &gcr(&[
                "run",
                "-d",
                "--rm",
                "--name",
                "brief",
                &image,
                "sh",
                "-c",
                "sleep 3; echo bye; exit 9",
            ]),
            0,
        );
        let out = gcr(&["attach", "brief"]);
        assert_eq!(out.status.code(), Some(9), "{who:?}: {}", stderr(&out));
        assert_eq!(stdout(&out), "bye\n");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !expect(&gcr(&["ps", "-a", "-q"]), 0).is_empty()
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert_no_leftovers(&s);
    }
}

#[test]
fn a_recycled_pid_is_not_taken_for_a_crashed_containers_process() {
    let Some(image) = image() else { return };
    for who in [As::Root, As::Rootless] {
        let Some(s) = Setup::new(who) else { continue };
        let gcr = |args: &[&str]| s.cmd().args(args).output().unwrap();
        let id = expect(
            &gcr(&["run", "-d", "--name", "crashed", &image, "sleep", "1000"]),
            0,
        );
        let dir = s.store.root().join("containers").join(id.trim());
        let meta_path = dir.join("meta.json");
        let mut meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
        // The supervisor dies without a word (the container goes with it)...
        let supervisor = meta["pid"].as_i64().unwrap() as i32;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(supervisor),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while Path::new(&format!("/proc/{supervisor}")).exists()
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // ... and its PIDs go to an unrelated process (as the kernel may hand them out again).
        // Rootless, the stranger is the same user's process: gcr could signal it.
        let mut stranger = Command::new("sleep");
        stranger.arg("60");
        if who == As::Rootless {
            let uid = stdout(&Command::new("id").args(["-u", &s.user]).output().unwrap());
            std::os::unix::process::CommandExt::uid(&mut stranger, uid.trim().parse().unwrap());
        }
        let mut stranger = stranger.spawn().unwrap();
        meta["pid"] = stranger.id().into();
        std::fs::write(&meta_path, serde_json::to_vec(&meta).unwrap()).unwrap();
        std::fs::write(dir.join("pid"), stranger.id().to_string()).unwrap();
        assert!(
            !expect(&gcr(&["ps"]), 0).contains("crashed"),
            "{who:?}: a stranger's PID taken for the container"
        );
        let killed = gcr(&["kill", "crashed"]);
        assert_ne!(killed.status.code(), Some(0), "{who:?}");
        assert!(
            stderr(&killed).contains("not running"),
            "{}",
            stderr(&killed)
        );
        expect(&gcr(&["stop", "crashed"]), 0);
        expect(&gcr(&["rm", "crashed"]), 0);
        assert!(
            stranger.try_wait().unwrap().is_none(),
            "{who:?}: gcr signalled a process that is not its own"
        );
        let _ = stranger.kill();
        let _ = stranger.wait();
        assert_no_leftovers(&s);
    }
}

#[test]
fn format_templates_and_filters_work_as_docker_scripts_use_them() {
    let Some(image) = image() else { return };
    let Some(s) = Setup::new(As::Root) else {
        return;
    };
    let gcr = |args: &[&str]| s.cmd().args(args).output().unwrap();
    expect(
        &gcr(&["run", "-d", "--name", "web", &image, "sleep", "60"]),
        0,
    );
    expect(
        &gcr(&["run", "--name", "done", &image, "sh", "-c", "exit 3"]),
        3,
    );
    expect(&gcr(&["create", "--name", "fresh", &image, "true"]), 0);
    // ps: templates, `table` templates with Docker's headers, JSON lines, filters, -n/-l.
    assert_eq!(
        expect(&gcr(&["ps", "--format", "{{.Names}} {{.State}}"]), 0),
        "web running\n"
    );
    let table = expect(
        &gcr(&["ps", "-a", "--format", "table {{.Names}}\\t{{.Status}}"]),
        0,
    );
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    assert!(
        lines[0].starts_with("NAMES") && lines[0].contains("STATUS"),
        "{table}"
    );
    assert!(table.contains("Exited (3)"), "{table}");
    let names = |args: &[&str]| {
        let mut all = vec!["ps", "--format", "{{.Names}}"];
        all.extend_from_slice(args);
        let mut v: Vec<String> = expect(&gcr(&all), 0).lines().map(String::from).collect();
        v.sort();
        v
    };
    assert_eq!(names(&["-f", "status=exited"]), ["done"]);
    assert_eq!(names(&["-f", "status=created"]), ["fresh"]);
    assert_eq!(names(&["-a", "-f", "name=e"]), ["done", "fresh", "web"]);
    assert_eq!(names(&["-a", "-f", "name=we"]), ["web"]);
    // Regular expressions, with or without Docker's leading slash.
    assert_eq!(names(&["-a", "-f", "name=^web$"]), ["web"]);
    assert_eq!(names(&["-a", "-f", "name=^/do"]), ["done"]);
    assert_eq!(names(&["-a", "-f", "name=^e"]), Vec::<String>::new());
    assert_eq!(gcr(&["ps", "-f", "name=(("]).status.code(), Some(125));
    assert_eq!(names(&["-f", "exited=3"]), ["done"]);
    assert_eq!(names(&["-a", "-f", &format!("ancestor={image}")]).len(), 3);
    assert_eq!(names(&["-l"]), ["fresh"]);
    assert_eq!(names(&["-n", "2"]), ["done", "fresh"]);
    let json = expect(&gcr(&["ps", "--format", "json"]), 0);
    let row: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(row["Names"], "web");
    let bad = gcr(&["ps", "-f", "colour=red"]);
    assert_eq!(bad.status.code(), Some(125));
    // inspect -f: containers first, then images; Go's printing of lists and maps.
    assert_eq!(
        expect(
            &gcr(&[
                "inspect",
                "-f",
                "{{.State.Status}} {{.State.Running}} {{.Name}}",
                "web",
                "done"
            ]),
            0
        ),
        "running true /web\nexited false /done\n"
    );
    assert_eq!(
        expect(&gcr(&["inspect", "-f", "{{.State.ExitCode}}", "done"]), 0),
        "3\n"
    );
    // Fields scripts read: the network's address, state times, created state.
    let ip = expect(
        &gcr(&[
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            "web",
        ]),
        0,
    );
    assert!(ip.starts_with("10.88."), "{ip}");
    let finished = expect(&gcr(&["inspect", "-f", "{{.State.FinishedAt}}", "done"]), 0);
    assert!(finished.starts_with("20"), "{finished}");
    assert_eq!(
        expect(
            &gcr(&[
                "inspect",
                "-f",
                "{{.State.Status}} {{.State.FinishedAt}}",
                "fresh"
            ]),
            0
        ),
        "created 0001-01-01T00:00:00Z\n"
    );
    let env = expect(&gcr(&["inspect", "--format", "{{.Config.Env}}", &image]), 0);
    assert!(env.starts_with("[PATH=") && env.ends_with("]\n"), "{env}");
    let env = expect(
        &gcr(&["inspect", "--format", "{{json .Config.Env}}", &image]),
        0,
    );
    assert!(env.starts_with("[\"PATH="), "{env}");
    let typed = gcr(&["inspect", "--type", "image", "web"]);
    assert_eq!(typed.status.code(), Some(125));
    // The management forms look for their own kind only.
    assert_eq!(gcr(&["image", "inspect", "web"]).status.code(), Some(125));
    expect(&gcr(&["container", "inspect", "web"]), 0);
    assert_eq!(
        gcr(&["container", "inspect", &image]).status.code(),
        Some(125)
    );
    expect(&gcr(&["image", "inspect", &image]), 0);
    let bad = gcr(&["inspect", "-f", "{{.State", "web"]);
    assert_eq!(bad.status.code(), Some(125));
    assert!(stderr(&bad).contains("template"), "{}", stderr(&bad));
    // images --format.
    let listed = expect(&gcr(&["images", "--format", "{{.Repository}}:{{.Tag}}"]), 0);
    assert!(
        listed
            .lines()
            .any(|l| image.ends_with(l) || l.ends_with(&image)),
        "{listed}"
    );
    expect(&gcr(&["rm", "-f", "-v", "web", "done", "fresh"]), 0);
    assert_no_leftovers(&s);
}

#[test]
fn the_default_private_network_publishes_ports_and_leaves_nothing_behind() {
    use std::io::{Read as _, Write as _};
    let Some(image) = image() else { return };
    for who in [As::Root, As::Rootless] {
        let Some(s) = Setup::new(who) else { continue };
        let gcr = |args: &[&str]| s.cmd().args(args).output().unwrap();
        // Its own interface and address, named in /etc/hosts; the host's are not there.
        let out = expect(
            &gcr(&[
                "run", "--rm", "--hostname", "box", &image, "sh", "-c",
                "ls /sys/class/net | tr '\\n' ' '; echo; ip route | grep default; grep box /etc/hosts",
            ]),
            0,
        );
        let (iface, gateway, address) = match who {
            As::Root => ("eth0", "10.88.0.1", "10.88."),
            As::Rootless => ("tap0", "10.0.2.2", "10.0.2.100"),
        };
        assert!(
            out.starts_with(&format!("{iface} lo")) || out.starts_with(&format!("lo {iface}")),
            "{who:?}: {out}"
        );
        assert!(
            out.contains(&format!("default via {gateway}")),
            "{who:?}: {out}"
        );
        assert!(
            out.contains(address) && out.contains("\tbox"),
            "{who:?}: {out}"
        );
        // -p with a picked host port: a web server in the container answers on the host.
        let id = expect(
            &gcr(&[
                "run",
                "-d",
                "--name",
                "web",
                "--hostname",
                "webbox",
                "-p",
                "127.0.0.1::8080",
                &image,
                "httpd",
                "-f",
                "-p",
                "8080",
                "-h",
                "/etc",
            ]),
            0,
        );
        assert_eq!(id.trim().len(), 64);
        let mapped = expect(&gcr(&["port", "web", "8080"]), 0);
        let addr: std::net::SocketAddr =
            mapped.trim().parse().unwrap_or_else(|_| panic!("{mapped}"));
        assert!(addr.ip().is_loopback() && addr.port() != 0, "{mapped}");
        assert!(expect(&gcr(&["ps"]), 0).contains(&format!("{addr}->8080/tcp")));
        let info = expect(
            &gcr(&[
                "inspect",
                "-f",
                "{{.NetworkSettings.IPAddress}} {{.HostConfig.NetworkMode}}",
                "web",
            ]),
            0,
        );
        assert!(info.starts_with(address), "{who:?}: {info}");
        let mut answer = String::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !answer.contains("webbox") && std::time::Instant::now() < deadline {
            answer.clear();
            if let Ok(mut conn) = std::net::TcpStream::connect(addr) {
                let _ = conn.write_all(b"GET /hostname HTTP/1.0\r\n\r\n");
                let _ = conn.read_to_string(&mut answer);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert!(
            answer.contains("200 OK") && answer.contains("webbox"),
            "{who:?}: {answer:?}"
        );
        // The same host port twice: the second run fails before it starts.
        let taken = gcr(&[
            "run",
            "--rm",
            "-p",
            &format!("127.0.0.1:{}:80", addr.port()),
            &image,
            "true",
        ]);
        assert_eq!(taken.status.code(), Some(125), "{who:?}");
        assert!(stderr(&taken).contains("not free"), "{}", stderr(&taken));
        let sctp = gcr(&["run", "--rm", "-p", "53:53/sctp", &image, "true"]);
        assert_eq!(sctp.status.code(), Some(125));
        assert!(
            stderr(&sctp).contains("not supported yet"),
            "{}",
            stderr(&sctp)
        );
        let bad = gcr(&["run", "--rm", "-p", "70000:80", &image, "true"]);
        assert_eq!(bad.status.code(), Some(125));
        let container_pid = expect(&gcr(&["inspect", "-f", "{{.State.Pid}}", "web"]), 0);
        // The supervisor (`gcr run -d`'s background gcr) owns the address lease.
        let meta: serde_json::Value = serde_json::from_slice(
            &std::fs::read(
                s.store
                    .root()
                    .join("containers")
                    .join(id.trim())
                    .join("meta.json"),
            )
            .unwrap(),
        )
        .unwrap();
        let supervisor = meta["pid"].as_u64().unwrap().to_string();
        expect(&gcr(&["rm", "-f", "web"]), 0);
        // The port is free again, and the helpers and the veth are gone.
        assert!(
            std::net::TcpListener::bind(addr).is_ok(),
            "{who:?}: port still held"
        );
        if who == As::Root {
            // gcr deletes the veth as the run ends (not left to the kernel's teardown).
            let veth = format!("gcr{}", &id[..12]);
            assert!(
                !Path::new("/sys/class/net").join(&veth).exists(),
                "veth {veth} left"
            );
            // Another test's container may take the freed address at once: the lease must
            // only no longer be this supervisor's.
            let ip = info.split_whitespace().next().unwrap_or_default();
            let lease = Path::new("/run/gcr/net/leases").join(ip);
            let owner = std::fs::read_to_string(&lease).unwrap_or_default();
            assert_ne!(
                owner.split_whitespace().next(),
                Some(supervisor.as_str()),
                "lease {} left",
                lease.display()
            );
        }
        // No helper (slirp4netns) still serves that container's namespace.
        let netns = format!("/proc/{}/ns/net", container_pid.trim());
        let helpers: Vec<String> = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .filter(|c| c.contains(&netns))
            .collect();
        assert!(helpers.is_empty(), "{who:?}: left running: {helpers:?}");
        assert_no_leftovers(&s);
    }
}

#[test]
fn add_host_and_dns_flags_shape_the_generated_files() {
    let Some(image) = image() else { return };
    for who in [As::Root, As::Rootless] {
        let Some(s) = Setup::new(who) else { continue };
        let gcr = |args: &[&str]| s.cmd().args(args).output().unwrap();
        let out = expect(
            &gcr(&[
                "run",
                "--rm",
                "--add-host",
                "db:10.1.2.3",
                "--add-host",
                "gw:host-gateway",
                "--add-host",
                "six:fd00::1",
                "--dns",
                "192.0.2.53",
                "--dns-search",
                "example.org",
                "--dns-option",
                "ndots:3",
                &image,
                "cat",
                "/etc/hosts",
                "/etc/resolv.conf",
            ]),
            0,
        );
        // host-gateway: the bridge's address as root; rootless the host's own address
        // (slirp4netns keeps its gateway, the host's loopback, closed).
        let host_ip = {
            let probe = std::net::UdpSocket::bind(("0.0.0.0", 0)).unwrap();
            probe.connect(("192.0.2.1", 9)).unwrap();
            probe.local_addr().unwrap().ip().to_string()
        };
        let gateway = if who == As::Root {
            "10.88.0.1"
        } else {
            host_ip.as_str()
        };
        for line in [
            "10.1.2.3\tdb".to_string(),
            format!("{gateway}\tgw"),
            "fd00::1\tsix".to_string(),
            "nameserver 192.0.2.53".to_string(),
            "search example.org".to_string(),
            "options ndots:3".to_string(),
        ] {
            assert!(
                out.lines().any(|l| l == line),
                "{who:?}: no {line:?} in {out}"
            );
        }
        assert_eq!(out.matches("nameserver").count(), 1, "{who:?}: {out}");
        // ... and the host answers there.
        let listener = std::net::TcpListener::bind(("0.0.0.0", 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            use std::io::Read as _;
            let (mut conn, _) = listener.accept().unwrap();
            let mut got = String::new();
            let _ = conn.read_to_string(&mut got);
            got
        });
        let out = gcr(&[
            "run",
            "--rm",
            "--add-host",
            "gw:host-gateway",
            &image,
            "sh",
            "-c",
            &format!("echo hello-host | nc -w 5 gw {port}"),
        ]);
        assert_eq!(out.status.code(), Some(0), "{who:?}: {}", stderr(&out));
        assert_eq!(server.join().unwrap(), "hello-host\n", "{who:?}");
        for bad in [
            vec!["--add-host", "nocolon"],
            vec!["--add-host", "db:not-an-ip"],
            vec!["--dns", "dns.example"],
            vec!["--network", "none", "--add-host", "gw:host-gateway"],
        ] {
            let mut args = vec!["run", "--rm"];
            args.extend(bad.iter().copied());
            args.extend([image.as_str(), "true"]);
            let out = gcr(&args);
            assert_eq!(out.status.code(), Some(125), "{bad:?}");
        }
        assert_no_leftovers(&s);
    }
}

#[test]
fn version_and_info_answer_what_docker_scripts_ask() {
    let Some(image) = image() else { return };
    for who in [As::Root, As::Rootless] {
        let Some(s) = Setup::new(who) else { continue };
        let gcr = |args: &[&str]| s.cmd().args(args).output().unwrap();
        let version = expect(&gcr(&["version", "--format", "{{.Server.Version}}"]), 0);
        assert_eq!(version.trim(), env!("CARGO_PKG_VERSION"));
        let before = expect(
            &gcr(&["info", "-f", "{{.Images}} {{.Containers}} {{.Rootless}}"]),
            0,
        );
        expect(&gcr(&["run", "--name", "kept", &image, "true"]), 0);
        let after = expect(
            &gcr(&[
                "info",
                "-f",
                "{{.Images}} {{.Containers}} {{.ContainersRunning}} {{.Rootless}}",
            ]),
            0,
        );
        let rootless = who == As::Rootless;
        assert_eq!(before.trim(), format!("0 0 {rootless}"), "{who:?}");
        assert_eq!(after.trim(), format!("1 1 0 {rootless}"), "{who:?}");
        let all: serde_json::Value =
            serde_json::from_str(&expect(&gcr(&["info", "--format", "json"]), 0)).unwrap();
        assert!(
            ["1", "2", "hybrid"].contains(&all["CgroupVersion"].as_str().unwrap()),
            "{all}"
        );
        assert_eq!(all["DockerRootDir"], s.store.root().display().to_string());
        // The built-in networks (`bridge` is slirp4netns rootless); user networks by name
        // and alias (rootless in the rootless network namespace).
        assert_eq!(
            expect(&gcr(&["network", "ls", "-q"]), 0),
            "bridge\nhost\nnone\n"
        );
        let inspected: serde_json::Value =
            serde_json::from_str(&expect(&gcr(&["network", "inspect", "private"]), 0)).unwrap();
        assert_eq!(inspected[0]["Name"], "bridge");
        assert_eq!(
            inspected[0]["Driver"],
            if rootless { "slirp4netns" } else { "bridge" }
        );
        let create = gcr(&["network", "create", "mine"]);
        {
            assert_eq!(expect(&create, 0).trim().len(), 64);
            assert!(expect(&gcr(&["network", "ls", "-q"]), 0).ends_with("none\nmine\n"));
            expect(
                &gcr(&[
                    "run",
                    "-d",
                    "--name",
                    "named",
                    "--network",
                    "mine",
                    "--network-alias",
                    "other",
                    &image,
                    "sleep",
                    "30",
                ]),
                0,
            );
            let lookup = gcr(&[
                "run",
                "--rm",
                "--network",
                "mine",
                &image,
                "sh",
                "-c",
                "ping -c1 -W2 named >/dev/null && ping -c1 -W2 other >/dev/null && echo found",
            ]);
            assert_eq!(expect(&lookup, 0), "found\n");
            // A second network: a container on both (--network twice) finds the members of
            // each; a running one is connected (at the address asked for) and disconnected.
            expect(
                &gcr(&["network", "create", "--subnet", "10.89.200.0/24", "theirs"]),
                0,
            );
            let both = gcr(&[
                "run", "--rm", "--network", "mine", "--network", "theirs", &image, "sh", "-c",
                "ip -o -4 addr show eth1 | grep -q 10.89.200. && ping -c1 -W2 named >/dev/null && echo both",
            ]);
            assert_eq!(expect(&both, 0), "both\n");
            expect(
                &gcr(&[
                    "network",
                    "connect",
                    "--alias",
                    "there",
                    "--ip",
                    "10.89.200.77",
                    "theirs",
                    "named",
                ]),
                0,
            );
            let seen = gcr(&[
                "run",
                "--rm",
                "--network",
                "theirs",
                &image,
                "sh",
                "-c",
                "ping -c1 -W2 there >/dev/null && grep there /etc/hosts",
            ]);
            assert!(expect(&seen, 0).starts_with("10.89.200.77\t"), "{who:?}");
            let inspected = expect(
                &gcr(&[
                    "inspect",
                    "-f",
                    "{{json .NetworkSettings.Networks}}",
                    "named",
                ]),
                0,
            );
            let networks: serde_json::Value = serde_json::from_str(&inspected).unwrap();
            assert_eq!(
                networks["theirs"]["IPAddress"], "10.89.200.77",
                "{networks}"
            );
            let again = gcr(&["network", "connect", "theirs", "named"]);
            assert!(
                stderr(&again).contains("already connected"),
                "{}",
                stderr(&again)
            );
            expect(&gcr(&["network", "disconnect", "theirs", "named"]), 0);
            let gone = gcr(&[
                "run",
                "--rm",
                "--network",
                "theirs",
                &image,
                "grep",
                "-c",
                "there",
                "/etc/hosts",
            ]);
            assert_eq!(stdout(&gone).trim(), "0", "{who:?}");
            let first = gcr(&["network", "disconnect", "mine", "named"]);
            assert!(
                stderr(&first).contains("first network"),
                "{}",
                stderr(&first)
            );
            expect(&gcr(&["network", "rm", "theirs"]), 0);
            let busy = gcr(&["network", "rm", "mine"]);
            assert!(
                stderr(&busy).contains("active endpoints"),
                "{}",
                stderr(&busy)
            );
            expect(&gcr(&["rm", "-f", "named"]), 0);
            expect(&gcr(&["network", "rm", "mine"]), 0);
            let alias_alone = gcr(&["run", "--rm", "--network-alias", "x", &image, "true"]);
            assert!(stderr(&alias_alone).contains("needs a user network"));
        }
        expect(&gcr(&["rm", "kept"]), 0);
        assert_no_leftovers(&s);
    }
}

#[test]
fn mount_label_ulimit_shm_group_add_pull_and_cidfile_flags() {
    let Some(image) = image() else { return };
    for who in [As::Root, As::Rootless] {
        let Some(s) = Setup::new(who) else { continue };
        let gcr = |args: &[&str]| s.cmd().args(args).output().unwrap();
        let host = tempfile::tempdir().unwrap();
        std::fs::set_permissions(host.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::write(host.path().join("in.txt"), "from host\n").unwrap();
        let cid = host.path().join("cid");
        let bind = format!(
            "type=bind,source={},target=/ctx,readonly",
            host.path().display()
        );
        let out = expect(
            &gcr(&[
                "run",
                "--rm",
                "--cidfile",
                &cid.display().to_string(),
                "--ulimit",
                "nofile=512:1024",
                "--shm-size",
                "128m",
                "--group-add",
                "10",
                "--group-add",
                "nogroup",
                "--mount",
                "type=tmpfs,target=/scratch,tmpfs-size=1m",
                "--mount",
                &bind,
                "--mount",
                "type=volume,source=data,target=/data",
                &image,
                "sh",
                "-c",
                "ulimit -n; ulimit -Hn; df -k /dev/shm /scratch | tail -2 | awk '{print $2}'; \
                 id -G; cat /ctx/in.txt; touch /ctx/x 2>/dev/null || echo ro; echo kept > /data/f",
            ]),
            0,
        );
        assert_eq!(
            out, "512\n1024\n131072\n1024\n0 10 65534\nfrom host\nro\n",
            "{who:?}"
        );
        assert_eq!(std::fs::read_to_string(&cid).unwrap().len(), 64);
        // The named volume of --mount is a volume like -v's.
        let out = expect(
            &gcr(&[
                "run",
                "--rm",
                "--mount",
                "source=data,target=/d,ro",
                &image,
                "cat",
                "/d/f",
            ]),
            0,
        );
        assert_eq!(out, "kept\n");
        // Labels, stop signal and timeout are the container's.
        expect(
            &gcr(&[
                "run",
                "-d",
                "--name",
                "lab",
                "-l",
                "tier=web",
                "-l",
                "owner=me",
                "--stop-signal",
                "SIGUSR1",
                "--stop-timeout",
                "1",
                &image,
                "sleep",
                "60",
            ]),
            0,
        );
        assert_eq!(
            expect(&gcr(&["ps", "-q", "-f", "label=tier=web"]), 0)
                .lines()
                .count(),
            1
        );
        assert_eq!(expect(&gcr(&["ps", "-q", "-f", "label=tier=db"]), 0), "");
        let info = expect(
            &gcr(&[
                "inspect",
                "-f",
                "{{index .Config.Labels \"owner\"}} {{.Config.StopSignal}} {{.Config.StopTimeout}}",
                "lab",
            ]),
            0,
        );
        assert_eq!(info, "me SIGUSR1 1\n");
        expect(&gcr(&["stop", "lab"]), 0);
        expect(&gcr(&["rm", "lab"]), 0);
        // --pull never, bad values: 125 with the thing named; a --cidfile of a container
        // never made is not left behind.
        let unmade = host.path().join("unmade-cid");
        let out = gcr(&[
            "run",
            "--rm",
            "--cidfile",
            &unmade.display().to_string(),
            "--pull",
            "never",
            "localhost/nosuch:1",
            "true",
        ]);
        assert_eq!(out.status.code(), Some(125));
        assert!(stderr(&out).contains("--pull never"), "{}", stderr(&out));
        assert!(!unmade.exists(), "{who:?}: cidfile of a failed run left");
        for bad in [
            vec!["--mount", "type=bind,target=/x"],
            vec!["--mount", "type=nfs,source=a,target=/x"],
            vec!["--mount", "type=tmpfs,source=a,target=/x"],
            vec!["--ulimit", "nofile=10:5"],
            vec!["--ulimit", "bogus=1"],
            vec!["--shm-size", "lots"],
            vec!["--stop-signal", "SIGNOPE"],
            vec!["--pull", "sometimes"],
            vec!["--cidfile", &cid.display().to_string()],
        ] {
            let mut args = vec!["run", "--rm"];
            args.extend(bad.iter().copied());
            args.extend([image.as_str(), "true"]);
            let out = gcr(&args);
            assert_eq!(out.status.code(), Some(125), "{bad:?}: {}", stderr(&out));
        }
        expect(&gcr(&["volume", "rm", "data"]), 0);
        assert_no_leftovers(&s);
    }
}

#[test]
fn export_writes_the_containers_files_and_import_reads_them_back() {
    let Some(image) = image() else { return };
    for who in [As::Root, As::Rootless] {
        let Some(s) = Setup::new(who) else { continue };
        let gcr = |args: &[&str]| s.cmd().args(args).output().unwrap();
        let names = |tar_bytes: &[u8]| -> Vec<String> {
            tar::Archive::new(tar_bytes)
                .entries()
                .unwrap()
                .map(|e| e.unwrap().path().unwrap().display().to_string())
                .collect()
        };
        // A stopped container: its changes over the image, deletions applied.
        expect(
            &gcr(&[
                "run",
                "--name",
                "done",
                &image,
                "sh",
                "-c",
                "echo changed > /etc/motd; echo >> /etc/passwd; rm /bin/vi; mkdir /newdir",
            ]),
            0,
        );
        // gcr diff: what the container added, changed and deleted.
        let changes = expect(&gcr(&["diff", "done"]), 0);
        for line in [
            "C /etc",
            "C /etc/passwd",
            "A /etc/motd",
            "D /bin/vi",
            "A /newdir",
        ] {
            assert!(
                changes.lines().any(|l| l == line),
                "{who:?}: no {line:?} in {changes}"
            );
        }
        assert!(!changes.contains("resolv.conf"), "{changes}");
        let out = gcr(&["export", "done"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let listed = names(&out.stdout);
        assert!(listed.iter().any(|n| n == "etc/motd"), "{who:?}");
        assert!(listed.iter().any(|n| n == "newdir"), "{who:?}");
        assert!(
            !listed.iter().any(|n| n == "bin/vi"),
            "{who:?}: deleted file exported"
        );
        // gcr import reads it back as a one-layer image.
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let file = dir.path().join("flat.tar");
        expect(
            &gcr(&["export", "-o", &file.display().to_string(), "done"]),
            0,
        );
        expect(
            &gcr(&["import", &file.display().to_string(), "localhost/flat:1"]),
            0,
        );
        let out = expect(
            &gcr(&[
                "run",
                "--rm",
                "localhost/flat:1",
                "sh",
                "-c",
                "cat /etc/motd; test -e /bin/vi || echo gone",
            ]),
            0,
        );
        assert_eq!(out, "changed\ngone\n", "{who:?}");
        // A running container: its live files, not the runtime's /proc.
        expect(
            &gcr(&[
                "run",
                "-d",
                "--name",
                "live",
                &image,
                "sh",
                "-c",
                "echo up > /live; sleep 60",
            ]),
            0,
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut listed = Vec::new();
        while !listed.iter().any(|n: &String| n == "live") && std::time::Instant::now() < deadline {
            let out = gcr(&["export", "live"]);
            assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
            listed = names(&out.stdout);
        }
        assert!(listed.iter().any(|n| n == "live"), "{who:?}");
        assert!(
            !listed.iter().any(|n| n.starts_with("proc/")),
            "{who:?}: /proc exported"
        );
        expect(&gcr(&["rm", "-f", "done", "live"]), 0);
        expect(&gcr(&["rmi", "localhost/flat:1"]), 0);
        assert_no_leftovers(&s);
    }
}

#[test]
fn script_habits_rm_f_of_restarting_missing_things_dit_and_flag_errors() {
    let Some(image) = image() else { return };
    for who in [As::Root, As::Rootless] {
        let Some(s) = Setup::new(who) else { continue };
        let gcr = |args: &[&str]| s.cmd().args(args).output().unwrap();
        // rm -f of a container with a restart policy: gone, not restarted behind ps's back.
        let id = expect(
            &gcr(&[
                "run",
                "-d",
                "--name",
                "looper",
                "--restart",
                "always",
                &image,
                "sleep",
                "1000",
            ]),
            0,
        );
        let meta: serde_json::Value = serde_json::from_slice(
            &std::fs::read(
                s.store
                    .root()
                    .join("containers")
                    .join(id.trim())
                    .join("meta.json"),
            )
            .unwrap(),
        )
        .unwrap();
        let supervisor = meta["pid"].as_i64().unwrap();
        expect(&gcr(&["rm", "-f", "looper"]), 0);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        while Path::new(&format!("/proc/{supervisor}")).exists()
            && std::fs::read_to_string(format!("/proc/{supervisor}/stat"))
                .is_ok_and(|st| !st.contains(") Z "))
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let stat = std::fs::read_to_string(format!("/proc/{supervisor}/stat")).unwrap_or_default();
        assert!(
            stat.is_empty() || stat.contains(") Z "),
            "{who:?}: supervisor still runs"
        );
        assert_eq!(expect(&gcr(&["ps", "-aq"]), 0), "");
        // -f on what is not there is no error, as Docker.
        expect(&gcr(&["rm", "-f", "nosuch"]), 0);
        expect(&gcr(&["rmi", "-f", "localhost/nosuch:1"]), 0);
        expect(&gcr(&["volume", "rm", "-f", "nosuch"]), 0);
        assert_eq!(gcr(&["rm", "nosuch"]).status.code(), Some(1));
        // Several `run --name same` at once: one gets the name, the others 125.
        let racers: Vec<_> = (0..4)
            .map(|_| {
                s.cmd()
                    .args(["run", "-d", "--name", "same", &image, "sleep", "60"])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let codes: Vec<Option<i32>> = racers
            .into_iter()
            .map(|mut c| c.wait().unwrap().code())
            .collect();
        assert_eq!(
            codes.iter().filter(|c| **c == Some(0)).count(),
            1,
            "{who:?}: {codes:?}"
        );
        assert_eq!(
            codes.iter().filter(|c| **c == Some(125)).count(),
            3,
            "{who:?}: {codes:?}"
        );
        assert_eq!(expect(&gcr(&["ps", "-aq"]), 0).lines().count(), 1);
        expect(&gcr(&["rm", "-f", "same"]), 0);
        // -dit and -di keep a shell alive for exec.
        expect(&gcr(&["run", "-dit", "--name", "shell-t", &image, "sh"]), 0);
        expect(&gcr(&["run", "-di", "--name", "shell-i", &image, "sh"]), 0);
        std::thread::sleep(std::time::Duration::from_millis(500));
        for name in ["shell-t", "shell-i"] {
            assert_eq!(
                expect(&gcr(&["exec", name, "echo", "alive"]), 0),
                "alive\n",
                "{who:?}"
            );
        }
        expect(&gcr(&["rm", "-f", "shell-t", "shell-i"]), 0);
        // --pid host sees the host's processes; -v takes Docker Desktop's hints; stop
        // --timeout is Docker 25's spelling; export | import - flattens a container.
        let own = expect(
            &gcr(&[
                "run",
                "--rm",
                &image,
                "sh",
                "-c",
                "ls -d /proc/[0-9]* | wc -l",
            ]),
            0,
        );
        let host = gcr(&[
            "run",
            "--rm",
            "--pid",
            "host",
            &image,
            "sh",
            "-c",
            "ls -d /proc/[0-9]* | wc -l",
        ]);
        if who == As::Root {
            let host = expect(&host, 0);
            assert!(
                host.trim().parse::<u32>().unwrap() > own.trim().parse::<u32>().unwrap() + 5,
                "--pid host sees {host} processes, private {own}"
            );
        } else {
            // Rootless, a fresh /proc of the host's PID namespace cannot be mounted: refused.
            assert_eq!(host.status.code(), Some(125));
            assert!(
                stderr(&host).contains("not supported rootless"),
                "{}",
                stderr(&host)
            );
        }
        assert_eq!(
            gcr(&["run", "--rm", "--pid", "container:x", &image, "true"])
                .status
                .code(),
            Some(125)
        );
        expect(
            &gcr(&["run", "--rm", "-v", "/tmp:/t:cached", &image, "true"]),
            0,
        );
        expect(
            &gcr(&[
                "run",
                "--name",
                "flat",
                &image,
                "sh",
                "-c",
                "echo kept > /marker",
            ]),
            0,
        );
        let mut export = s
            .cmd()
            .args(["export", "flat"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let import = s
            .cmd()
            .args(["import", "-", "localhost/piped:1"])
            .stdin(export.stdout.take().unwrap())
            .output()
            .unwrap();
        assert!(export.wait().unwrap().success());
        expect(&import, 0);
        assert_eq!(
            expect(
                &gcr(&["run", "--rm", "localhost/piped:1", "cat", "/marker"]),
                0
            ),
            "kept\n"
        );
        expect(&gcr(&["stop", "--timeout", "1", "flat"]), 0);
        expect(&gcr(&["rm", "flat"]), 0);
        expect(&gcr(&["rmi", "localhost/piped:1"]), 0);
        // A bad command line is 125 (not clap's 2), and an unknown flag before the image is
        // an error, not an image name.
        assert_eq!(gcr(&["ps", "--bogus"]).status.code(), Some(125));
        let out = gcr(&["run", "--bogus", &image, "true"]);
        assert_eq!(out.status.code(), Some(125));
        assert!(stderr(&out).contains("--bogus"), "{}", stderr(&out));
        assert_no_leftovers(&s);
    }
}

#[test]
fn a_foreground_containers_output_is_kept_in_its_log_too() {
    let Some(image) = image() else { return };
    for who in [As::Root, As::Rootless] {
        let Some(s) = Setup::new(who) else { continue };
        let gcr = |args: &[&str]| s.cmd().args(args).output().unwrap();
        // The terminal still gets stdout and stderr apart; the log gets both.
        let out = gcr(&[
            "run",
            "--name",
            "fg",
            &image,
            "sh",
            "-c",
            "echo out; echo err >&2; exit 2",
        ]);
        assert_eq!(out.status.code(), Some(2));
        assert_eq!(stdout(&out), "out\n", "{who:?}");
        assert!(stderr(&out).contains("err"), "{who:?}: {}", stderr(&out));
        assert!(!stderr(&out).contains("out"), "{who:?}: {}", stderr(&out));
        let logs = gcr(&["logs", "fg"]);
        assert_eq!(expect(&logs, 0), "out\n", "{who:?}");
        assert_eq!(stderr(&logs), "err\n", "{who:?}");
        // start -a adds the next run's output.
        assert_eq!(gcr(&["start", "-a", "fg"]).status.code(), Some(2));
        assert_eq!(expect(&gcr(&["logs", "fg"]), 0).matches("out\n").count(), 2);
        // A reader that goes early does not stop the container nor the log.
        let mut head = s
            .cmd()
            .args([
                "run",
                "--name",
                "long",
                &image,
                "sh",
                "-c",
                "seq 1 5000; echo finished",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Read as _;
            let mut first = [0u8; 2];
            head.stdout.take().unwrap().read_exact(&mut first).unwrap();
        }
        head.wait().unwrap();
        assert!(
            expect(&gcr(&["logs", "--tail", "1", "long"]), 0).contains("finished"),
            "{who:?}"
        );
        expect(&gcr(&["rm", "fg", "long"]), 0);
        assert_no_leftovers(&s);
    }
}

/// Removes every container of the setup's store (the tests below keep theirs).
fn remove_all_containers(s: &Setup) {
    let gcr = |args: &[&str]| s.cmd().args(args).output().unwrap();
    for id in stdout(&gcr(&["ps", "-a", "-q"])).lines() {
        expect(&gcr(&["rm", "-f", id]), 0);
    }
    assert_eq!(stdout(&gcr(&["ps", "-a", "-q"])), "");
}

/// The files of a container's log in the store (container.log and its rotated ones).
fn log_files_of(s: &Setup, name: &str) -> Vec<(String, u64)> {
    let out = s.cmd().args(["inspect", name]).output().unwrap();
    let info: serde_json::Value = serde_json::from_str(&expect(&out, 0)).unwrap();
    let id = info[0]["Id"].as_str().unwrap().to_string();
    let dir = s.store.root().join("containers").join(id);
    let mut files: Vec<(String, u64)> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with("container.log")
                .then(|| (name, e.metadata().unwrap().len()))
        })
        .collect();
    files.sort();
    files
}

#[test]
fn logs_keep_streams_times_details_and_terminal_output() {
    let Some(image) = image() else { return };
    for who in [As::Root, As::Rootless] {
        let Some(s) = Setup::new(who) else { continue };
        let gcr = |args: &[&str]| s.cmd().args(args).output().unwrap();
        // Each stream to its own: stdout holds only out, stderr only err.
        let script = "echo out; echo err >&2; sleep 1.2; echo late";
        expect(
            &gcr(&["run", "--name", "apart", &image, "sh", "-c", script]),
            0,
        );
        let logs = gcr(&["logs", "apart"]);
        assert_eq!(expect(&logs, 0), "out\nlate\n", "{who:?}");
        assert_eq!(stderr(&logs), "err\n", "{who:?}");
        // -t: each line's time; --since and --until select by them (until is exclusive).
        let timed = expect(&gcr(&["logs", "-t", "apart"]), 0);
        let times: Vec<(&str, &str)> = timed.lines().map(|l| l.split_once(' ').unwrap()).collect();
        assert_eq!(
            times.iter().map(|t| t.1).collect::<Vec<_>>(),
            ["out", "late"]
        );
        let late = times[1].0;
        assert!(late.ends_with('Z') && late > times[0].0, "{timed}");
        let since = gcr(&["logs", "--since", late, "apart"]);
        assert_eq!(
            (expect(&since, 0), stderr(&since)),
            ("late\n".into(), "".into())
        );
        let until = gcr(&["logs", "--until", late, "apart"]);
        assert_eq!(
            (expect(&until, 0), stderr(&until)),
            ("out\n".into(), "err\n".into())
        );
        // --details: the labels and env the log options chose, as Docker (sorted k=v pairs,
        // then a space; a space alone when none were chosen).
        expect(
            &gcr(&[
                "run",
                "--name",
                "detailed",
                "--label",
                "team=blue",
                "-e",
                "MODE=prod",
                "--log-opt",
                "labels=team,env=MODE",
                &image,
                "sh",
                "-c",
                "echo hi; echo oops >&2",
            ]),
            0,
        );
        let details = gcr(&["logs", "--details", "detailed"]);
        assert_eq!(expect(&details, 0), "MODE=prod,team=blue hi\n", "{who:?}");
        assert_eq!(stderr(&details), "MODE=prod,team=blue oops\n", "{who:?}");
        let plain = gcr(&["logs", "--details", "-t", "apart"]);
        assert!(
            expect(&plain, 0).lines().all(|l| l.contains("Z  ")),
            "{}",
            stdout(&plain)
        );
        // A terminal in the foreground: logged too, one stream (stdout), as Docker.
        let term = gcr(&[
            "run",
            "-t",
            "--name",
            "term",
            &image,
            "sh",
            "-c",
            "echo tout; echo terr >&2",
        ]);
        assert_eq!(term.status.code(), Some(0), "{}", stderr(&term));
        let logs = gcr(&["logs", "term"]);
        assert_eq!(expect(&logs, 0), "tout\r\nterr\r\n", "{who:?}");
        assert_eq!(stderr(&logs), "", "{who:?}");
        // And detached with a terminal.
        expect(
            &gcr(&[
                "run",
                "-dt",
                "--name",
                "dterm",
                &image,
                "sh",
                "-c",
                "echo dt-out >&2",
            ]),
            0,
        );
        expect(&gcr(&["wait", "dterm"]), 0);
        assert_eq!(expect(&gcr(&["logs", "dterm"]), 0), "dt-out\r\n", "{who:?}");
        remove_all_containers(&s);
        assert_no_leftovers(&s);
    }
}

#[test]
fn log_rotation_keeps_max_file_files_of_about_max_size() {
    let Some(image) = image() else { return };
    for who in [As::Root, As::Rootless] {
        let Some(s) = Setup::new(who) else { continue };
        let gcr = |args: &[&str]| s.cmd().args(args).output().unwrap();
        // ~110 KB of output (~900 KB of records) through a 10 kB cap in 3 files.
        let big = gcr(&[
            "run",
            "--name",
            "big",
            "--log-opt",
            "max-size=10k,max-file=3",
            &image,
            "seq",
            "1",
            "20000",
        ]);
        assert_eq!(big.status.code(), Some(0), "{}", stderr(&big));
        assert!(stdout(&big).ends_with("19999\n20000\n"));
        let files = log_files_of(&s, "big");
        assert!(files.len() <= 3 && files.len() > 1, "{who:?}: {files:?}");
        // A record of `seq` is ~40 bytes: at most about one record over the cap.
        assert!(
            files.iter().all(|(_, len)| *len <= 10_000 + 64),
            "{files:?}"
        );
        // logs reads across the rotated files, in order: the newest lines, not the oldest.
        let logs = expect(&gcr(&["logs", "big"]), 0);
        let numbers: Vec<u32> = logs.lines().map(|l| l.parse().unwrap()).collect();
        assert_eq!(numbers.last(), Some(&20000), "{who:?}");
        assert!(numbers[0] > 15000, "{who:?}: starts at {}", numbers[0]);
        assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{who:?}");
        // --tail counts across them too.
        assert_eq!(
            expect(&gcr(&["logs", "--tail", "2", "big"]), 0),
            "19999\n20000\n"
        );
        // Both options as flags of their own; inspect shows them as given.
        expect(
            &gcr(&[
                "create",
                "--name",
                "apart",
                "--log-opt",
                "max-size=1m",
                "--log-opt",
                "max-file=2",
                &image,
                "true",
            ]),
            0,
        );
        let info: serde_json::Value =
            serde_json::from_str(&expect(&gcr(&["inspect", "apart"]), 0)).unwrap();
        assert_eq!(
            info[0]["HostConfig"]["LogConfig"],
            serde_json::json!({"Type": "json-file", "Config": {"max-size": "1m", "max-file": "2"}})
        );
        // A follower goes on into the next file when the log rotates under it.
        expect(
            &gcr(&[
                "run",
                "-d",
                "--name",
                "spin",
                "--log-opt",
                "max-size=2k",
                "--log-opt",
                "max-file=3",
                &image,
                "sh",
                "-c",
                "i=1; while [ $i -le 400 ]; do echo n$i; i=$((i+1)); usleep 2000; done",
            ]),
            0,
        );
        let followed = expect(&gcr(&["logs", "-f", "spin"]), 0);
        let numbers: Vec<u32> = followed
            .lines()
            .map(|l| l.trim_start_matches('n').parse().unwrap())
            .collect();
        assert_eq!(numbers.last(), Some(&400), "{who:?}: {followed}");
        assert!(
            numbers.windows(2).all(|w| w[1] == w[0] + 1),
            "{who:?}: {followed}"
        );
        assert!(log_files_of(&s, "spin").len() <= 3);
        remove_all_containers(&s);
        assert_no_leftovers(&s);
    }
}

#[test]
fn log_driver_none_keeps_no_log_and_unknown_ones_are_named() {
    let Some(image) = image() else { return };
    for who in [As::Root, As::Rootless] {
        let Some(s) = Setup::new(who) else { continue };
        let gcr = |args: &[&str]| s.cmd().args(args).output().unwrap();
        // The terminal still gets the output; no log is kept, and logs says so as Docker.
        let quiet = gcr(&[
            "run",
            "--name",
            "quiet",
            "--log-driver",
            "none",
            &image,
            "echo",
            "hi",
        ]);
        assert_eq!(expect(&quiet, 0), "hi\n", "{who:?}");
        assert!(log_files_of(&s, "quiet").is_empty());
        let logs = gcr(&["logs", "quiet"]);
        assert_ne!(logs.status.code(), Some(0));
        assert!(
            stderr(&logs).contains("configured logging driver does not support reading"),
            "{who:?}: {}",
            stderr(&logs)
        );
        // Detached too.
        expect(
            &gcr(&[
                "run",
                "-d",
                "--name",
                "dq",
                "--log-driver",
                "none",
                &image,
                "echo",
                "x",
            ]),
            0,
        );
        expect(&gcr(&["wait", "dq"]), 0);
        assert!(log_files_of(&s, "dq").is_empty());
        assert!(stderr(&gcr(&["logs", "dq"])).contains("does not support reading"));
        let info: serde_json::Value =
            serde_json::from_str(&expect(&gcr(&["inspect", "dq"]), 0)).unwrap();
        assert_eq!(info[0]["HostConfig"]["LogConfig"]["Type"], "none");
        // Unknown drivers and options: a clear error naming them, nothing created.
        for (args, named) in [
            (&["--log-driver", "syslog"][..], "\"syslog\""),
            (&["--log-opt", "max-sise=1m"][..], "\"max-sise\""),
            (
                &["--log-driver", "none", "--log-opt", "max-size=1m"][..],
                "none",
            ),
            (&["--log-opt", "max-size=lots"][..], "max-size"),
        ] {
            let mut cmd = vec!["run"];
            cmd.extend_from_slice(args);
            cmd.extend_from_slice(&[&image, "true"]);
            let bad = gcr(&cmd);
            assert_eq!(bad.status.code(), Some(125), "{args:?}: {}", stderr(&bad));
            assert!(stderr(&bad).contains(named), "{args:?}: {}", stderr(&bad));
        }
        remove_all_containers(&s);
        assert_no_leftovers(&s);
    }
}

#[test]
fn dockers_management_commands_are_the_plain_ones() {
    let Some(image) = image() else { return };
    let Some(s) = Setup::new(As::Root) else {
        return;
    };
    let gcr = |args: &[&str]| s.cmd().args(args).output().unwrap();
    expect(
        &gcr(&["container", "run", "--name", "done", &image, "true"]),
        0,
    );
    assert_eq!(
        expect(&gcr(&["image", "ls"]), 0),
        expect(&gcr(&["images"]), 0)
    );
    let listed = expect(&gcr(&["container", "ls", "-a"]), 0);
    assert_eq!(listed, expect(&gcr(&["ps", "-a"]), 0));
    assert!(listed.contains("done"), "{listed}");
    let info = expect(&gcr(&["container", "inspect", "done"]), 0);
    assert!(info.contains("\"Name\": \"/done\""), "{info}");
    let pruned = expect(&gcr(&["container", "prune", "-f"]), 0);
    assert!(pruned.contains("Deleted container"), "{pruned}");
    assert_eq!(expect(&gcr(&["ps", "-a", "-q"]), 0), "");
    expect(&gcr(&["image", "rm", &image]), 0);
    expect(&gcr(&["image", "prune", "-a"]), 0);
    assert_eq!(expect(&gcr(&["images", "-q"]), 0), "");
    assert_no_leftovers(&s);
}

#[test]
fn restart_policies_run_a_container_again_until_stopped_by_hand() {
    let Some(image) = image() else { return };
    for who in [As::Root, As::Rootless] {
        let Some(s) = Setup::new(who) else { continue };
        let gcr = |args: &[&str]| s.cmd().args(args).output().unwrap();
        // Every look succeeds, even while the supervisor rewrites the records between runs.
        let logs_lines = |name: &str| expect(&gcr(&["logs", name]), 0).lines().count();
        // on-failure:2 — the first run and two more, then the last status stays.
        expect(
            &gcr(&[
                "run",
                "-d",
                "--name",
                "failing",
                "--restart",
                "on-failure:2",
                &image,
                "sh",
                "-c",
                "echo run; exit 3",
            ]),
            0,
        );
        assert_eq!(expect(&gcr(&["wait", "failing"]), 0), "3\n", "{who:?}");
        assert_eq!(logs_lines("failing"), 3);
        let info: serde_json::Value =
            serde_json::from_str(&expect(&gcr(&["inspect", "failing"]), 0)).unwrap();
        assert_eq!(info[0]["RestartCount"], 2);
        // always — until `gcr stop`, which it obeys even between two runs.
        expect(
            &gcr(&[
                "run",
                "-d",
                "--name",
                "looping",
                "--restart",
                "always",
                &image,
                "sh",
                "-c",
                "echo up; sleep 0.2",
            ]),
            0,
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while logs_lines("looping") < 3 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(logs_lines("looping") >= 3, "{who:?}: did not restart");
        expect(&gcr(&["stop", "looping"]), 0);
        let after = logs_lines("looping");
        std::thread::sleep(std::time::Duration::from_millis(1500));
        assert_eq!(
            logs_lines("looping"),
            after,
            "{who:?}: ran again after stop"
        );
        assert!(!stdout(&gcr(&["ps"])).contains("looping"));
        let bad = gcr(&["run", "--rm", "--restart", "always", &image, "true"]);
        assert_eq!(bad.status.code(), Some(125));
        assert!(
            stderr(&bad).contains("conflicting options"),
            "{}",
            stderr(&bad)
        );
        let bad = gcr(&["run", "--restart", "sometimes", &image, "true"]);
        assert_eq!(bad.status.code(), Some(125));
        expect(&gcr(&["rm", "failing", "looping"]), 0);
        assert_no_leftovers(&s);
    }
}

#[test]
fn exec_joins_a_running_container_with_its_settings() {
    let Some(image) = image() else { return };
    for who in [As::Root, As::Rootless] {
        let Some(s) = Setup::new(who) else { continue };
        let gcr = |args: &[&str]| s.cmd().args(args).output().unwrap();
        expect(
            &gcr(&[
                "run",
                "-d",
                "--name",
                "target",
                "--hostname",
                "boxy",
                "-e",
                "FOO=bar",
                "--pids-limit",
                "50",
                &image,
                "sleep",
                "300",
            ]),
            0,
        );
        // Same PID namespace (sleep is PID 1), hostname, environment, Docker's capabilities
        // and seccomp profile.
        let out = gcr(&[
            "exec",
            "target",
            "sh",
            "-c",
            "cat /proc/1/cmdline | tr '\\0' ' '; echo; hostname; echo $FOO; id -u; \
             grep CapEff /proc/self/status; unshare -U true 2>/dev/null || echo unshare-refused",
        ]);
        assert_eq!(
            expect(&out, 0),
            format!("sleep 300 \nboxy\nbar\n0\nCapEff:\t{DOCKER_CAPS}\nunshare-refused\n"),
            "{who:?}"
        );
        // top lists the container's processes; rename changes how it is found.
        let top = expect(&gcr(&["top", "target"]), 0);
        assert!(top.contains("sleep 300"), "{top}");
        expect(&gcr(&["rename", "target", "renamed"]), 0);
        assert!(stdout(&gcr(&["ps"])).contains("renamed"));
        expect(&gcr(&["exec", "renamed", "true"]), 0);
        expect(&gcr(&["rename", "renamed", "target"]), 0);
        // -u, -w, -e, the command's exit status, stdin with -i.
        let out = gcr(&[
            "exec",
            "-u",
            "1000:1000",
            "-w",
            "/tmp",
            "-e",
            "FOO=baz",
            "target",
            "sh",
            "-c",
            "id -u; id -g; pwd; echo $FOO; exit 7",
        ]);
        assert_eq!(expect(&out, 7), "1000\n1000\n/tmp\nbaz\n", "{who:?}");
        let mut cat = s
            .cmd()
            .args(["exec", "-i", "target", "cat"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write as _;
            let mut stdin = cat.stdin.take().unwrap();
            stdin.write_all(b"through stdin\n").unwrap();
        }
        let cat = cat.wait_with_output().unwrap();
        assert_eq!(expect(&cat, 0), "through stdin\n");
        // -d: started in the background, gcr returns at once; a missing command is still 127.
        let gcr = |args: &[&str]| s.cmd().args(args).output().unwrap();
        expect(
            &gcr(&[
                "exec",
                "-d",
                "target",
                "sh",
                "-c",
                "sleep 0.5; echo bg > /tmp/bg",
            ]),
            0,
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !gcr(&["exec", "target", "test", "-e", "/tmp/bg"])
            .status
            .success()
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert_eq!(
            expect(&gcr(&["exec", "target", "cat", "/tmp/bg"]), 0),
            "bg\n"
        );
        let missing = gcr(&["exec", "-d", "target", "nosuchcmd"]);
        assert_eq!(missing.status.code(), Some(127), "{}", stderr(&missing));
        assert_eq!(
            gcr(&["exec", "-d", "-t", "target", "true"]).status.code(),
            Some(125)
        );
        // -t: a pty of the container's devpts, sized from the caller's terminal.
        let mut line = format!(
            "{} --root {} exec -t target sh -c 'tty; stty size'",
            support::gcr_bin().display(),
            s.store.root().display()
        );
        if s.who == As::Rootless {
            line = line.replacen(
                &support::gcr_bin().display().to_string(),
                &format!("runuser -u {} -- {}", s.user, gcr_for(&s.user).display()),
                1,
            );
        }
        let tty = Command::new("script")
            .args([
                "-qec",
                &format!("stty cols 77 rows 11; {line}"),
                "/dev/null",
            ])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let text = stdout(&tty);
        assert!(
            text.contains("/dev/pts/") && text.contains("11 77"),
            "{who:?}: {text}"
        );
        // What the exec writes is the container's; a missing command is 127.
        expect(
            &gcr(&["exec", "target", "sh", "-c", "echo made > /made"]),
            0,
        );
        let out = gcr(&["exec", "target", "cat", "/made"]);
        assert_eq!(expect(&out, 0), "made\n");
        let missing = gcr(&["exec", "target", "nosuchcommand"]);
        assert_eq!(missing.status.code(), Some(127), "{}", stderr(&missing));
        // Stopped or unknown containers are refused clearly.
        expect(&gcr(&["stop", "-t", "0", "target"]), 0);
        let stopped = gcr(&["exec", "target", "true"]);
        assert_eq!(stopped.status.code(), Some(125));
        assert!(
            stderr(&stopped).contains("not running"),
            "{}",
            stderr(&stopped)
        );
        let unknown = gcr(&["exec", "nosuch", "true"]);
        assert!(stderr(&unknown).contains("no such container"));
        expect(&gcr(&["rm", "target"]), 0);
        assert_no_leftovers(&s);
    }
}

// ---------------------------------------------------------------------------------------------
// Rootful user namespaces: --userns=auto, --uidmap/--gidmap (idmapped layers)

/// The host uid that container uid 0 maps to, from a printed /proc/self/uid_map.
fn host_root_of(uid_map: &str) -> u64 {
    uid_map
        .lines()
        .find_map(|l| {
            let f: Vec<u64> = l
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            (f.len() == 3 && f[0] == 0).then_some(f[1])
        })
        .unwrap_or_else(|| panic!("no mapping of uid 0 in {uid_map:?}"))
}

#[test]
fn userns_auto_runs_an_image_as_a_mapped_root_with_its_files_owned_by_root() {
    let Some(image) = image() else { return };
    let Some(s) = Setup::new(As::Root) else {
        return;
    };
    // The image's files are owned by 0 on disk; through idmapped layers the container's root
    // owns them, can chown within its range, keeps Docker's hardening, and its limits apply.
    let script = "cat /proc/self/uid_map; echo ---; stat -c %u:%g / /bin/busybox /etc/hosts; \
                  touch /made && chown 100:100 /made && stat -c %u:%g /made; \
                  echo hi >> /etc/hosts && echo hosts-writable; \
                  grep CapEff /proc/self/status; unshare -U true 2>/dev/null || echo unshare-refused; \
                  (for i in 1 2 3 4 5 6 7 8; do sleep 1 & done; wait) 2>&1; true";
    let out = s
        .cmd()
        .args([
            "run",
            "--rm",
            "--userns=auto",
            "--pids-limit",
            "5",
            &image,
            "sh",
            "-c",
            script,
        ])
        .output()
        .unwrap();
    let text = expect(&out, 0);
    let (map, rest) = text.split_once("---\n").unwrap();
    // setup.sh gives the user "containers" 2147483647:2147483648, as Podman's docs do.
    assert!(host_root_of(map) >= 2147483647, "{text}");
    assert!(
        rest.starts_with("0:0\n0:0\n0:0\n100:100\nhosts-writable\n"),
        "{text}"
    );
    assert!(rest.contains(DOCKER_CAPS), "{text}");
    assert!(rest.contains("unshare-refused"), "{text}");
    // The parent put the container into its cgroup (the child may not write the host's
    // cgroup files from its namespace): the fork limit holds.
    assert!(rest.contains("can't fork"), "pids limit missing: {text}");
    assert_no_leftovers(&s);

    // Two containers at once get ranges that do not overlap.
    let first = s
        .cmd()
        .args(["run", "--rm", "--userns=auto", &image, "sh", "-c"])
        .arg("cat /proc/self/uid_map; sleep 2")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    let second = s
        .cmd()
        .args(["run", "--rm", "--userns=auto:size=1024", &image])
        .args(["cat", "/proc/self/uid_map"])
        .output()
        .unwrap();
    let second = expect(&second, 0);
    let first = first.wait_with_output().unwrap();
    let first = expect(&first, 0);
    let (a, b) = (host_root_of(&first), host_root_of(&second));
    assert!(
        b >= a + 65536 || b + 1024 <= a,
        "overlapping ranges: {first} / {second}"
    );
    assert!(second.split_whitespace().nth(2) == Some("1024"), "{second}");
    assert_no_leftovers(&s);

    // A plain directory as rootfs is idmapped the same way: the container's writes are
    // stored as container ids, not as the range's host ids.
    let out = s.sh(
        &["--userns=auto"],
        "stat -c %u /bin/busybox; touch /written-inside",
    );
    assert_eq!(expect(&out, 0), "0\n");
    let meta = std::fs::symlink_metadata(s.rootfs.path().join("written-inside")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 0);
    assert_no_leftovers(&s);
}

#[test]
fn uidmap_and_gidmap_choose_the_mapping_and_bad_values_are_125() {
    let Some(image) = image() else { return };
    let Some(s) = Setup::new(As::Root) else {
        return;
    };
    let run = |opts: &[&str], script: &str| {
        s.cmd()
            .arg("run")
            .arg("--rm")
            .args(opts)
            .arg(&image)
            .args(["sh", "-c", script])
            .output()
            .unwrap()
    };
    let out = run(
        &["--uidmap", "0:300000:2000"],
        "cat /proc/self/uid_map /proc/self/gid_map; stat -c %u:%g /bin/busybox",
    );
    let text = expect(&out, 0);
    let fields: Vec<&str> = text.split_whitespace().collect();
    // --gidmap defaults to --uidmap.
    assert_eq!(
        fields,
        ["0", "300000", "2000", "0", "300000", "2000", "0:0"],
        "{text}"
    );
    let out = run(
        &["--uidmap", "0:300000:2000", "--gidmap", "0:400000:3000"],
        "cat /proc/self/gid_map",
    );
    assert_eq!(
        expect(&out, 0).split_whitespace().collect::<Vec<_>>(),
        ["0", "400000", "3000"]
    );
    assert_no_leftovers(&s);
    for (opts, needle) in [
        (&["--uidmap", "0:1:x"][..], "--uidmap"),
        (&["--uidmap", "0:300000:10,5:400000:10"][..], "overlap"),
        (&["--userns=keep-id"][..], "--userns"),
        (&["--userns=auto:size=0"][..], "size"),
        (
            &["--userns=host", "--uidmap", "0:300000:10"][..],
            "--userns=host",
        ),
    ] {
        let out = run(opts, "true");
        assert_eq!(out.status.code(), Some(125), "{opts:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{opts:?}: {}", stderr(&out));
        assert_no_leftovers(&s);
    }
}

#[test]
fn rootless_refuses_userns_choices_it_cannot_honour() {
    let Some(s) = Setup::new(As::Rootless) else {
        return;
    };
    for opts in [&["--userns=auto"][..], &["--uidmap", "0:1:1"][..]] {
        let out = s.sh(opts, "true");
        assert_eq!(out.status.code(), Some(125), "{opts:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("not supported rootless"),
            "{opts:?}: {}",
            stderr(&out)
        );
    }
    assert_no_leftovers(&s);
}

#[test]
fn events_show_a_lifecycle_in_order_and_follow() {
    let Some(image) = image() else { return };
    for who in [As::Root, As::Rootless] {
        let Some(s) = Setup::new(who) else { continue };
        let gcr = |args: &[&str]| s.cmd().args(args).output().unwrap();
        // A follower started first sees what happens after it (and only that).
        let follower = s
            .cmd()
            .args([
                "events",
                "-f",
                "type=container",
                "--format",
                "{{.Action}} {{.Actor.Attributes.name}}",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        let since = chrono_like_now();
        expect(
            &gcr(&["run", "--name", "ev", &image, "sh", "-c", "exit 3"]),
            3,
        );
        expect(&gcr(&["rm", "ev"]), 0);
        std::thread::sleep(std::time::Duration::from_millis(300));
        let until = chrono_like_now();
        let replay = expect(
            &gcr(&[
                "events",
                "--since",
                &since,
                "--until",
                &until,
                "-f",
                "container=ev",
                "--format",
                "{{.Type}} {{.Action}}",
            ]),
            0,
        );
        assert_eq!(
            replay, "container create\ncontainer start\ncontainer die\ncontainer destroy\n",
            "{who:?}"
        );
        let exit = expect(
            &gcr(&[
                "events",
                "--since",
                &since,
                "--until",
                &until,
                "-f",
                "event=die",
                "--format",
                "{{.Actor.Attributes.exitCode}}",
            ]),
            0,
        );
        assert_eq!(exit, "3\n", "{who:?}");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(follower.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let followed = follower.wait_with_output().unwrap();
        let followed = stdout(&followed);
        assert!(
            followed.starts_with("create ev\nstart ev\ndie ev\ndestroy ev\n"),
            "{who:?}: {followed}"
        );
        let bad = gcr(&["events", "--since", "yesterday", "--until", "0s"]);
        assert_eq!(bad.status.code(), Some(125));
        assert!(stderr(&bad).contains("--since"), "{}", stderr(&bad));
        assert_no_leftovers(&s);
    }
}

/// Now as Unix seconds with nanoseconds, as `events --since/--until` take it.
fn chrono_like_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    format!("{}.{:09}", now.as_secs(), now.subsec_nanos())
}

#[test]
fn pause_freezes_a_counter_and_unpause_lets_it_go_on() {
    let Some(image) = image() else { return };
    for who in [As::Root, As::Rootless] {
        let Some(s) = Setup::new(who) else { continue };
        let gcr = |args: &[&str]| s.cmd().args(args).output().unwrap();
        expect(
            &gcr(&[
                "run",
                "-d",
                "--name",
                "counter",
                &image,
                "sh",
                "-c",
                "i=0; while true; do i=$((i+1)); echo $i > /tmp/n; sleep 0.05; done",
            ]),
            0,
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
        // The counter rewrites its file: a read between truncate and write is retried.
        let count = || -> u64 {
            for _ in 0..20 {
                let text = expect(&gcr(&["exec", "counter", "cat", "/tmp/n"]), 0);
                if let Ok(n) = text.trim().parse() {
                    return n;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            panic!("the counter's file stays empty");
        };
        let cgroup_v1 = !std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        let paused = gcr(&["pause", "counter"]);
        if who == As::Rootless && cgroup_v1 {
            // The kernel gives the freezer to root only there: one clear line.
            assert_eq!(paused.status.code(), Some(1));
            assert!(
                stderr(&paused).contains("not supported rootless on cgroup v1"),
                "{}",
                stderr(&paused)
            );
            expect(&gcr(&["rm", "-f", "counter"]), 0);
            assert_no_leftovers(&s);
            continue;
        }
        expect(&paused, 0);
        let status = expect(&gcr(&["ps", "--format", "{{.Names}} {{.Status}}"]), 0);
        assert!(status.contains("(Paused)"), "{who:?}: {status}");
        let state = expect(
            &gcr(&[
                "inspect",
                "-f",
                "{{.State.Status}} {{.State.Paused}}",
                "counter",
            ]),
            0,
        );
        assert_eq!(state.trim(), "paused true");
        // Frozen: exec, stop and kill are refused (Docker's rule) and nothing counts.
        for refused in [
            gcr(&["exec", "counter", "true"]),
            gcr(&["stop", "counter"]),
            gcr(&["kill", "counter"]),
        ] {
            assert!(
                stderr(&refused).contains("is paused"),
                "{}",
                stderr(&refused)
            );
        }
        let counter_file = || {
            std::fs::read_dir(s.store.root().join("containers"))
                .unwrap()
                .flatten()
                .find_map(|e| std::fs::read_to_string(e.path().join("pid")).ok())
                .and_then(|pid| {
                    std::fs::read_to_string(format!("/proc/{}/root/tmp/n", pid.trim())).ok()
                })
                .expect("the counter's file")
        };
        // Frozen: the file stays as it is (even half-written, between truncate and write).
        let frozen_at = counter_file();
        std::thread::sleep(std::time::Duration::from_millis(500));
        assert_eq!(counter_file(), frozen_at, "{who:?}: counted while paused");
        expect(&gcr(&["unpause", "counter"]), 0);
        let after_thaw = count();
        std::thread::sleep(std::time::Duration::from_millis(400));
        assert!(
            count() > after_thaw + 2,
            "{who:?}: the counter did not go on"
        );
        // rm -f takes a paused container too, and its freezer group.
        let id = expect(&gcr(&["inspect", "-f", "{{.Id}}", "counter"]), 0);
        expect(&gcr(&["pause", "counter"]), 0);
        expect(&gcr(&["rm", "-f", "counter"]), 0);
        let group = Path::new("/sys/fs/cgroup/freezer/gcr").join(id.trim());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while group.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(!group.exists(), "{} left", group.display());
        let events = expect(
            &gcr(&[
                "events",
                "--since",
                "1m",
                "--until",
                "0s",
                "-f",
                "event=pause",
                "-f",
                "event=unpause",
                "--format",
                "{{.Action}}",
            ]),
            0,
        );
        assert_eq!(events, "pause\nunpause\npause\n", "{who:?}");
        assert_no_leftovers(&s);
    }
}

#[test]
fn a_published_udp_port_echoes_through_the_proxy() {
    let Some(registry) = support::registry() else {
        return;
    };
    let debian = format!("{registry}/debian:bookworm");
    for who in [As::Root, As::Rootless] {
        let Some(s) = Setup::new(who) else { continue };
        let gcr = |args: &[&str]| s.cmd().args(args).output().unwrap();
        let port = 24000 + (std::process::id() % 10000) as u16 + u16::from(who == As::Rootless);
        let publish = format!("127.0.0.1:{port}:9999/udp");
        // perl-base is in every Debian: a udp echo server in the container.
        expect(
            &gcr(&[
                "run", "-d", "--name", "udp", "-p", &publish, &debian, "perl",
                "-MIO::Socket::INET", "-e",
                "$s=IO::Socket::INET->new(LocalPort=>9999,Proto=>'udp') or die; while($s->recv($d,2048)){ $s->send(\"echo:$d\") }",
            ]),
            0,
        );
        assert_eq!(
            expect(&gcr(&["port", "udp"]), 0),
            format!("9999/udp -> 127.0.0.1:{port}\n")
        );
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(std::time::Duration::from_millis(500)))
            .unwrap();
        let mut answers = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        while answers.len() < 2 && std::time::Instant::now() < deadline {
            let n = answers.len();
            socket
                .send_to(format!("ping{n}").as_bytes(), ("127.0.0.1", port))
                .unwrap();
            let mut buf = [0u8; 64];
            if let Ok(got) = socket.recv(&mut buf) {
                answers.push(String::from_utf8_lossy(&buf[..got]).to_string());
            }
        }
        assert_eq!(answers, ["echo:ping0", "echo:ping1"], "{who:?}");
        let inspected = expect(
            &gcr(&["inspect", "-f", "{{json .HostConfig.PortBindings}}", "udp"]),
            0,
        );
        assert!(inspected.contains("\"9999/udp\""), "{inspected}");
        expect(&gcr(&["rm", "-f", "udp"]), 0);
        assert_no_leftovers(&s);
    }
}

/// What a user network holds where its bridge lives (the host as root, the rootless network
/// namespace rootless, read through its keeper): the bridge's ports, its routes, its
/// nftables table and its address leases.
fn user_network_state(who: As, user: &str, bridge: &str) -> String {
    let (prefix, leases): (Vec<String>, PathBuf) = match who {
        As::Root => (Vec::new(), PathBuf::from("/run/gcr/net")),
        As::Rootless => {
            let uid = stdout(&Command::new("id").args(["-u", user]).output().unwrap());
            let state = PathBuf::from(format!("/tmp/gcr-run-{}/net", uid.trim()));
            let record = std::fs::read_to_string(state.join("keeper")).expect("a keeper record");
            let keeper = record.split_whitespace().next().unwrap().to_string();
            (
                vec!["nsenter".into(), "-t".into(), keeper, "-n".into()],
                state,
            )
        }
    };
    let run = |args: &[&str]| {
        let mut all: Vec<String> = prefix.clone();
        all.extend(args.iter().map(|a| a.to_string()));
        let out = Command::new(&all[0]).args(&all[1..]).output().unwrap();
        format!("{}{}", stdout(&out), stderr(&out))
    };
    let mut leased: Vec<String> = std::fs::read_dir(leases.join(format!("leases-{bridge}")))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    leased.sort();
    format!(
        "ports: {}\nroutes: {}\nnft: {}\nleases: {leased:?}\n",
        run(&["ip", "-o", "link", "show", "master", bridge]),
        run(&["ip", "route", "show", "dev", bridge]),
        run(&["nft", "list", "table", "ip", &format!("gcr_{bridge}")]),
    )
}

#[test]
fn a_hundred_cycles_over_a_user_network_leave_nothing_behind() {
    let Some(image) = image() else { return };
    if support::tool("nsenter").is_none() || support::tool("nft").is_none() {
        return;
    }
    for who in [As::Root, As::Rootless] {
        let Some(s) = Setup::new(who) else { continue };
        let gcr = |args: &[&str]| s.cmd().args(args).output().unwrap();
        expect(&gcr(&["network", "create", "cycles"]), 0);
        // A member that stays keeps the bridge (and rootless, its namespace) up throughout.
        expect(
            &gcr(&[
                "run",
                "-d",
                "--name",
                "anchor",
                "--network",
                "cycles",
                &image,
                "sleep",
                "300",
            ]),
            0,
        );
        let inspected = expect(&gcr(&["network", "inspect", "cycles"]), 0);
        let doc: serde_json::Value = serde_json::from_str(&inspected).unwrap();
        let bridge = doc[0]["Options"]["com.docker.network.bridge.name"]
            .as_str()
            .unwrap()
            .to_string();
        let before = user_network_state(who, &s.user, &bridge);
        // The state is read for real: the anchor's veth is the bridge's one port, the
        // network's table is there, the anchor holds one lease.
        assert_eq!(before.matches("master ").count(), 1, "{who:?}: {before}");
        assert!(
            before.contains(&format!("table ip gcr_{bridge}")),
            "{who:?}: {before}"
        );
        assert!(before.contains("leases: [\"10."), "{who:?}: {before}");
        for i in 0..100 {
            if i % 10 == 0 {
                // create, start, rm -f of a running one.
                let name = format!("cyc{i}");
                expect(
                    &gcr(&[
                        "create",
                        "--name",
                        &name,
                        "--network",
                        "cycles",
                        &image,
                        "sleep",
                        "60",
                    ]),
                    0,
                );
                expect(&gcr(&["start", &name]), 0);
                expect(&gcr(&["rm", "-f", &name]), 0);
            } else {
                let out = gcr(&[
                    "run",
                    "--rm",
                    "--network",
                    "cycles",
                    &image,
                    "ping",
                    "-c1",
                    "-W2",
                    "anchor",
                ]);
                assert!(out.status.success(), "{who:?} cycle {i}: {}", stderr(&out));
            }
        }
        // The kernel takes a namespace's veth away asynchronously: give it a moment.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut after = user_network_state(who, &s.user, &bridge);
        while after != before && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(200));
            after = user_network_state(who, &s.user, &bridge);
        }
        assert_eq!(after, before, "{who:?}");
        expect(&gcr(&["rm", "-f", "anchor"]), 0);
        expect(&gcr(&["network", "rm", "cycles"]), 0);
        assert_no_leftovers(&s);
    }
}

#[test]
fn network_container_shares_a_running_containers_namespace() {
    let Some(image) = image() else { return };
    for who in [As::Root, As::Rootless] {
        let Some(s) = Setup::new(who) else { continue };
        let gcr = |args: &[&str]| s.cmd().args(args).output().unwrap();
        expect(
            &gcr(&[
                "run",
                "-d",
                "--name",
                "owner",
                &image,
                "sh",
                "-c",
                "echo shared > /tmp/i; httpd -f -p 8080 -h /tmp",
            ]),
            0,
        );
        let fetch = "for i in 1 2 3 4 5 6 7 8 9 10; do wget -qO- http://127.0.0.1:8080/i && exit 0; sleep 0.2; done; exit 1";
        // Its loopback is the owner's: the server there answers on 127.0.0.1.
        let fetched = gcr(&[
            "run",
            "--rm",
            "--network",
            "container:owner",
            &image,
            "sh",
            "-c",
            fetch,
        ]);
        assert_eq!(expect(&fetched, 0), "shared\n", "{who:?}");
        let addresses = |args: &[&str]| {
            let out = expect(&gcr(args), 0);
            out.lines()
                .filter(|l| !l.contains(" lo "))
                .map(|l| l.split_whitespace().nth(3).unwrap_or_default().to_string())
                .collect::<Vec<_>>()
        };
        let own = addresses(&["exec", "owner", "ip", "-o", "-4", "addr"]);
        let joined = addresses(&[
            "run",
            "--rm",
            "--network",
            "container:owner",
            &image,
            "ip",
            "-o",
            "-4",
            "addr",
        ]);
        assert_eq!(own, joined, "{who:?}");
        assert!(!own.is_empty(), "{who:?}");
        // Made now, started later: it joins the owner's namespace at its start.
        expect(
            &gcr(&[
                "create",
                "--name",
                "side",
                "--network",
                "container:owner",
                &image,
                "sh",
                "-c",
                fetch,
            ]),
            0,
        );
        assert_eq!(
            expect(&gcr(&["start", "-a", "side"]), 0),
            "shared\n",
            "{who:?}"
        );
        let mode = expect(
            &gcr(&["inspect", "-f", "{{.HostConfig.NetworkMode}}", "side"]),
            0,
        );
        assert!(mode.starts_with("container:"), "{mode}");
        let refused = gcr(&[
            "run",
            "--rm",
            "--network",
            "container:owner",
            "-p",
            "81:80",
            &image,
            "true",
        ]);
        assert!(
            stderr(&refused).contains("conflicting options"),
            "{}",
            stderr(&refused)
        );
        expect(&gcr(&["rm", "-f", "side", "owner"]), 0);
        let gone = gcr(&[
            "run",
            "--rm",
            "--network",
            "container:owner",
            &image,
            "true",
        ]);
        assert_eq!(gone.status.code(), Some(125));
        assert_no_leftovers(&s);
    }
}

#[test]
fn network_pasta_gives_the_hosts_address_reaches_the_host_and_publishes() {
    let Some(image) = image() else { return };
    if support::tool("pasta").is_none() {
        assert!(
            !support::in_ci(),
            "pasta missing: run tests/fixtures/setup.sh"
        );
        return;
    }
    // The host's address on its default route: pasta gives it to the container.
    let route = std::fs::read_to_string("/proc/net/route").unwrap();
    let fields: Vec<Vec<String>> = route
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect();
    let Some(default) = fields.iter().find(|f| f[1] == "00000000") else {
        return;
    };
    let gateway = u32::from_str_radix(&default[2], 16).unwrap();
    let gateway = std::net::Ipv4Addr::from(gateway.swap_bytes());
    let dev = &default[0];
    let addr = stdout(
        &Command::new("ip")
            .args(["-4", "-o", "addr", "show", "dev", dev])
            .output()
            .unwrap(),
    );
    let host_ip = addr
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    // A server on the host: pasta takes the container's traffic to the gateway's address to
    // the host itself.
    let server = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = server.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in server.incoming().flatten() {
            use std::io::{Read as _, Write as _};
            let mut conn = conn;
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 9\r\n\r\nfrom-host");
        }
    });
    for who in [As::Root, As::Rootless] {
        let Some(s) = Setup::new(who) else { continue };
        let gcr = |args: &[&str]| s.cmd().args(args).output().unwrap();
        let inside = expect(
            &gcr(&[
                "run",
                "--rm",
                "--network",
                "pasta",
                &image,
                "ip",
                "-o",
                "-4",
                "addr",
            ]),
            0,
        );
        assert!(
            inside.contains(&format!("inet {host_ip}/")),
            "{who:?}: {inside}"
        );
        let fetched = gcr(&[
            "run",
            "--rm",
            "--network",
            "pasta",
            &image,
            "wget",
            "-qO-",
            &format!("http://{gateway}:{port}/"),
        ]);
        assert_eq!(expect(&fetched, 0), "from-host", "{who:?}");
        let published =
            26000 + (std::process::id() % 10000) as u16 + u16::from(who == As::Rootless);
        expect(
            &gcr(&[
                "run",
                "-d",
                "--name",
                "pw",
                "--network",
                "pasta",
                "-p",
                &format!("127.0.0.1:{published}:80"),
                &image,
                "sh",
                "-c",
                "echo via-pasta > /tmp/i; httpd -f -p 80 -h /tmp",
            ]),
            0,
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let body = loop {
            let out = Command::new("curl")
                .args([
                    "-s",
                    "--max-time",
                    "2",
                    &format!("http://127.0.0.1:{published}/i"),
                ])
                .output()
                .unwrap();
            if out.status.success() || std::time::Instant::now() > deadline {
                break stdout(&out);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        };
        assert_eq!(body, "via-pasta\n", "{who:?}");
        expect(&gcr(&["rm", "-f", "pw"]), 0);
        // Its pasta goes with it.
        let left = Command::new("pgrep")
            .args(["-f", "pasta --config-net --quiet .*--runas 0"])
            .output()
            .unwrap();
        assert_eq!(stdout(&left), "", "{who:?}: pasta left running");
        assert_no_leftovers(&s);
    }
}

#[test]
fn an_oom_kill_is_137_and_inspect_says_oomkilled() {
    let Some(image) = image() else { return };
    // Root: rootless on cgroup v1 has no memory limit to be killed for.
    let Some(s) = Setup::new(As::Root) else {
        return;
    };
    let gcr = |args: &[&str]| s.cmd().args(args).output().unwrap();
    // `tail` of an endless line keeps all of it: far past 32 MiB.
    let out = gcr(&[
        "run",
        "--name",
        "fg",
        "-m",
        "32m",
        &image,
        "tail",
        "/dev/zero",
    ]);
    assert_eq!(out.status.code(), Some(137), "{}", stderr(&out));
    expect(
        &gcr(&[
            "run",
            "-d",
            "--name",
            "bg",
            "-m",
            "32m",
            &image,
            "tail",
            "/dev/zero",
        ]),
        0,
    );
    expect(&gcr(&["wait", "bg"]), 0);
    expect(
        &gcr(&["run", "--name", "fine", "-m", "32m", &image, "true"]),
        0,
    );
    for (name, oom) in [("fg", "true"), ("bg", "true"), ("fine", "false")] {
        let state = expect(
            &gcr(&[
                "inspect",
                "-f",
                "{{.State.OOMKilled}} {{.State.ExitCode}}",
                name,
            ]),
            0,
        );
        let code = if oom == "true" { 137 } else { 0 };
        assert_eq!(state.trim(), format!("{oom} {code}"), "{name}");
    }
    expect(&gcr(&["rm", "fg", "bg", "fine"]), 0);
    assert_no_leftovers(&s);
}

#[test]
fn sysctl_sets_namespaced_parameters_and_refuses_the_hosts() {
    let Some(image) = image() else { return };
    for who in [As::Root, As::Rootless] {
        let Some(s) = Setup::new(who) else { continue };
        let gcr = |args: &[&str]| s.cmd().args(args).output().unwrap();
        let set = gcr(&[
            "run",
            "--rm",
            "--sysctl",
            "net.ipv4.ip_unprivileged_port_start=80",
            "--sysctl",
            "kernel.shmmax=1234567",
            &image,
            "cat",
            "/proc/sys/net/ipv4/ip_unprivileged_port_start",
            "/proc/sys/kernel/shmmax",
        ]);
        assert_eq!(expect(&set, 0), "80\n1234567\n", "{who:?}");
        // Not namespaced, or the host's namespace: refused before anything runs.
        for refused in [
            gcr(&["run", "--rm", "--sysctl", "vm.swappiness=1", &image, "true"]),
            gcr(&[
                "run",
                "--rm",
                "--network",
                "host",
                "--sysctl",
                "net.ipv4.ip_forward=1",
                &image,
                "true",
            ]),
            gcr(&["run", "--rm", "--sysctl", "nonsense", &image, "true"]),
        ] {
            assert_eq!(
                refused.status.code(),
                Some(125),
                "{who:?}: {}",
                stderr(&refused)
            );
        }
        assert_no_leftovers(&s);
    }
}

#[test]
fn anonymous_volumes_come_from_v_and_volume_and_go_with_rm_v() {
    let Some(image) = image() else { return };
    for who in [As::Root, As::Rootless] {
        let Some(s) = Setup::new(who) else { continue };
        let gcr = |args: &[&str]| s.cmd().args(args).output().unwrap();
        let volumes = || expect(&gcr(&["volume", "ls", "-q"]), 0).lines().count();
        let ctx = tempfile::tempdir().unwrap();
        std::fs::write(
            ctx.path().join("Containerfile"),
            format!("FROM {image}\nRUN mkdir /seed && echo seeded > /seed/f\nVOLUME /seed\n"),
        )
        .unwrap();
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(ctx.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        expect(
            &gcr(&[
                "build",
                "-q",
                "-t",
                "seeded",
                &ctx.path().display().to_string(),
            ]),
            0,
        );
        assert_eq!(volumes(), 0);
        // The image's VOLUME: a volume of its own, filled from the image.
        let out = expect(&gcr(&["run", "--name", "a", "seeded", "cat", "/seed/f"]), 0);
        assert_eq!(out, "seeded\n", "{who:?}");
        assert_eq!(volumes(), 1, "{who:?}");
        // rm keeps it (dangling, as Docker's), rm -v takes it.
        expect(
            &gcr(&["run", "--name", "b", "-v", "/data", &image, "true"]),
            0,
        );
        assert_eq!(volumes(), 2, "{who:?}");
        expect(&gcr(&["rm", "-v", "a", "b"]), 0);
        assert_eq!(volumes(), 0, "{who:?}");
        // --rm takes them too; a named volume over the VOLUME stays the only one.
        expect(
            &gcr(&["run", "--rm", "-v", "/data:ro", "seeded", "true"]),
            0,
        );
        assert_eq!(volumes(), 0, "{who:?}");
        expect(
            &gcr(&[
                "run",
                "--rm",
                "-v",
                "kept:/seed",
                "seeded",
                "cat",
                "/seed/f",
            ]),
            0,
        );
        assert_eq!(
            expect(&gcr(&["volume", "ls", "-q"]), 0),
            "kept\n",
            "{who:?}"
        );
        expect(&gcr(&["volume", "rm", "kept"]), 0);
        assert_no_leftovers(&s);
    }
}

/// Polls `probe` every 100 ms until it gives Some, for at most `seconds`.
fn within<T>(seconds: u64, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        if let Some(found) = probe() {
            return found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not within {seconds} s: {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn a_healthcheck_turns_unhealthy_then_healthy() {
    let Some(image) = image() else { return };
    for who in [As::Root, As::Rootless] {
        let Some(s) = Setup::new(who) else { continue };
        let gcr = |args: &[&str]| s.cmd().args(args).output().unwrap();
        // The image's HEALTHCHECK, as the builder writes it.
        let ctx = tempfile::tempdir().unwrap();
        std::fs::write(
            ctx.path().join("Containerfile"),
            format!(
                "FROM {image}\nHEALTHCHECK --interval=1s --timeout=5s --retries=2 \\\n  CMD test -e /tmp/ok && echo fine || (echo missing >&2; exit 1)\n"
            ),
        )
        .unwrap();
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(ctx.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let context = ctx.path().display().to_string();
        expect(&gcr(&["build", "-q", "-t", "checked", &context]), 0);
        expect(
            &gcr(&["run", "-d", "--name", "svc", "checked", "sleep", "60"]),
            0,
        );
        let status = || expect(&gcr(&["ps", "--format", "{{.Names}} {{.Status}}"]), 0);
        assert!(
            status().contains("(health: starting)"),
            "{who:?}: {}",
            status()
        );
        // Two failures in a row: unhealthy.
        within(15, "unhealthy in ps", || {
            status().contains("(unhealthy)").then_some(())
        });
        let health = |field: &str| {
            expect(
                &gcr(&["inspect", "-f", &format!("{{{{{field}}}}}"), "svc"]),
                0,
            )
            .trim()
            .to_string()
        };
        assert_eq!(health(".State.Health.Status"), "unhealthy", "{who:?}");
        assert!(
            health(".State.Health.FailingStreak")
                .parse::<u32>()
                .unwrap()
                >= 2
        );
        let log = health("json .State.Health.Log");
        assert!(log.contains("missing"), "the probe's stderr is kept: {log}");
        assert!(log.contains("\"ExitCode\":1"), "{log}");
        let test: Vec<String> =
            serde_json::from_str(&health("json .Config.Healthcheck.Test")).unwrap();
        assert_eq!(
            test,
            [
                "CMD-SHELL",
                "test -e /tmp/ok && echo fine || (echo missing >&2; exit 1)"
            ]
        );
        // One success: healthy again, the streak reset.
        expect(&gcr(&["exec", "svc", "touch", "/tmp/ok"]), 0);
        within(10, "healthy in ps", || {
            status().contains("(healthy)").then_some(())
        });
        assert_eq!(health(".State.Health.FailingStreak"), "0");
        assert!(health("json .State.Health.Log").contains("fine"));
        let listed = expect(&gcr(&["ps", "-q", "--filter", "health=healthy"]), 0);
        assert_eq!(listed.lines().count(), 1, "{who:?}: {listed}");
        // `healthcheck run` runs it now: 0 while the file is there, 1 once it is gone.
        let now = gcr(&["healthcheck", "run", "svc"]);
        assert_eq!(expect(&now, 0), "healthy\n");
        expect(&gcr(&["exec", "svc", "rm", "/tmp/ok"]), 0);
        let now = gcr(&["healthcheck", "run", "svc"]);
        assert_eq!(now.status.code(), Some(1), "{}", stderr(&now));
        // The journal saw both turns.
        let events = expect(
            &gcr(&[
                "events",
                "--since",
                "1m",
                "--until",
                "0s",
                "--format",
                "{{.Action}}",
            ]),
            0,
        );
        assert!(
            events.contains("health_status: unhealthy")
                && events.contains("health_status: healthy"),
            "{events}"
        );
        expect(&gcr(&["rm", "-f", "svc"]), 0);

        // Flags over the image's: a timeout, and --no-healthcheck.
        expect(
            &gcr(&[
                "run",
                "-d",
                "--name",
                "slow",
                "--health-cmd",
                "sleep 30",
                "--health-timeout",
                "300ms",
                "--health-interval",
                "500ms",
                &image,
                "sleep",
                "60",
            ]),
            0,
        );
        let log = within(10, "a timed-out probe", || {
            let log = expect(
                &gcr(&["inspect", "-f", "{{json .State.Health.Log}}", "slow"]),
                0,
            );
            log.contains("exceeded timeout").then_some(log)
        });
        assert!(log.contains("\"ExitCode\":-1"), "{log}");
        expect(&gcr(&["rm", "-f", "slow"]), 0);
        expect(
            &gcr(&[
                "run",
                "-d",
                "--name",
                "off",
                "--no-healthcheck",
                "checked",
                "sleep",
                "60",
            ]),
            0,
        );
        assert!(!status().contains("health"), "{}", status());
        assert_eq!(
            expect(&gcr(&["inspect", "-f", "{{json .State.Health}}", "off"]), 0).trim(),
            "null"
        );
        expect(&gcr(&["rm", "-f", "off"]), 0);
        let bad = gcr(&["run", "--health-interval", "soon", &image, "true"]);
        assert_eq!(bad.status.code(), Some(125));
        assert!(
            stderr(&bad).contains("--health-interval"),
            "{}",
            stderr(&bad)
        );
        // No monitor or probe outlives its container.
        std::thread::sleep(std::time::Duration::from_millis(500));
        let ps = std::process::Command::new("ps")
            .args(["-eo", "args"])
            .output()
            .unwrap();
        let root = s.store.root().display().to_string();
        let left: Vec<_> = String::from_utf8_lossy(&ps.stdout)
            .lines()
            .filter(|l| l.contains("__gcr-container-worker") && l.contains(&root))
            .map(str::to_string)
            .collect();
        assert!(left.is_empty(), "{who:?}: workers left: {left:?}");
        assert_no_leftovers(&s);
    }
}

#[test]
fn volumes_from_mounts_another_containers_volumes_and_binds() {
    let Some(image) = image() else { return };
    for who in [As::Root, As::Rootless] {
        let Some(s) = Setup::new(who) else { continue };
        let gcr = |args: &[&str]| s.cmd().args(args).output().unwrap();
        let host = tempfile::tempdir().unwrap();
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(host.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        }
        std::fs::write(host.path().join("f"), "from-host\n").unwrap();
        let bind = format!("{}:/bind", host.path().display());
        expect(
            &gcr(&[
                "create",
                "--name",
                "store",
                "-v",
                "/data",
                "-v",
                "named:/named",
                "-v",
                &bind,
                &image,
                "true",
            ]),
            0,
        );
        // Written through one container, read through another.
        expect(
            &gcr(&[
                "run",
                "--rm",
                "--volumes-from",
                "store",
                &image,
                "sh",
                "-c",
                "echo anon > /data/a && echo named > /named/n && cat /bind/f",
            ]),
            0,
        );
        let out = expect(
            &gcr(&[
                "run", "--rm", "--volumes-from", "store:ro", &image, "sh", "-c",
                "cat /data/a /named/n /bind/f; touch /data/x 2>/dev/null && echo writable || echo read-only",
            ]),
            0,
        );
        assert_eq!(out, "anon\nnamed\nfrom-host\nread-only\n", "{who:?}");
        // A -v to the same place wins over the inherited one.
        let out = expect(
            &gcr(&[
                "run",
                "--rm",
                "--volumes-from",
                "store",
                "-v",
                "/data",
                &image,
                "ls",
                "/data",
            ]),
            0,
        );
        assert_eq!(out, "", "{who:?}");
        let bad = gcr(&["run", "--rm", "--volumes-from", "nosuch", &image, "true"]);
        assert_eq!(bad.status.code(), Some(125));
        assert!(stderr(&bad).contains("nosuch"), "{}", stderr(&bad));
        let bad = gcr(&["run", "--rm", "--volumes-from", "store:rx", &image, "true"]);
        assert!(stderr(&bad).contains("not ro or rw"), "{}", stderr(&bad));
        expect(&gcr(&["rm", "-v", "store"]), 0);
        expect(&gcr(&["volume", "rm", "named"]), 0);
        assert_no_leftovers(&s);
    }
}

#[test]
fn userns_keep_id_runs_as_the_users_own_id_rootless() {
    let Some(image) = image() else { return };
    let Some(s) = Setup::new(As::Rootless) else {
        return;
    };
    let gcr = |args: &[&str]| s.cmd().args(args).output().unwrap();
    let uid = nix::unistd::User::from_name(&s.user)
        .unwrap()
        .unwrap()
        .uid
        .as_raw();
    let shared = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(shared.path(), Some(uid), Some(uid)).unwrap();
    let bind = format!("{}:/shared", shared.path().display());
    // Inside, the user's own uid (and the maps Podman's keep-id gives); what it writes on a
    // bind is the user's on the host.
    let out = expect(
        &gcr(&[
            "run",
            "--name",
            "kid",
            "-d",
            "--userns=keep-id",
            "-v",
            &bind,
            &image,
            "sh",
            "-c",
            "id -u; id -g; touch /shared/made; sleep 30",
        ]),
        0,
    );
    assert!(!out.trim().is_empty());
    let made = within(10, "the file made through keep-id", || {
        std::fs::metadata(shared.path().join("made")).ok()
    });
    use std::os::unix::fs::MetadataExt as _;
    assert_eq!((made.uid(), made.gid()), (uid, uid));
    let logs = expect(&gcr(&["logs", "kid"]), 0);
    assert_eq!(logs, format!("{uid}\n{uid}\n"));
    // exec runs as the same user, in the same namespace.
    let out = expect(
        &gcr(&["exec", "kid", "sh", "-c", "id -u; cat /proc/self/uid_map"]),
        0,
    );
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], [uid.to_string()]);
    let own = uid.to_string();
    assert!(lines[1..].contains(&vec![own.as_str(), "0", "1"]), "{out}");
    // -u still chooses: root inside is one of the subordinate ids, not the user.
    let out = expect(&gcr(&["exec", "-u", "0", "kid", "id", "-u"]), 0);
    assert_eq!(out, "0\n");
    expect(&gcr(&["rm", "-f", "kid"]), 0);
    assert_no_leftovers(&s);
}

#[test]
fn init_shows_as_a_short_gcr_init_and_hides_the_host_command_line() {
    both(|s| {
        let out = expect(
            &s.sh(
                &["--init"],
                "cat /proc/1/comm; tr '\\0' '\\n' < /proc/1/cmdline | grep -v '^$'; ps -o pid,args | grep '^ *1 '",
            ),
            0,
        );
        let lines: Vec<&str> = out.lines().map(str::trim).collect();
        assert_eq!(lines, ["gcr-init", "gcr-init", "1 gcr-init"], "{out}");
        let root = s.store.root().display().to_string();
        assert!(!out.contains(&root), "{out}");
    });
}

/// The directory of a gcr container's group in one v1 controller (`gcr/<id>`, or below
/// `parent`), or its v2 group.
fn cgroup_dir(controller: &str, parent: Option<&str>, id: &str) -> PathBuf {
    let rel = format!("{}/{id}", parent.unwrap_or("gcr"));
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        Path::new("/sys/fs/cgroup").join(rel)
    } else {
        Path::new("/sys/fs/cgroup").join(controller).join(rel)
    }
}

fn cgroup_file(controller: &str, parent: Option<&str>, id: &str, file: &str) -> String {
    let path = cgroup_dir(controller, parent, id).join(file);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_string()
}

#[test]
fn device_nodes_appear_and_device_cgroup_rules_allow_more() {
    let Some(image) = image() else { return };
    for who in [As::Root, As::Rootless] {
        let Some(s) = Setup::new(who) else { continue };
        let gcr = |args: &[&str]| s.cmd().args(args).output().unwrap();
        // The host's /dev/null at another path: a character device that takes writes.
        let out = gcr(&[
            "run",
            "--rm",
            "--device",
            "/dev/null:/dev/mynull",
            &image,
            "sh",
            "-c",
            "test -c /dev/mynull && echo x > /dev/mynull && echo ok",
        ]);
        assert_eq!(expect(&out, 0), "ok\n", "{who:?}");
        // Bad input names what is wrong.
        for (args, named) in [
            (vec!["--device", "/dev/no-such-node"], "/dev/no-such-node"),
            (vec!["--device", "/etc/hostname"], "not a device node"),
            (vec!["--device", "/dev/null:/x:rwx"], "--device"),
            (
                vec!["--device-cgroup-rule", "c 1:3"],
                "--device-cgroup-rule",
            ),
        ] {
            let mut all = vec!["run", "--rm"];
            all.extend(args);
            all.extend([image.as_str(), "true"]);
            let out = gcr(&all);
            assert_eq!(out.status.code(), Some(125), "{who:?}: {}", stderr(&out));
            assert!(stderr(&out).contains(named), "{who:?}: {}", stderr(&out));
        }
        let cgroup_v1 = !Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        if who == As::Root && cgroup_v1 {
            // Docker's device cgroup: mknod of anything, but opening a node Docker's default
            // list does not name (here the fuse device, 10:229) only with a rule for it.
            let open_fuse = "mknod /tmp/fuse c 10 229 && : < /tmp/fuse && echo opened";
            let denied = gcr(&["run", "--rm", &image, "sh", "-c", open_fuse]);
            assert_eq!(denied.status.code(), Some(1), "{}", stderr(&denied));
            assert!(
                stderr(&denied).contains("Operation not permitted"),
                "{}",
                stderr(&denied)
            );
            let allowed = gcr(&[
                "run",
                "--rm",
                "--device-cgroup-rule",
                "c 10:229 rwm",
                &image,
                "sh",
                "-c",
                open_fuse,
            ]);
            assert_eq!(expect(&allowed, 0), "opened\n");
            // --device allows its own node: the fuse device at another path opens.
            let mapped = gcr(&[
                "run",
                "--rm",
                "--device",
                "/dev/fuse:/dev/myfuse",
                &image,
                "sh",
                "-c",
                ": < /dev/myfuse && echo opened",
            ]);
            assert_eq!(expect(&mapped, 0), "opened\n");
        }
        assert_no_leftovers(&s);
    }
}

#[test]
fn cgroup_flags_are_written_to_the_containers_cgroup_files() {
    let Some(image) = image() else { return };
    let unified = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    for who in [As::Root, As::Rootless] {
        let Some(s) = Setup::new(who) else { continue };
        let gcr = |args: &[&str]| s.cmd().args(args).output().unwrap();
        if who == As::Rootless {
            // No delegated subtree here (v1, or no systemd user session): one clear line.
            let out = gcr(&[
                "run",
                "--rm",
                "--memory",
                "32m",
                "--pids-limit",
                "20",
                &image,
                "true",
            ]);
            expect(&out, 0);
            // On v2 a systemd user session may delegate a subtree (then no warning at all).
            let warnings = stderr(&out)
                .matches("resource limits are not enforced")
                .count();
            let expected = if unified { warnings.min(1) } else { 1 };
            assert_eq!(warnings, expected, "{}", stderr(&out));
            assert_no_leftovers(&s);
            continue;
        }
        // The block device the root filesystem is on, for the throttles.
        let dev = std::fs::metadata("/").unwrap();
        let (major, minor) = {
            use std::os::unix::fs::MetadataExt as _;
            let d = dev.dev();
            (nix::sys::stat::major(d), nix::sys::stat::minor(d))
        };
        let block = format!("/dev/block/{major}:{minor}");
        let block = if Path::new(&block).exists() {
            block
        } else {
            let disk = std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/uevent"))
                .unwrap()
                .lines()
                .find_map(|l| l.strip_prefix("DEVNAME=").map(|n| format!("/dev/{n}")))
                .unwrap();
            disk
        };
        let read_rate = format!("{block}:1mb");
        let write_rate = format!("{block}:2mb");
        let id = expect(
            &gcr(&[
                "run",
                "-d",
                "--cgroup-parent",
                "/gcr-test-parent",
                "--cpuset-cpus",
                "0",
                "--cpu-shares",
                "512",
                "--memory",
                "64m",
                "--memory-swap",
                "128m",
                "--device-read-bps",
                &read_rate,
                "--device-write-bps",
                &write_rate,
                &image,
                "sleep",
                "60",
            ]),
            0,
        );
        let id = id.trim();
        let parent = Some("gcr-test-parent");
        assert_eq!(cgroup_file("cpuset", parent, id, "cpuset.cpus"), "0");
        let dev = format!("{major}:{minor}");
        if unified {
            assert_eq!(cgroup_file("memory", parent, id, "memory.max"), "67108864");
            assert_eq!(
                cgroup_file("memory", parent, id, "memory.swap.max"),
                "67108864"
            );
            let io = cgroup_file("io", parent, id, "io.max");
            assert!(
                io.contains(&format!("{dev} rbps=1048576 wbps=2097152")),
                "{io}"
            );
        } else {
            assert_eq!(cgroup_file("cpu", parent, id, "cpu.shares"), "512");
            assert_eq!(
                cgroup_file("memory", parent, id, "memory.limit_in_bytes"),
                "67108864"
            );
            assert_eq!(
                cgroup_file("memory", parent, id, "memory.memsw.limit_in_bytes"),
                "134217728"
            );
            assert_eq!(
                cgroup_file("blkio", parent, id, "blkio.throttle.read_bps_device"),
                format!("{dev} 1048576")
            );
            assert_eq!(
                cgroup_file("blkio", parent, id, "blkio.throttle.write_bps_device"),
                format!("{dev} 2097152")
            );
        }
        let shown = expect(
            &gcr(&[
                "inspect",
                "-f",
                "{{.HostConfig.CgroupParent}} {{.HostConfig.CpusetCpus}} {{.HostConfig.CpuShares}} {{.HostConfig.Memory}} {{.HostConfig.MemorySwap}}",
                id,
            ]),
            0,
        );
        assert_eq!(shown.trim(), "gcr-test-parent 0 512 67108864 134217728");
        expect(&gcr(&["rm", "-f", id]), 0);
        assert!(
            !cgroup_dir("memory", parent, id).exists(),
            "the group stays"
        );
        // --blkio-weight: read back where the I/O scheduler has weights, else said so.
        let weight_dir = if unified {
            PathBuf::from("/sys/fs/cgroup")
        } else {
            PathBuf::from("/sys/fs/cgroup/blkio")
        };
        let has_weight = [
            "blkio.weight",
            "blkio.bfq.weight",
            "io.weight",
            "io.bfq.weight",
        ]
        .iter()
        .any(|f| weight_dir.join("gcr").join(f).exists() || weight_dir.join(f).exists());
        let out = gcr(&[
            "run",
            "--rm",
            "--blkio-weight",
            "300",
            &image,
            "sh",
            "-c",
            "cat /sys/fs/cgroup/blkio/blkio.weight /sys/fs/cgroup/blkio/blkio.bfq.weight /sys/fs/cgroup/io.bfq.weight 2>/dev/null; true",
        ]);
        if has_weight {
            assert!(stdout(&out).contains("300"), "{}", stderr(&out));
        } else {
            assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
            assert!(
                stderr(&out).contains("cannot set the block I/O weight"),
                "{}",
                stderr(&out)
            );
        }
        // Bad values name the flag.
        for (flag, value) in [
            ("--memory-swap", "16m"),
            ("--blkio-weight", "5"),
            ("--cpuset-cpus", "x"),
            ("--device-read-bps", "/dev/null:1mb"),
            ("--cgroup-parent", "../up"),
        ] {
            let out = gcr(&[
                "run", "--rm", "--memory", "32m", flag, value, &image, "true",
            ]);
            assert_eq!(out.status.code(), Some(125), "{flag}: {}", stderr(&out));
            assert!(stderr(&out).contains(flag), "{flag}: {}", stderr(&out));
        }
        for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
            let _ = std::fs::remove_dir(h.path().join("gcr-test-parent"));
        }
        assert_no_leftovers(&s);
    }
}

#[test]
fn update_changes_a_running_containers_limits_and_restart_policy() {
    let Some(image) = image() else { return };
    let unified = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    for who in [As::Root, As::Rootless] {
        let Some(s) = Setup::new(who) else { continue };
        let gcr = |args: &[&str]| s.cmd().args(args).output().unwrap();
        // No limits at the start: update makes the groups and moves the processes in.
        let id = expect(
            &gcr(&["run", "-d", "--name", "u", &image, "sleep", "60"]),
            0,
        );
        let id = id.trim();
        let inspect = |format: &str| expect(&gcr(&["inspect", "-f", format, "u"]), 0);
        expect(&gcr(&["update", "--restart", "on-failure:3", "u"]), 0);
        assert_eq!(
            inspect("{{.HostConfig.RestartPolicy.Name}} {{.HostConfig.RestartPolicy.MaximumRetryCount}}").trim(),
            "on-failure 3",
            "{who:?}"
        );
        let limited = gcr(&["update", "--memory", "32m", "--pids-limit", "50", "u"]);
        if who == As::Rootless && !unified {
            assert_eq!(limited.status.code(), Some(1), "{}", stderr(&limited));
            assert!(
                stderr(&limited).contains("not supported rootless on cgroup v1"),
                "{}",
                stderr(&limited)
            );
            expect(&gcr(&["rm", "-f", "u"]), 0);
            assert_no_leftovers(&s);
            continue;
        }
        expect(&limited, 0);
        if who == As::Root {
            let memory = if unified {
                "memory.max"
            } else {
                "memory.limit_in_bytes"
            };
            assert_eq!(cgroup_file("memory", None, id, memory), "33554432");
            assert_eq!(cgroup_file("pids", None, id, "pids.max"), "50");
            // The container's processes are in the new groups.
            let procs = cgroup_file("memory", None, id, "cgroup.procs");
            assert!(!procs.is_empty(), "no process in the memory group");
            expect(
                &gcr(&["update", "--memory", "48m", "--cpus", "0.5", "u"]),
                0,
            );
            assert_eq!(cgroup_file("memory", None, id, memory), "50331648");
            let cpu = if unified {
                cgroup_file("cpu", None, id, "cpu.max")
            } else {
                cgroup_file("cpu", None, id, "cpu.cfs_quota_us")
            };
            assert!(cpu.starts_with("50000"), "{cpu}");
        }
        assert_eq!(
            inspect("{{.HostConfig.Memory}} {{.HostConfig.PidsLimit}}").trim(),
            if who == As::Root {
                "50331648 50"
            } else {
                "33554432 50"
            },
            "{who:?}"
        );
        // Recorded: the next start runs with them.
        expect(&gcr(&["stop", "-t", "0", "u"]), 0);
        expect(&gcr(&["start", "u"]), 0);
        if who == As::Root {
            let memory = if unified {
                "memory.max"
            } else {
                "memory.limit_in_bytes"
            };
            assert_eq!(cgroup_file("memory", None, id, memory), "50331648");
        }
        let bad = gcr(&["update", "--pids-limit", "0", "u"]);
        assert_eq!(bad.status.code(), Some(1), "{}", stderr(&bad));
        assert!(stderr(&bad).contains("--pids-limit"), "{}", stderr(&bad));
        expect(&gcr(&["rm", "-f", "u"]), 0);
        if who == As::Root {
            assert!(!cgroup_dir("memory", None, id).exists(), "the group stays");
        }
        assert_no_leftovers(&s);
    }
}
