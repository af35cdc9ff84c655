#!/usr/bin/env bash
# Build benchmark (not a test): `gcr build` vs `buildah build --layers` of the same Containerfile
# (a 2000-file COPY, a RUN writing 50 MiB, a RUN deleting part of it) on the local fixture
# busybox image, interleaved (gcr buildah gcr buildah ...), `sync` before each run:
#   cold:   --no-cache (base image already present in both stores)
#   cached: an unchanged rebuild
#   build1g: --no-cache build of one RUN writing 1 GiB of incompressible data (RUN + commit)
#   commit: the commit alone of that RUN's 1 GiB upper dir: for gcr the time of the build's
#           "exporting layer ... done" line, for Buildah the wall time of `buildah commit` of a
#           working container where `buildah run` wrote the same data (the RUN is ~4 s of
#           /dev/urandom in both and says nothing about committing)
#   parallel: --no-cache build of three independent stages each with a 1 s RUN, then a stage
#           copying from all three (Buildah with --jobs 3; its default is one stage at a time)
#   cachefrom: `gcr build --cache-from type=registry,ref=R` on an empty store (every step CACHED,
#           its layers pulled) vs `gcr pull` of the built image (the same layers and base) on an
#           empty store; target (issue 13): at most the pull plus 10% (<= 1.10x)
#   Measured 2026-12-08 (release gcr, 5 rounds): rebuild 1.32 s vs pull 1.08 s (1.22x; rounds
#           1.10x-1.48x), NOT within the target yet (a first version with one child per layer
#           was 2.21x). What is left over a pull: a child `gcr pull` of the base, a child
#           `__cache-fetch`, the hash of the 2000-file context for the COPY key; fetching the
#           cache config while the base is pulled is the next step. Buildah is not compared
#           (not tried offline here yet).
# Prints medians and ratios. Targets (issue 5): cold <= 0.5x Buildah, cached <= 0.1x Buildah,
# commit 3x Buildah's throughput (<= 0.33x its time). Issue 13: parallel well under 3 s.
#
# Measured 2026-11-24 (2-core VM, release gcr, buildah 1.28, medians of 3 rounds): cold 0.45 s vs
# 2.70 s (0.17x), cached 0.024 s vs 0.40 s (0.06x), build1g 6.2 s vs 20.7 s (0.30x), commit
# 3.5 s vs 14.5 s (0.24x: 4.1x Buildah's throughput).
#
# Measured 2026-12-08 (same VM, release gcr, buildah 1.28 --jobs 3, medians of 3): parallel
# 1.04 s vs 2.04 s (0.51x); cold that run 0.77 s vs 2.97 s (0.26x).
#
# Usage: bash bench/build.sh [ROUNDS]    (as root; default 3 rounds)
# Env:   GCR=/path/to/gcr (default: target/release/gcr, built if missing)
#        BENCH_CASES="cold cached build1g commit parallel cachefrom"
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FIX="$REPO/tests/fixtures"
ROUNDS="${1:-3}"
read -r -a CASES <<<"${BENCH_CASES:-cold cached build1g commit parallel cachefrom}"
CACHEFROM=0
for i in "${!CASES[@]}"; do
    if [ "${CASES[$i]}" = cachefrom ]; then CACHEFROM=1; unset 'CASES[i]'; fi
done
CASES=("${CASES[@]}")
[ "$(id -u)" -eq 0 ] || { echo "bench/build.sh must run as root" >&2; exit 1; }
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "ROUNDS must be a positive number" >&2; exit 2; }
command -v buildah >/dev/null || { echo "buildah missing: run tests/fixtures/setup.sh" >&2; exit 1; }

if [ -z "${GCR:-}" ]; then
    GCR="${CARGO_TARGET_DIR:-$REPO/target}/release/gcr"
    [ -x "$GCR" ] || (cd "$REPO" && cargo build --release -q --bin gcr)
fi

bash "$FIX/registry.sh" start >/dev/null
bash "$FIX/images.sh" >/dev/null
BASE=127.0.0.1:5000/busybox:latest

WORK=$(mktemp -d /var/tmp/gcr-bench-build-XXXXXX)
STORE="$WORK/store"
cleanup() {
    rm -rf "$WORK"
    [ -z "$BENCH_CTR" ] || buildah rm "$BENCH_CTR" >/dev/null 2>&1 || true
    buildah rmi -f localhost/bench-build localhost/bench-commit localhost/bench-parallel >/dev/null 2>&1 || true
}
BENCH_CTR=
trap cleanup EXIT

# The build context: 2000 small files in 20 directories.
CTX="$WORK/context"
mkdir -p "$CTX/files"
for d in $(seq 1 20); do
    mkdir -p "$CTX/files/d$d"
    for f in $(seq 1 100); do
        printf 'file %s/%s\n' "$d" "$f" >"$CTX/files/d$d/f$f"
    done
done
cat >"$CTX/Containerfile" <<EOF
FROM $BASE
COPY files /files
RUN dd if=/dev/urandom of=/blob bs=1M count=50 2>/dev/null && mkdir /scratch && cp /blob /scratch/copy
RUN rm -rf /files/d1 /files/d2 /scratch
EOF
COMMIT_CTX="$WORK/commit"
mkdir -p "$COMMIT_CTX"
BIG_RUN='dd if=/dev/urandom of=/big bs=1M count=1024 2>/dev/null'
cat >"$COMMIT_CTX/Containerfile" <<EOF
FROM $BASE
RUN $BIG_RUN
EOF

PAR_CTX="$WORK/parallel"
mkdir -p "$PAR_CTX"
{
    for s in one two three; do
        printf 'FROM %s AS %s\nRUN sleep 1 && echo %s > /%s\n\n' "$BASE" "$s" "$s" "$s"
    done
    printf 'FROM %s\nCOPY --from=one /one /\nCOPY --from=two /two /\nCOPY --from=three /three /\n' "$BASE"
} >"$PAR_CTX/Containerfile"

"$GCR" --root "$STORE" pull -q "$BASE" >/dev/null
buildah pull --tls-verify=false -q "$BASE" >/dev/null

now() { date +%s.%N; }
declare -A TIMES
LAST=
run_case() { # run_case CASE TOOL
    local case=$1 tool=$2 start end ctx=$CTX tag=localhost/bench-build flags=() buildah_flags=() out
    case $case in
    parallel) flags=(--no-cache); ctx=$PAR_CTX; tag=localhost/bench-parallel; buildah_flags=(--jobs 3) ;;
    cold) flags=(--no-cache) ;;
    cached) ;;
    build1g | commit) flags=(--no-cache); ctx=$COMMIT_CTX; tag=localhost/bench-commit ;;
    esac
    sync
    if [ "$case" = commit ]; then
        if [ "$tool" = gcr ]; then
            out=$("$GCR" --root "$STORE" build "${flags[@]}" -t "$tag" "$ctx" 2>&1)
            LAST=$(sed -n 's/^#[0-9]* exporting layer .* \([0-9.]*\)s done$/\1/p' <<<"$out")
            [ -n "$LAST" ] || { echo "no 'exporting layer' line in gcr's output:" >&2; echo "$out" >&2; exit 1; }
        else
            BENCH_CTR=$(buildah from --tls-verify=false -q "$BASE")
            buildah run --network none "$BENCH_CTR" -- sh -c "$BIG_RUN" >/dev/null
            start=$(now)
            buildah commit -q "$BENCH_CTR" "$tag" >/dev/null
            end=$(now)
            buildah rm "$BENCH_CTR" >/dev/null
            BENCH_CTR=
            LAST=$(echo "$end - $start" | bc)
        fi
        TIMES[$case,$tool]+="$LAST "
        return
    fi
    start=$(now)
    if [ "$tool" = gcr ]; then
        "$GCR" --root "$STORE" build -q "${flags[@]}" -t "$tag" "$ctx" >/dev/null 2>&1
    else
        buildah build --layers --tls-verify=false -q "${flags[@]}" "${buildah_flags[@]}" -t "$tag" "$ctx" >/dev/null 2>&1
    fi
    end=$(now)
    LAST=$(echo "$end - $start" | bc)
    TIMES[$case,$tool]+="$LAST "
}

# Warm both caches once so "cached" rounds measure a real no-op rebuild.
run_case cold gcr
run_case cold buildah
for round in $(seq 1 "$ROUNDS"); do
    for case in "${CASES[@]}"; do
        for tool in gcr buildah; do
            run_case "$case" "$tool"
            echo "  $case $tool round $round: ${LAST}s" >&2
        done
    done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
echo
printf '%-8s %10s %10s %8s\n' case "gcr s" "buildah s" ratio
for case in "${CASES[@]}"; do
    g=$(echo "${TIMES[$case,gcr]}" | median)
    b=$(echo "${TIMES[$case,buildah]}" | median)
    printf '%-8s %10.3f %10.3f %7.2fx\n' "$case" "$g" "$b" "$(echo "$g / $b" | bc -l)"
done
echo "targets: cold <= 0.50x, cached <= 0.10x, commit <= 0.33x (3x Buildah's throughput), parallel well under 3 s; build1g has none"

# cachefrom: a --cache-from rebuild on an empty store vs a pull of the same image.
if [ "$CACHEFROM" = 1 ]; then
    REF=127.0.0.1:5000/gcr-bench/build
    "$GCR" --root "$STORE" build -q --cache-to "type=registry,ref=$REF:cache" -t "$REF:image" "$CTX" >/dev/null
    "$GCR" --root "$STORE" push "$REF:image" >/dev/null
    PULLS="" REBUILDS=""
    for round in $(seq 1 "$ROUNDS"); do
        rm -rf "$WORK/fresh"; sync; start=$(now)
        "$GCR" --root "$WORK/fresh" pull -q "$REF:image" >/dev/null
        t=$(echo "$(now) - $start" | bc); PULLS+="$t "
        rm -rf "$WORK/fresh"; sync; start=$(now)
        "$GCR" --root "$WORK/fresh" build -q --cache-from "type=registry,ref=$REF:cache" "$CTX" >/dev/null
        r=$(echo "$(now) - $start" | bc); REBUILDS+="$r "
        echo "  cachefrom round $round: pull ${t}s, rebuild ${r}s" >&2
    done
    rm -rf "$WORK/fresh"
    p=$(echo "$PULLS" | median)
    r=$(echo "$REBUILDS" | median)
    printf '%-8s %10.3f %10s %7.2fx  (vs gcr pull %.3f s; target <= 1.10x)\n' cachefrom "$r" - "$(echo "$r / $p" | bc -l)" "$p"
fi
