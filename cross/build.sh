#!/usr/bin/env bash
# Cross-build fully static, stripped release binaries of edgepod for
# Raspberry-Pi-class devices:
#
#   aarch64 -> aarch64-unknown-linux-musl      (Pi 3/4/5, Zero 2 W on a 64-bit OS)
#   armv7   -> armv7-unknown-linux-musleabihf  (Pi 2/3/4, Zero 2 W on a 32-bit OS)
#   x86_64  -> x86_64-unknown-linux-musl       (amd64 mini PCs, VMs, CI; alias: amd64)
#
# usage: cross/build.sh [aarch64|armv7|x86_64|amd64|all]      (default: all three)
#
# Results: target/cross/dist/edgepod-<arch> (amd64 is written as edgepod-x86_64,
# the name `uname -m` gives, which packaging/install.sh looks for). Fails if a binary is not statically
# linked, not stripped, or bigger than the size budget (12 MiB for the ARM boards; x86_64,
# not a Pi-class target, has its own, 20 MiB: it measured 16,713,888 bytes on first build).
#
# Environment:
#   EDGEPOD_CROSS_DIR     cargo target dir for cross builds (default: <repo>/target/cross)
#   EDGEPOD_SIZE_BUDGET   size budget in bytes of the ARM binaries (default: 12582912 = 12 MiB)
#   EDGEPOD_SIZE_BUDGET_X86_64  the x86_64 one's (default: 20971520 = 20 MiB)
#   EDGEPOD_QUICK_X86_64  non-empty: x86_64 without LTO or optimisation, size unchecked (CI's
#                         packaging test; a few minutes instead of twenty)
#   CARGO_PROFILE_RELEASE_*  cargo's usual profile overrides, e.g. OPT_LEVEL=z
#
# Installs nothing: checks the prerequisites and says what is missing.
# See cross/README.md.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CROSS_DIR="${EDGEPOD_CROSS_DIR:-$ROOT/target/cross}"
BUDGET="${EDGEPOD_SIZE_BUDGET:-12582912}"
BUDGET_X86_64="${EDGEPOD_SIZE_BUDGET_X86_64:-20971520}"
DIST="$CROSS_DIR/dist"
LC_VERSION="0.7.0"
LC_PATCH="$ROOT/cross/libcontainer-32bit.patch"
LC_PATCHED="$CROSS_DIR/patched/libcontainer-$LC_VERSION"
cd "$ROOT" # the toolchain rustup reports (and cargo uses) is the one for this directory

die() { echo "cross/build.sh: error: $*" >&2; exit 1; }

triple_of() {
    case "$1" in
        aarch64) echo aarch64-unknown-linux-musl ;;
        armv7) echo armv7-unknown-linux-musleabihf ;;
        x86_64) echo x86_64-unknown-linux-musl ;;
        *) return 1 ;;
    esac
}

case "${1:-all}" in
    aarch64 | armv7 | x86_64) ARCHES=("$1") ;;
    amd64) ARCHES=(x86_64) ;;
    all) ARCHES=(aarch64 armv7 x86_64) ;;
    -h | --help) sed -n '2,/^set /p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown architecture '$1' (expected aarch64, armv7, x86_64 (amd64) or all)" ;;
esac
[ $# -le 1 ] || die "too many arguments (usage: cross/build.sh [aarch64|armv7|x86_64|amd64|all])"

# --- prerequisites ----------------------------------------------------------
check_prereqs() {
    local missing=()
    command -v cargo >/dev/null || missing+=("cargo (Rust toolchain: https://rustup.rs)")
    command -v rustup >/dev/null || missing+=("rustup (needed to check the installed targets and components)")
    command -v python3 >/dev/null || missing+=("python3 (apt-get install python3)")
    command -v file >/dev/null || missing+=("file (apt-get install file)")
    if command -v cargo-zigbuild >/dev/null; then :; else
        missing+=("cargo-zigbuild (pip install cargo-zigbuild)")
    fi
    if command -v zig >/dev/null || python3 -m ziglang version >/dev/null 2>&1; then :; else
        missing+=("zig (pip install ziglang; cargo-zigbuild runs it as 'python3 -m ziglang')")
    fi
    if command -v rustup >/dev/null; then
        local targets components
        targets="$(rustup target list --installed 2>/dev/null || true)"
        components="$(rustup component list --installed 2>/dev/null || true)"
        for arch in "${ARCHES[@]}"; do
            case "$arch" in
                aarch64)
                    grep -qx aarch64-unknown-linux-musl <<<"$targets" \
                        || missing+=("Rust std for aarch64 (rustup target add aarch64-unknown-linux-musl)")
                    ;;
                x86_64)
                    grep -qx x86_64-unknown-linux-musl <<<"$targets" \
                        || missing+=("Rust std for x86_64 musl (rustup target add x86_64-unknown-linux-musl)")
                    ;;
                armv7)
                    # No prebuilt std for this target in our toolchain: it is
                    # built from source with -Zbuild-std, which needs rust-src.
                    grep -q '^rust-src' <<<"$components" \
                        || missing+=("rust-src, to build std for armv7 (rustup component add rust-src)")
                    command -v patch >/dev/null || missing+=("patch (apt-get install patch)")
                    ;;
            esac
        done
    fi
    if [ ${#missing[@]} -gt 0 ]; then
        echo "cross/build.sh: missing prerequisites:" >&2
        printf '  - %s\n' "${missing[@]}" >&2
        exit 2
    fi
}

# --- libcontainer 32-bit patch ----------------------------------------------
# Source of the libcontainer crate that Cargo.lock pins, as cargo downloaded it
# (cargo metadata fetches it if it is not there yet).
libcontainer_src() {
    (cd "$ROOT" && cargo metadata --format-version 1 --locked) | python3 -c '
import json, os, sys
want = sys.argv[1]
pkgs = [p for p in json.load(sys.stdin)["packages"] if p["name"] == "libcontainer"]
if not pkgs:
    sys.exit("libcontainer is not a dependency any more")
for p in pkgs:
    if p["version"] != want:
        sys.exit("Cargo.lock has libcontainer %s, cross/libcontainer-32bit.patch is for %s" % (p["version"], want))
    if not (p.get("source") or "").startswith("registry+"):
        sys.exit("libcontainer does not come from crates.io: " + p["manifest_path"])
    print(os.path.dirname(p["manifest_path"]))
    break
' "$LC_VERSION"
}

# Idempotent: a patched copy whose stamp matches (pristine source + patch hash)
# is reused untouched, so cargo does not rebuild it.
prepare_libcontainer() {
    local src stamp want
    src="$(libcontainer_src)" || die "cannot locate libcontainer $LC_VERSION source"
    [ -f "$src/src/tty.rs" ] || die "libcontainer source incomplete at $src"
    want="$src $(sha256sum <"$LC_PATCH" | cut -d' ' -f1)"
    stamp="$LC_PATCHED/.edgepod-patch-stamp"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        echo "==> libcontainer $LC_VERSION: patched copy up to date ($LC_PATCHED)"
        return
    fi
    echo "==> libcontainer $LC_VERSION: copying $src and applying $(basename "$LC_PATCH")"
    rm -rf "$LC_PATCHED"
    mkdir -p "$(dirname "$LC_PATCHED")"
    cp -a "$src" "$LC_PATCHED"
    chmod -R u+w "$LC_PATCHED"
    patch -d "$LC_PATCHED" -p1 --forward --batch --quiet <"$LC_PATCH" \
        || die "cross/libcontainer-32bit.patch does not apply to $src"
    echo "$want" >"$stamp"
}

# --- build --------------------------------------------------------------------
build_one() {
    local arch="$1" triple start end
    triple="$(triple_of "$arch")"
    # --no-default-features: the device binary leaves out `edgepod bench` (see Cargo.toml).
    local args=(zigbuild --release --target "$triple" --bin edgepod --no-default-features)
    local env=(CARGO_TARGET_DIR="$CROSS_DIR")
    if [ "$arch" = armv7 ]; then
        prepare_libcontainer
        # The patch turns libcontainer into a path dependency, which changes
        # the lock file: resolve against a private copy of Cargo.lock so the
        # repository's one is never touched (-Zlockfile-path).
        local lock="$CROSS_DIR/lock/$triple/Cargo.lock"
        mkdir -p "$(dirname "$lock")"
        cp "$ROOT/Cargo.lock" "$lock"
        args+=(
            -Zbuild-std=std,panic_abort
            # std's smaller algorithms (sorting, formatting) for the board with the least room.
            -Zbuild-std-features=optimize_for_size
            -Zlockfile-path
            --config "resolver.lockfile-path=\"$lock\""
            --config "patch.crates-io.libcontainer.path=\"$LC_PATCHED\""
            # std is built here, so there are no Rust-shipped musl crt objects:
            # let zig supply crt1.o and libc.a.
            # -Zlocation-detail=none: a panic message keeps its text but not its file and
            # line (every panic site's path string and location record is gone).
            --config "target.$triple.rustflags=[\"-C\", \"link-self-contained=no\", \"-Zlocation-detail=none\"]"
        )
        env+=(RUSTC_BOOTSTRAP=1)
    else
        args+=(--locked)
    fi
    if [ "$arch" = x86_64 ] && [ -n "${EDGEPOD_QUICK_X86_64:-}" ]; then
        # CI's amd64 binary only feeds the packaging test (dpkg -i on this machine): built
        # without LTO, in parallel and unoptimised, it takes minutes instead of the 20 a
        # release build of each ARM binary takes on two cores, which CI's 90 minutes lack.
        args+=(
            --config profile.release.lto=false
            --config profile.release.codegen-units=16
            --config profile.release.opt-level=0
            --config 'profile.release.package."*".opt-level=0'
            --config profile.release.package.edgepod.opt-level=0
        )
        QUICK[$arch]=1
    fi
    echo "==> building edgepod for $triple"
    start=$(date +%s)
    (cd "$ROOT" && env "${env[@]}" cargo "${args[@]}")
    end=$(date +%s)
    BUILD_SECS[$arch]=$((end - start))

    local bin="$CROSS_DIR/$triple/release/edgepod" out="$DIST/edgepod-$arch" desc
    [ -f "$bin" ] || die "cargo did not produce $bin"
    mkdir -p "$DIST"
    cp -f "$bin" "$out"
    desc="$(file -b "$out")"
    echo "    file: $desc"
    case "$desc" in
        *"dynamically linked"* | *interpreter*) die "$out is not statically linked" ;;
        *"statically linked"* | *"static-pie linked"*) ;;
        *) die "cannot tell from 'file' that $out is statically linked" ;;
    esac
    case "$desc" in
        *"not stripped"* | *"with debug_info"*) die "$out is not stripped" ;;
        *stripped*) ;;
        *) die "cannot tell from 'file' that $out is stripped" ;;
    esac
}

check_prereqs
declare -A BUILD_SECS=() QUICK=()
for arch in "${ARCHES[@]}"; do build_one "$arch"; done

echo
echo "edgepod release binaries (budget $BUDGET bytes = $(awk -v b="$BUDGET" 'BEGIN{printf "%.2f", b/1048576}') MiB; x86_64 $BUDGET_X86_64):"
over=0
for arch in "${ARCHES[@]}"; do
    out="$DIST/edgepod-$arch"
    size=$(stat -c %s "$out")
    mib=$(awk -v s="$size" 'BEGIN{printf "%.2f", s/1048576}')
    budget="$BUDGET"
    [ "$arch" != x86_64 ] || budget="$BUDGET_X86_64"
    verdict=ok
    if [ -n "${QUICK[$arch]:-}" ]; then
        verdict="quick build (EDGEPOD_QUICK_X86_64): size not checked"
    elif [ "$size" -gt "$budget" ]; then
        verdict="OVER BUDGET ($budget)"
        over=1
    fi
    printf '  %-28s %10d bytes  %6s MiB  (build %ss)  %s\n' \
        "${out#"$ROOT"/}" "$size" "$mib" "${BUILD_SECS[$arch]}" "$verdict"
done
[ "$over" -eq 0 ] || die "a binary exceeds its size budget"
