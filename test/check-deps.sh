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
# One clock (docs/DESIGN.md, "Time and waiting"): product code reads the time only through an injected
# Clock, so a fake clock can drive it. shared/poll.ts holds systemClock, the one place that asks the system.
# `new Date(x)` with an argument converts a time and is fine; `new Date()` and `Date.now` (called or passed
# on as a function) read the clock.
direct_clock=$(grep -rnE 'Date\.now\b|new Date\(\)' --include='*.ts' api client shared server launcher deploy | grep -v '^shared/poll\.ts:' || true)
if [ -n "$direct_clock" ]; then
  echo "$direct_clock" >&2
  echo "test/check-deps.sh: the lines above read the system clock directly; take a Clock (shared/poll.ts, default systemClock) and call clock.now() (or pass clock.now on)." >&2
  exit 1
fi
echo "one clock: ok (no Date.now or new Date() outside shared/poll.ts)"
echo "dependency rules: ok (api/ imports nothing of ours, server/core/ only api/, no server → launcher, no cycles)"
