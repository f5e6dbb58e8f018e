/**
 * `dispatch replace DEAD --with NEW` (launcher/commands/replace.ts) from outside, the real bin/dispatch as a
 * child process: what an operator types is checked before anything is sent (exit 2 naming what is wrong),
 * and a well-formed request goes to the dispatcher (a closed loopback port: exit 3, unreachable).
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT } from '../helpers/daemon.js';

const dir = mkdtempSync(join(tmpdir(), 'cd-replace-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const passwordFile = join(dir, 'password');
writeFileSync(passwordFile, 'not-a-real-password-1\n', { mode: 0o600 });
const FP = Array(32).fill('AB').join(':');
// Nothing listens on port 1 of loopback: every connection is refused at once.
const CLOSED = ['--endpoint', 'https://127.0.0.1:1', '--fingerprint', FP, '--password-file', passwordFile];

function dispatch(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [join(REPO_ROOT, 'bin', 'dispatch'), ...CLOSED, ...args], { env: { PATH: process.env.PATH, DISPATCH_CONFIG_DIR: dir }, timeout: 30_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

describe('dispatch replace', { concurrency: 4 }, () => {
  test('usage errors are exit 2 naming what is wrong', async () => {
    const cases: [string[], RegExp][] = [
      [['replace', 'd3'], /give the new dispatcher with --with ID=ENDPOINT/],
      [['replace', 'd3', '--with', 'd4'], /expected ID=https:\/\/ADDRESS:PORT/],
      [['replace', 'd3', '--with', 'd4=https://10.0.0.4:8528'], /give --new-fingerprint/],
      [['replace', 'd3', '--with', 'd4=https://db4.example:8528', '--new-fingerprint', FP], /names no IP address; give its addresses with --new-address/],
    ];
    for (const [args, message] of cases) {
      const r = await dispatch(args);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, message);
    }
  });

  test('a dispatcher entry file is checked field by field', async () => {
    const file = join(dir, 'new.yaml');
    writeFileSync(file, 'id: D4\nendpoint: not-a-url\n');
    const r = await dispatch(['replace', 'd3', '--with-file', file]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /not a dispatcher entry/);
    assert.match(r.stderr, /fingerprint/);
  });

  test('a well-formed replacement is sent: the closed port makes it exit 3 (unreachable)', async () => {
    const r = await dispatch(['replace', 'd3', '--with', 'd4=https://10.0.0.4:8528', '--new-fingerprint', FP]);
    assert.equal(r.code, 3, r.stderr);
  });
});
