//! Tests of safe extraction: the security checklist's extraction attacks (E1-E6, E10, E11),
//! whiteouts and ordinary content. They run as root here; the ones that need root (ownership,
//! devices) check and fail loudly otherwise.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tar::EntryType;

use crate::testutil::TarBuilder;
use crate::unpack::{unpack, UnpackError, UnpackOptions, UnpackStats};

struct Fixture {
    _tmp: tempfile::TempDir,
    layer: PathBuf,
    outside: PathBuf,
}

/// A layer directory plus an `outside` directory holding canaries: `secret` (0400) and
/// `victim/` (0700) with `victim/file`.
fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let layer = tmp.path().join("layer");
    let outside = tmp.path().join("outside");
    fs::create_dir(&layer).unwrap();
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("secret"), b"top secret").unwrap();
    fs::set_permissions(outside.join("secret"), fs::Permissions::from_mode(0o400)).unwrap();
    fs::create_dir(outside.join("victim")).unwrap();
    fs::write(outside.join("victim/file"), b"victim").unwrap();
    fs::set_permissions(outside.join("victim"), fs::Permissions::from_mode(0o700)).unwrap();
    Fixture {
        _tmp: tmp,
        layer,
        outside,
    }
}

/// Everything observable about a tree: per path, type, mode, owner, mtime, content, xattrs.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = fs::symlink_metadata(&p).unwrap();
        let content = if m.is_file() {
            format!("{:?}", fs::read(&p).unwrap())
        } else if m.file_type().is_symlink() {
            format!("-> {:?}", fs::read_link(&p).unwrap())
        } else {
            String::new()
        };
        let xattrs: Vec<String> = xattr::list(&p)
            .map(|l| l.map(|n| n.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        out.insert(
            p.clone(),
            format!(
                "{:o} {}:{} {} {} {:?}",
                m.mode(),
                m.uid(),
                m.gid(),
                m.mtime(),
                content,
                xattrs
            ),
        );
        if m.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    out
}

fn run(f: &Fixture, tar: &[u8]) -> Result<UnpackStats, UnpackError> {
    unpack(&mut &tar[..], &f.layer, &UnpackOptions::detect())
}

/// Unpack `tar` and require the outside canaries (and the host paths given) to be untouched.
fn run_guarded(f: &Fixture, tar: &[u8]) -> Result<UnpackStats, UnpackError> {
    let before = snapshot(&f.outside);
    let result = run(f, tar);
    assert_eq!(
        before,
        snapshot(&f.outside),
        "something outside the layer changed"
    );
    result
}

fn abs(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

fn is_whiteout(p: &Path) -> bool {
    match fs::symlink_metadata(p) {
        Ok(m) => m.file_type().is_char_device() && m.rdev() == 0,
        Err(_) => false,
    }
}

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (it checks ownership and device creation)"
    );
}

// ---- E1: names ----

#[test]
fn e1_dotdot_names_are_refused() {
    for name in [
        &b"../../x"[..],
        b"a/../../x",
        b"./../x",
        b"x/./../../y",
        b"..",
        b"a/..",
    ] {
        let f = fixture();
        let tar = TarBuilder::new()
            .raw(name, EntryType::Regular, 0o644, b"", b"evil", &[])
            .finish();
        let err = run_guarded(&f, &tar).expect_err("a name with .. must be refused");
        assert!(err.to_string().contains(".."), "{err}");
        assert!(!f.outside.parent().unwrap().join("x").exists());
    }
}

#[test]
fn e1_dotdot_inside_a_name_folds_as_go_cleans_it() {
    let f = fixture();
    let tar = TarBuilder::new()
        .raw(
            b"./a/../b.txt",
            EntryType::Regular,
            0o644,
            b"",
            b"kept",
            &[],
        )
        .raw(
            b"d/e/../../f.txt",
            EntryType::Regular,
            0o644,
            b"",
            b"too",
            &[],
        )
        .finish();
    run_guarded(&f, &tar).expect("a .. that stays inside is folded");
    assert_eq!(std::fs::read(f.layer.join("b.txt")).unwrap(), b"kept");
    assert_eq!(std::fs::read(f.layer.join("f.txt")).unwrap(), b"too");
    assert!(!f.layer.join("a").exists());
}

#[test]
fn e1_absolute_names_are_contained() {
    let f = fixture();
    let target = format!("{}/planted", abs(&f.outside));
    let tar = TarBuilder::new()
        .file(&target, b"x")
        .file("//double", b"y")
        .file("/etc/abs", b"z")
        .finish();
    run_guarded(&f, &tar).unwrap();
    assert!(!f.outside.join("planted").exists());
    assert_eq!(
        fs::read(f.layer.join(target.trim_start_matches('/'))).unwrap(),
        b"x"
    );
    assert_eq!(fs::read(f.layer.join("double")).unwrap(), b"y");
    assert_eq!(fs::read(f.layer.join("etc/abs")).unwrap(), b"z");
}

#[test]
fn e1_root_and_empty_names() {
    let f = fixture();
    // "./" as a directory applies to the layer root.
    let tar = TarBuilder::new()
        .raw(b"./", EntryType::Directory, 0o751, b"", b"", &[])
        .file("a", b"a")
        .finish();
    run_guarded(&f, &tar).unwrap();
    assert_eq!(fs::metadata(&f.layer).unwrap().mode() & 0o7777, 0o751);
    for name in [&b""[..], b".", b"/", b"/."] {
        let f = fixture();
        let tar = TarBuilder::new()
            .raw(name, EntryType::Regular, 0o644, b"", b"x", &[])
            .finish();
        assert!(run_guarded(&f, &tar).is_err(), "{name:?} as a file");
        let f = fixture();
        // umoci CVE-2021-29136: a symlink for "/." must not redirect the layer root.
        let tar = TarBuilder::new()
            .raw(
                name,
                EntryType::Symlink,
                0o777,
                abs(&f.outside).as_bytes(),
                b"",
                &[],
            )
            .file("victim/pwned", b"x")
            .finish();
        assert!(run_guarded(&f, &tar).is_err(), "{name:?} as a symlink");
    }
}

// ---- E2: symlinks ----

#[test]
fn e2_write_through_absolute_symlink_stays_inside() {
    let f = fixture();
    let tar = TarBuilder::new()
        .symlink("link", &abs(&f.outside))
        .file("link/victim/file", b"overwritten")
        .file("link/new", b"new")
        .finish();
    run_guarded(&f, &tar).unwrap();
    // The symlink stays as it is (absolute targets are legitimate) and the writes landed
    // under the layer's own copy of that path.
    assert_eq!(fs::read_link(f.layer.join("link")).unwrap(), f.outside);
    let inner = f.layer.join(abs(&f.outside).trim_start_matches('/'));
    assert_eq!(fs::read(inner.join("victim/file")).unwrap(), b"overwritten");
    assert_eq!(fs::read(inner.join("new")).unwrap(), b"new");
}

#[test]
fn e2_write_through_relative_symlink_up_and_out() {
    let f = fixture();
    let tar = TarBuilder::new()
        .symlink("link", "../../../../../../../../outside")
        .file("link/secret", b"overwritten")
        .symlink("multi", "../link/../../../outside/victim")
        .file("multi/file", b"pwned")
        .finish();
    run_guarded(&f, &tar).unwrap();
    assert_eq!(
        fs::read(f.layer.join("outside/secret")).unwrap(),
        b"overwritten"
    );
    assert_eq!(
        fs::read(f.layer.join("outside/victim/file")).unwrap(),
        b"pwned"
    );
}

#[test]
fn e2_tar_rs_symlink_to_dotdot_then_dirs() {
    // RUSTSEC-2021-0080: "root -> .." then "root/exploit/foo/bar" created dirs outside.
    let f = fixture();
    let tar = TarBuilder::new()
        .symlink("root", "..")
        .dir("root/exploit/foo/bar")
        .symlink("up", "../outside")
        .dir("up/victim")
        .finish();
    run_guarded(&f, &tar).unwrap();
    assert!(f.layer.join("exploit/foo/bar").is_dir());
    assert!(!f.outside.parent().unwrap().join("exploit").exists());
}

#[test]
fn e2_symlink_named_dotdot_or_empty_is_refused() {
    let f = fixture();
    let tar = TarBuilder::new()
        .raw(b"a/..", EntryType::Symlink, 0o777, b"/", b"", &[])
        .finish();
    assert!(run_guarded(&f, &tar).is_err());
    let f = fixture();
    let tar = TarBuilder::new()
        .raw(b"empty", EntryType::Symlink, 0o777, b"", b"", &[])
        .finish();
    assert!(run_guarded(&f, &tar).is_err());
}

#[test]
fn e2_symlink_override_path() {
    // A directory replaced by a symlink to the host, then a file under it.
    let f = fixture();
    let tar = TarBuilder::new()
        .dir("foo")
        .symlink("foo", &abs(&f.outside))
        .file("foo/breakout", b"x")
        .finish();
    run_guarded(&f, &tar).unwrap();
    assert!(!f.outside.join("breakout").exists());
    assert!(f
        .layer
        .join(abs(&f.outside).trim_start_matches('/'))
        .join("breakout")
        .is_file());
}

#[test]
fn e2_absolute_symlink_parent_is_resolved_in_the_layer() {
    // BuildKit testDockerfileAddArchiveThroughAbsoluteSymlink: var/run -> /run, then
    // var/run/act/x must land in the layer's /run.
    let f = fixture();
    let tar = TarBuilder::new()
        .dir("run")
        .dir("var")
        .symlink("var/run", "/run")
        .file("var/run/act/x", b"x")
        .finish();
    run_guarded(&f, &tar).unwrap();
    assert_eq!(fs::read(f.layer.join("run/act/x")).unwrap(), b"x");
    assert_eq!(
        fs::read_link(f.layer.join("var/run")).unwrap(),
        Path::new("/run")
    );
}

#[test]
fn e2_symlink_loop_is_an_error_not_a_hang() {
    let f = fixture();
    let tar = TarBuilder::new()
        .symlink("a", "b")
        .symlink("b", "a")
        .file("a/x", b"x")
        .finish();
    assert!(run_guarded(&f, &tar).is_err());
}

// ---- E3: hardlinks ----

#[test]
fn e3_hardlinks_cannot_reach_outside() {
    let f = fixture();
    let secret = abs(&f.outside.join("secret"));
    for target in [
        "../../../../../../outside/secret".to_string(),
        secret.clone(),
        format!("../{}", "x"),
    ] {
        let tar = TarBuilder::new().hardlink("h", &target).finish();
        let err = run_guarded(&f, &tar).expect_err("hardlink out must fail");
        assert!(!f.layer.join("h").exists(), "{err}");
    }
    // Through a symlinked parent: resolved in the layer, where the target does not exist.
    let f = fixture();
    let tar = TarBuilder::new()
        .symlink("lnk", &abs(&f.outside))
        .hardlink("h", "lnk/secret")
        .finish();
    assert!(run_guarded(&f, &tar).is_err());
    assert!(!f.layer.join("h").exists());
    // Cross-layer: a target that is not in this layer fails cleanly.
    let f = fixture();
    let tar = TarBuilder::new().hardlink("h", "usr/bin/missing").finish();
    let err = run_guarded(&f, &tar).unwrap_err();
    assert!(err.to_string().contains("not in this layer"), "{err}");
}

#[test]
fn e3_hardlink_to_symlink_links_the_symlink() {
    let f = fixture();
    let tar = TarBuilder::new()
        .symlink("s", &abs(&f.outside.join("secret")))
        .hardlink("h", "s")
        .file("a", b"data")
        .hardlink("b", "/a")
        .finish();
    run_guarded(&f, &tar).unwrap();
    let h = fs::symlink_metadata(f.layer.join("h")).unwrap();
    let s = fs::symlink_metadata(f.layer.join("s")).unwrap();
    assert!(h.file_type().is_symlink());
    assert_eq!(h.ino(), s.ino());
    let a = fs::metadata(f.layer.join("a")).unwrap();
    let b = fs::metadata(f.layer.join("b")).unwrap();
    assert_eq!(a.ino(), b.ino());
    assert_eq!(a.nlink(), 2);
}

#[test]
fn e3_hardlink_symlink_chmod() {
    // containerd CVE-2021-32760 HardlinkSymlinkChmod: the outside file keeps mode 0400.
    let f = fixture();
    let secret = f.outside.join("secret");
    let tar = TarBuilder::new()
        .symlink("s", &abs(&secret))
        .hardlink("h", "s")
        .file_mode("h", 0o777, b"")
        .finish();
    run_guarded(&f, &tar).unwrap();
    assert_eq!(fs::metadata(&secret).unwrap().mode() & 0o777, 0o400);
}

// ---- E4: metadata never follows symlinks ----

#[test]
fn e4_directory_over_symlink_does_not_touch_target() {
    require_root();
    let f = fixture();
    let victim = abs(&f.outside.join("victim"));
    let tar = TarBuilder::new()
        .symlink("d", &victim)
        .raw(
            b"d",
            EntryType::Directory,
            0o777,
            b"",
            b"",
            &[
                ("SCHILY.xattr.user.pwned", b"1"),
                ("uid", b"1234"),
                ("gid", b"1234"),
            ],
        )
        .finish();
    run_guarded(&f, &tar).unwrap();
    let d = fs::symlink_metadata(f.layer.join("d")).unwrap();
    assert!(d.is_dir());
    assert_eq!(d.mode() & 0o7777, 0o777);
    assert_eq!((d.uid(), d.gid()), (1234, 1234));
}

#[test]
fn e4_file_over_symlink_is_replaced_not_followed() {
    let f = fixture();
    let tar = TarBuilder::new()
        .symlink("f", &abs(&f.outside.join("secret")))
        .file_mode("f", 0o4777, b"replaced")
        .finish();
    run_guarded(&f, &tar).unwrap();
    let m = fs::symlink_metadata(f.layer.join("f")).unwrap();
    assert!(m.is_file());
    assert_eq!(fs::read(f.layer.join("f")).unwrap(), b"replaced");
}

// ---- E5: whiteouts ----

#[test]
fn e5_malformed_whiteouts_are_refused() {
    for name in [".wh...", "etc/.wh...", ".wh..", "etc/.wh..", ".wh."] {
        let f = fixture();
        let tar = TarBuilder::new().dir("etc").file(name, b"").finish();
        assert!(run_guarded(&f, &tar).is_err(), "{name} must be refused");
    }
}

#[test]
fn e5_whiteouts_become_overlay_whiteouts() {
    let f = fixture();
    let tar = TarBuilder::new()
        .dir("etc")
        .file("etc/.wh.passwd", b"")
        .file(".wh.toplevel", b"")
        .file("deep/er/.wh.gone", b"")
        .finish();
    run_guarded(&f, &tar).unwrap();
    assert!(is_whiteout(&f.layer.join("etc/passwd")));
    assert!(is_whiteout(&f.layer.join("toplevel")));
    assert!(is_whiteout(&f.layer.join("deep/er/gone")));
    assert!(!f.layer.join("etc/.wh.passwd").exists());
}

#[test]
fn e5_whiteout_through_symlinked_parent_stays_inside() {
    let f = fixture();
    let tar = TarBuilder::new()
        .symlink("localetc", &abs(&f.outside))
        .file("localetc/.wh.secret", b"")
        .symlink("rel", "../outside")
        .file("rel/.wh.victim", b"")
        .finish();
    run_guarded(&f, &tar).unwrap();
    assert!(f.outside.join("secret").exists());
    assert!(is_whiteout(
        &f.layer
            .join(abs(&f.outside).trim_start_matches('/'))
            .join("secret")
    ));
    assert!(is_whiteout(&f.layer.join("outside/victim")));
}

#[test]
fn e5_same_layer_whiteout_does_not_delete_own_content() {
    let f = fixture();
    let tar = TarBuilder::new()
        .file("kept", b"mine")
        .file(".wh.kept", b"")
        .file(".wh.later", b"")
        .file("later", b"recreated")
        .finish();
    run_guarded(&f, &tar).unwrap();
    assert_eq!(fs::read(f.layer.join("kept")).unwrap(), b"mine");
    assert_eq!(fs::read(f.layer.join("later")).unwrap(), b"recreated");
}

#[test]
fn e5_opaque_marker_after_siblings() {
    let f = fixture();
    let tar = TarBuilder::new()
        .dir("d")
        .file("d/a", b"a")
        .file("d/.wh..wh..opq", b"")
        .file("d/b", b"b")
        .file("e/.wh..wh..opq", b"")
        .file("d/.wh..wh.plnk", b"")
        .finish();
    run_guarded(&f, &tar).unwrap();
    assert_eq!(fs::read(f.layer.join("d/a")).unwrap(), b"a");
    assert_eq!(fs::read(f.layer.join("d/b")).unwrap(), b"b");
    for dir in ["d", "e"] {
        let p = f.layer.join(dir);
        assert_eq!(
            xattr::get(&p, "user.overlay.opaque").unwrap().as_deref(),
            Some(&b"y"[..]),
            "{dir}"
        );
        if nix::unistd::geteuid().is_root() && crate::unpack::in_initial_user_namespace() {
            assert_eq!(
                xattr::get(&p, "trusted.overlay.opaque").unwrap().as_deref(),
                Some(&b"y"[..])
            );
        }
    }
    assert!(!f.layer.join("d/.wh..wh..opq").exists());
    assert!(!f.layer.join("d/.wh..wh.plnk").exists());
}

// ---- E6: duplicates and type changes ----

#[test]
fn e6_duplicates_and_type_changes() {
    let f = fixture();
    let tar = TarBuilder::new()
        .dir("a")
        .file("a/inner", b"x")
        .file("a", b"now a file")
        .dir("a")
        .file("b", b"file")
        .symlink("b", "/etc")
        .file("b", b"file again")
        .file("c", b"first")
        .file("c", b"second")
        .file("d", b"d")
        .hardlink("e", "d")
        .file("e", b"e replaced")
        .dir("m")
        .file("m/1", b"1")
        .dir("m")
        .file("m/2", b"2")
        .finish();
    run_guarded(&f, &tar).unwrap();
    assert!(f.layer.join("a").is_dir());
    assert!(!f.layer.join("a/inner").exists());
    assert_eq!(fs::read(f.layer.join("b")).unwrap(), b"file again");
    assert!(fs::symlink_metadata(f.layer.join("b")).unwrap().is_file());
    assert_eq!(fs::read(f.layer.join("c")).unwrap(), b"second");
    assert_eq!(fs::read(f.layer.join("d")).unwrap(), b"d");
    assert_eq!(fs::read(f.layer.join("e")).unwrap(), b"e replaced");
    assert_eq!(fs::read(f.layer.join("m/1")).unwrap(), b"1");
    assert_eq!(fs::read(f.layer.join("m/2")).unwrap(), b"2");
}

#[test]
fn e6_dir_then_symlink_to_root_then_write() {
    let f = fixture();
    let host_tmp_name = format!("gcr-e6-{}", std::process::id());
    let tar = TarBuilder::new()
        .dir("foo")
        .symlink("foo", "/")
        .file(&format!("foo/tmp/{host_tmp_name}"), b"x")
        .finish();
    run_guarded(&f, &tar).unwrap();
    assert!(!Path::new("/tmp").join(&host_tmp_name).exists());
    assert!(f.layer.join("tmp").join(&host_tmp_name).is_file());
}

// ---- E10: names are bytes ----

#[test]
fn e10_non_utf8_long_and_deep_names() {
    let f = fixture();
    let long_component = "l".repeat(255);
    let long_path = format!("{}f", format!("{long_component}/").repeat(16));
    assert!(long_path.len() > 4000);
    let mut b = TarBuilder::new();
    b.raw(b"caf\xe9", EntryType::Regular, 0o644, b"", b"latin1", &[])
        .raw(b"new\nline", EntryType::Regular, 0o644, b"", b"nl", &[])
        .raw(
            long_path.as_bytes(),
            EntryType::Regular,
            0o644,
            b"",
            b"long",
            &[],
        );
    let mut deep = String::new();
    for _ in 0..5000 {
        deep.push_str("d/");
        b.raw(deep.as_bytes(), EntryType::Directory, 0o755, b"", b"", &[]);
    }
    deep.push_str("leaf");
    b.raw(
        deep.as_bytes(),
        EntryType::Regular,
        0o644,
        b"",
        b"deep",
        &[],
    );
    let tar = b.finish();
    let stats = run_guarded(&f, &tar).unwrap();
    assert_eq!(stats.entries, 5004);
    assert_eq!(
        fs::read(f.layer.join(OsStr::from_bytes(b"caf\xe9"))).unwrap(),
        b"latin1"
    );
    assert_eq!(fs::read(f.layer.join("new\nline")).unwrap(), b"nl");
    // Too long for one path syscall: walk it.
    let mut dir = fs::File::open(&f.layer).unwrap();
    for _ in 0..16 {
        let fd = nix::fcntl::openat(
            &dir,
            long_component.as_str(),
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY,
            nix::sys::stat::Mode::empty(),
        )
        .unwrap();
        dir = fs::File::from(fd);
    }
    let fd = nix::fcntl::openat(
        &dir,
        "f",
        nix::fcntl::OFlag::O_RDONLY,
        nix::sys::stat::Mode::empty(),
    )
    .unwrap();
    let mut content = String::new();
    std::io::Read::read_to_string(&mut fs::File::from(fd), &mut content).unwrap();
    assert_eq!(content, "long");
    // Removing the deep tree (replacing a directory by a file) works too.
    let f2 = fixture();
    let mut b = TarBuilder::new();
    let mut deep = String::new();
    for _ in 0..1000 {
        deep.push_str("d/");
        b.raw(deep.as_bytes(), EntryType::Directory, 0o755, b"", b"", &[]);
    }
    b.file("d", b"flat");
    let tar = b.finish();
    run_guarded(&f2, &tar).unwrap();
    assert_eq!(fs::read(f2.layer.join("d")).unwrap(), b"flat");
}

// ---- E11: overlay xattrs from the image are dropped ----

#[test]
fn e11_overlay_xattrs_in_content_are_dropped() {
    let f = fixture();
    let tar = TarBuilder::new()
        .raw(
            b"d",
            EntryType::Directory,
            0o755,
            b"",
            b"",
            &[
                ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
                ("SCHILY.xattr.user.overlay.redirect", b"/etc"),
                ("SCHILY.xattr.user.overlay.whiteout", b"y"),
                ("SCHILY.xattr.user.gcr.owner", b"0:0"),
                ("SCHILY.xattr.user.kept", b"yes"),
            ],
        )
        .finish();
    run_guarded(&f, &tar).unwrap();
    let d = f.layer.join("d");
    let names: Vec<String> = xattr::list(&d)
        .unwrap()
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["user.kept".to_string()], "{names:?}");
}

// ---- ordinary content ----

#[test]
fn content_modes_owners_times_xattrs_devices() {
    require_root();
    let f = fixture();
    let tar = TarBuilder::new()
        .raw(
            b"bin/su",
            EntryType::Regular,
            0o4755,
            b"",
            b"suid",
            &[("uid", b"0"), ("mtime", b"1234567890.5")],
        )
        .raw(b"tmp", EntryType::Directory, 0o1777, b"", b"", &[])
        .raw(
            b"home/user/file",
            EntryType::Regular,
            0o600,
            b"",
            b"mine",
            &[
                ("uid", b"1000"),
                ("gid", b"1001"),
                ("SCHILY.xattr.user.note", b"hi"),
            ],
        )
        .raw(
            b"home/user/link",
            EntryType::Symlink,
            0o777,
            b"file",
            b"",
            &[("uid", b"1000")],
        )
        .device("dev/null", EntryType::Char, 1, 3)
        .raw(b"dev/fifo", EntryType::Fifo, 0o644, b"", b"", &[])
        .finish();
    let stats = run_guarded(&f, &tar).unwrap();
    let su = fs::metadata(f.layer.join("bin/su")).unwrap();
    assert_eq!(su.mode() & 0o7777, 0o4755);
    assert_eq!(su.mtime(), 1234567890);
    assert_eq!(su.mtime_nsec(), 500_000_000);
    assert_eq!(
        fs::metadata(f.layer.join("tmp")).unwrap().mode() & 0o7777,
        0o1777
    );
    let file = fs::metadata(f.layer.join("home/user/file")).unwrap();
    assert_eq!((file.uid(), file.gid()), (1000, 1001));
    assert_eq!(file.mode() & 0o7777, 0o600);
    assert_eq!(
        xattr::get(f.layer.join("home/user/file"), "user.note")
            .unwrap()
            .as_deref(),
        Some(&b"hi"[..])
    );
    assert_eq!(
        fs::symlink_metadata(f.layer.join("home/user/link"))
            .unwrap()
            .uid(),
        1000
    );
    assert!(fs::symlink_metadata(f.layer.join("dev/fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    let null = fs::symlink_metadata(f.layer.join("dev/null"));
    if crate::unpack::in_initial_user_namespace() {
        let null = null.unwrap();
        assert!(null.file_type().is_char_device());
        assert_eq!(null.rdev(), nix::sys::stat::makedev(1, 3));
        assert_eq!(stats.skipped_devices, 0);
    } else {
        assert!(null.is_err());
        assert_eq!(stats.skipped_devices, 1);
    }
    // Directory mtimes survive the entries created inside them.
    assert_eq!(
        fs::metadata(f.layer.join("tmp")).unwrap().mtime(),
        1_600_000_000
    );
}

#[test]
fn devices_are_skipped_when_not_allowed() {
    let f = fixture();
    let tar = TarBuilder::new()
        .raw(b"dev/sda", EntryType::Block, 0o660, b"", b"", &[])
        .raw(b"dev/mem", EntryType::Char, 0o640, b"", b"", &[])
        .finish();
    let stats = unpack(
        &mut &tar[..],
        &f.layer,
        &UnpackOptions {
            create_devices: false,
            max_written: None,
        },
    )
    .unwrap();
    assert_eq!(stats.skipped_devices, 2);
    assert!(!f.layer.join("dev/sda").exists());
    assert!(!f.layer.join("dev/mem").exists());
}

#[test]
fn oversized_metadata_headers_are_refused() {
    let f = fixture();
    let huge = "p".repeat(5 * 1024 * 1024);
    let tar = TarBuilder::new()
        .raw(huge.as_bytes(), EntryType::Regular, 0o644, b"", b"x", &[])
        .finish();
    let err = run_guarded(&f, &tar).unwrap_err();
    assert!(err.to_string().contains("exceed"), "{err}");
}

#[test]
fn garbage_and_truncated_tars_fail_cleanly() {
    let f = fixture();
    let garbage = vec![0x41u8; 4096];
    assert!(run_guarded(&f, &garbage).is_err());
    let mut tar = TarBuilder::new().file("a", &[7u8; 3000]).finish();
    tar.truncate(1500);
    assert!(run_guarded(&f, &tar).is_err());
}

#[test]
fn sparse_zero_runs_become_holes() {
    let f = fixture();
    let mut data = vec![0u8; 4 * 1024 * 1024];
    data[0] = 1;
    let tar = TarBuilder::new().file("sparse", &data).finish();
    run_guarded(&f, &tar).unwrap();
    let m = fs::metadata(f.layer.join("sparse")).unwrap();
    assert_eq!(m.len(), data.len() as u64);
    assert_eq!(fs::read(f.layer.join("sparse")).unwrap(), data);
    assert!(
        m.blocks() * 512 < data.len() as u64,
        "zeros should be holes"
    );
}

// ---- rootless: a user namespace with a single mapping ----

const USERNS_CHILD_ENV: &str = "GCR_STORAGE_USERNS_CHILD_DIR";

#[test]
fn single_id_user_namespace_records_owners_and_skips_devices() {
    if let Ok(dir) = std::env::var(USERNS_CHILD_ENV) {
        // In the child, inside `unshare --user --map-root-user`: only our own ID is mapped.
        let opts = UnpackOptions::detect();
        assert!(
            !opts.create_devices,
            "devices must not be created in a user namespace"
        );
        let tar = TarBuilder::new()
            .raw(
                b"owned",
                EntryType::Regular,
                0o4750,
                b"",
                b"x",
                &[("uid", b"1000"), ("gid", b"1001")],
            )
            .raw(b"root-owned", EntryType::Regular, 0o644, b"", b"y", &[])
            .raw(
                b"link",
                EntryType::Symlink,
                0o777,
                b"owned",
                b"",
                &[("uid", b"1000")],
            )
            .device("dev/null", EntryType::Char, 1, 3)
            .file("opaque/.wh..wh..opq", b"")
            .file(".wh.gone", b"")
            .finish();
        let stats = unpack(&mut &tar[..], Path::new(&dir), &opts).unwrap();
        assert_eq!(stats.skipped_devices, 1);
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let layer = tmp.path().join("layer");
    fs::create_dir(&layer).unwrap();
    let status = std::process::Command::new("unshare")
        .args(["--user", "--map-root-user"])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "unpack_tests::single_id_user_namespace_records_owners_and_skips_devices",
            "--nocapture",
        ])
        .env(USERNS_CHILD_ENV, &layer)
        .status()
        .expect("run unshare (util-linux)");
    assert!(
        status.success(),
        "the unpack inside the user namespace failed"
    );
    let me = nix::unistd::geteuid().as_raw();
    let owned = fs::metadata(layer.join("owned")).unwrap();
    assert_eq!(owned.uid(), me, "an unmapped owner cannot be set");
    assert_eq!(owned.mode() & 0o7777, 0o4750, "mode bits are kept");
    assert_eq!(
        xattr::get(layer.join("owned"), crate::unpack::OWNER_XATTR)
            .unwrap()
            .as_deref(),
        Some(&b"1000:1001"[..])
    );
    assert_eq!(
        xattr::get(layer.join("root-owned"), crate::unpack::OWNER_XATTR).unwrap(),
        None,
        "a mapped owner is set, not recorded"
    );
    assert!(fs::symlink_metadata(layer.join("link"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(!layer.join("dev/null").exists());
    assert!(
        is_whiteout(&layer.join("gone")),
        "unprivileged whiteouts (Linux >= 5.8)"
    );
    assert_eq!(
        xattr::get(layer.join("opaque"), "user.overlay.opaque")
            .unwrap()
            .as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(
        xattr::get(layer.join("opaque"), "trusted.overlay.opaque").unwrap(),
        None,
        "trusted.* cannot be set inside a user namespace"
    );
}

#[test]
fn mutated_archives_never_panic_or_escape() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x6763_7221);
    let f0 = fixture();
    let base = TarBuilder::new()
        .dir("etc")
        .file("etc/passwd", b"root:x:0:0")
        .symlink("lnk", &abs(&f0.outside))
        .hardlink("etc/hard", "etc/passwd")
        .raw(
            &[b'n'; 150],
            EntryType::Regular,
            0o644,
            b"",
            b"long",
            &[("SCHILY.xattr.user.a", b"1")],
        )
        .file("d/.wh..wh..opq", b"")
        .file("d/.wh.x", b"")
        .finish();
    let target_before = snapshot(&f0.outside);
    for _ in 0..400 {
        let f = fixture();
        let mut tar = base.clone();
        for _ in 0..rng.random_range(1..8) {
            let i = rng.random_range(0..tar.len());
            tar[i] = rng.random();
        }
        if rng.random_bool(0.2) {
            tar.truncate(rng.random_range(0..tar.len()));
        }
        let _ = run_guarded(&f, &tar);
    }
    assert_eq!(target_before, snapshot(&f0.outside));
}

// ---- E9: the parser agrees with GNU tar ----

#[test]
fn e9_pax_size_overrides_agree_with_gnu_tar() {
    // A PAX size of 0 with a ustar size of 1024 whose "data" is another entry: parsers that
    // follow different sizes see different entries (CVE-2025-62518 class).
    let inner = TarBuilder::new().file("smuggled", b"s").finish();
    let mut b = TarBuilder::new();
    b.raw(
        b"a",
        EntryType::Regular,
        0o644,
        b"",
        &inner[..1024],
        &[("size", b"0")],
    );
    b.file("z", b"z");
    let tar = b.finish();
    let f = fixture();
    run_guarded(&f, &tar).unwrap();
    let mut ours: Vec<String> = fs::read_dir(&f.layer)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    ours.sort();
    let archive = f.outside.parent().unwrap().join("e9.tar");
    fs::write(&archive, &tar).unwrap();
    let out = std::process::Command::new("tar")
        .arg("-tf")
        .arg(&archive)
        .output()
        .expect("run GNU tar");
    let mut theirs: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    theirs.sort();
    assert_eq!(ours, theirs, "gcr and GNU tar must see the same entries");
    assert_eq!(fs::read(f.layer.join("a")).unwrap(), b"");
}

#[test]
fn content_beyond_the_cap_is_refused_but_holes_do_not_count() {
    let f = fixture();
    let opts = |max| UnpackOptions {
        create_devices: false,
        max_written: Some(max),
    };
    // 100 MiB of zeros (a classic gzip bomb's payload) becomes a hole: fine under 1 MiB.
    let zeros = TarBuilder::new()
        .raw(
            b"zeros",
            EntryType::Regular,
            0o644,
            b"",
            &vec![0u8; 100 << 20],
            &[],
        )
        .finish();
    unpack(&mut &zeros[..], &f.layer, &opts(1 << 20)).unwrap();
    let meta = std::fs::metadata(f.layer.join("zeros")).unwrap();
    assert_eq!(meta.len(), 100 << 20);
    assert!(
        std::os::unix::fs::MetadataExt::blocks(&meta) < 64,
        "not sparse"
    );
    // 3 MiB of content with a 2 MiB cap: refused, naming the entry and the limit.
    let f = fixture();
    let data = TarBuilder::new()
        .raw(
            b"a",
            EntryType::Regular,
            0o644,
            b"",
            &vec![b'a'; 1 << 20],
            &[],
        )
        .raw(
            b"b",
            EntryType::Regular,
            0o644,
            b"",
            &vec![b'b'; 2 << 20],
            &[],
        )
        .finish();
    let err = unpack(&mut &data[..], &f.layer, &opts(2 << 20)).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("\"b\"") && text.contains("GCR_MAX_LAYER_SIZE"),
        "{text}"
    );
    assert_eq!(crate::unpack::parse_size("10M"), Some(10 << 20));
    assert_eq!(crate::unpack::parse_size("2GiB"), Some(2 << 30));
    assert_eq!(crate::unpack::parse_size("512"), Some(512));
    assert_eq!(crate::unpack::parse_size("ten"), None);
    assert_eq!(crate::unpack::parse_size("1X"), None);
}

/// Checklist E13: a hostile process keeps swapping a directory of the layer with a symlink to
/// the outside (renameat2 RENAME_EXCHANGE) while the layer is unpacked into it. Whatever the
/// interleaving, nothing may land outside: every step resolves beneath the layer's dirfd.
#[test]
fn swapping_a_directory_with_an_outside_symlink_during_unpack_writes_nothing_outside() {
    use nix::fcntl::{renameat2, RenameFlags};
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;

    let f = fixture();
    let mut tar = TarBuilder::new();
    tar.dir("d/");
    for i in 0..400 {
        tar.dir(&format!("d/sub{i}/"));
        tar.file(&format!("d/sub{i}/f"), b"payload");
        tar.file(&format!("d/f{i}"), b"payload");
    }
    let tar = tar.finish();
    let swaps = Arc::new(AtomicU64::new(0));
    for round in 0..25 {
        let layer = f.layer.join(format!("round{round}"));
        fs::create_dir(&layer).unwrap();
        // Before the first entry: d exists, and "decoy" points outside.
        fs::create_dir(layer.join("d")).unwrap();
        std::os::unix::fs::symlink(&f.outside, layer.join("decoy")).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let swapper = {
            let (stop, swaps, layer) = (stop.clone(), swaps.clone(), layer.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if renameat2(
                        nix::fcntl::AT_FDCWD,
                        &layer.join("d"),
                        nix::fcntl::AT_FDCWD,
                        &layer.join("decoy"),
                        RenameFlags::RENAME_EXCHANGE,
                    )
                    .is_ok()
                    {
                        swaps.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        };
        // Errors are fine (the tree changes under the unpacker); escapes are not.
        let _ = unpack(&mut &tar[..], &layer, &UnpackOptions::detect());
        stop.store(true, Ordering::Relaxed);
        swapper.join().unwrap();
    }
    assert!(
        swaps.load(Ordering::Relaxed) >= 1000,
        "the race hardly ran: {} swaps",
        swaps.load(Ordering::Relaxed)
    );
    let mut outside: Vec<_> = fs::read_dir(&f.outside)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    outside.sort();
    assert_eq!(
        outside,
        ["secret", "victim"],
        "something was written outside"
    );
    assert_eq!(fs::read_dir(f.outside.join("victim")).unwrap().count(), 1);
}
