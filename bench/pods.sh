#!/usr/bin/env bash
# Issue 4's node benchmark, RUNS times (default 5), each on a fresh release `skiff server`:
# `skiff bench pods` (1,000 ticker pods created at 100/s: create → Running p50/p99, RSS,
# instantiate, delete all). Prints every run's JSON lines, then one line per run with the
# create → Running median and p99, so a tail shows up as the run it is and not as an average.
#   bench/pods.sh                 # RUNS=5, N=1000, RATE=100
#   RUNS=10 N=1000 bench/pods.sh
#   SKIFF=/path/to/other/skiff bench/pods.sh   # another build (A/B); no build step
#   IMAGE=ticker:v1 bench/pods.sh  # a pinned tag: imagePullPolicy IfNotPresent, no pull per start
#                                  # (the default ticker:latest is Always: a tag lookup per start)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
RUNS=${RUNS:-5}
N=${N:-1000}
RATE=${RATE:-100}
IMAGE=${IMAGE:-ticker:latest}
need_skiff
(cd wasm-examples && cargo build --release --target wasm32-wasip1 -p ticker --quiet)
MODULE=$PWD/wasm-examples/target/wasm32-wasip1/release/ticker.wasm
summary=$(mktemp)
dir=
pid=
cleanup() {
  [[ -n $pid ]] && { kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; }
  [[ -n $dir ]] && rm -rf "$dir"
  rm -f "$summary"
}
trap cleanup EXIT
for run in $(seq "$RUNS"); do
  dir=$(mktemp -d)
  "$SKIFF" server --data-dir "$dir" --listen 127.0.0.1:0 --gateway-port 0 --node-name bench >"$dir/out" 2>"$dir/log" &
  pid=$!
  await_ready $pid "$dir"
  K=$dir/kubeconfig.yaml
  KUBECONFIG=$K "$SKIFF" push "$IMAGE" "$MODULE" >/dev/null
  echo "==> run $run of $RUNS" >&2
  cpu_before=$(head -1 /proc/stat)
  "$SKIFF" bench pods --kubeconfig "$K" --n "$N" --rate "$RATE" --image "$IMAGE" --module "$MODULE" --pid $pid | tee "$dir/bench.json"
  # The machine's CPU time during the run: on a shared VM, time stolen by the hypervisor
  # (steal) shows up as a slower run.
  cpu=$(printf '%s\n%s\n' "$cpu_before" "$(head -1 /proc/stat)" | awk '
    NR == 1 { for (i = 2; i <= NF; i++) a[i] = $i }
    NR == 2 { for (i = 2; i <= NF; i++) { d[i] = $i - a[i]; t += d[i] }
              printf "busy %.0f%%, steal %.0f%%", 100 * (t - d[5] - d[6] - d[9]) / t, 100 * d[9] / t }')
  awk -v run="$run" -v cpu="$cpu" -F'[,:}]' '/"bench":"pod-create-to-running"/ {
      for (i = 1; i < NF; i++) { if ($i ~ /"median"/) m = $(i + 1); if ($i ~ /"p99"/) p = $(i + 1) }
      printf "run %d: create → Running median %.1f ms, p99 %.1f ms (machine: %s)\n", run, m, p, cpu }' "$dir/bench.json" >>"$summary"
  kill $pid; wait $pid 2>/dev/null || true; pid=
  rm -rf "$dir"; dir=
done
cat "$summary" >&2
