#!/usr/bin/env bash
# Docker API benchmark (not a test): `docker -H SOCK run --rm busybox true` against
# `gcr system service` and against `podman system service` (Docker-compatible API) in one
# run, interleaved; medians and the ratio (target of issue 11: gcr <= 0.3x Podman), and the
# idle gcr service's memory (target <= 15 MiB RSS).
#
# Usage: sudo bash bench/api.sh [ROUNDS]                    (default 20)
# Env:   GCR=/path/to/gcr (default: target/release/gcr, built if missing)
#        BENCH_IMAGE (default: $GCR_TEST_REGISTRY/busybox:latest from tests/fixtures/env.sh)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROUNDS="${1:-20}"
[ "$(id -u)" -eq 0 ] || {
    echo "bench/api.sh must run as root: sudo bash bench/api.sh" >&2
    exit 1
}
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || {
    echo "ROUNDS must be a positive number, not '$ROUNDS'" >&2
    exit 2
}
for tool in docker podman; do
    command -v "$tool" >/dev/null || {
        echo "bench/api.sh needs $tool: run tests/fixtures/setup.sh" >&2
        exit 1
    }
done
# shellcheck source=/dev/null
source "$REPO/tests/fixtures/env.sh"
IMAGE="${BENCH_IMAGE:-${GCR_TEST_REGISTRY:?start the fixtures: bash tests/fixtures/registry.sh start}/busybox:latest}"

if [ -z "${GCR:-}" ]; then
    GCR="${CARGO_TARGET_DIR:-$REPO/target}/release/gcr"
    if [ ! -x "$GCR" ]; then
        echo "== building gcr (release)" >&2
        (cd "$REPO" && cargo build --release -q --bin gcr)
    fi
fi

WORK=$(mktemp -d /var/tmp/gcr-bench-api.XXXXXX)
PIDS=()
cleanup() {
    set +e
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
    podman --root "$WORK/podman-root" --runroot "$WORK/podman-run" system reset -f >/dev/null 2>&1
    rm -rf "$WORK"
}
trap cleanup EXIT

"$GCR" --root "$WORK/gcr-store" system service --time 0 "unix://$WORK/gcr.sock" \
    >"$WORK/gcr.log" 2>&1 &
PIDS+=($!)
GCR_SERVICE=$!
podman --root "$WORK/podman-root" --runroot "$WORK/podman-run" --tmpdir "$WORK/podman-tmp" \
    system service --time 0 "unix://$WORK/podman.sock" >"$WORK/podman.log" 2>&1 &
PIDS+=($!)
for sock in gcr podman; do
    for _ in $(seq 100); do [ -S "$WORK/$sock.sock" ] && break; sleep 0.1; done
    [ -S "$WORK/$sock.sock" ] || { echo "the $sock service did not listen" >&2; exit 1; }
done

dockr() { # dockr SERVICE ARGS...
    local sock=$1
    shift
    DOCKER_HOST="unix://$WORK/$sock.sock" DOCKER_CONFIG="$WORK/docker-config" docker "$@"
}

# The service's memory before any container work: what an idle `gcr system service` costs.
sleep 1
IDLE_RSS_KB=$(awk '/^VmRSS:/ {print $2}' "/proc/$GCR_SERVICE/status")

# Podman's compat API pulls over plain HTTP only from registries it is told are insecure.
printf '[[registry]]\nlocation = "%s"\ninsecure = true\n' "${IMAGE%%/*}" >"$WORK/registries.conf"
export CONTAINERS_REGISTRIES_CONF="$WORK/registries.conf"
for sock in gcr podman; do
    dockr "$sock" pull -q "$IMAGE" >/dev/null
    dockr "$sock" run --rm "$IMAGE" true
done

now_ns() { date +%s%N; }
declare -A SAMPLES=([gcr]="" [podman]="")
for ((i = 1; i <= ROUNDS; i++)); do
    for sock in gcr podman; do
        start=$(now_ns)
        dockr "$sock" run --rm "$IMAGE" true
        end=$(now_ns)
        SAMPLES[$sock]+="$(((end - start) / 1000)) "
    done
done

median_us() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2)}'; }
echo
echo "Docker API benchmark: $ROUNDS rounds, interleaved, median of docker run --rm $IMAGE true"
declare -A MED
for sock in gcr podman; do
    MED[$sock]=$(median_us "${SAMPLES[$sock]}")
    printf '  %-7s %8.1f ms\n' "$sock" "$(awk -v u="${MED[$sock]}" 'BEGIN{print u/1000}')"
done
ratio=$(awk -v a="${MED[gcr]}" -v b="${MED[podman]}" 'BEGIN{printf "%.2f", a/b}')
echo "  gcr/podman = ${ratio}x  (target <= 0.3)"
printf '  idle gcr system service: %.1f MiB RSS  (target <= 15)\n' "$(awk -v k="$IDLE_RSS_KB" 'BEGIN{print k/1024}')"
