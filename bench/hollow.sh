#!/usr/bin/env bash
# The scheduler and controller benchmarks on a fresh server with hollow nodes only (no real
# node): `skiff bench scheduler` (1,000 nodes, 10,000 pods) and `skiff bench deployments`
# (a 1,000-replica Deployment on 10 nodes). Builds the release binary first.
#   bench/hollow.sh [scheduler|deployments|both] [extra flags for the bench]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
WHICH=${1:-both}; shift || true
cargo build --release --quiet
SKIFF=$PWD/target/release/skiff
dir=$(mktemp -d)
"$SKIFF" server --no-node --data-dir "$dir" --listen 127.0.0.1:0 >"$dir/out" 2>"$dir/log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
await_ready $pid "$dir"
K=$dir/kubeconfig.yaml
[[ $WHICH == scheduler || $WHICH == both ]] && "$SKIFF" bench scheduler --kubeconfig "$K" "$@"
[[ $WHICH == deployments || $WHICH == both ]] && "$SKIFF" bench deployments --kubeconfig "$K" "$@"
echo "# server CPU: $(awk '{ printf "%.1f s user, %.1f s system", $14 / 100, $15 / 100 }' /proc/$pid/stat)" >&2
