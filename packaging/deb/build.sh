#!/usr/bin/env bash
# Build edgepod's .deb packages from the static binaries cross/build.sh made.
#
# usage: packaging/deb/build.sh [ARCH...]     ARCH: arm64 | armhf | amd64 (Debian's names) or
#                                             aarch64 | armv7 | x86_64 (cross/build.sh's);
#                                             default: all three
#
# Reads   target/cross/dist/edgepod-{aarch64,armv7,x86_64}
# Writes  target/cross/dist/edgepod_<version>_<debarch>.deb
#
# Contents: /usr/bin/edgepod, the systemd units (packaging/systemd) in /lib/systemd/system,
# /etc/edgepod/config.yaml (a conffile: dpkg keeps the admin's edits on upgrade and reinstall),
# /etc/edgepod/manifests/, /usr/share/edgepod/board-configs/*.yaml (board-configs/ of the
# repository), /usr/share/doc/edgepod/copyright, and the maintainer scripts of packaging/deb.
#
# Environment:
#   EDGEPOD_CROSS_DIR     as for cross/build.sh (default: <repo>/target/cross); binaries are
#                         read from, and packages written to, its dist/
#   EDGEPOD_DEB_VERSION   package version (default: Cargo.toml's version)
#   EDGEPOD_DEB_OUT       where the .deb files go (default: the dist dir)
#   SOURCE_DATE_EPOCH     timestamps inside the package (default: the last commit's time)
#
# Needs dpkg-deb (Debian's dpkg package) only; no cargo-deb, as the binaries are prebuilt.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CROSS_DIR="${EDGEPOD_CROSS_DIR:-$ROOT/target/cross}"
DIST="$CROSS_DIR/dist"
OUT="${EDGEPOD_DEB_OUT:-$DIST}"
VERSION="${EDGEPOD_DEB_VERSION:-$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n1)}"
PKG="$ROOT/packaging"

die() { echo "packaging/deb/build.sh: error: $*" >&2; exit 1; }

[ -n "$VERSION" ] || die "no version in Cargo.toml"
command -v dpkg-deb >/dev/null || die "dpkg-deb not found (apt-get install dpkg)"

if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH="$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || date +%s)"
fi
export SOURCE_DATE_EPOCH

# debarch ARCH -> Debian architecture; binarch ARCH -> cross/build.sh's name.
debarch() {
    case "$1" in
        arm64 | aarch64) echo arm64 ;;
        armhf | armv7) echo armhf ;;
        amd64 | x86_64) echo amd64 ;;
        *) return 1 ;;
    esac
}
binarch() {
    case "$1" in
        arm64) echo aarch64 ;;
        armhf) echo armv7 ;;
        amd64) echo x86_64 ;;
    esac
}

case "${1:-}" in
    -h | --help) sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac
ARCHES=()
for a in "${@:-arm64 armhf amd64}"; do
    for one in $a; do
        d="$(debarch "$one")" || die "unknown architecture '$one' (expected arm64, armhf or amd64)"
        ARCHES+=("$d")
    done
done

shopt -s nullglob
BOARDS=("$ROOT"/board-configs/*.yaml)
shopt -u nullglob
[ ${#BOARDS[@]} -gt 0 ] || echo "packaging/deb/build.sh: warning: no board-configs/*.yaml to package" >&2

STAGE="$(mktemp -d "${TMPDIR:-/tmp}/edgepod-deb.XXXXXX")"
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$OUT"

build_one() {
    local arch="$1" bin root deb size
    bin="$DIST/edgepod-$(binarch "$arch")"
    [ -f "$bin" ] || die "$bin missing (run cross/build.sh $(binarch "$arch"))"
    root="$STAGE/$arch"
    rm -rf "$root"

    install -D -m 0755 "$bin" "$root/usr/bin/edgepod"
    install -d -m 0755 "$root/lib/systemd/system"
    install -m 0644 "$PKG"/systemd/edgepod-{up,hub,agent}.service "$root/lib/systemd/system/"
    # 0600: the config may hold a join token.
    install -D -m 0600 "$PKG/config.yaml" "$root/etc/edgepod/config.yaml"
    install -d -m 0755 "$root/etc/edgepod/manifests"
    install -d -m 0755 "$root/usr/share/edgepod/board-configs"
    [ ${#BOARDS[@]} -eq 0 ] || install -m 0644 "${BOARDS[@]}" "$root/usr/share/edgepod/board-configs/"
    install -D -m 0644 "$PKG/deb/copyright" "$root/usr/share/doc/edgepod/copyright"

    install -d -m 0755 "$root/DEBIAN"
    install -m 0755 "$PKG"/deb/{preinst,postinst,prerm,postrm} "$root/DEBIAN/"
    echo /etc/edgepod/config.yaml >"$root/DEBIAN/conffiles"
    size="$(du -sk --exclude=DEBIAN "$root" | cut -f1)"
    cat >"$root/DEBIAN/control" <<CONTROL
Package: edgepod
Version: $VERSION
Architecture: $arch
Maintainer: edgepod developers <edgepod@invalid>
Installed-Size: $size
Recommends: containernetworking-plugins, nftables | iptables
Section: admin
Priority: optional
Description: Kubernetes-style pods on Raspberry-Pi-class devices
 edgepod runs pods on small devices: one static binary that is a node agent,
 a hub serving the Kubernetes API (kubectl works) with an embedded MQTT broker
 for the fleet, or both in one process. Pods survive an agent restart or an
 upgrade of this package.
 .
 The package enables edgepod-up.service (a one-device cluster), or
 edgepod-agent.service when /etc/edgepod/config.yaml has a join token.
CONTROL
    find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

    deb="$OUT/edgepod_${VERSION}_${arch}.deb"
    dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
    printf '  %-44s %10d bytes  (binary %d bytes)\n' "${deb#"$ROOT"/}" \
        "$(stat -c %s "$deb")" "$(stat -c %s "$bin")"
}

echo "==> edgepod $VERSION .deb packages"
for arch in "${ARCHES[@]}"; do build_one "$arch"; done
