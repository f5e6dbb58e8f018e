/**
 * `dispatch scale` from outside (the real bin/dispatch as a child process; launcher/commands/scale.ts):
 * its help explains the steps, bad input is exit 2 naming what is wrong, an unreachable dispatcher is 3
 * (for the change and for its dry run alike).
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT } from '../helpers/daemon.js';

const dir = mkdtempSync(join(tmpdir(), 'cd-scale-cli-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const passwordFile = join(dir, 'password');
writeFileSync(passwordFile, 'not-a-real-password-1\n', { mode: 0o600 });
// Nothing listens on port 1 of loopback: every connection is refused at once.
const CLOSED = ['--endpoint', 'https://127.0.0.1:1', '--fingerprint', Array(32).fill('AB').join(':'), '--password-file', passwordFile];
const SPEC = join(REPO_ROOT, 'examples', 'local.yaml');

function dispatch(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [join(REPO_ROOT, 'bin', 'dispatch'), ...args], { env: { PATH: process.env.PATH, DISPATCH_CONFIG_DIR: dir }, timeout: 30_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

describe('dispatch scale', { concurrency: 4 }, () => {
  test('--help explains the order of the steps and what is refused', async () => {
    const r = await dispatch(['scale', '--help']);
    assert.equal(r.code, 0, r.stderr);
    for (const words of [/--base-version <version:hash>/, /--dry-run/, /firewall lets the new hosts' addresses in/, /one at a time \(etcd member add, then start\)/, /undoes that step only/]) assert.match(r.stdout, words);
  });

  test('a missing file, an invalid plan, a malformed base version → 2', async () => {
    assert.equal((await dispatch([...CLOSED, 'scale', join(dir, 'missing.json')])).code, 2);
    writeFileSync(join(dir, 'bad.json'), JSON.stringify({ apiVersion: 'dispatcher/v1', name: 'x' }));
    const bad = await dispatch([...CLOSED, 'scale', join(dir, 'bad.json')]);
    assert.equal(bad.code, 2, bad.stderr);
    const base = await dispatch([...CLOSED, 'scale', SPEC, '--base-version', 'three']);
    assert.equal(base.code, 2, base.stderr);
    assert.match(base.stderr, /expected VERSION:HASH/);
  });

  test('an unreachable dispatcher → 3, for the change and its dry run', async () => {
    for (const extra of [[], ['--dry-run']]) {
      const r = await dispatch([...CLOSED, 'scale', SPEC, ...extra]);
      assert.equal(r.code, 3, r.stderr);
      assert.match(r.stderr, /ECONNREFUSED/);
    }
  });
});
