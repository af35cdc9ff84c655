#!/usr/bin/env bash
# Shows gcr on a machine prepared with `sudo bash tests/fixtures/setup.sh`: starts the local
# fixture registries (stopped again on exit), pushes the offline-made base images with skopeo,
# then pulls, lists, inspects and runs them with gcr in a throw-away store.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$REPO"
FIX="$REPO/tests/fixtures"
[ "$(id -u)" -eq 0 ] || { echo "demo.sh must run as root: sudo bash demo.sh" >&2; exit 1; }
if ! command -v cargo >/dev/null 2>&1; then
    for dir in "$HOME/.cargo/bin" "$(getent passwd "${SUDO_USER:-root}" | cut -d: -f6)/.cargo/bin"; do
        [ -x "$dir/cargo" ] && PATH="$dir:$PATH" && break
    done
fi
cargo build --release -q -p gcr
GCR="$REPO/target/release/gcr"
STORE=$(mktemp -d /tmp/gcr-demo-XXXXXX)
cleanup() {
    bash "$FIX/registry.sh" stop >/dev/null 2>&1 || true
    rm -rf "$STORE"
}
trap cleanup EXIT
bash "$FIX/registry.sh" start
bash "$FIX/images.sh"
show() { printf '\n$ %s\n' "$*"; "$@"; }
show "$GCR" --root "$STORE" pull 127.0.0.1:5000/busybox:latest
show "$GCR" --root "$STORE" pull 127.0.0.1:5000/debian:bookworm
show "$GCR" --root "$STORE" pull --platform linux/arm64 127.0.0.1:5000/multi:latest
show "$GCR" --root "$STORE" images
show "$GCR" --root "$STORE" history 127.0.0.1:5000/debian:bookworm
show "$GCR" --root "$STORE" system check
show "$GCR" --root "$STORE" system df
show skopeo inspect --format '{{.Digest}} {{.Architecture}}' "oci:$STORE:127.0.0.1:5000/busybox:latest"
show "$GCR" --root "$STORE" run --rm 127.0.0.1:5000/busybox:latest sh -c 'echo "hello from $(hostname)"; id; ps'
show "$GCR" --root "$STORE" run --rm --network none 127.0.0.1:5000/debian:bookworm cat /etc/os-release
APP="$STORE/app"
mkdir -p "$APP"
printf 'hello from a gcr-built image\n' >"$APP/greeting.txt"
cat >"$APP/Containerfile" <<'CF'
FROM 127.0.0.1:5000/busybox:latest
COPY greeting.txt /srv/greeting.txt
RUN echo 'app:x:1000:1000::/home/app:/bin/sh' >>/etc/passwd && chown app /srv/greeting.txt
USER app
CMD ["cat", "/srv/greeting.txt"]
CF
cd "$APP"
show "$GCR" --root "$STORE" build -f Containerfile -t app .
show "$GCR" --root "$STORE" run --rm app
show "$GCR" --root "$STORE" build -f Containerfile -t app .
cd "$REPO"
