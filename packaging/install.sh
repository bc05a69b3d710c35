#!/bin/sh
# Install edgepod on a system without dpkg: the same files the .deb installs, the data dir,
# and the systemd unit of the role, enabled and started when systemd runs.
#
# usage: packaging/install.sh [OPTIONS] [BINARY]
#        packaging/install.sh [--root DIR] --uninstall [--purge]
#
#   BINARY        the static edgepod binary to install; without it, edgepod-<arch> for this
#                 machine (`uname -m`) is taken from the dist dir
#   --dist DIR    where to look for edgepod-{aarch64,armv7,x86_64} (default: target/cross/dist
#                 of this repository, else the directory this script is in)
#   --role ROLE   up, hub or agent (default: agent when a join token is configured, else up)
#   --root DIR    install into DIR instead of / (an SD card image, a test): units are enabled
#                 with `systemctl --root` when there is a systemctl, nothing is started
#   --uninstall   stop and disable the units, remove the binary, units and board configs;
#                 /etc/edgepod and the data dir stay
#   --purge       with --uninstall: remove /etc/edgepod too; the data dir only when
#                 EDGEPOD_PURGE_DATA=1 (it holds pods' data and a hub's cluster state)
#
# Environment:
#   EDGEPOD_TOKEN       a join token (`edgepod hub token create`): written to config.yaml as
#                       `token:` and the agent role chosen, e.g.
#                       EDGEPOD_TOKEN=... sh install.sh ./edgepod-aarch64
#   EDGEPOD_PURGE_DATA  see --purge
#
# An existing /etc/edgepod/config.yaml is never replaced (EDGEPOD_TOKEN sets its `token:` key
# and nothing else). Re-running the script upgrades: the binary is replaced and the running
# unit restarted, which its containers survive (KillMode=process).
set -eu

HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
UNITS="edgepod-up.service edgepod-hub.service edgepod-agent.service"

ROOT=""
DIST=""
ROLE=""
BINARY=""
UNINSTALL=0
PURGE=0

say() { echo "install.sh: $*"; }
die() {
    echo "install.sh: error: $*" >&2
    exit 1
}

while [ $# -gt 0 ]; do
    case "$1" in
    --root)
        [ $# -ge 2 ] || die "--root needs a directory"
        ROOT="$2"
        shift 2
        ;;
    --dist)
        [ $# -ge 2 ] || die "--dist needs a directory"
        DIST="$2"
        shift 2
        ;;
    --role)
        [ $# -ge 2 ] || die "--role needs up, hub or agent"
        ROLE="$2"
        shift 2
        ;;
    --uninstall)
        UNINSTALL=1
        shift
        ;;
    --purge)
        PURGE=1
        shift
        ;;
    -h | --help)
        sed -n '2,32p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    -*) die "unknown option $1 (see --help)" ;;
    *)
        [ -z "$BINARY" ] || die "more than one binary given"
        BINARY="$1"
        shift
        ;;
    esac
done
[ "$PURGE" = 0 ] || [ "$UNINSTALL" = 1 ] || die "--purge goes with --uninstall"
case "$ROLE" in "" | up | hub | agent) ;; *) die "--role $ROLE: expected up, hub or agent" ;; esac
if [ -n "$ROOT" ]; then
    mkdir -p "$ROOT"
    ROOT="$(cd "$ROOT" && pwd)"
    [ "$ROOT" != / ] || ROOT=""
fi
[ "$(id -u)" = 0 ] || [ -n "$ROOT" ] || die "run as root (or give --root DIR)"
if [ -z "$ROOT" ] && command -v dpkg-query >/dev/null 2>&1 &&
    dpkg-query -W -f '${Status}' edgepod 2>/dev/null | grep -q ' installed$'; then
    die "the edgepod package is installed here: upgrade or remove it with dpkg/apt instead"
fi

CONFIG="$ROOT/etc/edgepod/config.yaml"
DEFAULT_DATA_DIR=/var/lib/edgepod

# systemd runs this system (and we install into it, not into a staging root).
systemd_running() { [ -z "$ROOT" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; }
# systemctl for the target: offline with --root.
sctl() {
    if [ -n "$ROOT" ]; then systemctl --root="$ROOT" "$@"; else systemctl "$@"; fi
}

# The value of KEY in config.yaml when set (uncommented, block style, at the top or in a
# command's map such as `agent:`), quotes and a trailing comment removed.
config_value() {
    [ -r "$CONFIG" ] || return 0
    sed -n "s/^[[:space:]]*$1:[[:space:]]*//p" "$CONFIG" | tail -n 1 |
        sed -e 's/[[:space:]][[:space:]]*#.*$//' -e 's/[[:space:]]*$//' \
            -e "s/^\"\(.*\)\"\$/\1/" -e "s/^'\(.*\)'\$/\1/"
}

# True when something is mounted strictly below DIR: deleting through it would delete what
# the mount shows (a container's rootfs, a volume, host files).
mounted_below() {
    awk -v dir="$1/" 'index($5, dir) == 1 { found = 1 } END { exit !found }' /proc/self/mountinfo
}

uninstall() {
    if systemd_running; then
        for unit in $UNITS; do
            if systemctl is-active --quiet "$unit"; then
                systemctl stop "$unit" || true
                say "stopped $unit; its pods' containers keep running until reboot"
            fi
        done
    fi
    if command -v systemctl >/dev/null 2>&1; then
        # shellcheck disable=SC2086
        sctl disable --quiet $UNITS 2>/dev/null || true
    fi
    for unit in $UNITS; do rm -f "$ROOT/lib/systemd/system/$unit"; done
    if systemd_running; then systemctl daemon-reload || true; fi
    rm -f "$ROOT/usr/bin/edgepod"
    rm -rf "$ROOT/usr/share/edgepod" "$ROOT/usr/share/doc/edgepod"
    say "removed edgepod's binary, units and board configs"
    data_dir="$(config_value data-dir)"
    data_dir="$ROOT${data_dir:-$DEFAULT_DATA_DIR}"
    if [ "$PURGE" = 0 ]; then
        say "kept $ROOT/etc/edgepod and $data_dir (--purge removes the first)"
        return
    fi
    rm -rf "$ROOT/etc/edgepod"
    say "removed $ROOT/etc/edgepod"
    [ -d "$data_dir" ] || return 0
    if [ "${EDGEPOD_PURGE_DATA:-0}" != 1 ]; then
        say "kept $data_dir (pods' data, images, a hub's store and CA); EDGEPOD_PURGE_DATA=1 removes it"
    elif mounted_below "$data_dir"; then
        say "kept $data_dir: something is still mounted below it (running pods?)"
    elif mountpoint -q "$data_dir" 2>/dev/null; then
        find "$data_dir" -mindepth 1 -maxdepth 1 -exec rm -rf --one-file-system {} +
        say "emptied $data_dir (a mount point, kept)"
    else
        rm -rf "$data_dir"
        say "removed $data_dir"
    fi
}

if [ "$UNINSTALL" = 1 ]; then
    [ -z "$BINARY" ] || die "--uninstall takes no binary"
    uninstall
    exit 0
fi

# --- which binary -------------------------------------------------------------------------
if [ -z "$BINARY" ]; then
    if [ -z "$DIST" ]; then
        if [ -d "$REPO/target/cross/dist" ]; then DIST="$REPO/target/cross/dist"; else DIST="$HERE"; fi
    fi
    machine="$(uname -m)"
    case "$machine" in
    aarch64 | arm64) arch=aarch64 ;;
    armv7* | armv8l) arch=armv7 ;;
    x86_64 | amd64) arch=x86_64 ;;
    *) die "no edgepod build for a $machine CPU (aarch64, ARMv7 or newer, x86_64)" ;;
    esac
    BINARY="$DIST/edgepod-$arch"
fi
[ -f "$BINARY" ] || die "$BINARY: no such file"
if [ -z "$ROOT" ]; then
    # Catch a binary for another CPU before it replaces a working one.
    "$BINARY" --version >/dev/null 2>&1 || die "$BINARY does not run on this machine ($(uname -m))"
fi

# Board configs: the repository's, or those shipped next to this script in a release.
BOARDS_DIR="$REPO/board-configs"
[ -d "$BOARDS_DIR" ] || BOARDS_DIR="$HERE/board-configs"

# --- files --------------------------------------------------------------------------------
# The binary is replaced by rename, so a running edgepod keeps its (old) file and nothing
# fails with "text file busy".
install -d -m 0755 "$ROOT/usr/bin"
install -m 0755 "$BINARY" "$ROOT/usr/bin/.edgepod.new"
mv -f "$ROOT/usr/bin/.edgepod.new" "$ROOT/usr/bin/edgepod"

install -d -m 0755 "$ROOT/lib/systemd/system"
for unit in $UNITS; do
    install -m 0644 "$HERE/systemd/$unit" "$ROOT/lib/systemd/system/$unit"
done

install -d -m 0755 "$ROOT/etc/edgepod" "$ROOT/etc/edgepod/manifests"
if [ -e "$CONFIG" ]; then
    say "kept the existing $CONFIG"
else
    # 0600: it may hold a join token.
    install -m 0600 "$HERE/config.yaml" "$CONFIG"
    say "installed $CONFIG"
fi
if [ -n "${EDGEPOD_TOKEN:-}" ]; then
    # Replace a `token:` line, or add one at the end; nothing else in the file changes.
    tmp="$CONFIG.install.$$"
    EDGEPOD_TOKEN="$EDGEPOD_TOKEN" awk '
        /^token:/ { if (!done) print "token: " ENVIRON["EDGEPOD_TOKEN"]; done = 1; next }
        { print }
        END { if (!done) print "token: " ENVIRON["EDGEPOD_TOKEN"] }
    ' "$CONFIG" >"$tmp"
    chmod 0600 "$tmp"
    mv -f "$tmp" "$CONFIG"
    say "set the join token in $CONFIG"
fi

install -d -m 0755 "$ROOT/usr/share/edgepod/board-configs"
n=0
for f in "$BOARDS_DIR"/*.yaml; do
    [ -f "$f" ] || continue
    install -m 0644 "$f" "$ROOT/usr/share/edgepod/board-configs/"
    n=$((n + 1))
done
[ "$n" -gt 0 ] || say "warning: no board configs found in $BOARDS_DIR"
install -d -m 0755 "$ROOT/usr/share/doc/edgepod"
install -m 0644 "$HERE/deb/copyright" "$ROOT/usr/share/doc/edgepod/copyright"

data_dir="$(config_value data-dir)"
data_dir="$ROOT${data_dir:-$DEFAULT_DATA_DIR}"
if [ ! -d "$data_dir" ]; then
    mkdir -p "$data_dir"
    chmod 0700 "$data_dir"
    say "created $data_dir"
fi

# --- the unit -----------------------------------------------------------------------------
if [ -z "$ROLE" ]; then
    if [ -n "$(config_value token)" ]; then ROLE=agent; else ROLE=up; fi
fi
unit="edgepod-$ROLE.service"
if ! command -v systemctl >/dev/null 2>&1; then
    say "installed; no systemd here: start it with /usr/bin/edgepod $ROLE"
    exit 0
fi
# One role per device: the other units are disabled (the units conflict, too).
for other in $UNITS; do
    [ "$other" = "$unit" ] && continue
    if sctl is-enabled --quiet "$other" 2>/dev/null; then
        sctl disable --quiet "$other"
        say "disabled $other"
    fi
done
sctl enable --quiet "$unit"
if systemd_running; then
    systemctl daemon-reload
    # restart also starts; on an upgrade it replaces the edgepod process only and the
    # containers are re-adopted.
    systemctl restart "$unit" || die "$unit did not start; see: systemctl status $unit"
    say "installed; $unit enabled and (re)started"
else
    say "installed; $unit enabled${ROOT:+ in $ROOT}, not started (systemd is not running${ROOT:+ there})"
fi
