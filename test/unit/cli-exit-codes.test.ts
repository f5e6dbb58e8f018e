/**
 * One exit-code mapping for every `dispatch` command (launcher/exit-codes.ts), seen from outside: the
 * real bin/dispatch as a child process. Unreachable is 3 whichever command meets it (a closed loopback
 * port), bad input is 2 naming what is wrong, and `plan --json` prints the plan as JSON.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import { REPO_ROOT } from '../helpers/daemon.js';

const dir = mkdtempSync(join(tmpdir(), 'cd-exit-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const passwordFile = join(dir, 'password');
writeFileSync(passwordFile, 'not-a-real-password-1\n', { mode: 0o600 });
const policy = join(dir, 'policy.yaml');
writeFileSync(policy, 'mode: guard\n');
// Nothing listens on port 1 of loopback: every connection is refused at once.
const CLOSED = ['--endpoint', 'https://127.0.0.1:1', '--fingerprint', Array(32).fill('AB').join(':'), '--password-file', passwordFile];

function dispatch(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [join(REPO_ROOT, 'bin', 'dispatch'), ...args], { env: { PATH: process.env.PATH, DISPATCH_CONFIG_DIR: dir }, timeout: 30_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

describe('dispatch exit codes', { concurrency: 4 }, () => {
  test('operations resume/abort without an id → 2 naming what is missing', async () => {
    for (const action of ['resume', 'abort']) {
      const r = await dispatch([...CLOSED, 'operations', action]);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, new RegExp(`dispatch operations ${action} ID: name the operation`));
    }
  });

  for (const args of [['status'], ['shutdown'], ['logs', 'agent-1'], ['operations'], ['operations', 'resume', 'op-1'], ['operations', 'abort', 'op-1'], ['restart'], ['firewall', 'show'], ['firewall', 'apply', '--policy', policy]]) {
    test(`unreachable dispatcher → 3: ${args.join(' ')}`, async () => {
      const r = await dispatch([...CLOSED, ...args]);
      assert.equal(r.code, 3, r.stderr);
      assert.match(r.stderr, /ECONNREFUSED/);
    });
  }

  test('a number argument that is not a number → 2 naming the option', async () => {
    for (const args of [['restart', '--ready-timeout', 'abc'], ['launch', '--spec', 'x.yaml', '--ready-timeout', '0'], ['logs', 'x', '-n', '-5'], ['deploy', '--inventory', 'x', '--parallel', 'two']]) {
      const r = await dispatch([...CLOSED, ...args]);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, /argument '.*' is invalid\. expected a whole number/);
    }
  });

  test('an unreadable or invalid input file → 2', async () => {
    assert.equal((await dispatch(['plan', '--spec', join(dir, 'missing.yaml')])).code, 2);
    writeFileSync(join(dir, 'bad.yaml'), 'name: [unclosed\n');
    assert.equal((await dispatch([...CLOSED, 'launch', '--plan', join(dir, 'bad.yaml')])).code, 2);
    assert.equal((await dispatch([...CLOSED, 'launch', '--plan', join(dir, 'missing.json')])).code, 2);
  });

  test('plan --json prints the plan as JSON (the option after the command, and as a global option)', async () => {
    for (const args of [['plan', '--spec', join(REPO_ROOT, 'examples', 'local.yaml'), '--json'], ['--json', 'plan', '--spec', join(REPO_ROOT, 'examples', 'local.yaml')]]) {
      const r = await dispatch(args);
      assert.equal(r.code, 0, r.stderr);
      const plan = JSON.parse(r.stdout);
      assert.equal(plan.apiVersion, 'dispatcher/v1');
      assert.equal(plan.name, 'local');
    }
    const table = await dispatch(['plan', '--spec', join(REPO_ROOT, 'examples', 'local.yaml')]);
    assert.throws(() => JSON.parse(table.stdout), 'without --json the plan is a table');
  });

  test('with --json an error is one JSON line with its code', async () => {
    const r = await dispatch([...CLOSED, '--json', 'status']);
    assert.equal(r.code, 3);
    const line = JSON.parse(r.stdout.trim());
    assert.equal(line.type, 'error');
    assert.equal(line.code, 'peer_unreachable');
  });
});
