#!/usr/bin/env bash
# The main job: build edgepod, import a busybox image built from Debian's busybox-static, and run
# the agent with the sample static pod (packaging/manifests/web.yaml). Run as root; Ctrl-C stops
# the agent (the pod keeps running, as with the kubelet; remove the manifest to stop it).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${EDGEPOD_DATA_DIR:-/var/lib/edgepod-demo}
MANIFESTS=${EDGEPOD_MANIFESTS:-$DATA/manifests}
missing=()
for pair in busybox:busybox-static skopeo:skopeo umoci:umoci; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
cargo build --release
BIN=target/release/edgepod
mkdir -p "$DATA" "$MANIFESTS" target/demo
tests/fixtures/build-busybox-image.sh target/demo
"$BIN" --data-dir "$DATA" image import target/demo/busybox.oci.tar
cp packaging/manifests/web.yaml "$MANIFESTS/"
echo "edgepod agent: data dir $DATA, manifests $MANIFESTS"
echo "in another shell: $BIN --data-dir $DATA get pods -o wide; $BIN --data-dir $DATA logs web-$(hostname) -c writer"
exec "$BIN" --data-dir "$DATA" agent --manifests "$MANIFESTS"
