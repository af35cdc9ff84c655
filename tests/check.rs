//! End-to-end tests: `gcr build --check [-f FILE] [CONTEXT]` parses and plans a
//! Containerfile without reading the context or pulling anything; exit 0 when valid, 1 with
//! `file:line:column: message`, the line, a caret and a hint when not.

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;

use support::{stderr, stdout, TestStore};

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures-dockerfiles")
}

fn check(store: &TestStore, args: &[&str]) -> Output {
    let mut all = vec!["build", "--check"];
    all.extend_from_slice(args);
    store.run(&all)
}

fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

#[test]
fn official_style_dockerfiles_are_valid() {
    let store = TestStore::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .unwrap_or_else(|e| panic!("read fixtures: {e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "Dockerfile"))
        .collect();
    files.sort();
    assert!(files.len() >= 11, "fixtures missing: {files:?}");
    // The context does not exist: --check must not read it.
    let context = store.root().join("no-such-context");
    for file in &files {
        let file_arg = file.to_string_lossy();
        let out = check(&store, &["-f", &file_arg, &context.to_string_lossy()]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}:\nstdout: {}\nstderr: {}",
            file.display(),
            stdout(&out),
            stderr(&out)
        );
        assert!(
            stderr(&out).trim().is_empty(),
            "{}: {}",
            file.display(),
            stderr(&out)
        );
        assert!(stdout(&out).contains(": ok"), "{}", stdout(&out));
    }
}

#[test]
fn containerfile_is_found_in_the_context() {
    let store = TestStore::new();
    let context = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    write(
        context.path(),
        "Containerfile",
        "FROM alpine\nRUN echo hi\n",
    );
    let out = check(&store, &[&context.path().to_string_lossy()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn errors_are_positioned_with_line_caret_and_hint() {
    let store = TestStore::new();
    let context = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let file = write(
        context.path(),
        "Containerfile",
        "FROM alpine AS base\n  FORM alpine\nCOPY --from=later /a /b\nFROM alpine AS later\n",
    );
    let out = check(
        &store,
        &[
            "-f",
            &file.to_string_lossy(),
            &context.path().to_string_lossy(),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    let name = file.to_string_lossy();
    assert!(
        err.contains(&format!(
            "{name}:2:3: unknown instruction: FORM\n 2 |   FORM alpine\n   |   ^\n  hint: did you mean FROM?"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{name}:3:6: COPY --from=later refers to a later stage (defined on line 4)"
        )),
        "{err}"
    );
}

#[test]
fn build_args_and_target() {
    let store = TestStore::new();
    let context = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let file = write(
        context.path(),
        "Containerfile",
        "ARG BASE\nFROM ${BASE} AS build\nRUN make\nFROM scratch AS final\nCOPY --from=build /out /\n",
    );
    let file_arg = file.to_string_lossy().into_owned();
    let ctx = context.path().to_string_lossy().into_owned();

    let out = check(&store, &["-f", &file_arg, &ctx]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(":2:6: base name (${BASE}) should not be blank"),
        "{}",
        stderr(&out)
    );

    let out = check(
        &store,
        &["-f", &file_arg, "--build-arg", "BASE=alpine:3.20", &ctx],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let out = check(
        &store,
        &[
            "-f",
            &file_arg,
            "--build-arg",
            "BASE=alpine",
            "--target",
            "build",
            &ctx,
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let out = check(
        &store,
        &[
            "-f",
            &file_arg,
            "--build-arg",
            "BASE=alpine",
            "--target",
            "test",
            &ctx,
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(
            "target stage \"test\" could not be found\n  hint: named stages: build, final"
        ),
        "{}",
        stderr(&out)
    );
}

#[test]
fn empty_and_unterminated_files_fail() {
    let store = TestStore::new();
    let context = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let ctx = context.path().to_string_lossy().into_owned();
    let empty = write(context.path(), "Empty", "# nothing here\n");
    let out = check(&store, &["-f", &empty.to_string_lossy(), &ctx]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(":1:1: file with no instructions"),
        "{}",
        stderr(&out)
    );

    let heredoc = write(
        context.path(),
        "Heredoc",
        "FROM alpine\nRUN <<EOF\necho hi\n",
    );
    let out = check(&store, &["-f", &heredoc.to_string_lossy(), &ctx]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(":2:1: unterminated heredoc EOF"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn missing_containerfile_is_a_clear_error() {
    let store = TestStore::new();
    let context = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let out = check(&store, &[&context.path().to_string_lossy()]);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("Containerfile"), "{}", stderr(&out));
}
