#!/usr/bin/env bash
# Test (run by tests/run.sh after cargo test): gcr-oci passes every OCI runtime-tools
# validation test that runc passes on this machine. Both runtimes run the tests runc is known
# to pass here (the list in bench/oci-validation.md, kept below), in one run of
# bench/oci-validation.sh; a test runc fails on this machine is not held against gcr-oci, one
# runc passes and gcr-oci fails fails this script. The full comparison of all 58 tests (and
# crun) is `bash bench/oci-validation.sh`.
#
# Usage: sudo bash tests/oci-validation.sh [GCR_OCI]   (default: target/debug/gcr-oci)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
GCR_OCI="${1:-${GCR_OCI:-${CARGO_TARGET_DIR:-$REPO/target}/debug/gcr-oci}}"
RUNC="$(command -v runc || true)"

[ -x "$GCR_OCI" ] || {
    echo "oci-validation: no gcr-oci at $GCR_OCI (cargo build --bin gcr-oci)" >&2
    exit 1
}
[ -n "$RUNC" ] || {
    echo "oci-validation: runc is missing (apt install runc; tests/fixtures/setup.sh does)" >&2
    exit 1
}
GCR_OCI="$(cd "$(dirname "$GCR_OCI")" && pwd)/$(basename "$GCR_OCI")"

# What runc 1.1.5 passes here (bench/oci-validation.md, 2026-12-07).
RUNC_PASSES=(
    config_updates_without_affect create default delete_only_create_resources delete_resources
    hostname kill kill_no_effect killsig linux_cgroups_cpus linux_cgroups_hugetlb
    linux_cgroups_pids linux_cgroups_relative_cpus linux_cgroups_relative_hugetlb
    linux_cgroups_relative_pids linux_devices linux_masked_paths linux_ns_itype linux_ns_nopath
    linux_ns_path linux_ns_path_type linux_readonly_paths linux_sysctl linux_uid_mappings mounts
    poststop prestart_fail process process_oom_score_adj process_rlimits_fail process_user
    root_readonly_true state
)
only="^($(
    IFS='|'
    echo "${RUNC_PASSES[*]}"
))\$"

out=$(mktemp)
trap 'rm -f "$out"' EXIT
if ! bash "$REPO/bench/oci-validation.sh" --only "$only" "$RUNC" "$GCR_OCI" | tee "$out"; then
    echo "oci-validation: bench/oci-validation.sh stopped early; judging what it printed" >&2
fi

# The summary table on stdout: "<test> <ok>/<total> <verdict> <ok>/<total> <verdict>", the
# columns in the order of the runtimes given (runc, then gcr-oci).
declare -A RESULT
while read -r test _ runc_verdict _ gcr_verdict; do
    RESULT["$test/runc"]=$runc_verdict
    RESULT["$test/gcr-oci"]=$gcr_verdict
done < <(awk 'NF == 5 && $2 ~ /^[0-9]+\/[0-9]+$/ && $4 ~ /^[0-9]+\/[0-9]+$/' "$out")

checked=0
failed=0
for test in "${RUNC_PASSES[@]}"; do
    [ "${RESULT[$test/runc]:-}" = PASS ] || continue
    checked=$((checked + 1))
    if [ "${RESULT[$test/gcr-oci]:-}" != PASS ]; then
        echo "oci-validation: $test passes with runc but not with gcr-oci (${RESULT[$test/gcr-oci]:-no result})" >&2
        failed=$((failed + 1))
    fi
done
[ "$checked" -gt 0 ] || {
    echo "oci-validation: runc passed none of its usual tests here: the suite did not run" >&2
    exit 1
}
echo "oci-validation: $((checked - failed))/$checked of the tests runc passes here pass with gcr-oci"
[ "$failed" -eq 0 ]
