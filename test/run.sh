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
out=$(mktemp)
trap 'rm -f "$out"' EXIT
# Tiers share machine-wide resources (ports, network namespaces, nft tables): run files one at a time.
set +e
node --test --test-concurrency=1 --test-reporter=spec "${files[@]}" 2>&1 | tee "$out"
rc=${PIPESTATUS[0]}
set -e
pass=$(grep -E '^ℹ pass [0-9]+' "$out" | awk '{print $3}' | tail -1)
fail=$(grep -E '^ℹ fail [0-9]+' "$out" | awk '{print $3}' | tail -1)
skipped=$(grep -E '^ℹ skipped [0-9]+' "$out" | awk '{print $3}' | tail -1)
echo "${pass:-0} passed, ${fail:-0} failed, ${skipped:-0} skipped"
if [ "${pass:-0}" -eq 0 ]; then echo "test/run.sh: zero tests passed" >&2; exit 1; fi
exit "$rc"
