//! Shared helpers for the end-to-end tests of the `gcr` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Path of the `gcr` binary cargo built for these tests.
pub fn gcr_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gcr"))
}

/// A throw-away store root; removed (as root, so subuid-owned files go too) on drop.
pub struct TestStore {
    pub dir: tempfile::TempDir,
}

impl TestStore {
    pub fn new() -> TestStore {
        let dir = tempfile::Builder::new()
            .prefix("gcr-test-store-")
            .tempdir()
            .expect("create temp store dir");
        TestStore { dir }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// A `gcr` command using this store.
    pub fn gcr(&self) -> Command {
        let mut cmd = Command::new(gcr_bin());
        cmd.arg("--root").arg(self.root());
        cmd
    }

    /// Runs `gcr ARGS` on this store and returns the output.
    pub fn run(&self, args: &[&str]) -> Output {
        self.gcr().args(args).output().expect("spawn gcr")
    }

    /// Runs `gcr ARGS`, asserts success and returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "gcr {:?} failed with {:?}\nstdout: {}\nstderr: {}",
            args,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// True when running in CI, where a missing prerequisite is a failure, not a skip.
pub fn in_ci() -> bool {
    std::env::var("CI").map(|v| v == "true").unwrap_or(false)
}

/// Reads a fixture variable set by tests/run.sh. Outside CI a missing variable skips the
/// calling test (returns None after saying so); in CI it fails the test.
pub fn fixture_env(name: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            if in_ci() {
                panic!("{name} is not set: run the tests through `bash tests/run.sh`");
            }
            eprintln!("SKIP: {name} is not set (run the tests through `bash tests/run.sh`)");
            None
        }
    }
}

/// The plain-HTTP fixture registry (host:port), or None (skip) outside CI.
pub fn registry() -> Option<String> {
    fixture_env("GCR_TEST_REGISTRY")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A command-line tool a test needs (installed by tests/fixtures/setup.sh), or None: the
/// calling test skips outside CI and fails in CI.
pub fn tool(name: &str) -> Option<()> {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if found {
        return Some(());
    }
    assert!(!in_ci(), "{name} is missing: run tests/fixtures/setup.sh");
    eprintln!("SKIP: {name} is missing (tests/fixtures/setup.sh installs it)");
    None
}
