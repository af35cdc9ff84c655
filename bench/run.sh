#!/usr/bin/env bash
# Run benchmark (not a test): how long one short-lived container takes, end to end.
#   gcr:    gcr run --rm --network none IMAGE true            (image already in gcr's store)
#   crun:   crun run of a prepared bundle (busybox rootfs, /bin/true, pid/net/ipc/uts/mount/
#           cgroup namespaces): the floor, no image handling at all
#   podman: podman run --rm --network=none IMAGE true          (image already pulled)
#   gcr-tmpfs: gcr as above with its store on a tmpfs: shows what the store's disk work
#           (fsync, creating and deleting the container's directories on ext4) costs
#   gcr-slirp, gcr-pasta: rootless gcr (as $BENCH_USER, default gcrtest) with a private
#           network by slirp4netns and by pasta: which of the two starts faster (issue 12)
# Interleaved (gcr crun podman gcr crun podman ...), wall time of each invocation, medians and
# ratios. Targets (issue 4): gcr <= 2x crun, gcr <= 0.1x podman.
#
# Usage: sudo bash bench/run.sh [ROUNDS]                    (default 30 rounds)
# Env:   GCR=/path/to/gcr (default: $CARGO_TARGET_DIR or target, release build, built if missing)
#        BENCH_TOOLS="gcr crun podman gcr-tmpfs gcr-slirp gcr-pasta"
#        BENCH_REF=127.0.0.1:5000/busybox:latest   BENCH_USER=gcrtest
#
# Rootless private network, measured 2026-12-07 (15 rounds, release gcr, this 2-core VM):
# gcr-slirp 43.8 ms, gcr-pasta 45.4 ms -> pasta/slirp 1.04x: pasta does not start faster
# here, so slirp4netns stays the rootless default and pasta is `--network pasta`.
# Measured 2026-12-07 (10 rounds, idle machine, after the gcr-containers move): gcr 10.7 ms,
# crun 16.3 ms, podman 148 ms, gcr on tmpfs 9.0 ms -> 0.66x crun, 0.07x podman.
# Measured 2026-11-24 on the 2-core Debian 12 VM, release gcr, medians of 30 interleaved
# rounds: gcr 7.3 ms, crun 15.2 ms, podman 136 ms, gcr with its store on tmpfs 7.7 ms ->
# gcr/crun 0.48x (target <= 2), gcr/podman 0.05x (target <= 0.1). (An earlier run with other
# builds on the machine: gcr 12.1 ms, crun 21.2 ms, podman 325 ms.) Before
# `--rm` containers skipped the record's fsync and left the deletion of their upper dir to a
# detached child, the store's ext4 work made gcr 53 ms (1.40x crun, 0.12x podman).
#
# crun refuses this machine's hybrid cgroup layout until hugetlb has a v1 hierarchy of its own;
# the script makes that change (as tests/fixtures/setup.sh does with GCR_FIXTURES_CRUN_HUGETLB=1)
# when crun is benchmarked and says so.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FIX="$REPO/tests/fixtures"
ROUNDS="${1:-30}"
read -r -a TOOLS <<<"${BENCH_TOOLS:-gcr crun podman gcr-tmpfs gcr-slirp gcr-pasta}"
BENCH_USER="${BENCH_USER:-gcrtest}"
REF="${BENCH_REF:-127.0.0.1:5000/busybox:latest}"

[ "$(id -u)" -eq 0 ] || {
    echo "bench/run.sh must run as root: sudo bash bench/run.sh" >&2
    exit 1
}
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || {
    echo "ROUNDS must be a positive number, not '$ROUNDS'" >&2
    exit 2
}
has_tool() { [[ " ${TOOLS[*]} " == *" $1 "* ]]; }

if has_tool gcr || has_tool gcr-tmpfs || has_tool gcr-slirp || has_tool gcr-pasta; then
    if [ -z "${GCR:-}" ]; then
        GCR="${CARGO_TARGET_DIR:-$REPO/target}/release/gcr"
        if [ ! -x "$GCR" ]; then
            echo "== building gcr (release)" >&2
            (cd "$REPO" && cargo build --release -q --bin gcr)
        fi
    fi
    [ -x "$GCR" ] || {
        echo "no gcr binary at $GCR (set GCR=/path/to/gcr)" >&2
        exit 1
    }
fi

WORK=$(mktemp -d /var/tmp/gcr-bench-run.XXXXXX)
STARTED_REGISTRY=0
cleanup() {
    set +e
    mountpoint -q "$WORK/tmpfs" && umount "$WORK/tmpfs"
    rm -rf "$WORK"
    [ "$STARTED_REGISTRY" = 1 ] && bash "$FIX/registry.sh" stop
}
trap cleanup EXIT

# The fixture registry holds busybox (pushed by tests/fixtures/images.sh).
if ! curl -fsS "http://${REF%%/*}/v2/" >/dev/null 2>&1; then
    echo "== starting the fixture registry" >&2
    bash "$FIX/registry.sh" start >&2
    STARTED_REGISTRY=1
    bash "$FIX/images.sh" >&2
fi

# A busybox rootfs for the crun bundle, the same bytes as the image's layer.
make_rootfs() {
    local root=$1 applet
    mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp}
    cp /bin/busybox "$root/bin/busybox"
    for applet in $(/bin/busybox --list-full); do
        [ "$applet" = bin/busybox ] || ln -sf /bin/busybox "$root/$applet"
    done
}

if has_tool gcr-tmpfs; then
    mkdir -p "$WORK/tmpfs"
    mount -t tmpfs tmpfs "$WORK/tmpfs"
    GCR_TMPFS_ROOT="$WORK/tmpfs/gcr-store"
    "$GCR" --root "$GCR_TMPFS_ROOT" pull -q "$REF" >/dev/null
    "$GCR" --root "$GCR_TMPFS_ROOT" run --rm --network none "$REF" true
fi
if has_tool gcr; then
    GCR_ROOT="$WORK/gcr-store"
    "$GCR" --root "$GCR_ROOT" pull -q "$REF" >/dev/null
    "$GCR" --root "$GCR_ROOT" run --rm --network none "$REF" true
fi
if has_tool gcr-slirp || has_tool gcr-pasta; then
    id -u "$BENCH_USER" >/dev/null 2>&1 || {
        echo "no user $BENCH_USER for the rootless cases: run tests/fixtures/setup.sh or set BENCH_USER" >&2
        exit 1
    }
    # The rootless user's own copy of the binary and store (the work dir is root's).
    RL="$WORK/rootless"
    mkdir -p "$RL"
    cp "$GCR" "$RL/gcr"
    chown -R "$BENCH_USER" "$RL"
    chmod 755 "$WORK"
    rootless_gcr() { runuser -u "$BENCH_USER" -- "$RL/gcr" --root "$RL/store" "$@"; }
    rootless_gcr pull -q "$REF" >/dev/null
    for n in slirp4netns pasta; do rootless_gcr run --rm --network "$n" "$REF" true; done
fi
if has_tool crun; then
    if crun --version >/dev/null 2>&1 && ! mountpoint -q /sys/fs/cgroup/hugetlb &&
        grep -qw hugetlb /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null; then
        echo "== moving hugetlb to its own v1 hierarchy so crun accepts the hybrid layout" >&2
        mkdir -p /sys/fs/cgroup/hugetlb
        mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb
    fi
    BUNDLE="$WORK/bundle"
    make_rootfs "$BUNDLE/rootfs"
    (cd "$BUNDLE" && crun spec)
    python3 - "$BUNDLE/config.json" <<'EOF'
import json, sys
path = sys.argv[1]
c = json.load(open(path))
c["process"]["args"] = ["/bin/true"]
c["process"]["terminal"] = False
ns = c["linux"]["namespaces"]
if not any(n["type"] == "cgroup" for n in ns):
    ns.append({"type": "cgroup"})
json.dump(c, open(path, "w"))
EOF
    crun run --bundle "$BUNDLE" gcr-bench-warmup
fi
if has_tool podman; then
    podman pull -q "$REF" >/dev/null
    podman run --rm --network=none "$REF" true
fi

now_ns() { date +%s%N; }
declare -A SAMPLES
for tool in "${TOOLS[@]}"; do SAMPLES[$tool]=""; done

for ((i = 1; i <= ROUNDS; i++)); do
    for tool in "${TOOLS[@]}"; do
        start=$(now_ns)
        case $tool in
        gcr) "$GCR" --root "$GCR_ROOT" run --rm --network none "$REF" true ;;
        gcr-tmpfs) "$GCR" --root "$GCR_TMPFS_ROOT" run --rm --network none "$REF" true ;;
        gcr-slirp) rootless_gcr run --rm --network slirp4netns "$REF" true ;;
        gcr-pasta) rootless_gcr run --rm --network pasta "$REF" true ;;
        crun) crun run --bundle "$BUNDLE" "gcr-bench-$i" ;;
        podman) podman run --rm --network=none "$REF" true ;;
        *)
            echo "unknown tool $tool" >&2
            exit 2
            ;;
        esac
        end=$(now_ns)
        SAMPLES[$tool]+="$(((end - start) / 1000)) "
    done
done

median_us() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2)}'; }

echo
echo "run benchmark: $ROUNDS rounds, interleaved, median wall time per container"
declare -A MED
for tool in "${TOOLS[@]}"; do
    MED[$tool]=$(median_us "${SAMPLES[$tool]}")
    printf '  %-10s %8.2f ms\n' "$tool" "$(awk -v u="${MED[$tool]}" 'BEGIN{print u/1000}')"
done
if has_tool gcr; then
    for other in crun podman; do
        has_tool "$other" || continue
        ratio=$(awk -v a="${MED[gcr]}" -v b="${MED[$other]}" 'BEGIN{printf "%.2f", a/b}')
        target=$([ "$other" = crun ] && echo "<= 2.0" || echo "<= 0.1")
        echo "  gcr/$other = ${ratio}x   (target $target)"
    done
fi
if has_tool gcr-tmpfs && has_tool crun; then
    ratio=$(awk -v a="${MED[gcr-tmpfs]}" -v b="${MED[crun]}" 'BEGIN{printf "%.2f", a/b}')
    echo "  gcr-tmpfs/crun = ${ratio}x   (the store on tmpfs)"
fi
if has_tool gcr-slirp && has_tool gcr-pasta; then
    ratio=$(awk -v a="${MED[gcr-pasta]}" -v b="${MED[gcr-slirp]}" 'BEGIN{printf "%.2f", a/b}')
    echo "  gcr-pasta/gcr-slirp = ${ratio}x   (rootless private network; < 1 would make pasta the better default)"
fi
