#!/usr/bin/env bash
# Smoke-test the cross-built binaries under qemu user-mode emulation.
#
# usage: cross/smoke.sh [aarch64|armv7|x86_64|amd64|all]      (default: all three)
#
# Runs target/cross/dist/edgepod-<arch> (built by cross/build.sh) with:
#   --version                                 prints "edgepod <Cargo.toml version>"
#   --help                                    exits 0 and mentions the subcommands
#   --data-dir TMP debug store-check  (twice) a real SQLite round-trip: creates
#                                             TMP/edgepod.db, then reopens it
#
# Environment: EDGEPOD_CROSS_DIR as for cross/build.sh.
# Needs qemu-aarch64-static / qemu-arm-static (Debian: qemu-user-static);
# binfmt_misc is not needed, the emulator is invoked explicitly. x86_64 runs natively on an
# x86_64 machine (elsewhere under qemu-x86_64-static).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CROSS_DIR="${EDGEPOD_CROSS_DIR:-$ROOT/target/cross}"
DIST="$CROSS_DIR/dist"
VERSION="$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n1)"

case "${1:-all}" in
    aarch64 | armv7 | x86_64) ARCHES=("$1") ;;
    amd64) ARCHES=(x86_64) ;;
    all) ARCHES=(aarch64 armv7 x86_64) ;;
    *) echo "usage: cross/smoke.sh [aarch64|armv7|x86_64|amd64|all]" >&2; exit 2 ;;
esac

# The emulator for ARCH, or `env` where this machine runs it natively.
qemu_of() {
    case "$1" in
        aarch64) echo qemu-aarch64-static ;;
        armv7) echo qemu-arm-static ;;
        x86_64) if [ "$(uname -m)" = x86_64 ]; then echo env; else echo qemu-x86_64-static; fi ;;
    esac
}

missing=()
for arch in "${ARCHES[@]}"; do
    q="$(qemu_of "$arch")"
    command -v "$q" >/dev/null || missing+=("$q (apt-get install qemu-user-static)")
    [ -x "$DIST/edgepod-$arch" ] || missing+=("$DIST/edgepod-$arch (run cross/build.sh $arch)")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "cross/smoke.sh: missing prerequisites:" >&2
    printf '  - %s\n' "${missing[@]}" >&2
    exit 2
fi

TMP="$(mktemp -d "${TMPDIR:-/tmp}/edgepod-smoke.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

failures=0
pass() { printf '  ok    %s\n' "$1"; }
fail() {
    printf '  FAIL  %s\n' "$1"
    [ -s "$2" ] && sed 's/^/        | /' "$2" | head -n 20
    failures=$((failures + 1))
}

# run LOG CMD...: runs CMD with a timeout, output to LOG; returns its status.
run() {
    local log="$1" status
    shift
    timeout 120 "$@" >"$log" 2>&1
    status=$?
    [ "$status" -eq 0 ] || echo "(exit status $status)" >>"$log"
    return "$status"
}

for arch in "${ARCHES[@]}"; do
    q="$(qemu_of "$arch")"
    bin="$DIST/edgepod-$arch"
    echo "==> $arch: $q ${bin#"$ROOT"/}"
    log="$TMP/$arch.log"

    if run "$log" "$q" "$bin" --version && grep -q "edgepod.*$VERSION" "$log"; then
        pass "--version: $(head -n1 "$log")"
    else
        echo "(expected output mentioning 'edgepod $VERSION')" >>"$log"
        fail "--version" "$log"
    fi

    if run "$log" "$q" "$bin" --help && grep -qi "usage" "$log"; then
        pass "--help"
    else
        echo "(expected a usage text)" >>"$log"
        fail "--help" "$log"
    fi

    # Real SQLite round-trip: first run creates the database, second reopens it.
    data="$TMP/data-$arch"
    mkdir -p "$data"
    for round in create reopen; do
        if run "$log" "$q" "$bin" --data-dir "$data" debug store-check && [ -s "$data/edgepod.db" ]; then
            pass "debug store-check ($round): $(tail -n1 "$log")"
        else
            [ -s "$data/edgepod.db" ] || echo "(no $data/edgepod.db afterwards)" >>"$log"
            fail "debug store-check ($round)" "$log"
        fi
    done
done

echo
if [ "$failures" -gt 0 ]; then
    echo "cross/smoke.sh: $failures check(s) failed" >&2
    exit 1
fi
echo "cross/smoke.sh: all checks passed"
