#!/usr/bin/env bash
# The API and the scheduler on each store, side by side in one run on this machine:
#
#   bench/ha.sh [SECONDS] [CONNECTIONS]     (defaults: 10 s, 64 connections)
#
# Starts etcd (Debian's etcd-server; installed if missing) and, with fresh data directories on
# loopback: a skiff server on SQLite, one on etcd, and three on etcd (one cluster, each its own
# prefix). For each, in turn (the others idle):
#   - creates/s of 1 KiB ConfigMaps through the Kubernetes API with wrk (two threads; for the
#     three servers, one wrk per server, CONNECTIONS split between them), p50/p99;
#   - `skiff bench api` (writes at 16 and 64 clients, then LIST of 1,000 pods) and
#     `skiff bench scheduler --backlog` (100 hollow nodes, 2,000 pods) through the first server;
# and etcd's own puts/s through its JSON gateway with the same wrk. One JSON line per result.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
SECS=${1:-10}
CONNS=${2:-64}
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
command -v etcd >/dev/null || {
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq etcd-server >/dev/null
}
need_wrk
[ -x target/release/skiff ] || cargo build --release -q
SKIFF=target/release/skiff

with_workdir
start_etcd
port=$etcd_port
await_etcd

# server NAME [skiff server flags...]: start one with its data dir in $work/NAME; its URL in
# $work/NAME.url.
server() {
  local name=$1; shift
  mkdir -p "$work/$name-run"
  $SKIFF server --data-dir "$work/$name" --listen 127.0.0.1:0 --no-node "$@" \
    >"$work/$name-run/out" 2>"$work/$name-run/log" &
  pids+=($!)
  await_ready "$!" "$work/$name-run"
  grep -o 'https://[0-9.:]*' "$work/$name-run/out" | head -1 >"$work/$name.url"
}
# peer NAME FIRST [flags...]: another server of FIRST's cluster, from its secrets.
peer() {
  local name=$1 first=$2; shift 2
  mkdir -p "$work/$name/tls"
  cp "$work/$first"/{admin-token,node-token} "$work/$name/"
  cp "$work/$first"/tls/{ca.crt,ca.key,service-account.key} "$work/$name/tls/"
  server "$name" "$@"
}

on_etcd() { echo --datastore-endpoint "http://127.0.0.1:$port" --datastore-prefix "/$1"; }
server sqlite
server etcd1 $(on_etcd one)
server etcd3a $(on_etcd three)
peer etcd3b etcd3a $(on_etcd three)
peer etcd3c etcd3a $(on_etcd three)
cat bench/wrk/common.lua bench/wrk/create-configmap.lua >"$work/create.lua"
cat bench/wrk/common.lua bench/wrk/etcd-put.lua >"$work/etcd.lua"

# creates NAME TOKEN_DIR URL...: wrk creates through each URL at once; sum of rates, worst p99.
creates() {
  local name=$1 dir=$2; shift 2
  local n=$# outs=()
  local per=$(( CONNS / n )); [ $per -ge 1 ] || per=1
  local threads=$(( n == 1 ? 2 : 1 ))
  local token wrks=() i=0
  token=$(tr -d '[:space:]' <"$work/$dir/admin-token")
  for url in "$@"; do
    i=$((i + 1))
    SKIFF_PREFIX=cm$i SKIFF_TOKEN=$token wrk -t$threads -c$per -d"${SECS}s" -s "$work/create.lua" "$url" |
      tail -1 >"$work/wrk-$name-$i" &
    wrks+=($!)
    outs+=("$work/wrk-$name-$i")
  done
  wait "${wrks[@]}"
  cat "${outs[@]}" | awk -v name="$name" -v c="$CONNS" -v n="$n" '
    function field(s, f,   r) { r = s; sub(".*\"" f "\":", "", r); sub("[,}].*", "", r); return r + 0 }
    { rps += field($0, "per_second"); p50 = (field($0, "p50_ms") > p50 ? field($0, "p50_ms") : p50)
      p99 = (field($0, "p99_ms") > p99 ? field($0, "p99_ms") : p99); err += field($0, "errors") }
    END { printf "{\"bench\":\"%s-creates-c%d\",\"servers\":%d,\"per_second\":%.0f,\"p50_ms\":%.2f,\"p99_ms\":%.2f,\"errors\":%d}\n", name, c, n, rps, p50, p99, err }'
}

# api_and_scheduler NAME DIR: skiff bench api and scheduler --backlog through DIR's kubeconfig.
api_and_scheduler() {
  local name=$1 dir=$2
  $SKIFF bench api --kubeconfig "$work/$dir/kubeconfig.yaml" --writes 2000 --clients 16,64 \
    --list-pods 1000 2>/dev/null | sed "s/^{\"bench\":\"/{\"store\":\"$name\",\"bench\":\"/"
  $SKIFF bench scheduler --kubeconfig "$work/$dir/kubeconfig.yaml" --nodes 100 --pods 2000 \
    --backlog 2>/dev/null | sed "s/^{\"bench\":\"/{\"store\":\"$name\",\"bench\":\"/"
}

creates sqlite sqlite "$(cat "$work/sqlite.url")"
creates etcd-1-server etcd1 "$(cat "$work/etcd1.url")"
creates etcd-3-servers etcd3a "$(cat "$work/etcd3a.url")" "$(cat "$work/etcd3b.url")" "$(cat "$work/etcd3c.url")"
wrk -t2 -c"$CONNS" -d"${SECS}s" -s "$work/etcd.lua" "http://127.0.0.1:$port" | tail -1 |
  sed "s/^/{\"bench\":\"etcd-puts-c$CONNS\",\"result\":/; s/$/}/"
api_and_scheduler sqlite sqlite
api_and_scheduler etcd-1-server etcd1
api_and_scheduler etcd-3-servers etcd3a
