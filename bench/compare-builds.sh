#!/usr/bin/env bash
# Two (or more) skiff builds side by side, one after the other on this machine: for each
# binary, a fresh `skiff server` with http-hello, `wrk -t2 -c32 -d10s --latency` against its
# gateway (through the Service, and by pod host name with the peer proof), then
# `skiff bench api --writes 2000 --clients 1,16,64 --list-pods 2000`. For checking that a change
# costs nothing: build the old tree's release binary into a copy first.
#   bench/compare-builds.sh /tmp/skiff-old target/release/skiff      # RUNS=2 by default
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
[[ $# -ge 1 ]] || { echo "usage: bench/compare-builds.sh SKIFF_BINARY..." >&2; exit 2; }
command -v wrk >/dev/null || { SUDO=; [[ $(id -u) == 0 ]] || SUDO=sudo; $SUDO apt-get install -y wrk >/dev/null 2>&1 || { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y wrk >/dev/null; }; }
(cd wasm-examples && cargo build --release --target wasm32-wasip2 -p http-hello --quiet)
MODULE=$PWD/wasm-examples/target/wasm32-wasip2/release/http_hello.wasm

measure() {
  local bin=$1 dir pid gw peer
  dir=$(mktemp -d)
  "$bin" server --data-dir "$dir/data" --listen 127.0.0.1:0 --gateway-port 0 --node-name bench >"$dir/out" 2>"$dir/log" &
  pid=$!
  # shellcheck disable=SC2064
  trap "kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf '$dir'" RETURN
  await_ready "$pid" "$dir"
  export KUBECONFIG=$dir/data/kubeconfig.yaml
  kubectl wait --for=condition=Ready node --all --timeout=60s >/dev/null
  "$bin" push hello-bench:latest "$MODULE" >/dev/null
  kubectl apply -f - >/dev/null <<EOT
apiVersion: v1
kind: Pod
metadata: {name: hello-bench, labels: {app: hello-bench}}
spec:
  containers:
  - {name: hello, image: "hello-bench:latest", ports: [{name: http, containerPort: 8080}], env: [{name: POD_NAME, value: hello-bench}]}
---
apiVersion: v1
kind: Service
metadata: {name: hello-bench}
spec:
  selector: {app: hello-bench}
  ports: [{port: 80, targetPort: http}]
EOT
  kubectl wait --for=condition=Ready pod/hello-bench --timeout=60s >/dev/null
  gw=$(kubectl get node bench -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}:{.metadata.annotations.skiff\.dev/gateway-port}')
  for _ in $(seq 100); do curl -sf -H 'Host: hello-bench' "http://$gw/" >/dev/null && break; sleep 0.1; done
  peer=$(peer_proof "$dir/data")
  for host in hello-bench hello-bench.default.pod; do
    echo "== $bin: wrk -t2 -c32 -d10s, Host: $host"
    wrk -t2 -c32 -d10s --latency -H "Host: $host" -H "skiff-gateway-peer: $peer" "http://$gw/" | grep -E "Requests/sec|^ +50%|^ +99%|Non-2xx"
  done
  echo "== $bin: skiff bench api"
  "$bin" bench api --kubeconfig "$KUBECONFIG" --writes 2000 --clients 1,16,64 --list-pods 2000 2>/dev/null
}

for run in $(seq "${RUNS:-2}"); do
  for bin in "$@"; do
    echo "### run $run" >&2
    measure "$(realpath "$bin")"
  done
done
