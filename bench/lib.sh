# Shared helpers of the bench scripts: statistics over a list of milliseconds.
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
