#!/usr/bin/env bash
# What authorization costs on the write path: durable ConfigMap creates/s and latency through
# the Kubernetes API, with the same load generator (wrk, two threads), sent by
#   admin     the admin token (system:masters: allowed before RBAC is consulted),
#   tenant    a ServiceAccount token bound to `edit` in its namespace (every request decided by
#             RBAC: the token verified, its ServiceAccount looked up, the bindings walked),
#   bindings  the same, in a namespace that also holds BINDINGS RoleBindings to other users
#             (each decision walks them all),
# in alternating order over ROUNDS rounds on one server:
#
#   bench/authz.sh [SECONDS] [CONNECTIONS] [BINDINGS] [ROUNDS]   (defaults: 10, 16, 300, 3)
#
# Prints one JSON line per run and, per mode, the median over the rounds with its ratio to admin.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
SECS=${1:-10}
CONNS=${2:-16}
BINDINGS=${3:-300}
ROUNDS=${4:-3}
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
if ! command -v wrk >/dev/null; then
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk >/dev/null
fi
[ -x target/release/skiff ] || cargo build --release -q

work=$(mktemp -d)
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/run"
target/release/skiff server --data-dir "$work/skiff" --listen 127.0.0.1:0 --no-node \
  >"$work/run/out" 2>"$work/run/log" &
pid=$!
await_ready "$pid" "$work/run"
url=$(grep -o 'https://[0-9.:]*' "$work/run/out" | head -1)
k() { kubectl --kubeconfig "$work/skiff/kubeconfig.yaml" "$@"; }
for ns in bench-a bench-b; do
  k create namespace "$ns" >/dev/null
  k -n "$ns" create serviceaccount tenant >/dev/null
  k -n "$ns" create rolebinding tenant-edit --clusterrole=edit --serviceaccount="$ns:tenant" >/dev/null
done
for i in $(seq "$BINDINGS"); do
  printf -- '---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: other-%d, namespace: bench-b}\nsubjects: [{kind: User, name: user-%d, apiGroup: rbac.authorization.k8s.io}]\nroleRef: {kind: ClusterRole, name: view, apiGroup: rbac.authorization.k8s.io}\n' "$i" "$i"
done >"$work/bindings.yaml"
[ "$BINDINGS" -gt 0 ] && k apply -f "$work/bindings.yaml" >/dev/null
admin=$(tr -d '[:space:]' <"$work/skiff/admin-token")
tenant_a=$(k -n bench-a create token tenant --duration 2h)
tenant_b=$(k -n bench-b create token tenant --duration 2h)
cat bench/wrk/common.lua bench/wrk/create-configmap.lua >"$work/create.lua"

# The server's CPU time so far (user + system), in clock ticks.
ticks() { awk '{ print $14 + $15 }' "/proc/$pid/stat"; }
hz=$(getconf CLK_TCK)
run() { # MODE TOKEN NS
  local r t0 t1 cpu
  t0=$(ticks)
  r=$(SKIFF_TOKEN=$2 SKIFF_NS=$3 wrk -t2 -c"$CONNS" -d"${SECS}s" -s "$work/create.lua" "$url" | tail -1)
  t1=$(ticks)
  # Server CPU per request (µs): what each request costs, whatever the machine's noise.
  cpu=$(echo "$r" | awk -v t=$((t1 - t0)) -v hz="$hz" -F'"requests":' '{ split($2, a, ","); printf "%.1f", t / hz * 1e6 / a[1] }')
  r="${r%\}},\"server_cpu_us_per_request\":$cpu}"
  echo "{\"bench\":\"authz-$1-c$CONNS\",\"result\":$r}"
  echo "$1 $r" >>"$work/results"
}
for round in $(seq "$ROUNDS"); do
  case $((round % 3)) in
    1) order="admin tenant bindings" ;;
    2) order="tenant bindings admin" ;;
    0) order="bindings admin tenant" ;;
  esac
  for mode in $order; do
    case $mode in
      admin) run admin "$admin" bench-a ;;
      tenant) run tenant "$tenant_a" bench-a ;;
      bindings) run bindings "$tenant_b" bench-b ;;
    esac
  done
done
field() { sed "s/.*\"$1\":\([0-9.]*\).*/\1/"; }
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
errors=$(grep -o '"errors":[0-9]*' "$work/results" | cut -d: -f2 | awk '{ s += $1 } END { print s + 0 }')
base=$(grep '^admin ' "$work/results" | field per_second | median)
echo "mode      creates/s  p50 ms  p99 ms  vs admin  server CPU/request  vs admin   (median of $ROUNDS rounds, $CONNS connections, $BINDINGS bindings; errors: $errors)"
base_cpu=$(grep '^admin ' "$work/results" | field server_cpu_us_per_request | median)
for mode in admin tenant bindings; do
  rate=$(grep "^$mode " "$work/results" | field per_second | median)
  p50=$(grep "^$mode " "$work/results" | field p50_ms | median)
  p99=$(grep "^$mode " "$work/results" | field p99_ms | median)
  cpu=$(grep "^$mode " "$work/results" | field server_cpu_us_per_request | median)
  awk -v m="$mode" -v r="$rate" -v a="$p50" -v b="$p99" -v base="$base" -v c="$cpu" -v bc="$base_cpu" \
    'BEGIN { printf "%-8s  %9.0f  %6.2f  %6.2f  %6.1f %%  %14.1f us  %6.1f %%\n", m, r, a, b, 100 * r / base, c, 100 * c / bc }'
done
