#!/usr/bin/env bash
# The README's test command runs this (`npm test`): build, then every tier with Node's test runner.
# The shell expands the file list (Node 20 does not expand a quoted glob), and a run that finds no
# test at all fails: a green run on zero tests would hide a broken build or a renamed folder.
set -euo pipefail
cd "$(dirname "$0")/.."
# The full run (no file arguments) checks the dependency rules first (docs/DESIGN.md, "Dependency rules").
if [ "$#" -eq 0 ]; then bash test/check-deps.sh; fi
npx tsc -p tsconfig.json
shopt -s nullglob
files=(dist/test/*/*.test.js)
if [ "${#files[@]}" -eq 0 ]; then
  echo "test/run.sh: no test files found under dist/test/*/ — refusing to pass on zero tests" >&2
  exit 1
fi
if [ "$#" -gt 0 ]; then files=("$@"); fi
# The unit tier shares nothing machine-wide (temp dirs, port 0, fakes): its files run side by side, one
# per core. Every other tier shares machine-wide resources (fixed ports, network namespaces, nft tables,
# /var/lib/cdtest): those files run one at a time, after the unit tier.
unit=()
heavy=()
for f in "${files[@]}"; do
  case "$f" in
    */test/unit/*) unit+=("$f") ;;
    *) heavy+=("$f") ;;
  esac
done
cores=$(nproc 2>/dev/null || echo 2)
out=$(mktemp)
trap 'rm -f "$out"' EXIT
pass=0 fail=0 skipped=0 rc=0
# Runs one group and adds its counts (each `node --test` prints its own summary).
run_group() {
  local concurrency=$1
  shift
  set +e
  node --test --test-concurrency="$concurrency" --test-reporter=spec "$@" 2>&1 | tee "$out"
  local group_rc=${PIPESTATUS[0]}
  set -e
  if [ "$group_rc" -ne 0 ]; then rc=$group_rc; fi
  pass=$((pass + $(grep -E '^ℹ pass [0-9]+' "$out" | awk '{print $3}' | tail -1 || echo 0)))
  fail=$((fail + $(grep -E '^ℹ fail [0-9]+' "$out" | awk '{print $3}' | tail -1 || echo 0)))
  skipped=$((skipped + $(grep -E '^ℹ skipped [0-9]+' "$out" | awk '{print $3}' | tail -1 || echo 0)))
}
if [ "${#unit[@]}" -gt 0 ]; then run_group "$cores" "${unit[@]}"; fi
if [ "${#heavy[@]}" -gt 0 ]; then run_group 1 "${heavy[@]}"; fi
echo "$pass passed, $fail failed, $skipped skipped"
if [ "$pass" -eq 0 ]; then echo "test/run.sh: zero tests passed" >&2; exit 1; fi
exit "$rc"
