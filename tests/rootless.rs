//! End-to-end tests: the image commands as an unprivileged user with a subordinate id range
//! (the fixture user), so the store is written inside gcr's rootless user namespace.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::{fixture_env, gcr_bin, registry, stderr, stdout};

/// A store and a copy of the gcr binary that the test user can reach.
struct UserStore {
    user: String,
    dir: tempfile::TempDir,
    bin: PathBuf,
}

impl UserStore {
    fn new() -> Option<UserStore> {
        let user = fixture_env("GCR_TEST_USER")?;
        if !nix::unistd::geteuid().is_root() {
            assert!(
                !support::in_ci(),
                "rootless tests run as root to switch to {user}"
            );
            eprintln!("SKIP: not root, cannot switch to {user}");
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("gcr-rootless-")
            .tempdir()
            .expect("temp dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        // The build directory may sit under a path the user cannot traverse: copy the binary.
        let bin = dir.path().join("gcr");
        std::fs::copy(gcr_bin(), &bin).expect("copy gcr");
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let root = dir.path().join("store");
        std::fs::create_dir(&root).unwrap();
        let status = Command::new("chown")
            .arg(format!("{user}:"))
            .arg(&root)
            .status()
            .expect("chown");
        assert!(status.success());
        Some(UserStore { user, dir, bin })
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("runuser")
            .arg("-u")
            .arg(&self.user)
            .arg("--")
            .arg(&self.bin)
            .arg("--root")
            .arg(self.root())
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("runuser gcr")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "gcr {args:?} as {} failed: {}{}",
            self.user,
            stdout(&out),
            stderr(&out)
        );
        stdout(&out)
    }
}

fn uid_of(user: &str) -> u32 {
    nix::unistd::User::from_name(user)
        .unwrap()
        .expect("fixture user exists")
        .uid
        .as_raw()
}

/// The first subordinate uid of `user` in /etc/subuid.
fn subuid_start(user: &str) -> u32 {
    let text = std::fs::read_to_string("/etc/subuid").expect("/etc/subuid");
    text.lines()
        .filter_map(|l| {
            let mut parts = l.split(':');
            Some((parts.next()?, parts.next()?.parse::<u32>().ok()?))
        })
        .find(|(name, _)| *name == user)
        .map(|(_, start)| start)
        .expect("subuid range for the fixture user")
}

fn layer_diff(root: &Path, diff_id: &str) -> PathBuf {
    root.join("layers")
        .join(diff_id.trim_start_matches("sha256:"))
        .join("diff")
}

#[test]
fn rootless_pull_maps_image_owners_into_the_subordinate_range() {
    let Some(reg) = registry() else { return };
    let Some(store) = UserStore::new() else {
        return;
    };
    let name = format!("{reg}/layered:latest");
    store.ok(&["pull", "-q", &name]);
    let listed = store.ok(&["images"]);
    assert!(listed.contains(&format!("{reg}/layered")), "{listed}");

    // Files owned by root in the image belong to the user on the host; uid 1000 in the image
    // is subordinate id start+999 (0 -> user, 1.. -> the range).
    let info: serde_json::Value = serde_json::from_str(&store.ok(&["inspect", &name])).unwrap();
    let layers: Vec<String> = info[0]["RootFS"]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect();
    let user_uid = uid_of(&store.user);
    let start = subuid_start(&store.user);
    let mut saw_root_owned = false;
    let mut saw_uid_1000 = false;
    for layer in &layers {
        let diff = layer_diff(&store.root(), layer);
        if let Ok(meta) = std::fs::symlink_metadata(diff.join("etc/keep.txt")) {
            assert_eq!(
                meta.uid(),
                user_uid,
                "root-owned file not mapped to the user"
            );
            saw_root_owned = true;
        }
        if let Ok(meta) = std::fs::symlink_metadata(diff.join("home/user/owned.txt")) {
            assert_eq!(
                meta.uid(),
                start + 999,
                "uid 1000 not mapped into the range"
            );
            saw_uid_1000 = true;
        }
    }
    assert!(
        saw_root_owned && saw_uid_1000,
        "fixture files not found in {layers:?}"
    );

    let check = store.run(&["system", "check"]);
    assert!(
        check.status.success(),
        "{}{}",
        stdout(&check),
        stderr(&check)
    );
}

#[test]
fn rootless_image_commands_work_end_to_end() {
    let Some(reg) = registry() else { return };
    let Some(store) = UserStore::new() else {
        return;
    };
    let name = format!("{reg}/busybox:latest");
    store.ok(&["pull", "-q", &name]);
    store.ok(&["tag", &name, "localhost/mine:v1"]);
    assert!(store.ok(&["images"]).contains("localhost/mine"));
    store.ok(&["history", "localhost/mine:v1"]);
    store.ok(&["rmi", "localhost/mine:v1"]);
    // Removing the image removes subordinate-owned files the user could not delete by hand.
    store.ok(&["rmi", &name]);
    assert_eq!(store.ok(&["images", "-q"]).trim(), "");
    let layers = std::fs::read_dir(store.root().join("layers"))
        .unwrap()
        .count();
    assert_eq!(layers, 0, "layers left behind after rmi");

    if let Some(fixtures) = fixture_env("GCR_TEST_FIXTURES") {
        let tar = Path::new(&fixtures).join("rootfs/busybox.tar.gz");
        let copy = store.dir.path().join("busybox.tar.gz");
        std::fs::copy(&tar, &copy).unwrap();
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o644)).unwrap();
        store.ok(&["import", "-q", copy.to_str().unwrap(), "localhost/imported"]);
        let out = store.ok(&[
            "run",
            "--rm",
            "localhost/imported",
            "sh",
            "-c",
            "id -u; echo rootless-ok",
        ]);
        assert!(out.contains("rootless-ok"), "{out}");
        assert_eq!(out.lines().next(), Some("0"), "{out}");
    }
}
