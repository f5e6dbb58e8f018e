#!/usr/bin/env bash
# `npm run golden:update`: the ONLY way goldens change. Runs the golden tests with GOLDEN_OUTPUT_DIR set
# (test/helpers/golden.ts then saves what each test made there; the tests themselves never write to
# test/golden/), copies every file that differs into test/golden/ and prints its diff for review.
set -euo pipefail
cd "$(dirname "$0")/.."
npx tsc -p tsconfig.json
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# Failures are expected here (that is why goldens are being updated); the diff below is the result.
GOLDEN_OUTPUT_DIR="$out" node --test --test-reporter=dot \
  dist/test/unit/planner.test.js dist/test/unit/engines.test.js dist/test/unit/firewall-render.test.js dist/test/unit/plan-versions.test.js >/dev/null 2>&1 || true
changed=0
while IFS= read -r -d '' f; do
  rel=${f#"$out"/}
  if ! cmp -s "$f" "test/golden/$rel"; then
    diff -u --label "a/test/golden/$rel" --label "b/test/golden/$rel" "test/golden/$rel" "$f" 2>/dev/null || true
    [ -e "test/golden/$rel" ] || { echo "new golden: test/golden/$rel"; cat "$f"; }
    mkdir -p "$(dirname "test/golden/$rel")"
    cp "$f" "test/golden/$rel"
    changed=$((changed + 1))
  fi
done < <(find "$out" -type f -print0 | sort -z)
total=$(find "$out" -type f | wc -l)
if [ "$total" -eq 0 ]; then echo "golden:update: the golden tests produced no files (did they run?)" >&2; exit 1; fi
echo "golden:update: $changed of $total golden file(s) changed (review with git diff test/golden)"
