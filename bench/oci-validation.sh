#!/usr/bin/env bash
# OCI runtime conformance: runs the opencontainers/runtime-tools validation suite (built by
# tests/fixtures/runtime-tools.sh) against several runc-compatible runtimes and compares them.
#
# Usage: sudo bash bench/oci-validation.sh [--tap DIR] [--timeout SECS] [--only REGEX] [RUNTIME...]
#   RUNTIME      paths of runtimes (default: /usr/sbin/runc /usr/bin/crun and gcr-oci:
#                $GCR_OCI, else $REPO/target/release/gcr-oci if it exists, else target/debug)
#   --tap DIR    keep each test's output: DIR/<runtime>/<test>.tap (stdout) and .err (stderr)
#   --timeout S  per test and runtime (default 60 s); a test that runs out is TIMEOUT (FAIL)
#   --only RE    run only the tests whose names match the extended regex RE
#
# Each test is one binary (validation/<name> -> <name>.t), run as root with RUNTIME=<path>, in the
# cache directory (it finds runtimetest and rootfs-<arch>.tar.gz there), with TMPDIR set to a
# fresh directory so its bundles (ocitest*) are known and leftovers can be removed.
# Cells: ok/total TAP assertions (ok counts "ok" lines, SKIPs included; total is the plan, or the
# lines seen when the test died before its plan; a test that prints several TAP streams, as
# linux_cgroups_cpus does, gets the sum of their plans) and PASS or FAIL for the test: PASS needs exit
# 0, a plan that matches the lines seen and no "not ok" (TODO ones excepted). Tests that assert
# nothing (the hook tests print "1..0" and a YAML diagnostic with "error" when the runtime fails
# them; process_rlimits_fail and process_capabilities_fail print no TAP when the runtime rightly
# refuses the config) PASS when they exit 0 without such an "error". SKIP (not counted as
# passing): every assertion was a SKIP.
# A runtime that is not there is reported ("not built" for gcr-oci, "missing" otherwise) and
# skipped; the script never fails because of a runtime.
#
# Env: GCR_OCI=/path/to/gcr-oci, GCR_FIXTURES_CACHE (default /var/cache/gcr-fixtures).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${GCR_FIXTURES_CACHE:-/var/cache/gcr-fixtures}"
RT_DIR="$CACHE/runtime-tools"
TAP_DIR=""
TIMEOUT=60
ONLY=""
RUNTIMES=()

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2; }

while [ "$#" -gt 0 ]; do
    case "$1" in
    --tap)
        TAP_DIR=${2:?--tap needs a directory}
        shift 2
        ;;
    --timeout)
        TIMEOUT=${2:?--timeout needs seconds}
        shift 2
        ;;
    --only)
        ONLY=${2:?--only needs a regex}
        shift 2
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    --)
        shift
        RUNTIMES+=("$@")
        break
        ;;
    -*)
        usage
        exit 2
        ;;
    *)
        RUNTIMES+=("$1")
        shift
        ;;
    esac
done
[[ $TIMEOUT =~ ^[1-9][0-9]*$ ]] || {
    echo "--timeout: want whole seconds, got '$TIMEOUT'" >&2
    exit 2
}
[ "$(id -u)" -eq 0 ] || {
    echo "bench/oci-validation.sh must run as root: sudo bash bench/oci-validation.sh" >&2
    exit 1
}

if [ "${#RUNTIMES[@]}" -eq 0 ]; then
    gcr_oci=${GCR_OCI:-}
    if [ -z "$gcr_oci" ]; then
        target=${CARGO_TARGET_DIR:-$REPO/target}
        if [ -x "$target/release/gcr-oci" ]; then
            gcr_oci="$target/release/gcr-oci"
        else
            gcr_oci="$target/debug/gcr-oci"
        fi
    fi
    RUNTIMES=(/usr/sbin/runc /usr/bin/crun "$gcr_oci")
fi

bash "$REPO/tests/fixtures/runtime-tools.sh"

TESTS=()
for f in "$RT_DIR"/*.t; do
    [ -x "$f" ] || continue
    n=$(basename "$f" .t)
    if [ -n "$ONLY" ] && ! [[ $n =~ $ONLY ]]; then
        continue
    fi
    TESTS+=("$n")
done
[ "${#TESTS[@]}" -gt 0 ] || {
    echo "no validation tests in $RT_DIR${ONLY:+ matching \"$ONLY\"}" >&2
    exit 1
}

# Column names (basename; made unique) and availability.
NAMES=() STATUS=()
for rt in "${RUNTIMES[@]}"; do
    name=$(basename "$rt")
    for other in "${NAMES[@]}"; do
        if [ "$other" = "$name" ]; then
            name="$name#${#NAMES[@]}"
            break
        fi
    done
    NAMES+=("$name")
    if [ -x "$rt" ] && [ -f "$rt" ]; then
        STATUS+=(ok)
        echo "runtime $name: $rt ($("$rt" --version 2>/dev/null | head -n1 || true))" >&2
    elif [ "$(basename "$rt")" = gcr-oci ]; then
        STATUS+=("not built")
        echo "runtime $name: $rt not built" >&2
    else
        STATUS+=(missing)
        echo "runtime $name: $rt missing" >&2
    fi
done
if grep -qs ' /sys/fs/cgroup/unified cgroup2 ' /proc/mounts && [ ! -d /sys/fs/cgroup/hugetlb ]; then
    echo "note: hybrid cgroups with hugetlb on cgroup2: crun refuses containers; try" \
        "GCR_FIXTURES_CRUN_HUGETLB=1 bash tests/fixtures/setup.sh" >&2
fi

# Unmounts everything mounted under DIR (deepest first). A container without a mount namespace
# (linux_ns_itype drops every namespace) gets its /proc, /dev, /sys mounted on the bundle in the
# host's namespace, and neither the runtime's delete nor the test removes them.
unmount_under() {
    local dir=$1 m
    awk -v d="$dir/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
        while read -r m; do
            umount -l "$m" 2>/dev/null || true
        done
}

# Removes DIR without crossing into a file system mounted below it.
remove_dir() {
    unmount_under "$1"
    rm -rf --one-file-system "$1" 2>/dev/null || echo "warning: could not remove all of $1" >&2
}

# Removes the cgroups the tests name (cgroups.AbsCgroupPath /cgrouptest and the parents of
# RelCgroupPath testdir/cgrouptest/container) once empty: runtimes remove only the leaf, and a
# cgroup left behind would carry one runtime's settings into the next one's run.
remove_test_cgroups() {
    local h
    for h in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
        [ -d "$h/testdir" ] || [ -d "$h/cgrouptest" ] || continue
        rmdir "$h/testdir/cgrouptest/container" "$h/testdir/cgrouptest" "$h/testdir" "$h/cgrouptest" 2>/dev/null || true
    done
}

WORK=$(mktemp -d /tmp/oci-validation.XXXXXX)
# Searchable by all, like /tmp: a container in a user namespace (linux_uid_mappings,
# linux_ns_nopath) must reach its bundle through these directories.
chmod 755 "$WORK"
cleanup_work() { remove_dir "$WORK"; }
trap cleanup_work EXIT
[ -z "$TAP_DIR" ] || mkdir -p "$TAP_DIR"

# Force-deletes containers of RUNTIME whose bundle is under DIR (a killed test leaves them).
reap() {
    local rt=$1 dir=$2 id
    "$rt" list --format json 2>/dev/null |
        jq -r --arg d "$dir/" '.[]? | select((.bundle // "") | startswith($d)) | .id' 2>/dev/null |
        while read -r id; do
            if [ -n "$id" ]; then
                "$rt" delete --force "$id" >/dev/null 2>&1 || true
            fi
        done || true # a runtime without `list` (or a broken one) must not end the run
}

# Prints "ok total verdict" for one TAP output: see the header.
tap_summary() {
    local out=$1 rc=$2
    awk -v rc="$rc" '
        /^1\.\.[0-9]+/ { plan += substr($1, 4) + 0; has_plan = 1; next }
        /^ok( |$)/ { ok++; seen++; if ($0 ~ /# *[Ss][Kk][Ii][Pp]/) skip++; next }
        /^not ok( |$)/ { seen++; if ($0 !~ /# *[Tt][Oo][Dd][Oo]/) bad++; next }
        /^TAP version/ { tap = 1; next }
        /^ +"error": / { diag_error = 1; next }
        END {
            total = has_plan ? plan : seen
            if (seen > total) total = seen
            verdict = (rc == 0 && has_plan && seen == plan && bad == 0) ? "PASS" : "FAIL"
            if (rc == 0 && seen == 0) {
                # The hook tests assert nothing: they print a YAML "error" when the runtime
                # fails them. The *_fail tests print nothing at all and pass by exiting 0.
                verdict = diag_error ? "FAIL" : "PASS"
                if (!tap) verdict = "PASS"
            } else if (verdict == "PASS" && skip == seen) {
                verdict = "SKIP"
            }
            if (rc == 124 || rc == 137) verdict = "TIMEOUT"
            printf "%d %d %s\n", ok, total, verdict
        }' "$out"
}

declare -A CELL
PASSED=() SKIPPED=() OKSUM=() TOTSUM=()
for i in "${!NAMES[@]}"; do
    PASSED[i]=0 SKIPPED[i]=0 OKSUM[i]=0 TOTSUM[i]=0
done

for t in "${TESTS[@]}"; do
    for i in "${!RUNTIMES[@]}"; do
        rt=${RUNTIMES[i]}
        if [ "${STATUS[i]}" != ok ]; then
            CELL[$t,$i]=${STATUS[i]}
            continue
        fi
        tmp="$WORK/tmp.$i.$t"
        mkdir -m 755 "$tmp"
        out="$WORK/$i.$t.tap" err="$WORK/$i.$t.err"
        rc=0
        (cd "$RT_DIR" && TMPDIR="$tmp" RUNTIME="$rt" timeout -k 5 "$TIMEOUT" "./$t.t" >"$out" 2>"$err" </dev/null) || rc=$?
        reap "$rt" "$tmp"
        remove_dir "$tmp"
        remove_test_cgroups
        read -r ok total verdict < <(tap_summary "$out" "$rc")
        CELL[$t,$i]="$ok/$total $verdict"
        [ "$verdict" = PASS ] && PASSED[i]=$((PASSED[i] + 1))
        [ "$verdict" = SKIP ] && SKIPPED[i]=$((SKIPPED[i] + 1))
        OKSUM[i]=$((OKSUM[i] + ok)) TOTSUM[i]=$((TOTSUM[i] + total))
        if [ -n "$TAP_DIR" ]; then
            mkdir -p "$TAP_DIR/${NAMES[i]}"
            cp "$out" "$TAP_DIR/${NAMES[i]}/$t.tap"
            cp "$err" "$TAP_DIR/${NAMES[i]}/$t.err"
            [ "$rc" = 0 ] || echo "[oci-validation] exit status $rc" >>"$TAP_DIR/${NAMES[i]}/$t.err"
        fi
        rm -f "$out" "$err"
        printf '%-34s %-10s %s\n' "$t" "${NAMES[i]}" "${CELL[$t,$i]}" >&2
    done
done

# The table.
w=34
printf '\n%-*s' "$w" test
for n in "${NAMES[@]}"; do printf ' %-16s' "$n"; done
printf '\n'
for t in "${TESTS[@]}"; do
    printf '%-*s' "$w" "$t"
    for i in "${!NAMES[@]}"; do printf ' %-16s' "${CELL[$t,$i]}"; done
    printf '\n'
done
printf '%-*s' "$w" "assertions ok/total"
for i in "${!NAMES[@]}"; do
    if [ "${STATUS[i]}" = ok ]; then
        printf ' %-16s' "${OKSUM[i]}/${TOTSUM[i]}"
    else
        printf ' %-16s' "${STATUS[i]}"
    fi
done
printf '\n'
line="tests passing (of ${#TESTS[@]}):"
sep=" "
for i in "${!NAMES[@]}"; do
    if [ "${STATUS[i]}" = ok ]; then
        line+="$sep${NAMES[i]} ${PASSED[i]}"
        [ "${SKIPPED[i]}" = 0 ] || line+=" (+${SKIPPED[i]} skipped)"
    else
        line+="$sep${NAMES[i]} ${STATUS[i]}"
    fi
    sep=", "
done
printf '%s\n' "$line"
