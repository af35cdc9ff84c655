#!/usr/bin/env bash
# Pull benchmark (not a test): `gcr pull` vs `podman pull` vs the floor `tar -xzf` of the same
# layer, for debian:bookworm from the local fixture registry into empty stores, on tmpfs and on
# disk, interleaved (A B C A B C ...), `sync` before each run. Prints medians, ratios and peak
# RSS (/usr/bin/time -v). Targets (issue 2): on tmpfs gcr <= 0.5x podman and <= 1.0x tar;
# gcr peak RSS <= 64 MiB.
#
# Usage: sudo bash bench/pull.sh [ROUNDS]          (default 5 rounds)
# Env:   GCR=/path/to/gcr   (default: target/release/gcr, built with cargo if missing)
#        BENCH_TOOLS="gcr podman tar"   BENCH_MEDIA="tmpfs disk"
#        BENCH_REF=127.0.0.1:5000/debian:bookworm
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FIX="$REPO/tests/fixtures"
CACHE="${GCR_FIXTURES_CACHE:-/var/cache/gcr-fixtures}"
ROUNDS="${1:-5}"
read -r -a TOOLS <<<"${BENCH_TOOLS:-gcr podman tar}"
read -r -a MEDIA <<<"${BENCH_MEDIA:-tmpfs disk}"
REF="${BENCH_REF:-127.0.0.1:5000/debian:bookworm}"

[ "$(id -u)" -eq 0 ] || {
    echo "bench/pull.sh must run as root (it mounts a tmpfs and starts registries): sudo bash bench/pull.sh" >&2
    exit 1
}
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || {
    echo "ROUNDS must be a positive number, not '$ROUNDS'" >&2
    exit 2
}

if [[ " ${TOOLS[*]} " == *" gcr "* ]]; then
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

WORK=$(mktemp -d /var/tmp/gcr-bench.XXXXXX)
TMPFS="$WORK/tmpfs"
STARTED_REGISTRIES=0
cleanup() {
    set +e
    for d in "$WORK"/*/*; do
        umount_below "$d"
    done
    mountpoint -q "$TMPFS" && umount "$TMPFS"
    rm -rf "$WORK"
    if [ "$STARTED_REGISTRIES" = 1 ]; then
        bash "$FIX/registry.sh" stop
    fi
}
# podman's overlay driver may leave mounts in its store; unmount them before deleting.
umount_below() {
    local m
    awk -v p="$1/" 'index($2, p) == 1 { print $2 }' /proc/self/mounts | sort -r | while read -r m; do
        umount -l "$m" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "== fixtures" >&2
bash "$FIX/setup.sh"
if ! bash "$FIX/registry.sh" status >/dev/null 2>&1; then
    STARTED_REGISTRIES=1
fi
bash "$FIX/registry.sh" start
bash "$FIX/images.sh"

# The layer blob of the same image, for the tar floor.
LAYER=$(python3 - "$CACHE/oci/debian" <<'EOF'
import json, sys
root = sys.argv[1]
index = json.load(open(f"{root}/index.json"))
desc = next(m for m in index["manifests"] if m["annotations"]["org.opencontainers.image.ref.name"] == "bookworm")
blob = lambda d: f"{root}/blobs/sha256/{d.split(':')[1]}"
manifest = json.load(open(blob(desc["digest"])))
print(blob(manifest["layers"][0]["digest"]))
EOF
)
echo "== layer $(basename "$LAYER") ($(du -h "$LAYER" | cut -f1) gzip)" >&2

mkdir -p "$TMPFS" "$WORK/disk"
mount -t tmpfs -o size=8g,mode=755 gcr-bench "$TMPFS"
[ "$(stat -f -c %T "$WORK/disk")" != tmpfs ] || echo "warning: $WORK/disk is on tmpfs; the disk figures are not disk figures" >&2

RESULTS="$WORK/results.tsv"
: >"$RESULTS"

run_one() { # run_one MEDIUM TOOL ROUND
    local medium=$1 tool=$2 round=$3 base dir
    case $medium in
    tmpfs) base=$TMPFS ;;
    disk) base=$WORK/disk ;;
    esac
    dir="$base/$tool-$round"
    mkdir -p "$dir"
    local cmd=()
    case $tool in
    gcr) cmd=("$GCR" --root "$dir/store" pull -q "$REF") ;;
    podman)
        mkdir -p "$dir/tmp"
        cmd=(env TMPDIR="$dir/tmp" podman --root "$dir/storage" --runroot "$dir/run"
            --storage-driver overlay pull -q "$REF")
        ;;
    tar)
        mkdir -p "$dir/rootfs"
        cmd=(tar -xzf "$LAYER" -C "$dir/rootfs" --numeric-owner)
        ;;
    esac
    sync
    local t0 t1 rc=0
    t0=$(date +%s%N)
    /usr/bin/time -v -o "$WORK/time.txt" "${cmd[@]}" >/dev/null 2>"$WORK/stderr.txt" || rc=$?
    t1=$(date +%s%N)
    local rss
    rss=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$WORK/time.txt")
    if [ "$rc" -ne 0 ]; then
        echo "   $medium $tool round $round: FAILED (exit $rc): $(tail -n 3 "$WORK/stderr.txt" | tr '\n' ' ')" >&2
        printf '%s\t%s\t%s\tfail\t%s\n' "$medium" "$tool" "$round" "${rss:-0}" >>"$RESULTS"
    else
        local secs
        secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
        echo "   $medium $tool round $round: ${secs}s, peak RSS $((${rss:-0} / 1024)) MiB" >&2
        printf '%s\t%s\t%s\t%s\t%s\n' "$medium" "$tool" "$round" "$secs" "${rss:-0}" >>"$RESULTS"
    fi
    umount_below "$dir"
    rm -rf "$dir"
}

echo "== $ROUNDS rounds of: ${TOOLS[*]} on ${MEDIA[*]} ($REF)" >&2
for round in $(seq 1 "$ROUNDS"); do
    for medium in "${MEDIA[@]}"; do
        for tool in "${TOOLS[@]}"; do
            run_one "$medium" "$tool" "$round"
        done
    done
done

python3 - "$RESULTS" <<'EOF'
import statistics, sys
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1]) if line.strip()]
data = {}
for medium, tool, _round, secs, rss in rows:
    d = data.setdefault((medium, tool), {"t": [], "rss": [], "fail": 0})
    if secs == "fail":
        d["fail"] += 1
    else:
        d["t"].append(float(secs))
        d["rss"].append(int(rss) / 1024)
media = list(dict.fromkeys(m for m, _ in data))
tools = list(dict.fromkeys(t for _, t in data))
print(f"\n{'medium':<7} {'tool':<7} {'runs':>4} {'median s':>9} {'min s':>7} {'max s':>7} {'peak RSS MiB':>13}")
med = {}
for m in media:
    for t in tools:
        d = data.get((m, t))
        if not d:
            continue
        if d["t"]:
            med[(m, t)] = statistics.median(d["t"])
            print(f"{m:<7} {t:<7} {len(d['t']):>4} {med[(m, t)]:>9.3f} {min(d['t']):>7.3f} "
                  f"{max(d['t']):>7.3f} {max(d['rss']):>13.1f}"
                  + (f"   ({d['fail']} failed)" if d["fail"] else ""))
        else:
            print(f"{m:<7} {t:<7} {0:>4}   all {d['fail']} runs failed")
print()
for m in media:
    parts = []
    for a, b in (("gcr", "podman"), ("gcr", "tar"), ("podman", "tar")):
        if (m, a) in med and (m, b) in med:
            parts.append(f"{a}/{b} = {med[(m, a)] / med[(m, b)]:.2f}x")
    if parts:
        print(f"{m}: " + ", ".join(parts))
print("targets: tmpfs gcr/podman <= 0.50x, tmpfs gcr/tar <= 1.00x, gcr peak RSS <= 64 MiB")
EOF
