#!/usr/bin/env bash
# Time from exec of `skiff server` to an answering API (/readyz over HTTPS), N times each:
# cold (empty data dir: CA, keys, tokens, schema are created) and warm (existing data dir).
#   bench/server-startup.sh [N] [path/to/skiff]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
N=${1:-10}
SKIFF=${2:-target/release/skiff}
PORT=${SKIFF_BENCH_PORT:-16443}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"; kill $pid 2>/dev/null || true' EXIT
pid=0
measure() {
  local dir=$1
  local t0 t1
  t0=$(now_ms)
  "$SKIFF" server --data-dir "$dir" --listen 127.0.0.1:$PORT --no-node >/dev/null 2>&1 &
  pid=$!
  until curl -sk -o /dev/null "https://127.0.0.1:$PORT/readyz"; do :; done
  t1=$(now_ms)
  kill $pid; wait $pid 2>/dev/null || true
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f\n", b - a }'
}
for i in $(seq "$N"); do measure "$tmp/cold-$i"; done | stats "server-start-cold"
measure "$tmp/warm" >/dev/null
for i in $(seq "$N"); do measure "$tmp/warm"; done | stats "server-start-warm"
