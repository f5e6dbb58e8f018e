/**
 * Golden files: a test compares what it made with test/golden/<name> and never writes there. To update
 * goldens after an intended change, run `npm run golden:update` (test/golden-update.sh): it runs the
 * golden tests with GOLDEN_OUTPUT_DIR set — then each comparison also saves what it made under that
 * directory — and copies the changed files into test/golden/, printing the diff of each for review.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = (() => {
  let d = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(d, 'package.json'))) d = dirname(d);
  return d;
})();

export const GOLDEN_DIR = join(ROOT, 'test', 'golden');

/** Asserts `actual` equals test/golden/<name> (name may contain a sub-folder, e.g. firewall/x.nft). */
export function expectGolden(name: string, actual: string): void {
  const file = join(GOLDEN_DIR, name);
  if (relative(GOLDEN_DIR, file).startsWith('..')) throw new Error(`golden name ${name} leaves test/golden`);
  const out = process.env.GOLDEN_OUTPUT_DIR;
  if (out) {
    const target = join(out, name);
    mkdirSync(dirname(target), { recursive: true });
    writeFileSync(target, actual);
  }
  const expected = existsSync(file) ? readFileSync(file, 'utf8') : `(test/golden/${name} does not exist)`;
  assert.equal(actual, expected, `test/golden/${name} differs: review the change, then \`npm run golden:update\` shows the diff and updates it`);
}
