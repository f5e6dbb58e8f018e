#!/usr/bin/env bash
# The dependency rules of docs/DESIGN.md ("Dependency rules"), checked by dependency-cruiser against
# .dependency-cruiser.cjs. `npm test` runs this first (test/run.sh); a broken rule fails the run.
set -uo pipefail
cd "$(dirname "$0")/.."
if ! npx --no-install depcruise api client shared server launcher deploy --config .dependency-cruiser.cjs --output-type err; then
  echo "test/check-deps.sh: the dependency rules of docs/DESIGN.md are broken (see above: rule name, importing file → imported file)." >&2
  echo "Fix the import (move shared code into api/, client/ or shared/), not the rule." >&2
  exit 1
fi
echo "dependency rules: ok (api/ imports nothing of ours, server/core/ only api/, no server → launcher, no cycles)"
