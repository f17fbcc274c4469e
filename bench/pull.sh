#!/usr/bin/env bash
# Issue 27's benchmark: a pod's first start when its module must be fetched, from an OCI registry
# (Debian's docker-registry on loopback, plain HTTP) and from skiff's own module store side by
# side, a new registry tag of a module the node has, and a start from the node's cache
# (`skiff bench pull`, N rounds, default 20), on a fresh release `skiff server`.
#   bench/pull.sh            # N=20
#   SKIFF=/path/to/skiff N=50 bench/pull.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
N=${N:-20}
need_skiff
(cd wasm-examples && cargo build --release --target wasm32-wasip1 -p hello --quiet)
MODULE=$PWD/wasm-examples/target/wasm32-wasip1/release/hello.wasm
command -v docker-registry >/dev/null || scripts/setup.sh
with_workdir
port=$((20000 + RANDOM % 20000))
registry=127.0.0.1:$port
cat >"$work/registry.yml" <<YAML
version: 0.1
log: {level: error}
storage:
  filesystem: {rootdirectory: $work/registry}
http:
  addr: "$registry"
YAML
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -sf "http://$registry/v2/" >/dev/null && break; sleep 0.1; done
mkdir -p "$work/server"
"$SKIFF" server --data-dir "$work/server" --listen 127.0.0.1:0 --gateway-port 0 --node-name bench \
  --insecure-registry "$registry" >"$work/server/out" 2>"$work/server/log" &
pids+=($!)
await_ready "${pids[-1]}" "$work/server"
"$SKIFF" bench pull --kubeconfig "$work/server/kubeconfig.yaml" --registry "$registry" --insecure \
  --module "$MODULE" --n "$N"
