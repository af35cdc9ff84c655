#!/usr/bin/env bash
# The house rules of DESIGN.md section 1, checked: run by tests/run.sh (and on its own:
# `bash tests/architecture.sh`). Fails when
#   - a crate depends on a gcr crate against the arrows (cli -> builder -> containers ->
#     {runtime, storage}, builder -> grammar, registry -> storage, {cli, api} -> images ->
#     {registry, storage}, api -> {containers, registry, storage}; grammar, storage and runtime depend on no gcr crate),
#   - `unsafe` appears outside the runtime's syscall layer (runtime/src/sys/), or a crate
#     root lacks #![deny(unsafe_code)],
#   - a source file outside tests is over 820 lines ("about 800").
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1

failed=0
fail() {
    echo "architecture: $*" >&2
    failed=1
}

# crate folder -> the gcr crates it may depend on
declare -A ALLOWED=(
    [grammar]=""
    [storage]=""
    [runtime]=""
    [registry]="gcr-storage"
    [containers]="gcr-storage gcr-runtime"
    [builder]="gcr-grammar gcr-storage gcr-runtime gcr-containers"
    [oci]="gcr-runtime"
    [images]="gcr-registry gcr-storage"
    [api]="gcr-storage gcr-containers gcr-images gcr-registry"
    [cli]="gcr-grammar gcr-registry gcr-storage gcr-runtime gcr-containers gcr-builder gcr-oci gcr-api gcr-images"
)

members=$(sed -n 's/^members = \[\(.*\)\]/\1/p' Cargo.toml | tr -d '", ' | tr '\n' ' ')
[ -n "$members" ] || fail "cannot read the workspace members from Cargo.toml"
for crate in $(sed -n 's/^members = \[\(.*\)\]/\1/p' Cargo.toml | tr -d '"' | tr ',' ' '); do
    if [ -z "${ALLOWED[$crate]+set}" ]; then
        fail "crate $crate has no place in DESIGN.md's arrows: add it to tests/architecture.sh and DESIGN.md"
        continue
    fi
    # Normal and build dependencies only (dev-dependencies may reach further for tests).
    deps=$(awk '
        /^\[/ { section = $0 }
        section == "[dependencies]" || section == "[build-dependencies]" {
            if (match($0, /^gcr-[a-z]+/)) print substr($0, RSTART, RLENGTH)
        }' "$crate/Cargo.toml")
    for dep in $deps; do
        if [[ " ${ALLOWED[$crate]} " != *" $dep "* ]]; then
            fail "$crate depends on $dep, against the arrows in DESIGN.md (allowed: ${ALLOWED[$crate]:-none})"
        fi
    done
    # A crate root without the lint lets unsafe in unnoticed.
    for root in "$crate/src/lib.rs" "$crate/src/main.rs" "$crate"/src/bin/*.rs; do
        if [ -f "$root" ] && ! grep -q '^#!\[deny(unsafe_code)\]' "$root"; then
            fail "$root lacks #![deny(unsafe_code)]"
        fi
    done
done

# unsafe outside the syscall layer: code lines (comments and the lint attributes aside).
while IFS= read -r hit; do
    fail "unsafe outside runtime/src/sys/: $hit"
done < <(git ls-files --cached --others --exclude-standard '*.rs' |
    grep -v '^runtime/src/sys/' |
    xargs grep -nE '\bunsafe\b' 2>/dev/null |
    grep -vE '^[^:]+:[0-9]+:\s*//' |
    grep -vE '(deny|allow|forbid)\(unsafe_code\)')

# File size: tests (tests/ folders, *_tests.rs) are exempt.
while IFS= read -r file; do
    case $file in
    tests/* | */tests/* | *_tests.rs) continue ;;
    esac
    lines=$(wc -l <"$file")
    if [ "$lines" -gt 820 ]; then
        fail "$file has $lines lines: split it (about 800 at most; see DESIGN.md)"
    fi
done < <(git ls-files --cached --others --exclude-standard '*.rs')

if [ "$failed" -ne 0 ]; then
    echo "architecture: FAILED" >&2
    exit 1
fi
echo "architecture: crate arrows, unsafe confinement and file sizes ok"
