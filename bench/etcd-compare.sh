#!/usr/bin/env bash
# Durable writes/s of skiff against etcd on this machine, side by side.
#
#   bench/etcd-compare.sh [WRITES] [CLIENTS]      (defaults: 4000 writes, 16,64 clients)
#
# Installs Debian's etcd-server if it is missing, starts etcd and `skiff server --no-node` on
# loopback with fresh data directories, runs the same load against both (pod-sized values:
# `skiff bench api` creates pods through the Kubernetes API over TLS; `skiff bench etcd` puts
# the same bytes through etcd's v3 HTTP gateway), prints each result and the ratio skiff/etcd,
# and stops both. Both fsync every commit (etcd by default, skiff with synchronous=FULL).
set -euo pipefail
cd "$(dirname "$0")/.."
WRITES=${1:-4000}
CLIENTS=${2:-16,64}

if ! command -v etcd >/dev/null; then
  echo "installing etcd-server (Debian)" >&2
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null
fi
[ -x target/release/skiff ] || cargo build --release -q

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

port=$((20000 + RANDOM % 20000))
etcd --name bench --data-dir "$work/etcd" \
  --listen-client-urls "http://127.0.0.1:$port" --advertise-client-urls "http://127.0.0.1:$port" \
  --listen-peer-urls "http://127.0.0.1:$((port + 1))" \
  --initial-advertise-peer-urls "http://127.0.0.1:$((port + 1))" \
  --initial-cluster "bench=http://127.0.0.1:$((port + 1))" >"$work/etcd.log" 2>&1 &
pids+=($!)
target/release/skiff server --data-dir "$work/skiff" --listen 127.0.0.1:0 --no-node \
  >"$work/skiff.out" 2>"$work/skiff.log" &
pids+=($!)

deadline=$((SECONDS + 30))
until grep -q "ready at" "$work/skiff.out" 2>/dev/null && curl -sf "http://127.0.0.1:$port/health" >/dev/null; do
  [ $SECONDS -lt $deadline ] || { echo "etcd or skiff did not start" >&2; tail "$work"/*.log >&2; exit 1; }
  sleep 0.1
done

target/release/skiff bench etcd --endpoint "http://127.0.0.1:$port" --writes "$WRITES" \
  --clients "$CLIENTS" >"$work/etcd.json"
target/release/skiff bench api --kubeconfig "$work/skiff/kubeconfig.yaml" --writes "$WRITES" \
  --clients "$CLIENTS" --list-pods 0 >"$work/skiff.json"

echo "clients  skiff creates/s  etcd puts/s  ratio"
for c in ${CLIENTS//,/ }; do
  s=$(grep "\"create-c$c\"" "$work/skiff.json" | sed 's/.*"value":\([0-9.]*\).*/\1/')
  e=$(grep "\"etcd-put-c$c\"" "$work/etcd.json" | sed 's/.*"value":\([0-9.]*\).*/\1/')
  awk -v c="$c" -v s="$s" -v e="$e" 'BEGIN { printf "%7d  %15.0f  %11.0f  %5.2f\n", c, s, e, s / e }'
done
