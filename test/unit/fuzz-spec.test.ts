/**
 * Fuzzing the spec parser and Planner with random and truncated documents (seeded, bounded): never a crash,
 * always either a valid plan or a DispatcherError('validation_failed') listing at least one problem.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DispatcherError } from '../../api/errors.js';
import { planFromSpecText } from '../../launcher/planner.js';
import { validatePlan } from '../../server/core/validate-plan.js';
import { defaultEngineCatalog } from '../../server/engines/loader.js';

const ROOT = (() => {
  let d = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(d, 'package.json'))) d = dirname(d);
  return d;
})();

/** mulberry32: small, seeded, reproducible. */
function prng(seed: number): () => number {
  return () => {
    seed |= 0;
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const SEED = Number(process.env.FUZZ_SEED ?? 20240611);
const catalog = defaultEngineCatalog();

function check(text: string, label: string): 'plan' | 'error' {
  try {
    const plan = planFromSpecText(text, 'fuzz.yaml', catalog);
    assert.deepEqual(validatePlan(plan, catalog), [], `${label}: the Planner returned an invalid plan`);
    return 'plan';
  } catch (err) {
    if (!(err instanceof DispatcherError)) assert.fail(`${label}: crashed with ${(err as Error)?.stack ?? err}\n--- input ---\n${text}`);
    assert.equal(err.code, 'validation_failed', `${label}: ${err.code} ${err.message}`);
    assert.ok(err.problems.length > 0, `${label}: no problems listed`);
    for (const p of err.problems) assert.equal(typeof p.path, 'string');
    return 'error';
  }
}

test(`fuzz: truncated and mutated example specs (seed ${SEED})`, () => {
  const rand = prng(SEED);
  const seeds = ['local', 'three-hosts', 'arangodb'].map((n) => readFileSync(join(ROOT, 'examples', `${n}.yaml`), 'utf8'));
  const junk = ['', ':', '- ', '{', '}', '[', ']', '"', "'", '&a', '*a', '!!binary', '\t', '\n', '  ', '0', '-1', '1e400', 'null', '~', '#', '|', '>', '%YAML', '---', '...', 'é', '\u0000'];
  const counts = { plan: 0, error: 0 };
  for (let i = 0; i < 600; i++) {
    const src = seeds[Math.floor(rand() * seeds.length)];
    let text: string;
    const mode = i % 3;
    if (mode === 0) text = src.slice(0, Math.floor(rand() * src.length));
    else if (mode === 1) {
      const chars = [...src];
      const edits = 1 + Math.floor(rand() * 5);
      for (let e = 0; e < edits; e++) {
        const at = Math.floor(rand() * chars.length);
        const r = rand();
        if (r < 0.4) chars.splice(at, 1 + Math.floor(rand() * 8));
        else if (r < 0.8) chars.splice(at, 0, junk[Math.floor(rand() * junk.length)]);
        else chars[at] = String.fromCharCode(32 + Math.floor(rand() * 95));
      }
      text = chars.join('');
    } else {
      const len = Math.floor(rand() * 200);
      text = Array.from({ length: len }, () => junk[Math.floor(rand() * junk.length)] + (rand() < 0.3 ? 'name' : '')).join('');
    }
    counts[check(text, `case ${i}`)]++;
  }
  assert.ok(counts.error > 0);
});

test('fuzz: hostile documents (alias bomb, deep nesting, huge counts, wrong types)', () => {
  const bomb = ['a: &a ["x","x","x","x","x","x","x","x","x"]'];
  for (let i = 0; i < 8; i++) bomb.push(`${String.fromCharCode(98 + i)}: &${String.fromCharCode(98 + i)} [${Array(9).fill(`*${String.fromCharCode(97 + i)}`).join(',')}]`);
  const docs = [
    bomb.join('\n'),
    '['.repeat(2000) + ']'.repeat(2000),
    'name: x\nagents: 99999999\ndispatchers: []',
    'name: x\ndispatchers: [{id: d, endpoint: "https://10.0.0.1:1", fingerprint: "x", addresses: [10.0.0.1]}]\ndbservers: 1e9',
    '"just a string"',
    '42',
    'null',
    '- a\n- b',
    'name: 5\nengine: [1]\ndispatchers: {a: 1}',
  ];
  for (const [i, d] of docs.entries()) assert.equal(check(d, `hostile ${i}`), 'error');
});
