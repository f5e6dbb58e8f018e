#!/usr/bin/env bash
# Test suite wall time (docs/BENCHMARKS.md, "Test suite wall time"): runs a set of test files ROUNDS times
# the way test/run.sh ran them before (one file at a time) and the way it runs the unit tier now (one file
# per core), alternating so both see the same machine load, and prints each round, then medians and spread.
#
#   bash bench/test-wall-time.sh [ROUNDS] [FILES...]      (default: 3 rounds of dist/test/unit/*.test.js)
#
# Build first (npx tsc -p tsconfig.json). Only the unit tier may run side by side: pass heavier files only
# to time them one at a time, under the shared lock.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
shift || true
if [ "$#" -gt 0 ]; then files=("$@"); else files=(dist/test/unit/*.test.js); fi
cores=$(nproc 2>/dev/null || echo 2)
ms() { date +%s%3N; }
log=$(mktemp /tmp/test-wall-time-XXXXXX.log)
one() {
  local concurrency=$1 t0 rc
  t0=$(ms)
  set +e
  node --test --test-concurrency="$concurrency" --test-reporter=spec "${files[@]}" >"$log" 2>&1
  rc=$?
  set -e
  if [ "$rc" -ne 0 ]; then
    grep -E '^\s*✖' "$log" >&2 || true
    echo "bench/test-wall-time.sh: a test failed (concurrency $concurrency, output in $log); times would mean nothing" >&2
    exit 1
  fi
  echo $(($(ms) - t0))
}
serial=() parallel=()
for ((i = 1; i <= rounds; i++)); do
  s=$(one 1)
  p=$(one "$cores")
  serial+=("$s")
  parallel+=("$p")
  echo "round $i: one at a time ${s} ms, ${cores} side by side ${p} ms, ratio $(awk -v a="$p" -v b="$s" 'BEGIN { printf "%.2f", a / b }')"
done
stats() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "median %d ms (min %d, max %d)", m, v[1], v[NR] }'; }
echo "files: ${#files[@]}; rounds: $rounds"
echo "one at a time:      $(stats "${serial[@]}")"
echo "$cores side by side: $(stats "${parallel[@]}")"
ratios=()
for ((i = 0; i < rounds; i++)); do ratios+=("$(awk -v a="${parallel[$i]}" -v b="${serial[$i]}" 'BEGIN { printf "%d", 1000 * a / b }')"); done
printf '%s\n' "${ratios[@]}" | sort -n | awk '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "ratio side by side / one at a time: median %.2f (min %.2f, max %.2f)\n", m / 1000, v[1] / 1000, v[NR] / 1000 }'
