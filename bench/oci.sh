#!/usr/bin/env bash
# OCI runtime benchmark (not a test): `create` + `start` + `delete` of one busybox bundle
# (/bin/true; pid, net, ipc, uts, mount namespaces), the way containerd's shim and conmon
# drive a runtime, for gcr-oci, crun and runc in one run. Interleaved rounds, wall time of
# the three commands together (the container's exit is waited for between start and delete),
# medians and ratios. Target (issue 10): gcr-oci <= crun.
#
# Usage: sudo bash bench/oci.sh [ROUNDS]                    (default 30)
# Env:   GCR_OCI=/path/to/gcr-oci (default: target/release/gcr-oci, built if missing)
#        BENCH_RUNTIMES="gcr-oci crun runc"
#
# crun refuses this machine's hybrid cgroup layout until hugetlb has a v1 hierarchy of its
# own; the script makes that change (as bench/run.sh does) when crun is benchmarked.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROUNDS="${1:-30}"
read -r -a RUNTIMES <<<"${BENCH_RUNTIMES:-gcr-oci crun runc}"

[ "$(id -u)" -eq 0 ] || {
    echo "bench/oci.sh must run as root: sudo bash bench/oci.sh" >&2
    exit 1
}
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || {
    echo "ROUNDS must be a positive number, not '$ROUNDS'" >&2
    exit 2
}

if [ -z "${GCR_OCI:-}" ]; then
    GCR_OCI="${CARGO_TARGET_DIR:-$REPO/target}/release/gcr-oci"
    if [ ! -x "$GCR_OCI" ]; then
        echo "== building gcr-oci (release)" >&2
        (cd "$REPO" && cargo build --release -q --bin gcr-oci)
    fi
fi

binary_of() {
    case $1 in
    gcr-oci) echo "$GCR_OCI" ;;
    crun) command -v crun ;;
    runc) command -v runc ;;
    *)
        echo "unknown runtime $1" >&2
        exit 2
        ;;
    esac
}

WORK=$(mktemp -d /var/tmp/gcr-bench-oci.XXXXXX)
cleanup() {
    set +e
    for rt in "${RUNTIMES[@]}"; do
        for dir in "$WORK/state-$rt"/*/; do
            [ -d "$dir" ] && "$(binary_of "$rt")" --root "$WORK/state-$rt" delete --force "$(basename "$dir")" >/dev/null 2>&1
        done
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

if [[ " ${RUNTIMES[*]} " == *" crun "* ]] && ! mountpoint -q /sys/fs/cgroup/hugetlb &&
    grep -qw hugetlb /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null; then
    echo "== moving hugetlb to its own v1 hierarchy so crun accepts the hybrid layout" >&2
    mkdir -p /sys/fs/cgroup/hugetlb
    mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb
fi

BUNDLE="$WORK/bundle"
mkdir -p "$BUNDLE/rootfs"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp}
cp /bin/busybox "$BUNDLE/rootfs/bin/busybox"
for applet in $(/bin/busybox --list-full); do
    [ "$applet" = bin/busybox ] || ln -sf /bin/busybox "$BUNDLE/rootfs/$applet"
done
(cd "$BUNDLE" && runc spec)
python3 - "$BUNDLE/config.json" <<'EOF'
import json, sys
path = sys.argv[1]
c = json.load(open(path))
c["process"]["args"] = ["/bin/true"]
c["process"]["terminal"] = False
json.dump(c, open(path, "w"))
EOF

# One container's life as a shim drives it; the container's exit is polled with `state`.
cycle() { # cycle RUNTIME ID
    local bin root
    bin=$(binary_of "$1")
    root="$WORK/state-$1"
    "$bin" --root "$root" create --bundle "$BUNDLE" "$2" </dev/null >/dev/null
    "$bin" --root "$root" start "$2"
    while "$bin" --root "$root" state "$2" | grep -q '"running"'; do :; done
    "$bin" --root "$root" delete "$2"
}

for rt in "${RUNTIMES[@]}"; do
    cycle "$rt" "warmup-$rt"
done

now_ns() { date +%s%N; }
declare -A SAMPLES
for rt in "${RUNTIMES[@]}"; do SAMPLES[$rt]=""; done
for ((i = 1; i <= ROUNDS; i++)); do
    for rt in "${RUNTIMES[@]}"; do
        start=$(now_ns)
        cycle "$rt" "bench-$i"
        end=$(now_ns)
        SAMPLES[$rt]+="$(((end - start) / 1000)) "
    done
done

median_us() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2)}'; }

echo
echo "OCI runtime benchmark: $ROUNDS rounds, interleaved, median of create+start+delete"
declare -A MED
for rt in "${RUNTIMES[@]}"; do
    MED[$rt]=$(median_us "${SAMPLES[$rt]}")
    printf '  %-8s %8.2f ms\n' "$rt" "$(awk -v u="${MED[$rt]}" 'BEGIN{print u/1000}')"
done
if [[ " ${RUNTIMES[*]} " == *" gcr-oci "* ]]; then
    for other in crun runc; do
        [[ " ${RUNTIMES[*]} " == *" $other "* ]] || continue
        ratio=$(awk -v a="${MED[gcr-oci]}" -v b="${MED[$other]}" 'BEGIN{printf "%.2f", a/b}')
        target=$([ "$other" = crun ] && echo "  (target <= 1.0)" || echo "")
        echo "  gcr-oci/$other = ${ratio}x$target"
    done
fi
