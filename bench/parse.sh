#!/usr/bin/env bash
# Parse speed of gcr-grammar: median time to parse generated 10,000-line Containerfiles
# (a realistic mix, one 10,000-line continued RUN, 2,000 heredocs), with the half-size
# time alongside to show the growth is linear. Target: well under 10 ms for 10,000 lines.
# Usage: bench/parse.sh [LINES]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo run --quiet --release -p gcr-grammar --example parse_bench -- "${1:-10000}"
