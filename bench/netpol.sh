#!/usr/bin/env bash
# What NetworkPolicy enforcement costs on the data path: the same http-hello Service, the same
# load (wrk, Debian's package), with no policy and with policies that isolate the pod and allow
# the client by ipBlock (so every request is decided: policy lookup, pod and namespace lookups,
# selector and CIDR matching). Rounds alternate on one server, so drift hits both alike; prints
# requests/s, p50 and p99 per round and the medians.
#   bench/netpol.sh                    # ROUNDS=5 DURATION=5s CONNECTIONS=32
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
CONNECTIONS=${CONNECTIONS:-32}
DURATION=${DURATION:-5s}
ROUNDS=${ROUNDS:-5}
THREADS=${THREADS:-2}
unset RUST_BACKTRACE RUST_LIB_BACKTRACE

need_wrk
echo "==> building skiff (release) and http-hello" >&2
cargo build --release --quiet
(cd wasm-examples && cargo build --release --target wasm32-wasip2 -p http-hello --quiet)
SKIFF=$PWD/target/release/skiff
MODULE=$PWD/wasm-examples/target/wasm32-wasip2/release/http_hello.wasm

dir=$(mktemp -d)
"$SKIFF" server --data-dir "$dir" --listen 127.0.0.1:0 --gateway-port 0 --node-name bench >"$dir/out" 2>"$dir/log" &
pid=$!
cleanup() { kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"; }
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

POLICIES='
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny}
spec:
  podSelector: {}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-loopback}
spec:
  podSelector: {matchLabels: {app: hello-bench}}
  ingress:
  - from: [{ipBlock: {cidr: 127.0.0.0/8}}]
    ports: [{port: http}]
'



# Wait until the gateway answers as the mode expects (policies reach it through a watch).
settle() {
  local want=$1
  for _ in $(seq 100); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' -H 'Host: hello-bench' "http://$GW/") == "$want" ]] && return 0
    sleep 0.05
  done
  echo "the gateway never answered $want" >&2; return 1
}

echo "==> wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency through the Service, $ROUNDS rounds" >&2
: >"$dir/none"; : >"$dir/policy"
for r in $(seq "$ROUNDS"); do
  for mode in none policy; do
    if [[ $mode == policy ]]; then
      echo "$POLICIES" | kubectl apply -f - >/dev/null
      # Isolated and allowed: the probe of a client outside 127/8 would be refused; ours passes.
      settle 200
    else
      kubectl delete networkpolicy --all >/dev/null
      settle 200
    fi
    read -r rps p50 p99 < <(run_wrk "http://$GW/" -H "Host: hello-bench")
    echo "$rps $p50 $p99" >>"$dir/$mode"
    echo "{\"bench\":\"netpol\",\"round\":$r,\"mode\":\"$mode\",\"rps\":$rps,\"p50_ms\":$p50,\"p99_ms\":$p99}"
  done
done
# A refused call is refused at once (not a timeout): the default deny alone.
kubectl delete networkpolicy from-loopback >/dev/null
settle 403
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
printf '%-10s %12s %10s %10s\n' mode "requests/s" "p50 ms" "p99 ms" >&2
for mode in none policy; do
  rps=$(awk '{ print $1 }' "$dir/$mode" | median)
  p50=$(awk '{ print $2 }' "$dir/$mode" | median)
  p99=$(awk '{ print $3 }' "$dir/$mode" | median)
  printf '%-10s %12.0f %10.3f %10.3f\n' "$mode" "$rps" "$p50" "$p99" >&2
  echo "{\"bench\":\"netpol-median\",\"mode\":\"$mode\",\"rps\":$rps,\"p50_ms\":$p50,\"p99_ms\":$p99,\"rounds\":$ROUNDS}"
done
