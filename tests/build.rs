//! End-to-end tests of `gcr build` against the fixture registry's busybox: stages, ARG
//! scoping, whiteouts, the cache, failures and reproducibility. Every built image is checked
//! by running it with `gcr run` or by reading its config.

mod support;

use std::path::Path;
use std::process::Output;

use support::{stderr, stdout, TestStore};

/// A build context in a temporary directory.
struct Ctx {
    dir: tempfile::TempDir,
}

impl Ctx {
    fn new(containerfile: &str) -> Ctx {
        let dir = tempfile::Builder::new()
            .prefix("gcr-build-ctx-")
            .tempdir()
            .expect("temp dir");
        std::fs::write(dir.path().join("Containerfile"), containerfile).unwrap();
        Ctx { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn write(&self, rel: &str, content: &str) -> &Self {
        let p = self.dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
        self
    }

    fn containerfile(&self, text: &str) {
        std::fs::write(self.dir.path().join("Containerfile"), text).unwrap();
    }
}

/// The fixture busybox reference, or None (skip outside CI).
fn busybox() -> Option<String> {
    support::registry().map(|r| format!("{r}/busybox:latest"))
}

fn build(store: &TestStore, ctx: &Ctx, extra: &[&str]) -> Output {
    let mut cmd = store.gcr();
    cmd.arg("build").args(extra).arg(ctx.path());
    cmd.env_remove("SOURCE_DATE_EPOCH");
    cmd.output().expect("spawn gcr build")
}

fn build_ok(store: &TestStore, ctx: &Ctx, extra: &[&str]) -> (String, String) {
    let out = build(store, ctx, extra);
    assert!(
        out.status.success(),
        "gcr build {extra:?} failed: {:?}\nstdout: {}\nstderr: {}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    let id = stdout(&out).trim().to_string();
    assert!(
        id.starts_with("sha256:") && id.len() == 71,
        "stdout is not an image ID: {id:?}"
    );
    (id, stderr(&out))
}

fn run_in(store: &TestStore, image: &str, script: &str) -> String {
    store.ok(&["run", "--rm", image, "sh", "-c", script])
}

fn inspect_config(store: &TestStore, image: &str) -> serde_json::Value {
    let text = store.ok(&["inspect", image]);
    let v: serde_json::Value = serde_json::from_str(&text).expect("inspect prints JSON");
    v[0].clone()
}

#[test]
fn multi_stage_build_runs_and_copies_between_stages() {
    let Some(base) = busybox() else { return };
    let store = TestStore::new();
    let ctx = Ctx::new(&format!(
        r#"FROM {base} AS builder
WORKDIR /src
COPY hello.txt ./
COPY tree/ /src/tree/
RUN echo "built from $(cat hello.txt)" > /artifact && mkdir -p /outdir/deep && echo deep > /outdir/deep/f

FROM {base}
COPY --from=builder /artifact /app/
COPY --from=builder /outdir /app/out
COPY --from=0 /src/tree /app/tree
WORKDIR /app
ENV GREETING=hello
LABEL org.example.test="yes"
EXPOSE 8080
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat /app/artifact"]
"#
    ));
    ctx.write("hello.txt", "world\n")
        .write("tree/a.txt", "a\n")
        .write("tree/sub/b.txt", "b\n");
    let (id, log) = build_ok(&store, &ctx, &["-t", "multi:1"]);
    assert!(log.contains("[builder 3/5] COPY hello.txt ./"), "{log}");
    assert!(
        log.contains("[stage-1 2/5] COPY --from=builder /artifact /app/"),
        "{log}"
    );
    // The default command of the image.
    let out = store.ok(&["run", "--rm", "multi:1"]);
    assert_eq!(out, "built from world\n");
    // Directory-content semantics: /outdir's contents land in /app/out; WORKDIR is the cwd.
    let out = store.ok(&[
        "run",
        "--rm",
        "multi:1",
        "pwd; cat out/deep/f tree/a.txt tree/sub/b.txt; echo $GREETING",
    ]);
    assert_eq!(out, "/app\ndeep\na\nb\nhello\n");
    let cfg = inspect_config(&store, &id);
    assert_eq!(cfg["Config"]["Labels"]["org.example.test"], "yes");
    assert!(
        cfg["Config"]["ExposedPorts"]["8080/tcp"].is_object(),
        "{cfg}"
    );
    assert_eq!(cfg["Config"]["WorkingDir"], "/app");
}

#[test]
fn entrypoint_resets_an_inherited_cmd() {
    let Some(base) = busybox() else { return };
    let store = TestStore::new();
    let ctx = Ctx::new(&format!(
        "FROM {base} AS one\nCMD [\"echo\", \"inherited\"]\nFROM one\nENTRYPOINT [\"echo\", \"entry\"]\n"
    ));
    let (id, _) = build_ok(&store, &ctx, &[]);
    let cfg = inspect_config(&store, &id);
    assert!(cfg["Config"]["Cmd"].is_null(), "{cfg}");
    assert_eq!(store.ok(&["run", "--rm", &id]), "entry\n");
}

#[test]
fn arg_scoping_follows_buildkit() {
    let Some(base) = busybox() else { return };
    let store = TestStore::new();
    let ctx = Ctx::new(&format!(
        r#"ARG IMAGE={base}
ARG GLOBAL=global-default
FROM $IMAGE
ARG LOCAL=local-default
ARG GLOBAL
ARG TARGETARCH
ARG OVERRIDDEN=from-arg
ENV OVERRIDDEN=from-env
RUN echo "local=$LOCAL global=$GLOBAL arch=$TARGETARCH over=$OVERRIDDEN" > /args
ENV COPIED=$LOCAL
"#
    ));
    let (id, log) = build_ok(
        &store,
        &ctx,
        &[
            "--build-arg",
            "LOCAL=cli",
            "--build-arg",
            "NEVER_DECLARED=1",
        ],
    );
    assert!(
        log.contains("[Warning] one or more build-args [NEVER_DECLARED] were not consumed"),
        "{log}"
    );
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let out = run_in(
        &store,
        &id,
        "cat /args; echo \"env-local=${LOCAL:-unset} copied=$COPIED\"",
    );
    assert_eq!(
        out,
        format!("local=cli global=global-default arch={arch} over=from-env\nenv-local=unset copied=cli\n")
    );

    // A global ARG is not visible inside a stage unless redeclared.
    let ctx = Ctx::new(&format!(
        "ARG HIDDEN=secret\nFROM {base}\nRUN echo \"hidden=${{HIDDEN:-unset}}\" > /out\n"
    ));
    let (id, _) = build_ok(&store, &ctx, &[]);
    assert_eq!(run_in(&store, &id, "cat /out"), "hidden=unset\n");
}

#[test]
fn deletions_over_lower_layers_are_whiteouts() {
    let Some(base) = busybox() else { return };
    let store = TestStore::new();
    let ctx = Ctx::new(&format!(
        r#"FROM {base}
RUN mkdir -p /data/keep /data/opaque && echo 1 > /data/keep/a && echo 2 > /data/opaque/old && echo 3 > /data/gone
RUN rm -rf /data/gone /etc/group /data/opaque && mkdir /data/opaque && echo new > /data/opaque/new
"#
    ));
    let (id, _) = build_ok(&store, &ctx, &["-t", "wh"]);
    let out = run_in(
        &store,
        "wh",
        "ls /data/opaque; cat /data/keep/a; test -e /data/gone || echo gone; test -e /etc/group || echo nogroup",
    );
    assert_eq!(out, "new\n1\ngone\nnogroup\n");
    // The layer blob carries the whiteouts in .wh. form.
    let history = store.ok(&["history", &id]);
    assert!(history.contains("RUN rm -rf"), "{history}");
    let blobs = std::fs::read_dir(store.root().join("blobs/sha256")).unwrap();
    let mut found_opaque = false;
    let mut found_whiteout = false;
    for blob in blobs {
        let path = blob.unwrap().path();
        let Ok(file) = std::fs::File::open(&path) else {
            continue;
        };
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
        let Ok(entries) = archive.entries() else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            found_opaque |= name == "data/opaque/.wh..wh..opq";
            found_whiteout |= name == "data/.wh.gone" || name == "etc/.wh.group";
        }
    }
    assert!(found_opaque, "no opaque marker in any layer");
    assert!(found_whiteout, "no whiteout in any layer");
}

#[test]
fn unchanged_rebuild_is_cached_and_a_changed_copy_reruns_from_there() {
    let Some(base) = busybox() else { return };
    let store = TestStore::new();
    let ctx = Ctx::new(&format!(
        r#"FROM {base}
RUN echo first > /first
COPY input.txt /input.txt
RUN cat /input.txt > /derived
"#
    ));
    ctx.write("input.txt", "one\n");
    let (id1, _) = build_ok(&store, &ctx, &["-t", "cached"]);
    let (id2, log) = build_ok(&store, &ctx, &["-t", "cached"]);
    assert_eq!(id1, id2, "an unchanged rebuild must give the same image");
    assert_eq!(log.matches("CACHED").count(), 3, "{log}");
    assert!(!log.contains("DONE"), "{log}");

    // Only the mtime changes: still cached.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    ctx.write("input.txt", "one\n");
    let (id3, log) = build_ok(&store, &ctx, &[]);
    assert_eq!(id1, id3, "{log}");

    ctx.write("input.txt", "two\n");
    let (id4, log) = build_ok(&store, &ctx, &["-t", "cached"]);
    assert_ne!(id1, id4);
    assert_eq!(log.matches("CACHED").count(), 1, "{log}");
    assert_eq!(log.matches("DONE").count(), 2, "{log}");
    assert_eq!(run_in(&store, "cached", "cat /derived"), "two\n");

    // --no-cache executes everything again.
    let (_, log) = build_ok(&store, &ctx, &["--no-cache"]);
    assert_eq!(log.matches("CACHED").count(), 0, "{log}");
}

#[test]
fn failing_run_reports_line_and_status_and_tags_nothing() {
    let Some(base) = busybox() else { return };
    let store = TestStore::new();
    let ctx = Ctx::new(&format!(
        "FROM {base}\nRUN echo ok\n\nRUN echo about to fail && exit 3\nRUN echo never\n"
    ));
    let out = build(&store, &ctx, &["-t", "broken"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("Containerfile:4"), "{err}");
    assert!(err.contains("exited with status 3"), "{err}");
    assert!(!err.contains("never"), "{err}");
    assert!(!store.run(&["inspect", "broken"]).status.success());
    // The cache stays valid: the first RUN is reused next time.
    let out = build(&store, &ctx, &["-t", "broken"]);
    assert!(stderr(&out).contains("CACHED"), "{}", stderr(&out));
    // With -q the output is held back, and its last lines are shown on failure.
    let out = build(&store, &ctx, &["-q", "-t", "broken"]);
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert!(err.contains("about to fail"), "{err}");
    assert!(!err.contains("CACHED"), "{err}");
    assert_eq!(stdout(&out), "");
}

#[test]
fn missing_context_file_names_the_line() {
    let Some(base) = busybox() else { return };
    let store = TestStore::new();
    let ctx = Ctx::new(&format!("FROM {base}\nCOPY missing.txt /x\n"));
    let out = build(&store, &ctx, &["-t", "missing"]);
    assert_eq!(out.status.code(), Some(125));
    let err = stderr(&out);
    assert!(err.contains("Containerfile:2"), "{err}");
    assert!(
        err.contains("\"missing.txt\" not found in the build context"),
        "{err}"
    );
    assert!(!store.run(&["inspect", "missing"]).status.success());
}

#[test]
fn context_escapes_are_refused() {
    let Some(base) = busybox() else { return };
    let store = TestStore::new();
    let ctx = Ctx::new(&format!("FROM {base}\nCOPY ../outside /x\n"));
    let out = build(&store, &ctx, &[]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("outside the build context"),
        "{}",
        stderr(&out)
    );

    ctx.containerfile(&format!("FROM {base}\nCOPY link/passwd /x\n"));
    std::os::unix::fs::symlink("/etc", ctx.path().join("link")).unwrap();
    let out = build(&store, &ctx, &[]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("outside the build context"),
        "{}",
        stderr(&out)
    );

    // A symlink inside a copied directory is copied as a symlink, not followed.
    std::fs::create_dir(ctx.path().join("d")).unwrap();
    std::os::unix::fs::symlink("/etc/shadow", ctx.path().join("d/l")).unwrap();
    ctx.containerfile(&format!("FROM {base}\nCOPY d /d\n"));
    let (id, _) = build_ok(&store, &ctx, &[]);
    assert_eq!(run_in(&store, &id, "readlink /d/l"), "/etc/shadow\n");
}

#[test]
fn ignore_file_is_applied_with_exceptions() {
    let Some(base) = busybox() else { return };
    let store = TestStore::new();
    let ctx = Ctx::new(&format!("FROM {base}\nCOPY . /ctx/\n"));
    ctx.write(".dockerignore", "*.log\nsecret\n!keep.log\n")
        .write("a.log", "x")
        .write("keep.log", "k")
        .write("secret/key", "s")
        .write("ok.txt", "o");
    let (id, _) = build_ok(&store, &ctx, &[]);
    let out = run_in(&store, &id, "cd /ctx && ls -A | sort");
    assert_eq!(out, ".dockerignore\nContainerfile\nkeep.log\nok.txt\n");
    // Naming an ignored file is an error, as in BuildKit.
    ctx.containerfile(&format!("FROM {base}\nCOPY a.log /\n"));
    let out = build(&store, &ctx, &[]);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
}

/// Sets a file's modification time (`touch -d WHEN`), as another checkout would have it.
fn touch(path: &Path, when: &str) {
    let status = std::process::Command::new("touch")
        .args(["-d", when])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success(), "touch -d {when} {}", path.display());
}

#[test]
fn reproducible_with_source_date_epoch() {
    let Some(base) = busybox() else { return };
    let ctx = Ctx::new(&format!(
        "FROM {base}\nCOPY f /f\nRUN echo data > /g && touch /h\nENV X=1\n"
    ));
    ctx.write("f", "content\n");
    let mut ids = Vec::new();
    let mut manifests = Vec::new();
    for round in 0..2 {
        // Another machine's checkout: the context file's time differs (the layer does not).
        let when = if round == 0 {
            "2024-01-02 03:04:05"
        } else {
            "2025-06-07 08:09:10"
        };
        touch(&ctx.path().join("f"), when);
        let store = TestStore::new();
        let meta = ctx.path().join(format!("meta-{round}.json"));
        let out = store
            .gcr()
            .args([
                "build",
                "--no-cache",
                "--rewrite-timestamp",
                "--metadata-file",
            ])
            .arg(&meta)
            .arg(ctx.path())
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        ids.push(stdout(&out).trim().to_string());
        let cfg = inspect_config(&store, ids.last().unwrap());
        assert_eq!(cfg["Created"], "2023-11-14T22:13:20Z");
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&meta).unwrap()).unwrap();
        manifests.push(doc["containerimage.digest"].as_str().unwrap().to_string());
        std::fs::remove_file(&meta).unwrap();
    }
    assert_eq!(ids[0], ids[1]);
    assert_eq!(manifests[0], manifests[1]);
}

#[test]
fn target_builds_only_the_needed_stages() {
    let Some(base) = busybox() else { return };
    let store = TestStore::new();
    let ctx = Ctx::new(&format!(
        "FROM {base} AS one\nRUN echo one > /one\nFROM {base} AS broken\nRUN exit 1\nFROM one AS two\nRUN cat /one > /two\n"
    ));
    let (id, log) = build_ok(&store, &ctx, &["--target", "two", "--iidfile", "/dev/null"]);
    assert!(!log.contains("[broken"), "{log}");
    assert_eq!(run_in(&store, &id, "cat /two"), "one\n");
    let out = build(&store, &ctx, &["--target", "nope"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("target stage \"nope\" could not be found"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn add_unpacks_local_archives_and_heredocs_work() {
    let Some(base) = busybox() else { return };
    let store = TestStore::new();
    let ctx = Ctx::new(&format!(
        r#"FROM {base}
ADD files.tar.gz /unpacked/
ADD plain.txt /plain.txt
COPY --chmod=0750 --chown=1000:1000 plain.txt /owned
COPY --chmod=u=rwX,go=rX plain.txt files.tar.gz /symbolic/
COPY --chmod=+x plain.txt /executable
COPY <<EOF /heredoc.txt
line $((1+1))
EOF
RUN <<EOT
echo from heredoc > /ran
EOT
"#
    ));
    ctx.write("plain.txt", "plain\n");
    // A small gzip tarball.
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    let mut header = tar::Header::new_gnu();
    header.set_size(3);
    header.set_mode(0o640);
    header.set_uid(7);
    header.set_gid(8);
    header.set_cksum();
    tar.append_data(&mut header, "dir/inner.txt", &b"in\n"[..])
        .unwrap();
    let bytes = tar.into_inner().unwrap().finish().unwrap();
    std::fs::write(ctx.path().join("files.tar.gz"), bytes).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        ctx.path().join("plain.txt"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::fs::set_permissions(
        ctx.path().join("files.tar.gz"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let (id, _) = build_ok(&store, &ctx, &[]);
    let out = run_in(
        &store,
        &id,
        "cat /unpacked/dir/inner.txt /plain.txt /heredoc.txt /ran; stat -c '%a %u:%g' /unpacked/dir/inner.txt /owned; stat -c %a /symbolic/plain.txt /symbolic/files.tar.gz /executable",
    );
    // Symbolic --chmod (BuildKit's Dockerfile 1.14) applies to each file's own mode: the
    // context files are 0600 (set below) and 0755.
    assert_eq!(
        out,
        "in\nplain\nline $((1+1))\nfrom heredoc\n640 7:8\n750 1000:1000\n644\n755\n711\n"
    );
}

#[test]
fn add_unpacks_xz_and_bzip2_archives_as_official_images_use_them() {
    let Some(base) = busybox() else { return };
    let store = TestStore::new();
    // Debian's and Ubuntu's official Dockerfiles start with `ADD rootfs.tar.xz /`.
    let ctx = Ctx::new(&format!(
        "FROM {base}\nADD rootfs.tar.xz /from-xz/\nADD rootfs.tar.bz2 /from-bz2/\nADD notatar.xz /kept/\n"
    ));
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(6);
    header.set_mode(0o750);
    header.set_uid(3);
    header.set_gid(4);
    header.set_cksum();
    tar.append_data(&mut header, "etc/os-release", &b"hello\n"[..])
        .unwrap();
    let tar = tar.into_inner().unwrap();
    let compress = |tool: &str, data: &[u8], name: &str| {
        let mut child = std::process::Command::new(tool)
            .arg("-c")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{tool} missing ({e}): run tests/fixtures/setup.sh"));
        use std::io::Write;
        child.stdin.take().unwrap().write_all(data).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        std::fs::write(ctx.path().join(name), out.stdout).unwrap();
    };
    compress("xz", &tar, "rootfs.tar.xz");
    compress("bzip2", &tar, "rootfs.tar.bz2");
    // A compressed file that is not a tar is copied as it is, as BuildKit does.
    compress("xz", b"just text\n", "notatar.xz");
    let (id, _) = build_ok(&store, &ctx, &[]);
    let out = run_in(
        &store,
        &id,
        "cat /from-xz/etc/os-release /from-bz2/etc/os-release; stat -c '%a %u:%g' /from-xz/etc/os-release /from-bz2/etc/os-release; xz -dc /kept/notatar.xz 2>/dev/null || unxz -c /kept/notatar.xz",
    );
    assert_eq!(out, "hello\nhello\n750 3:4\n750 3:4\njust text\n");
}

#[test]
fn ssh_mounts_bring_the_agent_socket_and_optional_ones_may_be_missing() {
    let Some(base) = busybox() else { return };
    let store = TestStore::new();
    // Any listening Unix socket stands for the agent: the test checks what RUN sees.
    let agent_dir = tempfile::tempdir().unwrap();
    let socket = agent_dir.path().join("agent.sock");
    let _agent = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let ctx = Ctx::new(&format!(
        r#"FROM {base}
RUN --mount=type=ssh test -S "$SSH_AUTH_SOCK" && echo "$SSH_AUTH_SOCK" > /agent
RUN --mount=type=ssh,id=other,target=/tmp/other test ! -e /tmp/other && echo "${{SSH_AUTH_SOCK:-unset}}" > /optional
"#
    ));
    let ssh = format!("default={}", socket.display());
    let (id, _) = build_ok(&store, &ctx, &["--ssh", &ssh]);
    assert_eq!(
        run_in(
            &store,
            &id,
            "cat /agent /optional; test -e /run/buildkit || echo no-stub-left"
        ),
        "/run/buildkit/ssh_agent.0\nunset\nno-stub-left\n"
    );

    // A required agent that was not given fails the step with what to pass.
    let ctx = Ctx::new(&format!(
        "FROM {base}\nRUN --mount=type=ssh,id=deploy,required=true true\n"
    ));
    let out = build(&store, &ctx, &["--ssh", &ssh]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--ssh deploy"), "{}", stderr(&out));
    // Bad --ssh values are refused before anything runs.
    for (value, needle) in [
        ("default=/nonexistent/agent.sock", "does not exist"),
        ("default=/etc/passwd", "not a socket"),
    ] {
        let out = build(&store, &ctx, &["--ssh", value]);
        assert_eq!(out.status.code(), Some(125), "{value}");
        assert!(stderr(&out).contains(needle), "{value}: {}", stderr(&out));
    }
}

#[test]
fn rw_bind_mounts_take_writes_and_throw_them_away() {
    let Some(base) = busybox() else { return };
    let store = TestStore::new();
    let ctx = Ctx::new(&format!(
        r#"FROM {base}
RUN --mount=type=bind,target=/src,rw echo changed > /src/data.txt && echo new > /src/made.txt && rm /src/gone.txt && cat /src/data.txt /src/made.txt > /seen
RUN --mount=type=bind,source=data.txt,target=/one.txt,rw echo also > /one.txt && cat /one.txt > /seen-file
RUN --mount=type=bind,target=/src test ! -e /src/made.txt && cat /src/data.txt > /second && test -e /src/gone.txt && echo gone-still-there >> /second
"#
    ));
    ctx.write("data.txt", "original\n").write("gone.txt", "x\n");
    let (id, _) = build_ok(&store, &ctx, &[]);
    assert_eq!(
        run_in(
            &store,
            &id,
            "cat /seen /seen-file /second; test -e /src || echo no-src; test -e /one.txt || echo no-file"
        ),
        "changed\nnew\nalso\noriginal\ngone-still-there\nno-src\nno-file\n"
    );
    // The context itself is untouched.
    assert_eq!(
        std::fs::read_to_string(ctx.path().join("data.txt")).unwrap(),
        "original\n"
    );
    assert!(ctx.path().join("gone.txt").exists());
    assert!(!ctx.path().join("made.txt").exists());
}

#[test]
fn insecure_run_needs_the_entitlement_and_then_runs_privileged() {
    let Some(base) = busybox() else { return };
    let store = TestStore::new();
    let ctx = Ctx::new(&format!(
        "FROM {base}\nRUN grep CapEff /proc/self/status > /default\nRUN --security=insecure grep CapEff /proc/self/status > /insecure && mkdir -p /m && mount -t tmpfs none /m && echo mounted >> /insecure\n"
    ));
    let out = build(&store, &ctx, &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--allow security.insecure"),
        "{}",
        stderr(&out)
    );
    let (id, _) = build_ok(&store, &ctx, &["--allow", "security.insecure"]);
    let out = run_in(&store, &id, "cat /default /insecure");
    // Docker's default set for the plain RUN; every capability, and mount allowed, for the
    // insecure one.
    assert!(out.starts_with("CapEff:\t00000000a80425fb\n"), "{out}");
    // All the caps this machine has (a VM may lack some in its bounding set).
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let bounding = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .unwrap()
        .trim();
    assert!(
        out.contains(&format!("CapEff:\t{bounding}\n")) && out.ends_with("mounted\n"),
        "{out}"
    );
}

#[test]
fn unsupported_platform_is_refused() {
    let store = TestStore::new();
    let ctx = Ctx::new("FROM scratch\n");
    let out = build(&store, &ctx, &["--platform", "linux/s390x-nope"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("unknown architecture \"s390x-nope\""),
        "{}",
        stderr(&out)
    );
    let out = build(&store, &ctx, &["--platform", "windows/amd64"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("linux images only"),
        "{}",
        stderr(&out)
    );
}

/// Builds as the unprivileged fixture user: the store is written inside gcr's rootless user
/// namespace, overlay whiteouts and opaque dirs use user xattrs, and owners map to subuids.
#[test]
fn rootless_build_as_the_fixture_user() {
    use std::os::unix::fs::PermissionsExt;
    let Some(base) = busybox() else { return };
    let Some(user) = support::fixture_env("GCR_TEST_USER") else {
        return;
    };
    if !nix::unistd::geteuid().is_root() {
        assert!(
            !support::in_ci(),
            "rootless tests run as root to switch to {user}"
        );
        eprintln!("SKIP: not root, cannot switch to {user}");
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("gcr-rootless-build-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.path().join("gcr");
    std::fs::copy(support::gcr_bin(), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let ctx = dir.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(ctx.join("f.txt"), "file\n").unwrap();
    std::fs::write(
        ctx.join("Containerfile"),
        format!(
            r#"FROM {base}
RUN mkdir -p /d/sub && echo old > /d/sub/old && echo x > /gone
COPY --chown=1000:1000 f.txt /home/f.txt
COPY --chown=3000000:3000000 f.txt /unmapped.txt
RUN rm -rf /d/sub /gone && mkdir /d/sub && echo new > /d/sub/new && chown 1000:1000 /d/sub/new
RUN --mount=type=bind,target=/src,rw echo changed > /src/f.txt && cat /src/f.txt > /rw-seen
USER 1000
RUN id -u > /tmp/uid
"#
        ),
    )
    .unwrap();
    let store = dir.path().join("store");
    std::fs::create_dir(&store).unwrap();
    assert!(std::process::Command::new("chown")
        .arg(format!("{user}:"))
        .arg(&store)
        .status()
        .unwrap()
        .success());
    let gcr = |args: &[&str]| {
        std::process::Command::new("runuser")
            .args(["-u", &user, "--"])
            .arg(&bin)
            .arg("--root")
            .arg(&store)
            .args(args)
            .current_dir(dir.path())
            .output()
            .expect("runuser gcr")
    };
    let ctx_arg = ctx.to_string_lossy().into_owned();
    let out = gcr(&["build", "-t", "rl", &ctx_arg]);
    assert!(out.status.success(), "{}", stderr(&out));
    let id = stdout(&out).trim().to_string();
    let out = gcr(&[
        "run",
        "--rm",
        "rl",
        "sh",
        "-c",
        "ls /d/sub; test -e /gone || echo gone; stat -c '%u:%g' /home/f.txt /d/sub/new; cat /tmp/uid /rw-seen",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The context is root's, outside the user's namespace: the rw bind mount still works.
    assert_eq!(
        stdout(&out),
        "new\ngone\n1000:1000\n1000:1000\n1000\nchanged\n"
    );
    assert_eq!(
        std::fs::read_to_string(ctx.join("f.txt")).unwrap(),
        "file\n"
    );
    let out = gcr(&["build", "-t", "rl", &ctx_arg]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), id);
    assert_eq!(
        stderr(&out).matches("CACHED").count(),
        6,
        "{}",
        stderr(&out)
    );
    // An owner outside the subordinate range still reaches the layer tar.
    let mut unmapped_owner = None;
    for blob in std::fs::read_dir(store.join("blobs/sha256")).unwrap() {
        let Ok(file) = std::fs::File::open(blob.unwrap().path()) else {
            continue;
        };
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
        let Ok(entries) = archive.entries() else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.path().unwrap().to_string_lossy() == "unmapped.txt" {
                unmapped_owner = Some(entry.header().uid().unwrap());
            }
        }
    }
    assert_eq!(unmapped_owner, Some(3_000_000));
    // -o type=local rootless: the image's files land in a directory of the user's.
    let outputs = dir.path().join("outputs");
    std::fs::create_dir(&outputs).unwrap();
    assert!(std::process::Command::new("chown")
        .arg(format!("{user}:"))
        .arg(&outputs)
        .status()
        .unwrap()
        .success());
    let local = outputs.join("local-out");
    let out = gcr(&[
        "build",
        "-o",
        &format!("type=local,dest={}", local.display()),
        &ctx_arg,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(local.join("d/sub/new")).unwrap(),
        "new\n"
    );
    let out = gcr(&["system", "check"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
}

// ---------------------------------------------------------------------------------------------
// Differential tests against Buildah: the same Containerfile built by both, both images
// unpacked by umoci, file trees (path, type, mode, owner, size, content, link target) and
// image configs compared.

/// A tool the differential tests need, or None (skip outside CI).
/// path -> "type mode uid:gid size sha256 | link target" for every entry below `root`.
fn file_tree(root: &Path) -> std::collections::BTreeMap<String, String> {
    use sha2::Digest as _;
    use std::os::unix::fs::MetadataExt;
    let mut out = std::collections::BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let ft = meta.file_type();
            let detail = if ft.is_file() {
                let bytes = std::fs::read(&path).unwrap();
                format!(
                    "size={} links={} {}",
                    bytes.len(),
                    meta.nlink(),
                    hex_digest(&sha2::Sha256::digest(&bytes))
                )
            } else if ft.is_symlink() {
                format!("-> {}", std::fs::read_link(&path).unwrap().display())
            } else {
                String::new()
            };
            if ft.is_dir() {
                todo.push(path.clone());
            }
            out.insert(
                rel,
                format!(
                    "{:o} {:o} {}:{} {detail}",
                    meta.mode() & 0o170000,
                    meta.mode() & 0o7777,
                    meta.uid(),
                    meta.gid()
                ),
            );
        }
    }
    out
}

fn hex_digest(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `config` section of the image named `name` in the OCI layout at `layout`.
fn layout_config(layout: &Path, name: &str) -> serde_json::Value {
    let read = |digest: &str| -> serde_json::Value {
        let hex = digest.strip_prefix("sha256:").unwrap();
        serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap())
            .unwrap()
    };
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let entry = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {}", layout.display()))
        .clone();
    let manifest = read(entry["digest"].as_str().unwrap());
    let config = read(manifest["config"]["digest"].as_str().unwrap());
    let mut section = config["config"].clone();
    // BuildKit replaces a redefined variable in place, Buildah moves it to the end: compare
    // the environment as a set.
    if let Some(env) = section.get_mut("Env").and_then(|e| e.as_array_mut()) {
        env.sort_by_key(|v| v.as_str().unwrap_or("").to_string());
    }
    if let Some(labels) = section.get_mut("Labels").and_then(|l| l.as_object_mut()) {
        labels.remove("io.buildah.version");
        if labels.is_empty() {
            section.as_object_mut().unwrap().remove("Labels");
        }
    }
    section
}

fn differential(name: &str, containerfile: &str, setup: impl Fn(&Path)) {
    let Some(_) = busybox() else { return };
    for t in ["buildah", "umoci"] {
        if support::tool(t).is_none() {
            return;
        }
    }
    let work = tempfile::Builder::new()
        .prefix("gcr-diff-")
        .tempdir()
        .unwrap();
    let ctx = work.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(ctx.join("Containerfile"), containerfile).unwrap();
    setup(&ctx);

    // Buildah, with its own throw-away storage, then to an OCI layout.
    let bah = work.path().join("buildah");
    let buildah = |args: &[&str]| {
        let out = std::process::Command::new("buildah")
            .arg("--root")
            .arg(bah.join("root"))
            .arg("--runroot")
            .arg(bah.join("run"))
            .args(args)
            .output()
            .expect("run buildah");
        assert!(out.status.success(), "buildah {args:?}: {}", stderr(&out));
    };
    let ctx_s = ctx.to_string_lossy().into_owned();
    buildah(&["build", "--layers", "-q", "-t", "localhost/diff", &ctx_s]);
    let bah_layout = work.path().join("buildah-oci");
    buildah(&[
        "push",
        "localhost/diff",
        &format!("oci:{}:diff", bah_layout.display()),
    ]);
    let _ = std::process::Command::new("buildah")
        .arg("--root")
        .arg(bah.join("root"))
        .arg("--runroot")
        .arg(bah.join("run"))
        .args(["rmi", "-a", "-f"])
        .output();

    // gcr: its store is an OCI layout umoci reads as is.
    let store = TestStore::new();
    let out = store
        .gcr()
        .args(["build", "-q", "-t", "diff"])
        .arg(&ctx)
        .output()
        .unwrap();
    assert!(out.status.success(), "gcr build: {}", stderr(&out));

    let unpack = |image: String, dest: &Path| {
        let out = std::process::Command::new("umoci")
            .args(["unpack", "--image", &image])
            .arg(dest)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "umoci unpack {image}: {}",
            stderr(&out)
        );
    };
    let bah_bundle = work.path().join("bah-bundle");
    let gcr_bundle = work.path().join("gcr-bundle");
    unpack(format!("{}:diff", bah_layout.display()), &bah_bundle);
    unpack(
        format!("{}:docker.io/library/diff:latest", store.root().display()),
        &gcr_bundle,
    );
    let mut bah_tree = file_tree(&bah_bundle.join("rootfs"));
    let gcr_tree = file_tree(&gcr_bundle.join("rootfs"));
    // Buildah 1.28 leaves the empty mount points of its RUN steps behind; BuildKit and gcr
    // do not.
    for stub in ["etc/hostname", "etc/hosts", "etc/resolv.conf", "run"] {
        if !gcr_tree.contains_key(stub) {
            if let Some(v) = bah_tree.get(stub) {
                if v.contains("size=0 links=1 ") || v.starts_with("40000 ") {
                    bah_tree.remove(stub);
                }
            }
        }
    }
    assert!(
        gcr_tree.len() > 50 && bah_tree.len() > 50,
        "{name}: unpacked trees look empty: {} and {} entries",
        gcr_tree.len(),
        bah_tree.len()
    );
    let mut differences = Vec::new();
    for key in bah_tree.keys().chain(gcr_tree.keys()) {
        if bah_tree.get(key) != gcr_tree.get(key) {
            differences.push(format!(
                "{key}: buildah {:?} gcr {:?}",
                bah_tree.get(key),
                gcr_tree.get(key)
            ));
        }
    }
    differences.dedup();
    assert!(
        differences.is_empty(),
        "{name}: trees differ:\n{}",
        differences.join("\n")
    );
    assert_eq!(
        layout_config(&bah_layout, "diff"),
        layout_config(store.root(), "docker.io/library/diff:latest"),
        "{name}: configs differ"
    );
}

#[test]
fn differential_multi_stage_whiteouts_links_modes() {
    let Some(base) = busybox() else { return };
    differential(
        "multi-stage",
        &format!(
            r#"FROM {base} AS builder
ARG V=1
RUN mkdir -p /out/d && echo "v=$V" > /out/d/f && ln -s f /out/d/l && ln /out/d/f /out/d/hard && chmod 4755 /out/d/f
FROM {base}
COPY --from=builder /out /out
COPY . /ctx/
COPY --chown=1000:100 hello.txt /owned/
WORKDIR /w
RUN mkdir -p /data/keep /data/op /data/sticky && echo 1 > /data/op/a && echo 2 > /data/gone && chmod 700 /data/keep && chmod 1777 /data/sticky
RUN rm -rf /data/gone /data/op /etc/group && mkdir /data/op && echo n > /data/op/b
ENV A=b
LABEL l=v
EXPOSE 80 53/udp
VOLUME /vol
USER 1000:100
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["echo hi"]
"#
        ),
        |ctx| {
            std::fs::write(ctx.join("hello.txt"), "hello\n").unwrap();
            std::fs::create_dir_all(ctx.join("tree/sub")).unwrap();
            std::fs::write(ctx.join("tree/a"), "a\n").unwrap();
            std::fs::write(ctx.join("tree/sub/b"), "b\n").unwrap();
            std::os::unix::fs::symlink("a", ctx.join("tree/link")).unwrap();
            std::fs::write(ctx.join(".dockerignore"), "*.log\n!keep.log\n").unwrap();
            std::fs::write(ctx.join("x.log"), "x\n").unwrap();
            std::fs::write(ctx.join("keep.log"), "k\n").unwrap();
        },
    );
}

#[test]
fn differential_add_tarball_and_entrypoint_reset() {
    let Some(base) = busybox() else { return };
    differential(
        "add",
        &format!(
            r#"FROM {base} AS first
CMD ["inherited"]
FROM first
ADD archive.tar /x/
ADD plain.txt /p/
COPY --chmod=0600 plain.txt /modes/
ENTRYPOINT ["echo"]
"#
        ),
        |ctx| {
            std::fs::write(ctx.join("plain.txt"), "plain\n").unwrap();
            let mut tar = tar::Builder::new(Vec::new());
            for (name, mode, uid) in [("top.txt", 0o644, 0), ("d/inner", 0o600, 42)] {
                let mut h = tar::Header::new_gnu();
                h.set_size(3);
                h.set_mode(mode);
                h.set_uid(uid);
                h.set_gid(uid);
                h.set_mtime(1_600_000_000);
                h.set_cksum();
                tar.append_data(&mut h, name, &b"abc"[..]).unwrap();
            }
            std::fs::write(ctx.join("archive.tar"), tar.into_inner().unwrap()).unwrap();
        },
    );
}

#[test]
fn run_mounts_network_user_onbuild_and_heredocs() {
    let Some(base) = busybox() else { return };
    let store = TestStore::new();
    let ctx = Ctx::new(&format!(
        r#"FROM {base} AS base
ONBUILD RUN echo triggered > /onbuild
FROM base
RUN --mount=type=cache,target=/cache sh -c 'echo run >> /cache/count; wc -l < /cache/count > /count'
RUN --mount=type=tmpfs,target=/scratch sh -c 'echo x > /scratch/y && grep -c " /scratch " /proc/mounts > /tmpfs'
RUN --mount=type=bind,source=bound.txt,target=/mnt/b.txt cat /mnt/b.txt > /bound
RUN --mount=type=secret,id=tok cat /run/secrets/tok > /secret-copy
RUN --mount=type=bind,from=base,source=/etc,target=/baseetc ls /baseetc > /baseetc-list
RUN --network=none sh -c 'grep -c : /proc/net/dev > /netlines'
USER nobody
RUN id -u > /tmp/uid && echo $HOME > /tmp/home
RUN cat > /tmp/hd <<EOF
heredoc $HOME
EOF
"#
    ));
    ctx.write("bound.txt", "bound\n");
    let secret = ctx.path().join("secret.txt");
    std::fs::write(&secret, "topsecret\n").unwrap();
    let secret_arg = format!("id=tok,src={}", secret.display());
    let (id, log) = build_ok(&store, &ctx, &["--secret", &secret_arg]);
    assert!(log.contains("[stage-1 2/10] RUN echo triggered"), "{log}");
    let out = run_in(
        &store,
        &id,
        "cat /onbuild /count /tmpfs /bound /secret-copy /netlines /tmp/uid /tmp/home /tmp/hd /baseetc-list; \
         for p in /mnt /run /cache /scratch /baseetc; do test -e $p && echo left $p; done; true",
    );
    assert_eq!(
        out,
        "triggered\n1\n1\nbound\ntopsecret\n1\n65534\n/nonexistent\nheredoc /nonexistent\ngroup\npasswd\n"
    );
    // The secret is not in any layer, and the cache mount persists across builds.
    let (_, _) = build_ok(&store, &ctx, &["--no-cache", "--secret", &secret_arg]);
    let count = std::fs::read_dir(store.root().join("cache/mounts"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .join("count");
    assert_eq!(std::fs::read_to_string(count).unwrap(), "run\nrun\n");
    // Without --secret the (optional, as in BuildKit) secret is absent: the RUN fails there.
    let out = build(&store, &ctx, &["--no-cache"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("Containerfile:7"), "{}", stderr(&out));
}

#[test]
fn quiet_iidfile_and_labels() {
    let Some(base) = busybox() else { return };
    let store = TestStore::new();
    let ctx = Ctx::new(&format!("FROM {base}\nRUN echo output-of-run\nLABEL a=1\n"));
    let iid = ctx.path().join("iid");
    let iid_arg = iid.to_string_lossy().into_owned();
    let out = build(
        &store,
        &ctx,
        &[
            "-q",
            "--iidfile",
            &iid_arg,
            "--label",
            "b=2",
            "-t",
            "one",
            "-t",
            "two:x",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let id = stdout(&out).trim().to_string();
    assert_eq!(stderr(&out), "", "-q prints nothing else");
    assert_eq!(std::fs::read_to_string(&iid).unwrap(), id);
    let cfg = inspect_config(&store, "two:x");
    assert_eq!(cfg["Id"], id);
    assert_eq!(cfg["Config"]["Labels"]["a"], "1");
    assert_eq!(cfg["Config"]["Labels"]["b"], "2");
    assert_eq!(inspect_config(&store, "one")["Id"], id);
}

#[test]
fn heredoc_script_with_shebang_runs_its_interpreter() {
    let Some(base) = busybox() else { return };
    let store = TestStore::new();
    let ctx = Ctx::new(&format!(
        "FROM {base}\nRUN <<EOF\n#!/usr/bin/awk -f\nBEGIN {{ print \"awk ran\" > \"/awk.txt\" }}\nEOF\n"
    ));
    let (id, _) = build_ok(&store, &ctx, &[]);
    assert_eq!(
        run_in(
            &store,
            &id,
            "cat /awk.txt; ls -a /dev | grep -c gcr-heredoc; true"
        ),
        "awk ran\n0\n"
    );
}

#[test]
fn names_relative_workdirs_and_copy_from_an_image() {
    let Some(base) = busybox() else { return };
    let store = TestStore::new();
    let ctx = Ctx::new(&format!(
        r#"FROM {base}
WORKDIR /a
WORKDIR b
COPY --chown=nobody:nogroup f.txt ./
COPY --chown=nobody f.txt /g.txt
COPY --from={base} /bin/busybox /copied/busybox
COPY f.txt rel-dest
RUN pwd > /pwd
"#
    ));
    ctx.write("f.txt", "f\n");
    let (id, _) = build_ok(&store, &ctx, &[]);
    let out = run_in(
        &store,
        &id,
        "cat /pwd /a/b/rel-dest; stat -c '%U:%G' /a/b/f.txt; stat -c '%u:%g' /g.txt; cmp /bin/busybox /copied/busybox && echo same",
    );
    assert_eq!(out, "/a/b\nf\nnobody:nogroup\n65534:65534\nsame\n");
    // An unknown user name names the line.
    ctx.containerfile(&format!("FROM {base}\nCOPY --chown=nosuchuser f.txt /\n"));
    let out = build(&store, &ctx, &[]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("Containerfile:2"), "{}", stderr(&out));
    assert!(stderr(&out).contains("nosuchuser"), "{}", stderr(&out));
}

/// A build killed with SIGKILL in the middle of a RUN leaves no name and a store that
/// `gcr system check` finds clean; the next build works.
#[test]
fn killed_build_leaves_a_clean_store() {
    let Some(base) = busybox() else { return };
    let store = TestStore::new();
    let ctx = Ctx::new(&format!(
        "FROM {base}\nRUN echo one > /one\nRUN touch /started && sleep 30\n"
    ));
    let mut child = store
        .gcr()
        .args(["build", "-t", "killed"])
        .arg(ctx.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the second RUN is executing.
    let mut stderr_pipe = child.stderr.take().unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while !seen.contains("sleep 30") {
        let n = std::io::Read::read(&mut stderr_pipe, &mut buf).unwrap();
        assert!(n > 0, "build ended early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!store.run(&["inspect", "killed"]).status.success());
    let out = store.ok(&["system", "check"]);
    assert!(out.contains("consistent"), "{out}");
    ctx.containerfile(&format!(
        "FROM {base}\nRUN echo one > /one\nRUN echo two > /two\n"
    ));
    let (_, log) = build_ok(&store, &ctx, &["-t", "killed"]);
    assert!(log.contains("CACHED"), "the first RUN stayed cached: {log}");
}

/// More layers than fit in one page of overlay options when named by their store paths.
#[test]
fn many_layers_still_mount_for_copy() {
    let Some(base) = busybox() else { return };
    let store = TestStore::new();
    let mut text = format!("FROM {base}\n");
    for i in 0..70 {
        text.push_str(&format!("COPY f /f{i}\n"));
    }
    let ctx = Ctx::new(&text);
    ctx.write("f", "x\n");
    let (id, _) = build_ok(&store, &ctx, &["-q"]);
    let cfg = inspect_config(&store, &id);
    assert_eq!(cfg["RootFS"]["Layers"].as_array().unwrap().len(), 71);
}

#[test]
fn differential_debian_merged_usr_users_and_deletions() {
    let Some(registry) = support::registry() else {
        return;
    };
    differential(
        "debian",
        &format!(
            r#"FROM {registry}/debian:bookworm
COPY tool.sh /bin/tool.sh
RUN useradd -m -u 1500 app && rm -rf /usr/share/doc /var/cache/debconf/*-old && chmod 2755 /usr/bin/tool.sh
COPY --chown=app:app tree/ /home/app/tree/
USER app
RUN mkdir -p /home/app/made && echo $HOME > /home/app/made/home
ENV PATH=/home/app/bin:$PATH
"#
        ),
        |ctx| {
            std::fs::write(ctx.join("tool.sh"), "#!/bin/sh\necho tool\n").unwrap();
            std::fs::create_dir_all(ctx.join("tree/sub")).unwrap();
            std::fs::write(ctx.join("tree/sub/x"), "x\n").unwrap();
        },
    );
}

#[test]
fn config_instructions_land_in_the_image_config() {
    let Some(base) = busybox() else { return };
    let store = TestStore::new();
    let ctx = Ctx::new(&format!(
        r#"FROM {base}
ENV A=1
ENV A=2 B=$A
SHELL ["/bin/sh", "-e", "-c"]
RUN echo "$B" > /b
HEALTHCHECK --interval=5s --retries=2 CMD wget -q localhost || exit 1
STOPSIGNAL SIGQUIT
VOLUME ["/data", "/logs"]
EXPOSE 53/udp 80
USER nobody:nogroup
MAINTAINER someone
"#
    ));
    let (id, _) = build_ok(&store, &ctx, &[]);
    let cfg = inspect_config(&store, &id);
    let c = &cfg["Config"];
    assert_eq!(c["Env"][1], "A=2", "{c}");
    assert_eq!(c["Env"][2], "B=1", "{c}");
    assert_eq!(c["Shell"], serde_json::json!(["/bin/sh", "-e", "-c"]));
    assert_eq!(
        c["Healthcheck"]["Test"],
        serde_json::json!(["CMD-SHELL", "wget -q localhost || exit 1"])
    );
    assert_eq!(c["Healthcheck"]["Interval"], 5_000_000_000u64);
    assert_eq!(c["Healthcheck"]["Retries"], 2);
    assert_eq!(c["StopSignal"], "SIGQUIT");
    assert!(c["Volumes"]["/data"].is_object() && c["Volumes"]["/logs"].is_object());
    assert!(c["ExposedPorts"]["53/udp"].is_object() && c["ExposedPorts"]["80/tcp"].is_object());
    assert_eq!(c["User"], "nobody:nogroup");
    assert_eq!(run_in(&store, &id, "cat /b; id -u"), "1\n65534\n");
    // Metadata steps are empty layers in the history.
    let history = cfg["History"].as_array().unwrap();
    let ours: Vec<_> = history.iter().skip(history.len() - 10).collect();
    assert_eq!(ours.len(), 10);
    for h in ours {
        let by = h["created_by"].as_str().unwrap();
        assert_eq!(
            h["empty_layer"].as_bool().unwrap_or(false),
            !by.starts_with("RUN"),
            "{h}"
        );
    }
}

#[test]
fn bind_mount_content_is_part_of_the_run_cache_key() {
    let Some(base) = busybox() else { return };
    let store = TestStore::new();
    let ctx = Ctx::new(&format!(
        "FROM {base}\nRUN --mount=type=bind,source=src,target=/src cat /src/in > /out\n"
    ));
    ctx.write("src/in", "one\n");
    let (id1, _) = build_ok(&store, &ctx, &[]);
    let (id2, log) = build_ok(&store, &ctx, &[]);
    assert_eq!(id1, id2);
    assert!(log.contains("CACHED"), "{log}");
    ctx.write("src/in", "two\n");
    let (id3, log) = build_ok(&store, &ctx, &[]);
    assert!(!log.contains("CACHED"), "{log}");
    assert_eq!(run_in(&store, &id3, "cat /out"), "two\n");
}

#[test]
fn zstd_layers_and_timestamp_flag() {
    let Some(base) = busybox() else { return };
    let store = TestStore::new();
    let ctx = Ctx::new(&format!("FROM {base}\nRUN echo z > /z\n"));
    let (id, _) = build_ok(
        &store,
        &ctx,
        &["--compression", "zstd", "--timestamp", "86400", "-t", "zst"],
    );
    let cfg = inspect_config(&store, &id);
    assert_eq!(cfg["Created"], "1970-01-02T00:00:00Z");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.root().join("index.json")).unwrap()).unwrap();
    let entry = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"] == "docker.io/library/zst:latest"
        })
        .unwrap()
        .clone();
    let hex = entry["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:");
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(store.root().join("blobs/sha256").join(hex)).unwrap(),
    )
    .unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(
        layers.last().unwrap()["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    assert_eq!(run_in(&store, "zst", "cat /z"), "z\n");
    let out = build(&store, &ctx, &["--compression", "lz4"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("--compression"), "{}", stderr(&out));
}

#[test]
fn copy_parents_and_exclude() {
    let Some(base) = busybox() else { return };
    let store = TestStore::new();
    let ctx = Ctx::new(&format!(
        "FROM {base}\nCOPY --parents x/y/a.txt z /p/\nCOPY --exclude=*.md x/y /e/\nCOPY --exclude=*.md top.md x/y/a.txt /e2/\n"
    ));
    ctx.write("x/y/a.txt", "1\n")
        .write("x/y/b.md", "2\n")
        .write("z/c.txt", "3\n")
        .write("top.md", "4\n");
    let (id, _) = build_ok(&store, &ctx, &[]);
    assert_eq!(
        run_in(&store, &id, "find /p /e /e2 | sort"),
        "/e\n/e/a.txt\n/e2\n/e2/a.txt\n/p\n/p/x\n/p/x/y\n/p/x/y/a.txt\n/p/z\n/p/z/c.txt\n"
    );
}

#[test]
fn differential_args_env_and_labels() {
    let Some(registry) = support::registry() else {
        return;
    };
    differential(
        "args",
        &format!(
            r#"ARG REG={registry}
ARG NAME=busybox
FROM ${{REG}}/${{NAME}}:latest
ARG NAME
ARG GREETING="hello world"
ARG UNSET
ENV GREETING=$GREETING NAME=${{NAME}} DEF=${{UNSET:-fallback}} ALT=${{NAME:+set}}
ENV OLD=$DEF
LABEL "quoted label"="a b" multi=1 other='single $NAME'
ENV PATH=/opt/bin:$PATH
WORKDIR /srv/$NAME
RUN echo "$GREETING $NAME $DEF" > greeting.txt
STOPSIGNAL SIGTERM
CMD echo shell form
"#
        ),
        |_| {},
    );
}

#[test]
fn containerfile_from_stdin() {
    use std::io::Write;
    let Some(base) = busybox() else { return };
    let store = TestStore::new();
    let ctx = Ctx::new("FROM scratch\n");
    ctx.write("in.txt", "from context\n");
    let mut child = store
        .gcr()
        .args(["build", "-q", "-t", "stdin", "-f", "-"])
        .arg(ctx.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    write!(
        child.stdin.take().unwrap(),
        "FROM {base}\nCOPY in.txt /in.txt\n"
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(run_in(&store, "stdin", "cat /in.txt"), "from context\n");
}

#[test]
fn context_dash_takes_a_containerfile_or_a_context_archive_from_stdin() {
    let Some(base) = busybox() else { return };
    let store = TestStore::new();
    let build_stdin = |args: &[&str], input: &[u8]| {
        let mut child = store
            .gcr()
            .arg("build")
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), input).unwrap();
        child.wait_with_output().unwrap()
    };
    // `docker build - < Containerfile`: no context at all.
    let text = format!("FROM {base}\nRUN echo made > /made\n");
    let out = build_stdin(&["-q", "-t", "bare", "-"], text.as_bytes());
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(run_in(&store, "bare", "cat /made"), "made\n");
    let text = format!("FROM {base}\nCOPY anything /\n");
    let out = build_stdin(&["-t", "nocontext", "-"], text.as_bytes());
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("anything"), "{}", stderr(&out));
    // A gzip'd tar of the context, its Containerfile found inside (by default or -f).
    let ctx = Ctx::new(&format!("FROM {base}\nCOPY in.txt /in.txt\n"));
    ctx.write("in.txt", "from the archive\n");
    ctx.write(
        "sub/other.df",
        &format!("FROM {base}\nCOPY in.txt /other.txt\n"),
    );
    let mut archive = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    archive.append_dir_all(".", ctx.path()).unwrap();
    let archive = archive.into_inner().unwrap().finish().unwrap();
    let out = build_stdin(&["-q", "-t", "fromtar", "-"], &archive);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        run_in(&store, "fromtar", "cat /in.txt"),
        "from the archive\n"
    );
    let out = build_stdin(&["-q", "-t", "named", "-f", "sub/other.df", "-"], &archive);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        run_in(&store, "named", "cat /other.txt"),
        "from the archive\n"
    );
    // Compressed data that is no tar, and stdin wanted twice: clear errors.
    let mut junk = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut junk, b"not a tar").unwrap();
    let out = build_stdin(&["-t", "junk", "-"], &junk.finish().unwrap());
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("not a tar archive"),
        "{}",
        stderr(&out)
    );
    let out = build_stdin(&["-f", "-", "-"], b"FROM scratch\n");
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("both want stdin"), "{}", stderr(&out));
}

#[test]
fn chown_path_and_expose_follow_buildkit() {
    let Some(base) = busybox() else { return };
    let store = TestStore::new();
    let ctx = Ctx::new(&format!(
        r#"FROM {base}
RUN echo 'app:x:1000:2001:app:/home/app:/bin/sh' >> /etc/passwd && echo 'grp:x:2001:' >> /etc/group
COPY --chown=app f.txt /by-name
COPY --chown=:grp f.txt /group-only
COPY --chown=1234 f.txt /by-number
EXPOSE 9000-9002 80/UDP
"#
    ));
    ctx.write("f.txt", "f\n");
    let (id, _) = build_ok(&store, &ctx, &[]);
    // A named user's group is its primary group; an empty user is root.
    assert_eq!(
        run_in(&store, &id, "stat -c %u:%g /by-name /group-only /by-number"),
        "1000:2001\n0:2001\n1234:1234\n"
    );
    let ports = &inspect_config(&store, &id)["Config"]["ExposedPorts"];
    let mut keys: Vec<&String> = ports.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["80/udp", "9000/tcp", "9001/tcp", "9002/tcp"]);
    // FROM scratch: root needs no passwd file, and the config gets the default PATH.
    let ctx = Ctx::new("FROM scratch\nCOPY --chown=root:root f.txt /f\n");
    ctx.write("f.txt", "f\n");
    let (id, _) = build_ok(&store, &ctx, &[]);
    assert_eq!(
        inspect_config(&store, &id)["Config"]["Env"],
        serde_json::json!(["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"])
    );
    let ctx = Ctx::new(&format!("FROM {base}\nEXPOSE 80-70\n"));
    let out = build(&store, &ctx, &[]);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("EXPOSE 80-70"), "{}", stderr(&out));
}

#[test]
fn secret_env_gives_the_value_to_the_step_only() {
    let Some(base) = busybox() else { return };
    let store = TestStore::new();
    let ctx = Ctx::new(&format!(
        r#"FROM {base}
RUN --mount=type=secret,id=tok,env=TOKEN sh -c 'echo "$TOKEN"; test -e /run/secrets/tok && echo file; true' > /only-env
RUN --mount=type=secret,id=tok,env=TOKEN,target=/s sh -c 'echo "$TOKEN"; cat /s' > /both
RUN echo "after:${{TOKEN:-unset}}" > /after
RUN --mount=type=secret,id=tok stat -c '%a %u' /run/secrets/tok > /default-owner
USER nobody
RUN --mount=type=secret,id=tok,uid=65534,mode=0440 sh -c 'stat -c "%a %u" /run/secrets/tok; cat /run/secrets/tok' > /tmp/as-nobody
"#
    ));
    let secret = ctx.path().join("secret.txt");
    std::fs::write(&secret, "s3cr3t").unwrap();
    let secret_arg = format!("id=tok,src={}", secret.display());
    // --rm and --force-rm (Docker's habit) are accepted: gcr leaves no intermediate containers.
    let (id, _) = build_ok(
        &store,
        &ctx,
        &["--rm", "--force-rm", "--secret", &secret_arg],
    );
    assert_eq!(
        run_in(
            &store,
            &id,
            "cat /only-env /both /after /default-owner /tmp/as-nobody"
        ),
        "s3cr3t\ns3cr3t\ns3cr3tafter:unset\n400 0\n440 65534\ns3cr3t"
    );
    let config = inspect_config(&store, &id);
    assert!(!config.to_string().contains("s3cr3t"), "{config}");
}

#[test]
fn unsupported_sources_are_refused_with_the_line() {
    let Some(base) = busybox() else { return };
    let store = TestStore::new();
    for (containerfile, message) in [
        (
            format!(
                "FROM {base}\nADD --checksum=sha256:{} ./local /x\n",
                "0".repeat(64)
            ),
            "ADD --checksum is only for URL sources",
        ),
        (
            format!("FROM {base}\nCOPY http://example.com/x /x\n"),
            "cannot copy from a URL",
        ),
        (
            format!("FROM {base}\nADD s3://bucket/r.tar /r\n"),
            "ADD of a remote source",
        ),
    ] {
        let ctx = Ctx::new(&containerfile);
        let out = build(&store, &ctx, &["-t", "unsupported"]);
        assert_eq!(out.status.code(), Some(125));
        let err = stderr(&out);
        assert!(err.contains("Containerfile:2"), "{err}");
        assert!(err.contains(message), "{err}");
    }
    assert!(!store.run(&["inspect", "unsupported"]).status.success());
}

#[test]
fn ignore_file_beside_the_containerfile_wins() {
    let Some(base) = busybox() else { return };
    let store = TestStore::new();
    let ctx = Ctx::new("FROM scratch\n");
    ctx.write("a.txt", "a")
        .write("b.txt", "b")
        .write(".dockerignore", "a.txt\n")
        .write(
            "build/App.containerfile",
            &format!("FROM {base}\nCOPY *.txt /t/\n"),
        )
        .write("build/App.containerfile.dockerignore", "b.txt\n");
    let file = ctx.path().join("build/App.containerfile");
    let file_arg = file.to_string_lossy().into_owned();
    let (id, _) = build_ok(&store, &ctx, &["-f", &file_arg]);
    assert_eq!(run_in(&store, &id, "ls /t"), "a.txt\n");
}

/// A one-file HTTP server on loopback for `ADD <url>`: serves `body` at every path but
/// `/missing` (404), with a fixed Last-Modified; counts requests.
fn serve_file(body: &'static [u8]) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut request_line = String::new();
            let _ = reader.read_line(&mut request_line);
            let mut line = String::new();
            while reader.read_line(&mut line).map(|n| n > 2).unwrap_or(false) {
                line.clear();
            }
            let mut conn = conn;
            if request_line.contains("/missing") {
                let _ = conn.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            } else {
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nLast-Modified: Tue, 14 Nov 2023 22:13:20 GMT\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(head.as_bytes());
                let _ = conn.write_all(body);
            }
        }
    });
    (format!("http://{addr}"), hits)
}

#[test]
fn add_url_downloads_with_mode_600_last_modified_and_checksum() {
    let Some(base) = busybox() else { return };
    let (server, _hits) = serve_file(b"remote content\n");
    let sum = "c18243bcea0987f0dabe57a6714acda33fe58db2d6096c58a8b5be13ed378588";
    let store = TestStore::new();
    let ctx = Ctx::new(&format!(
        "FROM {base}\n\
         ADD {server}/files/data.txt?v=1 /opt/\n\
         ADD --checksum=sha256:{sum} {server}/data.txt /renamed.txt\n"
    ));
    let (id, _) = build_ok(&store, &ctx, &["-t", "localhost/addurl"]);
    let out = run_in(
        &store,
        "localhost/addurl",
        "stat -c '%a %Y %s' /opt/data.txt /renamed.txt; cat /opt/data.txt",
    );
    assert_eq!(
        out, "600 1700000000 15\n600 1700000000 15\nremote content\n",
        "{id}"
    );

    ctx.containerfile(&format!(
        "FROM {base}\nADD --checksum=sha256:{} {server}/data.txt /x\n",
        "0".repeat(64)
    ));
    let out = build(&store, &ctx, &["-t", "localhost/addurl-bad"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("Containerfile:2") && err.contains("checksum mismatch"),
        "{err}"
    );

    ctx.containerfile(&format!("FROM {base}\nADD {server}/missing /x\n"));
    let out = build(&store, &ctx, &["-t", "localhost/addurl-404"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("Containerfile:2") && err.contains("404"),
        "{err}"
    );
    assert!(!store
        .run(&["inspect", "localhost/addurl-bad"])
        .status
        .success());
}

#[test]
fn outputs_metadata_and_run_options() {
    let Some(base) = busybox() else { return };
    let store = TestStore::new();
    let ctx = Ctx::new(&format!(
        "FROM {base}\nRUN echo built > /built && (grep myhost /etc/hosts || true) > /hosts && ulimit -n > /nofile && df -k /dev/shm | tail -1 > /shm\n"
    ));
    let out_dir = tempfile::tempdir().unwrap();
    let local = out_dir.path().join("local");
    let tar = out_dir.path().join("files.tar");
    let oci = out_dir.path().join("image-oci.tar");
    let docker = out_dir.path().join("image-docker.tar");
    let meta = out_dir.path().join("meta.json");
    let arg = |p: &Path| p.display().to_string();
    let (id, _) = build_ok(
        &store,
        &ctx,
        &[
            "-t",
            "outputs:1",
            "-o",
            &format!("type=local,dest={}", arg(&local)),
            "-o",
            &format!("type=tar,dest={}", arg(&tar)),
            "-o",
            &format!("type=oci,dest={}", arg(&oci)),
            "-o",
            &format!("type=docker,dest={},name=renamed:2", arg(&docker)),
            "--metadata-file",
            &arg(&meta),
            "--add-host",
            "myhost:10.1.2.3",
            "--ulimit",
            "nofile=333:333",
            "--shm-size",
            "32m",
            "--annotation",
            "org.opencontainers.image.source=https://example.com/app",
            "--annotation",
            "manifest:com.example.kind=test",
        ],
    );
    // The image's files in a directory and in a tar stream.
    assert_eq!(
        std::fs::read_to_string(local.join("built")).unwrap(),
        "built\n"
    );
    assert!(local.join("bin/busybox").exists());
    assert_eq!(
        std::fs::read_to_string(local.join("hosts")).unwrap(),
        "10.1.2.3\tmyhost\n"
    );
    assert_eq!(
        std::fs::read_to_string(local.join("nofile")).unwrap(),
        "333\n"
    );
    let shm = std::fs::read_to_string(local.join("shm")).unwrap();
    assert!(shm.split_whitespace().nth(1) == Some("32768"), "{shm}");
    let listing = std::process::Command::new("tar")
        .arg("tf")
        .arg(&tar)
        .output()
        .unwrap();
    let names = stdout(&listing);
    assert!(
        names.lines().any(|l| l == "built") && names.lines().any(|l| l == "bin/busybox"),
        "{names}"
    );
    // The archives load elsewhere: the OCI one by skopeo-free means (gcr load into a new
    // store), the docker one with the name given.
    let other = TestStore::new();
    let loaded = other.ok(&["load", "-i", &arg(&oci)]);
    assert!(loaded.contains("outputs:1"), "{loaded}");
    let loaded = other.ok(&["load", "-i", &arg(&docker)]);
    assert!(loaded.contains("renamed:2"), "{loaded}");
    assert_eq!(
        other.ok(&["inspect", "-f", "{{.Id}}", "renamed:2"]).trim(),
        id
    );
    // BuildKit's metadata keys, with the store's digests.
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&meta).unwrap()).unwrap();
    assert_eq!(doc["containerimage.config.digest"], id.as_str());
    let manifest = doc["containerimage.digest"].as_str().unwrap();
    assert_eq!(doc["containerimage.descriptor"]["digest"], manifest);
    assert!(doc["containerimage.descriptor"]["size"].as_u64().unwrap() > 100);
    assert_eq!(doc["image.name"], "docker.io/library/outputs:1");
    // --annotation lands in the manifest (read from the OCI archive).
    let blob = format!("blobs/sha256/{}", manifest.trim_start_matches("sha256:"));
    let manifest_json = std::process::Command::new("tar")
        .args(["-xOf", &arg(&oci), &blob])
        .output()
        .unwrap();
    let manifest_doc: serde_json::Value = serde_json::from_slice(&manifest_json.stdout).unwrap();
    assert_eq!(
        manifest_doc["annotations"]["org.opencontainers.image.source"],
        "https://example.com/app"
    );
    assert_eq!(manifest_doc["annotations"]["com.example.kind"], "test");
    let out = build(&store, &ctx, &["--annotation", "manifest-descriptor:k=v"]);
    assert!(
        stderr(&out).contains("not supported yet"),
        "{}",
        stderr(&out)
    );
    // `-o -`: the files as a tar on stdout, the ID on stderr; the options are part of the
    // RUN's cache key (another --add-host runs it again).
    let out = build(&store, &ctx, &["-o", "-", "--add-host", "myhost:10.9.9.9"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).lines().any(|l| l.starts_with("sha256:")),
        "{}",
        stderr(&out)
    );
    let mut untar = std::process::Command::new("tar")
        .args(["-xO", "hosts"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(untar.stdin.as_mut().unwrap(), &out.stdout).unwrap();
    let hosts = untar.wait_with_output().unwrap();
    assert_eq!(stdout(&hosts), "10.9.9.9\tmyhost\n");
    // Bad outputs are named before anything is built.
    for (bad, needle) in [
        ("type=nope,dest=x", "unknown type"),
        ("type=local", "dest=PATH"),
        ("type=registry,name=x", "not supported yet"),
    ] {
        let out = build(&store, &ctx, &["-o", bad]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains(needle), "{bad}: {}", stderr(&out));
    }
}

/// A git repository served read-only over dumb HTTP on 127.0.0.1 (python's http.server).
struct GitServer {
    dir: tempfile::TempDir,
    server: std::process::Child,
    port: u16,
}

impl GitServer {
    fn git(dir: &Path, args: &[&str]) {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .output()
            .expect("git (tests/fixtures/setup.sh installs it)");
        assert!(out.status.success(), "git {args:?}: {}", stderr(&out));
    }

    /// A repository with `top`, `docs/a` ("one", tagged v1) and then `docs/a` = "two".
    fn start() -> GitServer {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir_all(work.join("docs")).unwrap();
        std::fs::write(work.join("top"), "top\n").unwrap();
        std::fs::write(work.join("docs/a"), "one\n").unwrap();
        Self::git(&work, &["init", "-q", "-b", "main"]);
        Self::git(&work, &["add", "."]);
        Self::git(&work, &["commit", "-qm", "one"]);
        Self::git(&work, &["tag", "v1"]);
        std::fs::write(work.join("docs/a"), "two\n").unwrap();
        Self::git(&work, &["commit", "-qam", "two"]);
        let server = GitServer::publish_and_serve(dir.path());
        let (server, port) = server;
        GitServer { dir, server, port }
    }

    fn publish_and_serve(root: &Path) -> (std::process::Child, u16) {
        let _ = std::fs::remove_dir_all(root.join("repo.git"));
        Self::git(root, &["clone", "-q", "--bare", "work", "repo.git"]);
        Self::git(&root.join("repo.git"), &["update-server-info"]);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = std::process::Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(root)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        (server, port)
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/repo.git", self.port)
    }

    /// One more commit on main (`docs/a` = "three"), published.
    fn commit_three(&mut self) {
        let work = self.dir.path().join("work");
        std::fs::write(work.join("docs/a"), "three\n").unwrap();
        Self::git(&work, &["commit", "-qam", "three"]);
        let _ = std::fs::remove_dir_all(self.dir.path().join("repo.git"));
        Self::git(
            self.dir.path(),
            &["clone", "-q", "--bare", "work", "repo.git"],
        );
        Self::git(&self.dir.path().join("repo.git"), &["update-server-info"]);
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

#[test]
fn add_of_a_git_repository_checks_out_refs_and_subdirectories() {
    let Some(base) = busybox() else { return };
    let mut repo = GitServer::start();
    let url = repo.url();
    let store = TestStore::new();
    let ctx = Ctx::new(&format!(
        "FROM {base}\nADD {url} /all\nADD {url}#v1:docs /v1docs\nADD --keep-git-dir {url}#main /withgit\n"
    ));
    build_ok(&store, &ctx, &["-t", "fromgit"]);
    let out = run_in(
        &store,
        "fromgit",
        "cat /all/top /all/docs/a /v1docs/a; test -e /all/.git || echo no-git; test -d /withgit/.git && echo kept; stat -c %Y /all/top",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..5], ["top", "two", "one", "no-git", "kept"], "{out}");
    // Every file carries the commit's time, not the fetch's.
    let work = repo.dir.path().join("work");
    let commit_time = std::process::Command::new("git")
        .arg("-C")
        .arg(&work)
        .args(["log", "-1", "--format=%ct"])
        .output()
        .unwrap();
    assert_eq!(lines[5], stdout(&commit_time).trim());
    // Unchanged: cached; a new commit on main: fetched again.
    let (_, log) = build_ok(&store, &ctx, &["-t", "fromgit"]);
    assert_eq!(log.matches("CACHED").count(), 3, "{log}");
    repo.commit_three();
    build_ok(&store, &ctx, &["-t", "fromgit"]);
    assert_eq!(
        run_in(&store, "fromgit", "cat /all/docs/a /v1docs/a"),
        "three\none\n"
    );
    // Bad references and subdirectories are named.
    for (source, needle) in [
        (format!("{url}#nosuch"), "nosuch"),
        (format!("{url}#main:missing"), "missing"),
        (format!("{url}#main:../x"), "leaves the repository"),
    ] {
        ctx.containerfile(&format!("FROM {base}\nADD {source} /x\n"));
        let out = build(&store, &ctx, &[]);
        assert!(!out.status.success(), "{source}");
        assert!(stderr(&out).contains(needle), "{source}: {}", stderr(&out));
    }
    ctx.containerfile(&format!("FROM {base}\nCOPY {url} /x\n"));
    assert!(stderr(&build(&store, &ctx, &[])).contains("use ADD"));
}

#[test]
fn build_contexts_name_directories_and_images() {
    let Some(base) = busybox() else { return };
    let store = TestStore::new();
    let extra = tempfile::tempdir().unwrap();
    std::fs::create_dir(extra.path().join("conf")).unwrap();
    std::fs::write(extra.path().join("conf/app.conf"), "from-extra\n").unwrap();
    // `base` names an image context: FROM base is the fixture busybox, under another name.
    let ctx = Ctx::new(
        "FROM base\nCOPY --from=extra conf/app.conf /etc/app.conf\nRUN --mount=type=bind,from=extra,target=/x cat /x/conf/app.conf > /seen\n",
    );
    let extra_arg = format!("extra={}", extra.path().display());
    let base_arg = format!("base=docker-image://{base}");
    let args = [
        "-t",
        "ctxs",
        "--build-context",
        &extra_arg,
        "--build-context",
        &base_arg,
    ];
    build_ok(&store, &ctx, &args);
    assert_eq!(
        run_in(&store, "ctxs", "cat /etc/app.conf /seen"),
        "from-extra\nfrom-extra\n"
    );
    // The directory's content is part of the cache key.
    let (_, log) = build_ok(&store, &ctx, &args);
    assert_eq!(log.matches("CACHED").count(), 2, "{log}");
    std::fs::write(extra.path().join("conf/app.conf"), "changed\n").unwrap();
    build_ok(&store, &ctx, &args);
    assert_eq!(run_in(&store, "ctxs", "cat /seen"), "changed\n");
    // A directory context is not an image; bad values are named.
    ctx.containerfile("FROM extra\n");
    let out = build(&store, &ctx, &["--build-context", &extra_arg]);
    assert!(stderr(&out).contains("is a directory"), "{}", stderr(&out));
    for bad in [
        "noequals",
        "x=https://example.com/ctx.tar",
        "x=/no/such/dir",
    ] {
        let out = build(&store, &ctx, &["--build-context", bad]);
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("--build-context"),
            "{bad}: {}",
            stderr(&out)
        );
    }
}

/// The fixture busybox index (amd64 and arm64 binaries), or None (skip outside CI).
fn busybox_multiarch() -> Option<String> {
    support::registry().map(|r| format!("{r}/busybox:multiarch"))
}

/// The host's platform as BuildKit's BUILDPLATFORM names it, and `uname -m` there.
fn host_platform() -> (&'static str, &'static str, &'static str) {
    match std::env::consts::ARCH {
        "aarch64" => ("linux/arm64", "arm64", "aarch64"),
        _ => ("linux/amd64", "amd64", "x86_64"),
    }
}

#[test]
fn platform_arm64_build_runs_under_qemu_with_buildkit_args() {
    let Some(base) = busybox_multiarch() else {
        return;
    };
    let store = TestStore::new();
    // The host's image of the base is in the store already.
    store.ok(&["pull", "-q", &base]);
    let ctx = Ctx::new(&format!(
        r#"FROM {base}
ARG TARGETPLATFORM TARGETOS TARGETARCH TARGETVARIANT BUILDPLATFORM BUILDOS BUILDARCH BUILDVARIANT
RUN uname -m > /arch && echo "$TARGETPLATFORM|$TARGETOS|$TARGETARCH|$TARGETVARIANT|$BUILDPLATFORM|$BUILDOS|$BUILDARCH|$BUILDVARIANT" > /args
"#
    ));
    build_ok(&store, &ctx, &["--platform", "linux/arm64", "-t", "arm"]);
    let (build_platform, build_arch, _) = host_platform();
    assert_eq!(run_in(&store, "arm", "cat /arch"), "aarch64\n");
    assert_eq!(
        run_in(&store, "arm", "cat /args"),
        format!("linux/arm64|linux|arm64||{build_platform}|linux|{build_arch}|\n")
    );
    let config = inspect_config(&store, "arm");
    assert_eq!(config["Architecture"], "arm64", "{config}");
    assert_eq!(config["Os"], "linux", "{config}");
    // The base's name stays on the host's image: a cross build does not change `run base`.
    let base_config = inspect_config(&store, &base);
    assert_eq!(base_config["Architecture"], build_arch, "{base_config}");
}

#[test]
fn platform_from_build_platform_stage_copies_into_an_arm64_stage() {
    let Some(base) = busybox_multiarch() else {
        return;
    };
    let (_, _, host_uname) = host_platform();
    let store = TestStore::new();
    // The BuildKit cross-compile shape: tools run natively, their output goes into the
    // target platform's stage.
    let ctx = Ctx::new(&format!(
        r#"FROM --platform=$BUILDPLATFORM {base} AS tools
ARG TARGETARCH
RUN echo "built on $(uname -m) for $TARGETARCH" > /out
FROM {base}
COPY --from=tools /out /out
RUN echo "runs on $(uname -m)" >> /out
"#
    ));
    build_ok(&store, &ctx, &["--platform", "linux/arm64", "-t", "cross"]);
    assert_eq!(
        run_in(&store, "cross", "cat /out"),
        format!("built on {host_uname} for arm64\nruns on aarch64\n")
    );
    assert_eq!(inspect_config(&store, "cross")["Architecture"], "arm64");
    // A literal FROM --platform in a host build: that stage alone is arm64.
    ctx.containerfile(&format!(
        r#"FROM --platform=linux/arm64 {base} AS arm
RUN uname -m > /arm-uname
FROM {base}
COPY --from=arm /arm-uname /
RUN uname -m > /host-uname
"#
    ));
    build_ok(&store, &ctx, &["-t", "mixed"]);
    assert_eq!(
        run_in(&store, "mixed", "cat /arm-uname /host-uname"),
        format!("aarch64\n{host_uname}\n")
    );
    assert_eq!(
        inspect_config(&store, "mixed")["Architecture"],
        host_platform().1
    );
}

/// A repository of its own on the fixture registry for one test run.
fn unique_platform_repo(registry: &str, what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{registry}/gcr-test-platform/{what}-{}-{nanos}",
        std::process::id()
    )
}

#[test]
fn platform_list_gives_one_index_pushed_saved_and_run_by_podman() {
    let Some(base) = busybox_multiarch() else {
        return;
    };
    let Some(registry) = support::registry() else {
        return;
    };
    let (_, host_arch, host_uname) = host_platform();
    let store = TestStore::new();
    let ctx = Ctx::new(&format!(
        "FROM {base}\nARG TARGETARCH\nRUN echo \"$TARGETARCH $(uname -m)\" > /which\n"
    ));
    let (id, log) = build_ok(
        &store,
        &ctx,
        &["--platform", "linux/amd64,linux/arm64", "-t", "both"],
    );
    assert!(log.contains("building for linux/arm64"), "{log}");
    // The tag is listed once; its ID is the index's digest; run picks the host's image.
    let listed = store.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert_eq!(
        listed.lines().filter(|l| *l == "both:latest").count(),
        1,
        "{listed}"
    );
    assert_eq!(
        run_in(&store, "both", "cat /which"),
        format!("{host_arch} {host_uname}\n")
    );
    assert_eq!(
        run_in(&store, &id, "cat /which"),
        format!("{host_arch} {host_uname}\n")
    );
    // The store's index.json names the index (skopeo reads the layout as is).
    let root = store.root().to_string_lossy().into_owned();
    let raw = |reference: &str, extra: &[&str]| -> serde_json::Value {
        let out = std::process::Command::new("skopeo")
            .args(["inspect", "--raw"])
            .args(extra)
            .arg(reference)
            .output()
            .expect("skopeo");
        assert!(out.status.success(), "skopeo {reference}: {}", stderr(&out));
        serde_json::from_slice(&out.stdout).expect("an index")
    };
    let platforms = |index: &serde_json::Value| -> Vec<String> {
        index["manifests"]
            .as_array()
            .expect("manifests")
            .iter()
            .map(|m| {
                format!(
                    "{}/{}",
                    m["platform"]["os"].as_str().unwrap(),
                    m["platform"]["architecture"].as_str().unwrap()
                )
            })
            .collect()
    };
    let stored = raw(&format!("oci:{root}:docker.io/library/both:latest"), &[]);
    assert_eq!(platforms(&stored), ["linux/amd64", "linux/arm64"]);
    // Push: the index with both manifests.
    let dest = unique_platform_repo(&registry, "both");
    store.ok(&["push", "both", &format!("{dest}:v1")]);
    let pushed = raw(&format!("docker://{dest}:v1"), &["--tls-verify=false"]);
    assert_eq!(
        pushed["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(platforms(&pushed), ["linux/amd64", "linux/arm64"]);
    // Save: an oci-archive holding the index.
    let saved = tempfile::tempdir().unwrap();
    let archive = saved.path().join("both.tar");
    store.ok(&[
        "save",
        "--format",
        "oci-archive",
        "-o",
        archive.to_str().unwrap(),
        "both",
    ]);
    let in_archive = raw(
        &format!(
            "oci-archive:{}:docker.io/library/both:latest",
            archive.display()
        ),
        &[],
    );
    assert_eq!(platforms(&in_archive), ["linux/amd64", "linux/arm64"]);
    // Load: the whole index comes back, under the same ID, every platform runnable.
    let other = TestStore::new();
    other.ok(&["load", "-i", archive.to_str().unwrap()]);
    let inspect_id = |s: &TestStore| s.ok(&["image", "inspect", "--format", "{{.Id}}", "both"]);
    assert_eq!(inspect_id(&other), inspect_id(&store));
    let ids = |s: &TestStore| s.ok(&["images", "--no-trunc", "-q", "both"]);
    assert_eq!(ids(&other), ids(&store));
    let reloaded = raw(
        &format!(
            "oci:{}:docker.io/library/both:latest",
            other.root().display()
        ),
        &[],
    );
    assert_eq!(platforms(&reloaded), ["linux/amd64", "linux/arm64"]);
    assert_eq!(
        other.ok(&[
            "run",
            "--rm",
            "--platform",
            "linux/arm64",
            "both",
            "cat",
            "/which"
        ]),
        "arm64 aarch64\n"
    );
    // Podman, an independent client, runs the arm64 image of the pushed index.
    if support::tool("podman").is_none() {
        return;
    }
    let podman_dir = tempfile::tempdir().unwrap();
    let podman = |args: &[&str]| {
        std::process::Command::new("podman")
            .arg("--root")
            .arg(podman_dir.path().join("root"))
            .arg("--runroot")
            .arg(podman_dir.path().join("run"))
            .args(["--storage-driver", "vfs"])
            .args(args)
            .output()
            .expect("run podman")
    };
    let out = podman(&[
        "run",
        "--rm",
        "--tls-verify=false",
        "--platform",
        "linux/arm64",
        &format!("{dest}:v1"),
        "cat",
        "/which",
    ]);
    let _ = podman(&["rmi", "-a", "-f"]);
    assert!(out.status.success(), "podman run: {}", stderr(&out));
    assert_eq!(stdout(&out), "arm64 aarch64\n");
}

/// A rootless arm64 build: binfmt_misc handlers registered with the F flag run inside gcr's
/// user namespace too.
#[test]
fn platform_rootless_arm64_build_runs_under_qemu() {
    use std::os::unix::fs::PermissionsExt;
    let Some(base) = busybox_multiarch() else {
        return;
    };
    let Some(user) = support::fixture_env("GCR_TEST_USER") else {
        return;
    };
    if !nix::unistd::geteuid().is_root() {
        assert!(
            !support::in_ci(),
            "rootless tests run as root to switch to {user}"
        );
        eprintln!("SKIP: not root, cannot switch to {user}");
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("gcr-rootless-platform-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.path().join("gcr");
    std::fs::copy(support::gcr_bin(), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let ctx = dir.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(
        ctx.join("Containerfile"),
        format!("FROM {base}\nRUN uname -m > /arch\n"),
    )
    .unwrap();
    let store = dir.path().join("store");
    std::fs::create_dir(&store).unwrap();
    assert!(std::process::Command::new("chown")
        .arg(format!("{user}:"))
        .arg(&store)
        .status()
        .unwrap()
        .success());
    let gcr = |args: &[&str]| {
        std::process::Command::new("runuser")
            .args(["-u", &user, "--"])
            .arg(&bin)
            .arg("--root")
            .arg(&store)
            .args(args)
            .current_dir(dir.path())
            .output()
            .expect("runuser gcr")
    };
    let ctx_arg = ctx.to_string_lossy().into_owned();
    let out = gcr(&[
        "build",
        "--platform",
        "linux/arm64",
        "-t",
        "rl-arm",
        &ctx_arg,
    ]);
    assert!(out.status.success(), "rootless build: {}", stderr(&out));
    let out = gcr(&["run", "--rm", "rl-arm", "cat", "/arch"]);
    assert!(out.status.success(), "rootless run: {}", stderr(&out));
    assert_eq!(stdout(&out), "aarch64\n");
}

/// Independent stages build at the same time: each RUN notes when it started and ended
/// (the kernel's uptime, the same in every container) and the last stage says whether the
/// two spans overlap; with `--jobs 1` they do not. Output lines of the stages built side by
/// side carry their step number.
#[test]
fn independent_stages_build_at_once_and_jobs_bounds_them() {
    let Some(base) = busybox() else { return };
    let store = TestStore::new();
    let span = |name: &str| {
        format!(
            "FROM {base} AS {name}\nRUN read start _ < /proc/uptime; echo {name}-started; sleep 2; read end _ < /proc/uptime; echo $start $end > /span\n\n"
        )
    };
    let ctx = Ctx::new(&format!(
        r#"{}{}FROM {base}
COPY --from=one /span /one
COPY --from=two /span /two
RUN set -- $(cat /one /two); awk -v s1=$1 -v e1=$2 -v s2=$3 -v e2=$4 'BEGIN {{ exit !(s1 < e2 && s2 < e1) }}' && echo overlapped > /result || echo one-after-the-other > /result
"#,
        span("one"),
        span("two")
    ));
    let (_, log) = build_ok(&store, &ctx, &["-t", "par:1"]);
    assert_eq!(
        run_in(&store, "par:1", "cat /result"),
        "overlapped\n",
        "{log}"
    );
    // Output of a stage built beside another: `#N line`.
    let numbered = |text: &str| {
        log.lines()
            .any(|l| l.starts_with('#') && l.split_once(' ').map(|(_, r)| r) == Some(text))
    };
    assert!(numbered("one-started"), "{log}");
    assert!(numbered("two-started"), "{log}");
    assert!(log.contains("[one 2/2] RUN read start"), "{log}");
    assert!(log.contains("[stage-2 4/4] RUN set --"), "{log}");
    let (_, log) = build_ok(
        &store,
        &ctx,
        &["--no-cache", "--jobs", "1", "-t", "par:seq"],
    );
    assert_eq!(
        run_in(&store, "par:seq", "cat /result"),
        "one-after-the-other\n",
        "{log}"
    );
}

/// A stage that fails beside others fails the build with its own line and status; the
/// others finish; nothing is tagged and no work directory is left.
#[test]
fn a_failing_parallel_stage_fails_the_build_with_its_line() {
    let Some(base) = busybox() else { return };
    let store = TestStore::new();
    let ctx = Ctx::new(&format!(
        r#"FROM {base} AS slow
RUN sleep 1 && echo slow > /slow

FROM {base} AS broken
RUN echo breaking && exit 7

FROM {base}
COPY --from=slow /slow /slow
COPY --from=broken /bin/busybox /x
"#
    ));
    let out = build(&store, &ctx, &["-t", "parfail:1"]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(
            "Containerfile:5: RUN echo breaking && exit 7: the command exited with status 7"
        ),
        "{err}"
    );
    let step = err
        .lines()
        .find(|l| l.ends_with("[broken 2/2] RUN echo breaking && exit 7"))
        .and_then(|l| l.split_once(' '))
        .map(|(n, _)| n.to_string())
        .unwrap_or_else(|| panic!("no step line for the broken RUN: {err}"));
    assert!(
        err.lines().any(|l| l == format!("{step} breaking")),
        "{err}"
    );
    assert!(store.run(&["image", "inspect", "parfail:1"]).status.code() != Some(0));
    let leftovers: Vec<_> = std::fs::read_dir(store.root().join("tmp"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "left in tmp: {leftovers:?}");
}

/// Two machines building the same context for two platforms with SOURCE_DATE_EPOCH get the
/// same index digest (and so the same manifest per platform); RUN of the foreign one too.
#[test]
fn multi_platform_build_is_reproducible_across_stores() {
    let Some(base) = busybox_multiarch() else {
        return;
    };
    let ctx = Ctx::new(&format!(
        "FROM {base}\nCOPY f /f\nARG TARGETARCH\nRUN echo $TARGETARCH $(uname -m) > /which && touch /h\n"
    ));
    ctx.write("f", "content\n");
    let mut ids = Vec::new();
    for round in 0..2 {
        let when = if round == 0 {
            "2024-01-02 03:04:05"
        } else {
            "2025-06-07 08:09:10"
        };
        touch(&ctx.path().join("f"), when);
        let store = TestStore::new();
        let out = store
            .gcr()
            .args([
                "build",
                "--no-cache",
                "--platform",
                "linux/amd64,linux/arm64",
                "-t",
                "repro",
            ])
            .arg(ctx.path())
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        ids.push(stdout(&out).trim().to_string());
        assert_eq!(
            store.ok(&[
                "run",
                "--rm",
                "--platform",
                "linux/arm64",
                "repro",
                "cat",
                "/which"
            ]),
            "arm64 aarch64\n"
        );
    }
    assert!(ids[0].starts_with("sha256:"), "{ids:?}");
    assert_eq!(ids[0], ids[1]);
}

/// Outputs of a two-platform build: type=local writes a directory per platform (BuildKit's
/// os_arch names), type=oci an archive holding the index; type=tar is refused before any
/// work, by name.
#[test]
fn outputs_of_a_multi_platform_build() {
    let Some(base) = busybox_multiarch() else {
        return;
    };
    let store = TestStore::new();
    let ctx = Ctx::new(&format!(
        "FROM {base}\nARG TARGETARCH\nRUN echo $TARGETARCH > /which\n"
    ));
    let out_dir = tempfile::tempdir().unwrap();
    let local = out_dir.path().join("local");
    let archive = out_dir.path().join("both.oci.tar");
    build_ok(
        &store,
        &ctx,
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "-o",
            &format!("type=local,dest={}", local.display()),
            "-o",
            &format!(
                "type=oci,dest={},name=example.com/both:1",
                archive.display()
            ),
        ],
    );
    for arch in ["amd64", "arm64"] {
        let which = std::fs::read_to_string(local.join(format!("linux_{arch}/which"))).unwrap();
        assert_eq!(which, format!("{arch}\n"));
        assert!(local.join(format!("linux_{arch}/bin/busybox")).exists());
    }
    let out = std::process::Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!(
            "oci-archive:{}:example.com/both:1",
            archive.display()
        ))
        .output()
        .expect("skopeo");
    assert!(out.status.success(), "{}", stderr(&out));
    let index: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let archs: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(archs, ["amd64", "arm64"]);
    let out = build(
        &store,
        &ctx,
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "-o",
            &format!("type=tar,dest={}", out_dir.path().join("x.tar").display()),
        ],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--output type=tar with several platforms is not supported yet"),
        "{}",
        stderr(&out)
    );
    assert!(
        !stderr(&out).contains("RUN"),
        "refused before building: {}",
        stderr(&out)
    );
}

/// A repository of its own on the fixture registry for a cache test.
fn unique_cache_ref(registry: &str, what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{registry}/gcr-test-cache/{what}:{}-{nanos}",
        std::process::id()
    )
}

/// Two stages: the builder's RUN writes a random value and a big blob only it keeps.
fn cache_ctx(base: &str) -> Ctx {
    let ctx = Ctx::new(&format!(
        "FROM {base} AS builder\nCOPY a.txt /a.txt\nRUN head -c 16 /dev/urandom | od -x > /rand && head -c 300000 /dev/urandom > /big\n\
         FROM {base}\nCOPY --from=builder /rand /rand\nCOPY a.txt /b.txt\nRUN cat /rand /b.txt > /out\n"
    ));
    ctx.write("a.txt", "one\n");
    ctx
}

fn steps_cached(log: &str) -> (usize, usize) {
    let cached = log.lines().filter(|l| l.ends_with(" CACHED")).count();
    let done = log.lines().filter(|l| l.contains(" DONE ")).count();
    (cached, done)
}

#[test]
fn registry_cache_max_rebuilds_on_an_empty_store_without_running() {
    let Some(base) = busybox() else { return };
    let Some(registry) = support::registry() else {
        return;
    };
    let cache = unique_cache_ref(&registry, "max");
    let first = TestStore::new();
    let ctx = cache_ctx(&base);
    let to = format!("type=registry,ref={cache},mode=max");
    let (id1, log) = build_ok(&first, &ctx, &["--cache-to", &to, "-t", "one"]);
    assert!(log.contains("exported cache to"), "{log}");
    assert!(log.contains("5 layers (mode=max)"), "{log}");
    let out1 = run_in(&first, "one", "cat /out");
    // An empty store: every step CACHED, no RUN ran (the random value is the first one).
    let fresh = TestStore::new();
    let from = format!("type=registry,ref={cache}");
    let (id2, log) = build_ok(&fresh, &ctx, &["--cache-from", &from, "-t", "two"]);
    assert_eq!(steps_cached(&log), (5, 0), "{log}");
    assert_eq!(id1, id2, "{log}");
    assert_eq!(run_in(&fresh, "two", "cat /out"), out1);
    // Only what the image needs was pulled: the builder's layers (its 300 kB blob) were not.
    let pulled = log
        .lines()
        .filter(|l| l.contains("pulling cached layer"))
        .count();
    assert_eq!(pulled, 3, "{log}");
    // A changed context file: that COPY and what follows run again.
    ctx.write("a.txt", "two\n");
    let other = TestStore::new();
    let (_, log) = build_ok(&other, &ctx, &["--cache-from", &from]);
    assert!(
        log.contains("[builder 2/3] COPY a.txt /a.txt\n#2 exporting layer"),
        "{log}"
    );
    assert!(
        !log.contains("[builder 2/3] COPY a.txt /a.txt\n#2 CACHED"),
        "{log}"
    );
}

#[test]
fn registry_cache_min_keeps_only_the_result_chain() {
    let Some(base) = busybox() else { return };
    let Some(registry) = support::registry() else {
        return;
    };
    let cache = unique_cache_ref(&registry, "min");
    let first = TestStore::new();
    let ctx = cache_ctx(&base);
    let (_, log) = build_ok(
        &first,
        &ctx,
        &["--cache-to", &format!("type=registry,ref={cache}")],
    );
    assert!(log.contains("3 records, 3 layers (mode=min)"), "{log}");
    // The final stage is cached; the builder's steps are not in a min cache, so they run.
    let fresh = TestStore::new();
    let (_, log) = build_ok(
        &fresh,
        &ctx,
        &["--cache-from", &format!("type=registry,ref={cache}")],
    );
    assert!(
        log.contains("[stage-1 4/4] RUN cat /rand /b.txt > /out\n#7 CACHED"),
        "{log}"
    );
}

#[test]
fn inline_cache_in_a_pushed_image_is_used_by_cache_from_image() {
    let Some(base) = busybox() else { return };
    let Some(registry) = support::registry() else {
        return;
    };
    let image = unique_cache_ref(&registry, "inline");
    let first = TestStore::new();
    let ctx = Ctx::new(&format!(
        "FROM {base}\nCOPY a.txt /a.txt\nRUN head -c 16 /dev/urandom | od -x > /rand\n"
    ));
    ctx.write("a.txt", "inline\n");
    let (id1, _) = build_ok(&first, &ctx, &["--cache-to", "type=inline", "-t", &image]);
    first.ok(&["push", &image]);
    let rand1 = run_in(&first, &image, "cat /rand");
    let fresh = TestStore::new();
    let (id2, log) = build_ok(
        &fresh,
        &ctx,
        &["--cache-from", &image, "--cache-to", "type=inline"],
    );
    assert_eq!(steps_cached(&log), (2, 0), "{log}");
    // The same image, inline cache included.
    assert_eq!(id1, id2);
    assert_eq!(run_in(&fresh, &id2, "cat /rand"), rand1);
    // BuildKit's build arg does the same.
    let other = TestStore::new();
    let (id3, _) = build_ok(&other, &ctx, &["--build-arg", "BUILDKIT_INLINE_CACHE=1"]);
    let raw = std::fs::read_to_string(
        other
            .root()
            .join("blobs/sha256")
            .join(id3.trim_start_matches("sha256:")),
    )
    .unwrap();
    assert!(raw.contains("moby.buildkit.cache.v0"), "{raw}");
}

#[test]
fn missing_cache_sources_warn_and_bad_specs_fail() {
    let Some(base) = busybox() else { return };
    let Some(registry) = support::registry() else {
        return;
    };
    let store = TestStore::new();
    let ctx = Ctx::new(&format!("FROM {base}\nRUN echo hi > /hi\n"));
    let missing = unique_cache_ref(&registry, "missing");
    let from = format!("type=registry,ref={missing}");
    let (_, log) = build_ok(&store, &ctx, &["--cache-from", &from]);
    assert!(
        log.contains(&format!("WARNING: cache {missing} is not used")),
        "{log}"
    );
    // An image without inline cache: a warning that says how to make one.
    let (_, log) = build_ok(&store, &ctx, &["--cache-from", &base]);
    assert!(log.contains("has no inline cache metadata"), "{log}");
    assert!(log.contains("--cache-to type=inline"), "{log}");
    // An unreachable registry for --cache-to is an error naming the ref.
    let out = build(
        &store,
        &ctx,
        &["--cache-to", "type=registry,ref=127.0.0.1:9/none:x"],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("127.0.0.1:9/none:x"),
        "{}",
        stderr(&out)
    );
    let out = build(&store, &ctx, &["--cache-to", "type=gha"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("type=gha is not supported yet"),
        "{}",
        stderr(&out)
    );
}

/// The steps of stages built side by side (in worker processes) reach a mode=max cache too:
/// on an empty store every step of both is CACHED.
#[test]
fn registry_cache_max_holds_the_steps_of_parallel_stages() {
    let Some(base) = busybox() else { return };
    let Some(registry) = support::registry() else {
        return;
    };
    let cache = unique_cache_ref(&registry, "parallel");
    let ctx = Ctx::new(&format!(
        "FROM {base} AS one\nRUN head -c 16 /dev/urandom | od -x > /one\n\nFROM {base} AS two\nRUN head -c 16 /dev/urandom | od -x > /two\n\nFROM {base}\nCOPY --from=one /one /one\nCOPY --from=two /two /two\n"
    ));
    let first = TestStore::new();
    let (id1, log) = build_ok(
        &first,
        &ctx,
        &["--cache-to", &format!("type=registry,ref={cache},mode=max")],
    );
    assert!(log.contains("4 layers (mode=max)"), "{log}");
    let fresh = TestStore::new();
    let (id2, log) = build_ok(
        &fresh,
        &ctx,
        &["--cache-from", &format!("type=registry,ref={cache}")],
    );
    assert_eq!(steps_cached(&log), (4, 0), "{log}");
    assert_eq!(id1, id2, "{log}");
}

/// The step counter the workers share lives in a work dir of its own: a scratch stage built
/// beside another still has an empty root.
#[test]
fn a_scratch_stage_built_beside_another_stays_empty() {
    let Some(base) = busybox() else { return };
    let store = TestStore::new();
    let ctx = Ctx::new(&format!(
        "FROM {base} AS one\nRUN echo one > /one\n\nFROM scratch AS nothing\nENV X=1\n\nFROM {base}\nCOPY --from=one /one /one\nCOPY --from=nothing / /nothing/\nRUN ls -A /nothing > /listing\n"
    ));
    build_ok(&store, &ctx, &["-t", "scratchpar"]);
    assert_eq!(run_in(&store, "scratchpar", "cat /listing"), "");
}
