/**
 * The README's quick start works word for word where it is meant to: a root shell on a minimal Debian,
 * which has no sudo. So no command starts with `sudo`, the commands are the ones CI runs (.ci/run), and
 * the CLI command exists as written (checked with the real bin/dispatch).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from '../helpers/daemon.js';

const readme = readFileSync(join(REPO_ROOT, 'README.md'), 'utf8');
const section = (title: string) => {
  const start = readme.indexOf(`## ${title}`);
  assert.ok(start >= 0, `README has a "${title}" section`);
  const end = readme.indexOf('\n## ', start + 3);
  return readme.slice(start, end < 0 ? undefined : end);
};
const shBlocks = (text: string) => [...text.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1].trim());

test('the quick start: as root (or with sudo), no command that needs sudo', () => {
  const quick = section('Quick start');
  assert.match(quick, /as root \(or with sudo\)/);
  assert.deepEqual(shBlocks(quick), ['bash deploy/install-deps.sh && npm ci', './bin/dispatch local', 'npm test']);
  for (const block of shBlocks(readme)) for (const line of block.split('\n')) assert.doesNotMatch(line, /^\s*sudo\b/, `README command needs sudo: ${line}`);
});

test('CI runs the same set-up commands as the quick start', () => {
  const ci = readFileSync(join(REPO_ROOT, '.ci', 'run'), 'utf8');
  assert.match(ci, /^(?:\S+=\S+ )*bash deploy\/install-deps\.sh$/m);
  assert.match(ci, /^npm ci\b/m);
  assert.match(ci, /^npm test$/m);
});

test('`./bin/dispatch local` is a command of the real CLI', () => {
  const help = execFileSync(join(REPO_ROOT, 'bin', 'dispatch'), ['local', '--help'], { cwd: REPO_ROOT, encoding: 'utf8' });
  assert.match(help, /Usage: dispatch local/);
  assert.match(help, /--down/);
  assert.match(help, /as root \(or with sudo\)/);
});
