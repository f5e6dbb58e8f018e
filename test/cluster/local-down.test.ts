/**
 * Cluster tier: `dispatch local --down --purge` never deletes under a running process and orphans
 * nothing. With the first dispatcher's daemon killed (-9), the cluster is still shut down through the
 * product (the missing daemon is started again to stop its part), and only then is anything deleted. A
 * process still running from the directory makes --purge refuse with exit 1, naming it, deleting nothing.
 * Real CLI, real pg-ha cluster (test/helpers/local-cluster.ts); needs root and deploy/install-deps.sh.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { processesUnder } from '../../shared/procfs.js';
import { TEST_ROOT, pidAlive } from '../helpers/cluster.js';
import { REPO_ROOT, cleanEnv } from '../helpers/daemon.js';
import { startLocalCluster } from '../helpers/local-cluster.js';

test('--down --purge with the first daemon killed: the cluster is shut down through the product, nothing is orphaned, then it is deleted', { timeout: 420_000 }, async () => {
  const lc = await startLocalCluster();
  let leftovers: string[] = [];
  try {
    const before = processesUnder(lc.localDir);
    assert.ok(before.some((p) => /etcd/.test(p.command)) && before.some((p) => /patroni/.test(p.command)), `cluster processes found: ${before.map((p) => p.command).join('\n')}`);
    const first = Number(readFileSync(join(lc.localDir, 'local-1', 'dispatcherd.pid'), 'utf8').trim());
    process.kill(first, 'SIGKILL');
    for (let i = 0; i < 50 && pidAlive(first); i++) await new Promise((r) => setTimeout(r, 100));
    assert.equal(pidAlive(first), false);
    const down = await lc.dispatch(['local', '--base-port', String(lc.basePort), '--down', '--purge']);
    assert.equal(down.code, 0, down.stderr);
    assert.match(down.stderr, /local-1 was not running: started it/);
    assert.deepEqual(processesUnder(lc.localDir).map((p) => p.command), [], 'nothing of the cluster runs any more');
    assert.equal(existsSync(lc.localDir), false, 'the directory is removed');
  } finally {
    leftovers = await lc.destroy();
  }
  assert.deepEqual(leftovers, [], 'no process had to be killed after --down --purge');
});

test('--purge refuses (exit 1, naming the pid) while a process still runs from the directory; nothing is deleted', { timeout: 60_000 }, async () => {
  mkdirSync(TEST_ROOT, { recursive: true, mode: 0o711 });
  const dir = join(mkdtempSync(join(TEST_ROOT, 'lo-down-')), 'local');
  mkdirSync(join(dir, 'local-1', 'data'), { recursive: true });
  // A process of the cluster outliving its dispatcher (e.g. a postmaster): it runs from a data dir.
  const orphan = spawn('/bin/sleep', ['120'], { cwd: join(dir, 'local-1', 'data'), stdio: 'ignore' });
  try {
    const configDir = mkdtempSync(join(TEST_ROOT, 'lo-down-config-'));
    const r = await new Promise<{ code: number; stderr: string }>((resolve) =>
      execFile(process.execPath, [join(REPO_ROOT, 'bin', 'dispatch'), 'local', '--dir', dir, '--down', '--purge'], { env: cleanEnv({ DISPATCH_CONFIG_DIR: configDir, CI: '1' }), timeout: 50_000 }, (err, _out, stderr) =>
        resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stderr: String(stderr) }),
      ),
    );
    rmSync(configDir, { recursive: true, force: true });
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`refusing to remove ${dir}.*\\n.*pid ${orphan.pid} `));
    assert.equal(existsSync(join(dir, 'local-1', 'data')), true, 'nothing was deleted');
  } finally {
    orphan.kill('SIGKILL');
    rmSync(join(dir, '..'), { recursive: true, force: true });
  }
});
