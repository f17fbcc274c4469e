#!/usr/bin/env bash
# HTTP serving, side by side: the same http-hello component, the same load tool (wrk, from
# Debian's packages) and the same concurrency against
#   (a) a skiff node's gateway straight to the pod (Host: <pod>.default.pod),
#   (b) the same gateway through a Service (Host: <service>),
#   (c) `wasmtime serve` (wasmtime-cli 48.0.8, the wasmtime skiff embeds, from crates.io),
# then prints requests/s, p50 and p99 of each and the ratios to (c). Then `skiff bench http`:
# its own load numbers and, with PODS (default 1000) HTTP pods of distinct modules on the node,
# the first request to each newly Ready pod and the node's RSS.
#   bench/http.sh                      # CONNECTIONS=32 DURATION=10s PODS=1000
#   SERVE_FLAGS="-O pooling-allocator=y -O pooling-memory-keep-resident=2097152" bench/http.sh
#                                      # (c) with wasmtime's own tuning (default: its defaults)
# wrk and wasmtime are installed if missing (wasmtime under .skiff/tools; building it takes
# a while the first time).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
CONNECTIONS=${CONNECTIONS:-32}
DURATION=${DURATION:-10s}
PODS=${PODS:-1000}
THREADS=${THREADS:-2}
TOOLS=${SKIFF_BENCH_TOOLS:-$PWD/.skiff/tools}
# Both servers run as users run them: no backtraces captured for every error value.
unset RUST_BACKTRACE RUST_LIB_BACKTRACE

need_wrk
WASMTIME=$TOOLS/bin/wasmtime
if ! "$WASMTIME" --version 2>/dev/null | grep -q "^wasmtime 48.0.8"; then
  echo "==> installing wasmtime-cli 48.0.8 into $TOOLS (cargo install; takes minutes)" >&2
  cargo install wasmtime-cli --version 48.0.8 --locked --quiet --root "$TOOLS"
fi
echo "==> building skiff (release) and http-hello" >&2
cargo build --release --quiet
(cd wasm-examples && cargo build --release --target wasm32-wasip2 -p http-hello --quiet)
SKIFF=$PWD/target/release/skiff
MODULE=$PWD/wasm-examples/target/wasm32-wasip2/release/http_hello.wasm

dir=$(mktemp -d)
"$SKIFF" server --data-dir "$dir" --listen 127.0.0.1:0 --gateway-port 0 --node-name bench >"$dir/out" 2>"$dir/log" &
pid=$!
serve_pid=
cleanup() {
  [[ -n $serve_pid ]] && kill "$serve_pid" 2>/dev/null
  kill $pid 2>/dev/null; wait $pid 2>/dev/null
  rm -rf "$dir"
}
trap cleanup EXIT
await_ready $pid "$dir"
export KUBECONFIG=$dir/kubeconfig.yaml
"$SKIFF" push hello-bench:latest "$MODULE" >/dev/null
kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: hello-bench
  labels: {app: hello-bench}
spec:
  containers:
  - name: hello
    image: hello-bench:latest
    ports: [{name: http, containerPort: 8080}]
    env: [{name: POD_NAME, value: hello-bench}]
---
apiVersion: v1
kind: Service
metadata:
  name: hello-bench
spec:
  selector: {app: hello-bench}
  ports: [{port: 80, targetPort: http}]
EOF
kubectl wait --for=condition=Ready pod/hello-bench --timeout=60s >/dev/null
GW=$(kubectl get node bench -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}:{.metadata.annotations.skiff\.dev/gateway-port}')
for _ in $(seq 100); do
  curl -sf -H 'Host: hello-bench' "http://$GW/" >/dev/null && break
  sleep 0.1
done



echo "==> wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency, same machine (2 cores shared with the server)" >&2
# Only the cluster may name a pod: the bench presents the peer proof other nodes' gateways
# send (SHA-256 of a label and the join token).
PEER=$(peer_proof "$dir")
read -r a_rps a_p50 a_p99 < <(run_wrk "http://$GW/" -H "Host: hello-bench.default.pod" -H "skiff-gateway-peer: $PEER")
read -r b_rps b_p50 b_p99 < <(run_wrk "http://$GW/" -H "Host: hello-bench")
SERVE_ADDR=${SERVE_ADDR:-127.0.0.1:18181}
"$WASMTIME" serve ${SERVE_FLAGS:-} -S cli=y --env POD_NAME=hello-bench --addr "$SERVE_ADDR" "$MODULE" >"$dir/serve.log" 2>&1 &
serve_pid=$!
for _ in $(seq 100); do
  curl -sf "http://$SERVE_ADDR/" >/dev/null && break
  sleep 0.1
done
read -r c_rps c_p50 c_p99 < <(run_wrk "http://$SERVE_ADDR/")
kill $serve_pid; wait $serve_pid 2>/dev/null || true; serve_pid=

printf '%-34s %12s %10s %10s %14s %12s\n' target "requests/s" "p50 ms" "p99 ms" "rps ratio" "p99 - (c)" >&2
row() { awk -v n="$1" -v r="$2" -v p5="$3" -v p9="$4" -v cr="$c_rps" -v c9="$c_p99" \
  'BEGIN { printf "%-34s %12.0f %10.3f %10.3f %13.2fx %+11.3f\n", n, r, p5, p9, r / cr, p9 - c9 }' >&2; }
row "(a) skiff gateway → pod" "$a_rps" "$a_p50" "$a_p99"
row "(b) skiff gateway → Service" "$b_rps" "$b_p50" "$b_p99"
row "(c) wasmtime serve" "$c_rps" "$c_p50" "$c_p99"
for x in a b c; do
  eval "r=\$${x}_rps p5=\$${x}_p50 p9=\$${x}_p99"
  echo "{\"bench\":\"wrk-$x\",\"rps\":$r,\"p50_ms\":$p5,\"p99_ms\":$p9,\"connections\":$CONNECTIONS}"
done
awk -v a="$a_rps" -v b="$b_rps" -v c="$c_rps" -v a9="$a_p99" -v b9="$b_p99" -v c9="$c_p99" 'BEGIN {
  printf "{\"bench\":\"http-ratios\",\"a_over_c\":%.3f,\"b_over_c\":%.3f,\"a_p99_minus_c_ms\":%.3f,\"b_p99_minus_c_ms\":%.3f}\n", a / c, b / c, a9 - c9, b9 - c9 }'
kubectl delete pod/hello-bench service/hello-bench --wait=false >/dev/null

echo "==> skiff bench http (built-in load, then $PODS pods of distinct modules)" >&2
"$SKIFF" bench http --kubeconfig "$KUBECONFIG" --module "$MODULE" --connections "$CONNECTIONS" --pods "$PODS" --pid $pid
echo "# server CPU: $(awk '{ printf "%.1f s user, %.1f s system", $14 / 100, $15 / 100 }' /proc/$pid/stat)" >&2
