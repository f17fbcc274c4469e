#!/usr/bin/env bash
# Durable creates/s of skiff against etcd on this machine, side by side, with the same load
# generator (wrk, two threads, so the client's CPU does not decide the result):
#
#   bench/etcd-compare.sh [SECONDS] [CONNECTIONS]     (defaults: 10 s, 16,64 connections)
#
# Installs Debian's etcd-server and wrk if missing, starts etcd and `skiff server --no-node`
# on loopback with fresh data directories, then for each number of connections: wrk creates
# 1 KiB ConfigMaps through skiff's Kubernetes API (HTTPS, bearer token, full semantics:
# validation, defaulting, managedFields, the store's fsync) and puts the same bytes into etcd
# through its v3 JSON gateway (plain HTTP, fsync per commit); and the same creates through a
# second skiff server that keeps its cluster in that etcd (`--datastore-endpoint`). Prints
# creates/s, p50/p99 and the ratios to etcd, one JSON line each, and stops them all.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
SECS=${1:-10}
CONNS=${2:-16,64}
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)

for pkg in etcd:etcd-server wrk:wrk; do
  if ! command -v "${pkg%%:*}" >/dev/null; then
    echo "installing ${pkg#*:} (Debian)" >&2
    $SUDO apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${pkg#*:}" >/dev/null
  fi
done
[ -x target/release/skiff ] || cargo build --release -q

with_workdir
start_etcd
port=$etcd_port
mkdir -p "$work/skiff-run"
target/release/skiff server --data-dir "$work/skiff" --listen 127.0.0.1:0 --no-node \
  >"$work/skiff-run/out" 2>"$work/skiff-run/log" &
pids+=($!)
await_ready "${pids[1]}" "$work/skiff-run"
await_etcd
mkdir -p "$work/skiff-etcd-run"
target/release/skiff server --data-dir "$work/skiff-etcd" --listen 127.0.0.1:0 --no-node \
  --datastore-endpoint "http://127.0.0.1:$port" --datastore-prefix /bench \
  >"$work/skiff-etcd-run/out" 2>"$work/skiff-etcd-run/log" &
pids+=($!)
await_ready "${pids[2]}" "$work/skiff-etcd-run"
url=$(grep -o 'https://[0-9.:]*' "$work/skiff-run/out" | head -1)
url_etcd=$(grep -o 'https://[0-9.:]*' "$work/skiff-etcd-run/out" | head -1)
export SKIFF_TOKEN=$(tr -d '[:space:]' <"$work/skiff/admin-token")
token_etcd=$(tr -d '[:space:]' <"$work/skiff-etcd/admin-token")
cat bench/wrk/common.lua bench/wrk/create-configmap.lua >"$work/skiff.lua"
cat bench/wrk/common.lua bench/wrk/etcd-put.lua >"$work/etcd.lua"

echo "connections  skiff/SQLite creates/s (p50/p99 ms)  skiff/etcd creates/s (p50/p99 ms)  etcd puts/s (p50/p99 ms)  ratios to etcd"
for c in ${CONNS//,/ }; do
  s=$(wrk -t2 -c"$c" -d"${SECS}s" -s "$work/skiff.lua" "$url" | tail -1)
  k=$(SKIFF_TOKEN=$token_etcd wrk -t2 -c"$c" -d"${SECS}s" -s "$work/skiff.lua" "$url_etcd" | tail -1)
  e=$(wrk -t2 -c"$c" -d"${SECS}s" -s "$work/etcd.lua" "http://127.0.0.1:$port" | tail -1)
  echo "{\"bench\":\"skiff-create-c$c\",\"result\":$s}"
  echo "{\"bench\":\"skiff-on-etcd-create-c$c\",\"result\":$k}"
  echo "{\"bench\":\"etcd-put-c$c\",\"result\":$e}"
  field() { echo "$1" | sed "s/.*\"$2\":\([0-9.]*\).*/\1/"; }
  awk -v c="$c" -v s="$(field "$s" per_second)" -v sp="$(field "$s" p50_ms)" -v s9="$(field "$s" p99_ms)" \
    -v k="$(field "$k" per_second)" -v kp="$(field "$k" p50_ms)" -v k9="$(field "$k" p99_ms)" \
    -v e="$(field "$e" per_second)" -v ep="$(field "$e" p50_ms)" -v e9="$(field "$e" p99_ms)" \
    -v se="$(field "$s" errors)" -v ke="$(field "$k" errors)" -v ee="$(field "$e" errors)" \
    'BEGIN { printf "%11d  %8.0f (%5.2f/%6.2f)%s  %8.0f (%5.2f/%6.2f)%s  %8.0f (%5.2f/%6.2f)%s  %5.2f %5.2f\n", c, s, sp, s9, (se > 0 ? " ERR" : ""), k, kp, k9, (ke > 0 ? " ERR" : ""), e, ep, e9, (ee > 0 ? " ERR" : ""), s / e, k / e }'
done
