#!/usr/bin/env bash
# The packaging test (tests/run-all.sh runs it after the cross builds): builds the three .deb
# packages from target/cross/dist/edgepod-{aarch64,armv7,x86_64}, checks their contents and
# control data, installs the amd64 one into this machine with real dpkg (install, reinstall,
# upgrade, remove, reinstall as an agent, purge), checks the units with systemd-analyze, and
# runs packaging/install.sh into a staging root and into this machine.
#
# usage: tests/packaging.sh           (as root; EDGEPOD_CROSS_DIR as for cross/build.sh)
#
# This machine has no systemd as PID 1, so the maintainer scripts' systemctl calls run in
# systemctl's offline mode: units are enabled and disabled (symlinks, asserted here), nothing
# is started. Starting, restarting and container survival under systemd need a board.
#
# Leaves nothing installed: the package is purged and install.sh's files removed on exit,
# even on failure. An /etc/edgepod or /var/lib/edgepod that was here before is moved aside
# for the test and put back afterwards; an installed edgepod package stops the test.
#
# `COND && pass ... || fail ...` is used on purpose: pass always succeeds.

# shellcheck disable=SC2015
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CROSS_DIR="${EDGEPOD_CROSS_DIR:-$ROOT/target/cross}"
export EDGEPOD_CROSS_DIR="$CROSS_DIR"
DIST="$CROSS_DIR/dist"
VERSION="$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n1)"
UNITS=(edgepod-up.service edgepod-hub.service edgepod-agent.service)
WANTS=/etc/systemd/system/multi-user.target.wants
BACKUP_SUFFIX=".packaging-test-backup.$$"

failures=0
pass() { printf 'PASS: %s\n' "$1"; }
fail() {
    printf 'FAIL: %s\n' "$1"
    [ -n "${2:-}" ] && [ -s "$2" ] && sed 's/^/      | /' "$2" | head -n 25
    failures=$((failures + 1))
}
# check DESC CMD...: PASS when CMD succeeds, else FAIL with CMD's output.
check() {
    local desc="$1"
    shift
    if "$@" >"$TMP/check.log" 2>&1; then pass "$desc"; else fail "$desc" "$TMP/check.log"; fi
}
say() { printf '\n==> %s\n' "$*"; }

if [ "$(id -u)" != 0 ]; then
    echo "tests/packaging.sh must run as root (it installs the package with dpkg)" >&2
    exit 1
fi
for tool in dpkg dpkg-deb systemd-analyze systemctl file cmp; do
    command -v "$tool" >/dev/null || { echo "tests/packaging.sh: $tool is missing" >&2; exit 1; }
done
if dpkg-query -W -f '${Status}' edgepod 2>/dev/null | grep -q 'installed'; then
    echo "tests/packaging.sh: an edgepod package is installed here; remove it first" >&2
    exit 1
fi
if [ -e /usr/bin/edgepod ]; then
    echo "tests/packaging.sh: /usr/bin/edgepod exists (not from a package); remove it first" >&2
    exit 1
fi

TMP="$(mktemp -d "${TMPDIR:-/tmp}/edgepod-packaging.XXXXXX")"
MOVED=()
for dir in /etc/edgepod /var/lib/edgepod; do
    if [ -e "$dir" ]; then
        mv "$dir" "$dir$BACKUP_SUFFIX"
        MOVED+=("$dir")
        echo "(moved the existing $dir aside for the test)"
    fi
done

cleanup() {
    if dpkg-query -W -f '${Status}' edgepod 2>/dev/null | grep -q 'installed\|config-files'; then
        EDGEPOD_PURGE_DATA=1 dpkg --purge edgepod >/dev/null 2>&1 || echo "cleanup: dpkg --purge edgepod failed" >&2
    fi
    # What install.sh (into /) leaves when a check failed half-way.
    if [ -x "$ROOT/packaging/install.sh" ] && [ -e /usr/bin/edgepod ]; then
        EDGEPOD_PURGE_DATA=1 sh "$ROOT/packaging/install.sh" --uninstall --purge >/dev/null 2>&1 || true
    fi
    umount /var/lib/edgepod/pods-volume 2>/dev/null
    for unit in "${UNITS[@]}"; do rm -f "$WANTS/$unit"; done
    rm -rf /etc/edgepod /var/lib/edgepod
    for dir in "${MOVED[@]}"; do mv "$dir$BACKUP_SUFFIX" "$dir"; done
    rm -rf "$TMP"
}
trap cleanup EXIT

# dpkg, waiting for the lock when another dpkg or apt holds it (builders share this machine).
dpkg_run() {
    local _
    for _ in $(seq 1 60); do
        if dpkg "$@" </dev/null >"$TMP/dpkg.log" 2>&1; then return 0; fi
        grep -q 'lock' "$TMP/dpkg.log" || return 1
        sleep 2
    done
    return 1
}

# enabled_units: the edgepod units with an enable link, space separated.
enabled_units() {
    local unit out=()
    for unit in "${UNITS[@]}"; do [ -L "$WANTS/$unit" ] && out+=("$unit"); done
    echo "${out[*]:-}"
}

# --- build ------------------------------------------------------------------------------------
say "building the .deb packages (packaging/deb/build.sh)"
for arch in aarch64 armv7 x86_64; do
    [ -f "$DIST/edgepod-$arch" ] || { fail "$DIST/edgepod-$arch exists (run cross/build.sh all)"; }
done
if "$ROOT/packaging/deb/build.sh" arm64 armhf amd64 2>&1 | tee "$TMP/build.log"; then
    pass "packaging/deb/build.sh arm64 armhf amd64"
else
    fail "packaging/deb/build.sh arm64 armhf amd64" "$TMP/build.log"
    exit 1
fi

# --- contents of each package -------------------------------------------------------------------
shopt -s nullglob
BOARDS=("$ROOT"/board-configs/*.yaml)
shopt -u nullglob

# field DEB NAME: a control field of DEB.
field() { dpkg-deb -f "$1" "$2"; }

check_deb() {
    local debarch="$1" binarch="$2" magic="$3" deb
    deb="$DIST/edgepod_${VERSION}_${debarch}.deb"
    say "$debarch: $(basename "$deb")"
    if [ ! -f "$deb" ]; then
        fail "$debarch: $deb was built"
        return
    fi
    dpkg-deb -I "$deb" >"$TMP/info-$debarch" 2>&1 || fail "$debarch: dpkg-deb -I reads it" "$TMP/info-$debarch"
    dpkg-deb -c "$deb" >"$TMP/contents-$debarch" 2>&1 || fail "$debarch: dpkg-deb -c reads it" "$TMP/contents-$debarch"

    local got
    for pair in "Package=edgepod" "Version=$VERSION" "Architecture=$debarch" \
        "Recommends=containernetworking-plugins, nftables | iptables"; do
        got="$(field "$deb" "${pair%%=*}")"
        if [ "$got" = "${pair#*=}" ]; then
            pass "$debarch: control $pair"
        else
            fail "$debarch: control ${pair%%=*} is '${pair#*=}', not '$got'"
        fi
    done
    if [ -n "$(field "$deb" Depends)" ]; then
        fail "$debarch: no Depends (the binary is static), got '$(field "$deb" Depends)'"
    else
        pass "$debarch: no Depends (static binary)"
    fi

    mkdir -p "$TMP/ctrl-$debarch"
    dpkg-deb -e "$deb" "$TMP/ctrl-$debarch"
    if [ "$(cat "$TMP/ctrl-$debarch/conffiles" 2>/dev/null)" = /etc/edgepod/config.yaml ]; then
        pass "$debarch: conffiles is /etc/edgepod/config.yaml"
    else
        fail "$debarch: conffiles is /etc/edgepod/config.yaml" "$TMP/ctrl-$debarch/conffiles"
    fi
    local script
    for script in preinst postinst prerm postrm; do
        if [ -x "$TMP/ctrl-$debarch/$script" ] && sh -n "$TMP/ctrl-$debarch/$script" 2>"$TMP/sh.log" &&
            head -n1 "$TMP/ctrl-$debarch/$script" | grep -qx '#!/bin/sh'; then
            pass "$debarch: $script is an executable POSIX sh script that parses"
        else
            fail "$debarch: $script is an executable POSIX sh script that parses" "$TMP/sh.log"
        fi
    done

    # path MODE: every file we ship, with its mode (dpkg-deb -c's first column).
    local want=(
        "./usr/bin/edgepod -rwxr-xr-x"
        "./lib/systemd/system/edgepod-up.service -rw-r--r--"
        "./lib/systemd/system/edgepod-hub.service -rw-r--r--"
        "./lib/systemd/system/edgepod-agent.service -rw-r--r--"
        "./etc/edgepod/config.yaml -rw-------"
        "./etc/edgepod/manifests/ drwxr-xr-x"
        "./usr/share/edgepod/board-configs/ drwxr-xr-x"
        "./usr/share/doc/edgepod/copyright -rw-r--r--"
    )
    local b
    for b in "${BOARDS[@]}"; do want+=("./usr/share/edgepod/board-configs/$(basename "$b") -rw-r--r--"); done
    local entry path mode missing=0
    for entry in "${want[@]}"; do
        path="${entry% *}"
        mode="${entry##* }"
        if ! awk -v p="$path" -v m="$mode" '$6 == p && $1 == m && $2 == "root/root" { f = 1 } END { exit !f }' \
            "$TMP/contents-$debarch"; then
            echo "missing or wrong mode/owner: $path ($mode root/root)" >>"$TMP/missing-$debarch"
            missing=1
        fi
    done
    if [ "$missing" = 0 ]; then
        pass "$debarch: dpkg-deb -c lists binary, 3 units, config (0600), manifests dir, ${#BOARDS[@]} board configs, copyright, owned by root"
    else
        cat "$TMP/contents-$debarch" >>"$TMP/missing-$debarch"
        fail "$debarch: dpkg-deb -c lists every shipped file with its mode" "$TMP/missing-$debarch"
    fi
    local extra
    extra="$(awk '$1 !~ /^d/ { print $6 }' "$TMP/contents-$debarch" | while read -r p; do
        printf '%s\n' "${want[@]}" | grep -q "^$p " || echo "$p"
    done)"
    if [ -z "$extra" ]; then pass "$debarch: no unexpected files"; else fail "$debarch: unexpected files: $extra"; fi

    mkdir -p "$TMP/fs-$debarch"
    dpkg-deb -x "$deb" "$TMP/fs-$debarch"
    check "$debarch: /usr/bin/edgepod is dist/edgepod-$binarch byte for byte" \
        cmp "$TMP/fs-$debarch/usr/bin/edgepod" "$DIST/edgepod-$binarch"
    local desc
    desc="$(file -b "$TMP/fs-$debarch/usr/bin/edgepod")"
    if [[ "$desc" == *"$magic"* ]] && [[ "$desc" == *"static"* ]]; then
        pass "$debarch: the binary is a static $magic executable"
    else
        fail "$debarch: the binary is a static $magic executable (file: $desc)"
    fi
    check "$debarch: config.yaml is packaging/config.yaml" \
        cmp "$TMP/fs-$debarch/etc/edgepod/config.yaml" "$ROOT/packaging/config.yaml"
}

check_deb arm64 aarch64 "ARM aarch64"
check_deb armhf armv7 "ARM, EABI5"
check_deb amd64 x86_64 "x86-64"

# --- the units ---------------------------------------------------------------------------------
say "unit settings"
for unit in "${UNITS[@]}"; do
    f="$ROOT/packaging/systemd/$unit"
    role="${unit#edgepod-}"
    role="${role%.service}"
    others="$(printf '%s\n' "${UNITS[@]}" | grep -vx "$unit" | sort | tr '\n' ' ')"
    conflicts="$(sed -n 's/^Conflicts=//p' "$f" | tr ' ' '\n' | sort | tr '\n' ' ')"
    [ "$conflicts" = "$others" ] && pass "$unit: Conflicts= the other two units" ||
        fail "$unit: Conflicts= the other two units (got '$conflicts')"
    missing=""
    settings=("Type=notify" "NotifyAccess=main" "ExecStart=/usr/bin/edgepod $role" "Restart=always"
        "WantedBy=multi-user.target" "LimitNOFILE=1048576")
    case "$role" in
    up | agent) settings+=("KillMode=process" "Delegate=yes" "TasksMax=infinity") ;;
    esac
    for s in "${settings[@]}"; do grep -qx "$s" "$f" || missing="$missing $s"; done
    grep -q '^WatchdogSec=[1-9]' "$f" || missing="$missing WatchdogSec"
    grep -q '^RestartSec=[1-9]' "$f" || missing="$missing RestartSec"
    [ -z "$missing" ] && pass "$unit: ${settings[*]}, WatchdogSec, RestartSec" || fail "$unit: missing$missing"
    if [ "$role" != hub ]; then
        # The runtime's units must not get a private mount namespace or inherited filters.
        bad="$(grep -E '^(PrivateTmp|PrivateDevices|ProtectSystem|ProtectHome|ProtectKernel[A-Za-z]*|ProtectControlGroups|ProtectClock|ProtectHostname|ReadOnlyPaths|ReadWritePaths|InaccessiblePaths|TemporaryFileSystem|NoNewPrivileges|SystemCallFilter|MemoryDenyWriteExecute|LockPersonality|RestrictNamespaces|RestrictAddressFamilies|CapabilityBoundingSet|PrivateNetwork|PrivateMounts)=' "$f")"
        [ -z "$bad" ] && pass "$unit: no sandboxing that breaks a container runtime" ||
            fail "$unit: sandboxing that breaks a container runtime: $bad"
    fi
done

# --- dpkg -i into this machine ----------------------------------------------------------------------
DEB="$DIST/edgepod_${VERSION}_amd64.deb"
say "dpkg -i $(basename "$DEB") into this machine"
if dpkg_run -i "$DEB"; then pass "dpkg -i succeeds without systemd as PID 1"; else fail "dpkg -i" "$TMP/dpkg.log"; fi
cat "$TMP/dpkg.log"
status="$(dpkg-query -W -f '${Status} ${Version}' edgepod 2>/dev/null)"
[ "$status" = "install ok installed $VERSION" ] && pass "dpkg-query: $status" ||
    fail "dpkg-query says 'install ok installed $VERSION' (got '$status')"
if /usr/bin/edgepod --version >"$TMP/version.log" 2>&1 && grep -qx "edgepod $VERSION" "$TMP/version.log"; then
    pass "installed /usr/bin/edgepod runs: $(cat "$TMP/version.log")"
else
    fail "installed /usr/bin/edgepod --version prints 'edgepod $VERSION'" "$TMP/version.log"
fi
check "installed /usr/bin/edgepod --help" /usr/bin/edgepod --help
[ "$(stat -c %a /var/lib/edgepod 2>/dev/null)" = 700 ] && pass "postinst created /var/lib/edgepod, mode 0700" ||
    fail "postinst created /var/lib/edgepod, mode 0700 (got '$(stat -c %a /var/lib/edgepod 2>&1)')"
[ "$(stat -c '%a %U' /etc/edgepod/config.yaml 2>/dev/null)" = "600 root" ] &&
    pass "/etc/edgepod/config.yaml installed, 0600 root" ||
    fail "/etc/edgepod/config.yaml installed, 0600 root"
[ "$(enabled_units)" = edgepod-up.service ] && pass "postinst enabled edgepod-up.service only (no token in config.yaml)" ||
    fail "postinst enabled edgepod-up.service only (enabled: '$(enabled_units)')"

# systemd-analyze verify: warnings do not change its exit code, so its output must be empty too.
if systemd-analyze verify /lib/systemd/system/edgepod-{up,hub,agent}.service >"$TMP/verify.log" 2>&1 &&
    [ ! -s "$TMP/verify.log" ]; then
    pass "systemd-analyze verify of the installed units: no errors, no warnings"
else
    fail "systemd-analyze verify of the installed units" "$TMP/verify.log"
fi

say "reinstall and upgrade keep an edited config.yaml"
printf '# edited by tests/packaging.sh\nnode-labels: packaging-test=kept\n' >>/etc/edgepod/config.yaml
cp /etc/edgepod/config.yaml "$TMP/edited.yaml"
echo marker >/var/lib/edgepod/marker
if dpkg_run -i "$DEB"; then pass "dpkg -i of the same .deb again (reinstall)"; else fail "reinstall" "$TMP/dpkg.log"; fi
check "reinstall kept the edited /etc/edgepod/config.yaml" cmp /etc/edgepod/config.yaml "$TMP/edited.yaml"

BUMPED="$VERSION+pkgtest1"
mkdir -p "$TMP/bumped"
if EDGEPOD_DEB_VERSION="$BUMPED" EDGEPOD_DEB_OUT="$TMP/bumped" "$ROOT/packaging/deb/build.sh" amd64 >"$TMP/bump.log" 2>&1; then
    pass "built a version-bumped amd64 package ($BUMPED)"
else
    fail "built a version-bumped amd64 package" "$TMP/bump.log"
fi
if dpkg_run -i "$TMP/bumped/edgepod_${BUMPED}_amd64.deb"; then
    pass "dpkg -i of $BUMPED over $VERSION (upgrade)"
else
    fail "upgrade to $BUMPED" "$TMP/dpkg.log"
fi
[ "$(dpkg-query -W -f '${Version}' edgepod 2>/dev/null)" = "$BUMPED" ] && pass "dpkg-query reports $BUMPED" ||
    fail "dpkg-query reports $BUMPED"
check "upgrade kept the edited /etc/edgepod/config.yaml" cmp /etc/edgepod/config.yaml "$TMP/edited.yaml"
check "upgrade kept the data dir's contents" grep -qx marker /var/lib/edgepod/marker
[ "$(enabled_units)" = edgepod-up.service ] && pass "upgrade left the enabled unit alone (edgepod-up.service)" ||
    fail "upgrade left the enabled unit alone (enabled: '$(enabled_units)')"

say "remove, then reinstall with a join token: the agent's unit"
if dpkg_run -r edgepod; then pass "dpkg -r edgepod"; else fail "dpkg -r edgepod" "$TMP/dpkg.log"; fi
[ ! -e /usr/bin/edgepod ] && [ ! -e /lib/systemd/system/edgepod-up.service ] &&
    pass "remove took the binary and units" || fail "remove took the binary and units"
[ -z "$(enabled_units)" ] && pass "prerm disabled the units (no enable links left)" ||
    fail "prerm disabled the units (still enabled: $(enabled_units))"
check "remove kept /etc/edgepod/config.yaml (a conffile)" cmp /etc/edgepod/config.yaml "$TMP/edited.yaml"
echo 'token: "PKGTEST-TOKEN" # a comment' >>/etc/edgepod/config.yaml
if dpkg_run -i "$DEB"; then pass "dpkg -i after remove (a downgrade to $VERSION, too)"; else fail "dpkg -i after remove" "$TMP/dpkg.log"; fi
[ "$(enabled_units)" = edgepod-agent.service ] && pass "postinst enabled edgepod-agent.service (config.yaml has a token)" ||
    fail "postinst enabled edgepod-agent.service (enabled: '$(enabled_units)')"

say "purge"
if dpkg_run --purge edgepod; then pass "dpkg --purge edgepod"; else fail "dpkg --purge edgepod" "$TMP/dpkg.log"; fi
cat "$TMP/dpkg.log"
left=""
for p in /usr/bin/edgepod /etc/edgepod /lib/systemd/system/edgepod-up.service \
    /lib/systemd/system/edgepod-hub.service /lib/systemd/system/edgepod-agent.service \
    /usr/share/edgepod /usr/share/doc/edgepod; do
    [ -e "$p" ] && left="$left $p"
done
[ -z "$left" ] && pass "purge removed the binary, units, /etc/edgepod, board configs, docs" || fail "purge left:$left"
[ -z "$(enabled_units)" ] && pass "purge left no enable links" || fail "purge left enable links: $(enabled_units)"
[ -z "$(dpkg-query -W -f '${Status}' edgepod 2>/dev/null)" ] ||
    [ "$(dpkg-query -W -f '${Status}' edgepod 2>/dev/null)" = "unknown ok not-installed" ] &&
    pass "dpkg knows no edgepod any more" || fail "dpkg knows no edgepod any more"
check "purge kept the data dir (no EDGEPOD_PURGE_DATA)" grep -qx marker /var/lib/edgepod/marker

say "purge with EDGEPOD_PURGE_DATA=1 removes the data dir, but never through a mount"
dpkg_run -i "$DEB" || fail "dpkg -i for the data purge" "$TMP/dpkg.log"
mkdir -p /var/lib/edgepod/pods-volume "$TMP/mnt"
# A bind mount below the data dir, as a running pod's volume would be: its files must survive.
echo precious >"$TMP/mnt/host-file"
if mount --bind "$TMP/mnt" /var/lib/edgepod/pods-volume; then
    EDGEPOD_PURGE_DATA=1 dpkg_run --purge edgepod || fail "dpkg --purge with a mount below the data dir" "$TMP/dpkg.log"
    check "purge with a mount below the data dir kept it and the mounted files" \
        grep -qx precious /var/lib/edgepod/pods-volume/host-file
    umount /var/lib/edgepod/pods-volume
    dpkg_run -i "$DEB" || fail "dpkg -i for the data purge" "$TMP/dpkg.log"
else
    fail "bind mount below the data dir (for the purge safety check)"
fi
if EDGEPOD_PURGE_DATA=1 dpkg_run --purge edgepod && [ ! -e /var/lib/edgepod ]; then
    pass "EDGEPOD_PURGE_DATA=1 dpkg --purge removed /var/lib/edgepod"
else
    fail "EDGEPOD_PURGE_DATA=1 dpkg --purge removed /var/lib/edgepod" "$TMP/dpkg.log"
fi
check "the bind-mounted host file is intact" grep -qx precious "$TMP/mnt/host-file"

# --- install.sh ----------------------------------------------------------------------------------
say "packaging/install.sh --root (a staging root)"
STAGE="$TMP/stage"
if sh "$ROOT/packaging/install.sh" --root "$STAGE" "$DIST/edgepod-x86_64" >"$TMP/install.log" 2>&1; then
    pass "install.sh --root $STAGE"
else
    fail "install.sh --root" "$TMP/install.log"
fi
# The same tree as the .deb: every path and mode dpkg-deb -c lists, plus the enable link and
# the data dir.
(cd "$STAGE" && find . -mindepth 1 \( -type f -o -type d -o -type l \) -printf '%M %p\n' | sort) >"$TMP/stage.list"
awk '{ p = $6; sub(/\/$/, "", p); if (p != ".") print $1, p }' "$TMP/contents-amd64" | sort >"$TMP/deb.list"
if missing="$(comm -23 "$TMP/deb.list" "$TMP/stage.list")" && [ -z "$missing" ]; then
    pass "install.sh installed every file of the .deb with the same mode"
else
    fail "install.sh installed every file of the .deb with the same mode; missing: $missing"
fi
extra="$(comm -13 "$TMP/deb.list" "$TMP/stage.list" | awk '{ print $2 }' | sort | tr '\n' ' ')"
want_extra="./etc/systemd ./etc/systemd/system ./etc/systemd/system/multi-user.target.wants ./etc/systemd/system/multi-user.target.wants/edgepod-up.service ./var ./var/lib ./var/lib/edgepod "
[ "$extra" = "$want_extra" ] && pass "install.sh added only the enable link (edgepod-up) and the data dir" ||
    fail "install.sh added only the enable link and the data dir (got: $extra)"
[ "$(stat -c %a "$STAGE/var/lib/edgepod")" = 700 ] && pass "install.sh data dir is 0700" || fail "install.sh data dir is 0700"
check "install.sh binary is dist/edgepod-x86_64" cmp "$STAGE/usr/bin/edgepod" "$DIST/edgepod-x86_64"
# verify --root resolves the units' dependencies (sysinit.target ...) inside the root: a copy
# of the staging root with this machine's own units beside ours.
cp -a "$STAGE" "$TMP/vroot"
cp -a /lib/systemd/system/. "$TMP/vroot/lib/systemd/system/"
cp -f "$STAGE"/lib/systemd/system/edgepod-*.service "$TMP/vroot/lib/systemd/system/"
if systemd-analyze verify --root="$TMP/vroot" "$TMP/vroot"/lib/systemd/system/edgepod-{up,hub,agent}.service \
    >"$TMP/verify-stage.log" 2>&1 && [ ! -s "$TMP/verify-stage.log" ]; then
    pass "systemd-analyze verify --root of install.sh's units: no errors, no warnings"
else
    fail "systemd-analyze verify --root of install.sh's units" "$TMP/verify-stage.log"
fi
rm -rf "$TMP/vroot"

printf 'node-labels: staged=kept\n' >>"$STAGE/etc/edgepod/config.yaml"
cp "$STAGE/etc/edgepod/config.yaml" "$TMP/staged.yaml"
sh "$ROOT/packaging/install.sh" --root "$STAGE" "$DIST/edgepod-x86_64" >"$TMP/install.log" 2>&1 ||
    fail "install.sh --root again" "$TMP/install.log"
check "install.sh again kept the existing config.yaml" cmp "$STAGE/etc/edgepod/config.yaml" "$TMP/staged.yaml"
EDGEPOD_TOKEN='tok/en&with#odd=chars' sh "$ROOT/packaging/install.sh" --root "$STAGE" "$DIST/edgepod-x86_64" \
    >"$TMP/install.log" 2>&1 || fail "EDGEPOD_TOKEN=... install.sh --root" "$TMP/install.log"
if grep -qx 'token: tok/en&with#odd=chars' "$STAGE/etc/edgepod/config.yaml" &&
    grep -qx 'node-labels: staged=kept' "$STAGE/etc/edgepod/config.yaml"; then
    pass "EDGEPOD_TOKEN set token: in the existing config and kept the rest"
else
    fail "EDGEPOD_TOKEN set token: in the existing config and kept the rest" "$STAGE/etc/edgepod/config.yaml"
fi
links="$(cd "$STAGE/etc/systemd/system/multi-user.target.wants" && ls)"
[ "$links" = edgepod-agent.service ] && pass "EDGEPOD_TOKEN: edgepod-agent.service enabled, edgepod-up.service disabled" ||
    fail "EDGEPOD_TOKEN: edgepod-agent.service enabled, edgepod-up.service disabled (got: $links)"
sh "$ROOT/packaging/install.sh" --root "$STAGE" --uninstall >"$TMP/install.log" 2>&1 ||
    fail "install.sh --uninstall" "$TMP/install.log"
if [ ! -e "$STAGE/usr/bin/edgepod" ] && [ -z "$(ls "$STAGE/lib/systemd/system")" ] &&
    [ -z "$(ls "$STAGE/etc/systemd/system/multi-user.target.wants" 2>/dev/null)" ] &&
    [ -f "$STAGE/etc/edgepod/config.yaml" ] && [ -d "$STAGE/var/lib/edgepod" ]; then
    pass "install.sh --uninstall removed binary, units and links, kept config and data dir"
else
    fail "install.sh --uninstall removed binary, units and links, kept config and data dir"
fi
sh "$ROOT/packaging/install.sh" --root "$STAGE" --uninstall --purge >"$TMP/install.log" 2>&1 ||
    fail "install.sh --uninstall --purge" "$TMP/install.log"
[ ! -e "$STAGE/etc/edgepod" ] && [ -d "$STAGE/var/lib/edgepod" ] &&
    pass "install.sh --uninstall --purge removed /etc/edgepod, kept the data dir" ||
    fail "install.sh --uninstall --purge removed /etc/edgepod, kept the data dir"

say "packaging/install.sh into this machine (binary picked by uname -m from the dist dir)"
if sh "$ROOT/packaging/install.sh" --dist "$DIST" >"$TMP/install.log" 2>&1; then
    pass "install.sh --dist $DIST"
else
    fail "install.sh --dist" "$TMP/install.log"
fi
cat "$TMP/install.log"
check "install.sh picked dist/edgepod-$(uname -m)" cmp /usr/bin/edgepod "$DIST/edgepod-$(uname -m)"
[ "$(enabled_units)" = edgepod-up.service ] && pass "install.sh enabled edgepod-up.service (offline)" ||
    fail "install.sh enabled edgepod-up.service (enabled: '$(enabled_units)')"
EDGEPOD_PURGE_DATA=1 sh "$ROOT/packaging/install.sh" --uninstall --purge >"$TMP/install.log" 2>&1 ||
    fail "install.sh --uninstall --purge" "$TMP/install.log"
left=""
for p in /usr/bin/edgepod /etc/edgepod /var/lib/edgepod /usr/share/edgepod /usr/share/doc/edgepod \
    /lib/systemd/system/edgepod-up.service; do
    [ -e "$p" ] && left="$left $p"
done
[ -z "$left" ] && [ -z "$(enabled_units)" ] && pass "EDGEPOD_PURGE_DATA=1 install.sh --uninstall --purge left nothing" ||
    fail "install.sh --uninstall --purge left:$left $(enabled_units)"

# --- sizes ------------------------------------------------------------------------------------------
say "sizes"
printf '  %-34s %12s %8s\n' file bytes MiB
for f in "$DIST"/edgepod-aarch64 "$DIST"/edgepod-armv7 "$DIST"/edgepod-x86_64 \
    "$DIST"/edgepod_"${VERSION}"_arm64.deb "$DIST"/edgepod_"${VERSION}"_armhf.deb "$DIST"/edgepod_"${VERSION}"_amd64.deb; do
    [ -f "$f" ] || continue
    s="$(stat -c %s "$f")"
    printf '  %-34s %12d %8s\n' "$(basename "$f")" "$s" "$(awk -v s="$s" 'BEGIN { printf "%.2f", s / 1048576 }')"
done

echo
if [ "$failures" -gt 0 ]; then
    echo "tests/packaging.sh: $failures check(s) FAILED"
    exit 1
fi
echo "tests/packaging.sh: all checks passed"
