#!/usr/bin/env bash
# The one test command: sudo bash tests/run.sh [extra cargo test args...]
# (e.g. `-p gcr-storage`, `--test pull`, `-- --nocapture`; GCR_SKIP_LINT=1 skips fmt/clippy
# outside CI)
# Sets up the machine (tests/fixtures/setup.sh), starts the fixture registries and a private
# containerd, pushes the fixture images, then runs tests/architecture.sh (crate arrows, unsafe
# confinement, file sizes), cargo fmt --check, cargo clippy -D warnings and cargo test with
# the fixture environment (tests/fixtures/env.sh), then tests/oci-validation.sh (gcr-oci
# against the OCI validation suite). Fails when any step fails.
# The registries and containerd it starts are stopped when it exits, however it exits.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO" || exit 1
FIX="$REPO/tests/fixtures"
CACHE="${GCR_FIXTURES_CACHE:-/var/cache/gcr-fixtures}"

section() { printf '\n==== %s ====\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
    echo "tests/run.sh must run as root (it installs packages and starts registries): sudo bash tests/run.sh" >&2
    exit 1
fi

# sudo resets PATH: find the invoking user's (or root's) rustup toolchain.
if ! command -v cargo >/dev/null 2>&1; then
    for dir in "${CARGO_HOME:-}/bin" "$HOME/.cargo/bin" \
        "$(getent passwd "${SUDO_USER:-root}" | cut -d: -f6)/.cargo/bin" /root/.cargo/bin; do
        if [ -x "$dir/cargo" ]; then
            PATH="$dir:$PATH"
            break
        fi
    done
fi
command -v cargo >/dev/null 2>&1 || {
    echo "cargo not found: install Rust (rustup) or put cargo on PATH" >&2
    exit 1
}

# One run at a time on a machine: runs share the registries on fixed ports. Children get
# the lock descriptor closed (9>&-) so nothing they leave behind can hold it.
mkdir -p "$CACHE"
exec 9>"$CACHE/.run.lock"
if ! flock -n 9; then
    echo "another tests/run.sh is running on this machine; waiting for it (up to 1 h)" >&2
    flock -w 3600 9 || {
        echo "gave up waiting for the other tests/run.sh" >&2
        exit 1
    }
fi

RESULTS=()
FAILED=0
record() { # record NAME STATUS
    if [ "$2" -eq 0 ]; then
        RESULTS+=("ok      $1")
    else
        RESULTS+=("FAILED  $1 (exit $2)")
        FAILED=1
    fi
}
summary() {
    section "summary"
    printf '%s\n' "${RESULTS[@]}"
    if [ "$FAILED" -ne 0 ]; then
        echo "tests/run.sh: FAILED"
    else
        echo "tests/run.sh: all steps ok"
    fi
}

section "setup (tests/fixtures/setup.sh)"
bash "$FIX/setup.sh" 9>&-
rc=$?
record setup $rc
if [ $rc -ne 0 ]; then
    summary
    exit 1
fi

section "registries (tests/fixtures/registry.sh start)"
# Registries a developer started by hand before this run stay up; the ones started here
# are stopped on exit. In CI they are always stopped.
STOP_REGISTRIES=1
if [ "${CI:-}" != true ] && bash "$FIX/registry.sh" status >/dev/null 2>&1; then
    STOP_REGISTRIES=0
    echo "registries were already running; leaving them running after the tests"
fi
STOP_CONTAINERD=0
cleanup() {
    if [ "$STOP_REGISTRIES" = 1 ]; then
        bash "$FIX/registry.sh" stop 9>&-
    fi
    if [ "$STOP_CONTAINERD" = 1 ]; then
        bash "$FIX/containerd.sh" stop 9>&- >/dev/null
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
bash "$FIX/registry.sh" start 9>&-
rc=$?
record registries $rc
if [ $rc -ne 0 ]; then
    summary
    exit 1
fi

section "containerd (tests/fixtures/containerd.sh start)"
# A private containerd for the OCI runtime tests (ctr run --runc-binary gcr-oci); like the
# registries, one a developer started stays up, in CI it is always stopped.
if [ "${CI:-}" = true ] || ! bash "$FIX/containerd.sh" status >/dev/null 2>&1; then
    STOP_CONTAINERD=1
fi
GCR_TEST_CONTAINERD=$(bash "$FIX/containerd.sh" start 9>&-)
rc=$?
record containerd $rc
if [ $rc -ne 0 ]; then
    summary
    exit 1
fi
export GCR_TEST_CONTAINERD

section "images (tests/fixtures/images.sh)"
bash "$FIX/images.sh" 9>&-
rc=$?
record images $rc
if [ $rc -ne 0 ]; then
    summary
    exit 1
fi

# shellcheck source=tests/fixtures/env.sh
source "$FIX/env.sh" || exit 1
section "fixture environment"
for v in GCR_TEST_REGISTRY GCR_TEST_TLS_REGISTRY GCR_TEST_TLS_USER GCR_TEST_TLS_CA \
    GCR_TEST_USER GCR_TEST_FIXTURES GCR_TEST_CONTAINERD; do
    echo "$v=${!v}"
done
echo "GCR_TEST_TLS_PASSWORD=(set, ${#GCR_TEST_TLS_PASSWORD} characters)"
echo "CI=${CI:-}"

section "architecture (tests/architecture.sh)"
bash "$REPO/tests/architecture.sh" 9>&-
record "architecture" $?

# GCR_SKIP_LINT=1 skips fmt and clippy for a quick local run (never in CI).
if [ "${GCR_SKIP_LINT:-0}" = 1 ] && [ "${CI:-}" != true ]; then
    RESULTS+=("skipped cargo fmt, cargo clippy (GCR_SKIP_LINT=1)")
else
    section "cargo fmt --all -- --check"
    cargo fmt --all -- --check 9>&-
    record "cargo fmt" $?

    section "cargo clippy --workspace --all-targets -- -D warnings"
    cargo clippy --workspace --all-targets -- -D warnings 9>&-
    record "cargo clippy" $?
fi

# `cargo test --workspace -p X` would still test everything: drop --workspace when the
# caller names packages.
SCOPE=(--workspace)
for arg in "$@"; do
    case $arg in
    --) break ;;
    -p | -p* | --package | --package=*) SCOPE=() ;;
    esac
done
section "cargo test ${SCOPE[*]} $*"
cargo test --no-fail-fast "${SCOPE[@]}" "$@" 9>&-
record "cargo test" $?

# gcr-oci against the OCI runtime-tools validation suite: what runc passes here must pass.
# Part of the whole run only (not when the caller names packages or tests).
if [ "${#SCOPE[@]}" -gt 0 ] && [ "$#" -eq 0 ]; then
    section "OCI validation (tests/oci-validation.sh)"
    cargo build -q --bin gcr-oci 9>&- && bash "$REPO/tests/oci-validation.sh" 9>&-
    record "OCI validation" $?
fi

summary
exit "$FAILED"
