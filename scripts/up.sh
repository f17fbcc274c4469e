#!/usr/bin/env bash
# Take a fresh clone to a running one-node skiff cluster with the examples pushed and applied.
#   scripts/up.sh            # start (or restart) the cluster, push + apply the examples
#   scripts/up.sh down       # stop it
# Settings: SKIFF_HOME (default ./.skiff), SKIFF_LISTEN (default 127.0.0.1:6443).
set -euo pipefail
cd "$(dirname "$0")/.."
HOME_DIR=${SKIFF_HOME:-$PWD/.skiff}
LISTEN=${SKIFF_LISTEN:-127.0.0.1:6443}
DATA=$HOME_DIR/data
PIDFILE=$HOME_DIR/server.pid
KUBECONFIG_PATH=$DATA/kubeconfig.yaml

stop() {
  if [[ -f $PIDFILE ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    kill "$(cat "$PIDFILE")"
    for _ in $(seq 50); do kill -0 "$(cat "$PIDFILE")" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$PIDFILE"
}

if [[ ${1:-} == down ]]; then stop; echo "skiff stopped"; exit 0; fi

bash scripts/setup.sh

echo "==> building the wasm examples (wasm-examples/, targets from its rust-toolchain.toml)"
(cd wasm-examples && cargo build --release --target wasm32-wasip1 -q && cargo build --release --target wasm32-wasip2 -p hello -p http-hello -p http-api -p http-caller -q)
echo "==> building skiff (release)"
cargo build --release -q
SKIFF=$PWD/target/release/skiff

stop
mkdir -p "$HOME_DIR"
echo "==> starting skiff server on $LISTEN (data in $DATA, log in $HOME_DIR/server.log)"
nohup "$SKIFF" server --data-dir "$DATA" --listen "$LISTEN" >"$HOME_DIR/server.out" 2>"$HOME_DIR/server.log" &
echo $! >"$PIDFILE"
for _ in $(seq 300); do
  grep -q "ready at" "$HOME_DIR/server.out" 2>/dev/null && break
  kill -0 "$(cat "$PIDFILE")" 2>/dev/null || { echo "error: the server exited; see $HOME_DIR/server.log" >&2; tail -20 "$HOME_DIR/server.log" >&2; exit 1; }
  sleep 0.1
done
export KUBECONFIG=$KUBECONFIG_PATH
kubectl wait --for=condition=Ready node --all --timeout=60s >/dev/null

echo "==> pushing the example modules"
W=wasm-examples/target
"$SKIFF" push hello:latest $W/wasm32-wasip1/release/hello.wasm
"$SKIFF" push hello-p2:latest $W/wasm32-wasip2/release/hello.wasm
"$SKIFF" push ticker:latest $W/wasm32-wasip1/release/ticker.wasm
"$SKIFF" push crash:latest $W/wasm32-wasip1/release/crash.wasm
for m in envprint memhog spinner; do "$SKIFF" push $m:latest $W/wasm32-wasip1/release/$m.wasm; done
for m in http-hello http-api http-caller; do "$SKIFF" push $m:latest $W/wasm32-wasip2/release/${m//-/_}.wasm; done

echo "==> applying wasm-examples/manifests/"
kubectl apply -f wasm-examples/manifests/
kubectl wait --for=jsonpath='{.status.phase}'=Succeeded pod/hello --timeout=60s >/dev/null
kubectl rollout status deployment/http-hello --timeout=60s >/dev/null
kubectl get pods
echo "==> http-hello through the node's gateway (Service, Ingress, NodePort)"
curl -sf -H 'Host: http-hello' http://127.0.0.1:8080/
curl -sf -H 'Host: hello.local' http://127.0.0.1:8080/
curl -sf http://127.0.0.1:30080/

cat <<EOT

skiff is running. Next:
  export KUBECONFIG=$KUBECONFIG_PATH
  kubectl get pods
  kubectl logs hello
  kubectl logs -f ticker
  curl -H 'Host: http-hello' http://127.0.0.1:8080/
  curl -H 'Host: api.local' http://127.0.0.1:8080/items
Stop it with: scripts/up.sh down
EOT
