#!/usr/bin/env bash
# Time from `kubectl apply` of the hello pod to the pod being Succeeded (as `kubectl wait` sees
# it through a watch), N times, against the cluster in $KUBECONFIG (e.g. after scripts/up.sh).
# Includes both kubectl process start-ups, so it is what a user waits at the terminal.
#   KUBECONFIG=.skiff/data/kubeconfig.yaml bench/pod-startup.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
N=${1:-20}
: "${KUBECONFIG:?set KUBECONFIG to the cluster to measure}"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
for i in $(seq "$N"); do
  sed "s/name: hello$/name: bench-hello-$i/" wasm-examples/manifests/hello.yaml >"$tmp/pod.yaml"
  t0=$(now_ms)
  kubectl apply -f "$tmp/pod.yaml" >/dev/null
  kubectl wait --for=jsonpath='{.status.phase}'=Succeeded "pod/bench-hello-$i" --timeout=60s >/dev/null
  t1=$(now_ms)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f\n", b - a }'
  kubectl delete pod "bench-hello-$i" --wait=false >/dev/null
done | stats "apply-to-succeeded"
