# Shared helpers of the bench scripts: statistics over a list of milliseconds, waiting for a server.
# stats NAME < numbers  →  one JSON line and a human summary (median, p99, min, max).
stats() {
  local name=$1
  sort -n | awk -v name="$name" '
    { v[NR] = $1 }
    END {
      if (NR == 0) { print "no samples" > "/dev/stderr"; exit 1 }
      med = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
      i99 = int(0.99 * NR + 0.999); if (i99 < 1) i99 = 1; if (i99 > NR) i99 = NR
      printf "{\"bench\":\"%s\",\"unit\":\"ms\",\"n\":%d,\"median\":%.1f,\"p99\":%.1f,\"min\":%.1f,\"max\":%.1f}\n", name, NR, med, v[i99], v[1], v[NR]
      printf "# %s: median %.1f ms, p99 %.1f ms (n=%d, min %.1f, max %.1f)\n", name, med, v[i99], NR, v[1], v[NR] > "/dev/stderr"
    }'
}

now_ms() { date +%s%N | awk '{ printf "%.3f\n", $1 / 1000000 }'; }

# await_ready PID DIR: wait (up to 30 s) until the `skiff server` with PID, started with its
# output in DIR/out and its log in DIR/log, prints its ready line; fail with the log's tail when
# it dies first or never gets there.
await_ready() {
  local pid=$1 dir=$2
  for _ in $(seq 300); do
    grep -q "ready at" "$dir/out" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "skiff server (pid $pid) did not become ready:" >&2
  tail -20 "$dir/log" >&2
  return 1
}

# peer_proof DATA_DIR: the header value a node's gateway sends another to name a pod by
# `<pod>.<ns>.pod` (SHA-256 of a label and the join token in DATA_DIR/node-token).
peer_proof() {
  printf 'skiff gateway peers v1\0%s' "$(tr -d '[:space:]' <"$1/node-token")" | sha256sum | cut -d' ' -f1
}

# need_wrk: install Debian's wrk when it is missing.
need_wrk() {
  command -v wrk >/dev/null && return 0
  echo "==> installing wrk (Debian package)" >&2
  local SUDO=; [[ $(id -u) == 0 ]] || SUDO=sudo
  $SUDO apt-get install -y wrk >/dev/null 2>&1 || { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y wrk >/dev/null; }
}

# run_wrk URL [wrk options...] → "rps p50_ms p99_ms", with THREADS, CONNECTIONS and DURATION.
run_wrk() {
  local url=$1; shift
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$@" "$url" | awk '
    function ms(v) {
      if (v ~ /us$/) return substr(v, 1, length(v) - 2) / 1000
      if (v ~ /ms$/) return substr(v, 1, length(v) - 2)
      if (v ~ /s$/) return substr(v, 1, length(v) - 1) * 1000
      return v
    }
    /Requests\/sec:/ { rps = $2 }
    $1 == "50%" { p50 = ms($2) }
    $1 == "99%" { p99 = ms($2) }
    /Non-2xx|Socket errors/ { print "# wrk: " $0 > "/dev/stderr" }
    END { printf "%.0f %.3f %.3f\n", rps, p50, p99 }'
}

# with_workdir: a fresh $work directory and a $pids list, both cleaned up (processes killed) on
# exit.
with_workdir() {
  work=$(mktemp -d)
  pids=()
  trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"' EXIT
}

# start_etcd: a one-member etcd of its own in $work/etcd on a random loopback port ($etcd_port);
# its pid joins $pids. await_etcd waits (up to 30 s) until it is healthy.
start_etcd() {
  etcd_port=$((20000 + RANDOM % 20000))
  local peer="http://127.0.0.1:$((etcd_port + 1))"
  etcd --name bench --data-dir "$work/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
    --initial-cluster "bench=$peer" >"$work/etcd.log" 2>&1 &
  pids+=($!)
}
await_etcd() {
  local deadline=$((SECONDS + 30))
  until curl -sf "http://127.0.0.1:$etcd_port/health" >/dev/null; do
    [ $SECONDS -lt $deadline ] || { echo "etcd did not start" >&2; tail "$work/etcd.log" >&2; exit 1; }
    sleep 0.1
  done
}

# need_skiff: $SKIFF, the release build of this tree unless SKIFF names another build (A/B).
need_skiff() {
  unset RUST_BACKTRACE RUST_LIB_BACKTRACE
  if [[ -z ${SKIFF:-} ]]; then
    echo "==> building skiff (release)" >&2
    cargo build --release --quiet
    SKIFF=$PWD/target/release/skiff
  fi
}
