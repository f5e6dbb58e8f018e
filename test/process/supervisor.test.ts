/**
 * Process tier: the supervisor against real fixture processes (test/fixtures/fixture-proc.ts).
 * Needs root (the runAs test switches to `nobody`). Every test wraps the spawner in a leak check.
 */
import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, chmodSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { processLogDir } from '../../server/supervisor/spawner.js';
import { createSupervisor } from '../../server/supervisor/supervisor.js';
import { withLeakCheck, type LeakCheck } from '../helpers/leak-check.js';
import { readStartTime, readUid, readStat } from '../../shared/procfs.js';
import { isDispatcherError } from '../../api/errors.js';
import type { ProcessStatus, Supervisor } from '../../server/supervisor/types.js';
import { FIXTURE, fixtureSpec, freePort, tempDir, waitFor } from './fixture-spec.js';

const tmp = tempDir();
after(() => tmp.cleanup());

/** Runs `body` with a fresh supervisor; always stops everything, closes, and fails on a leaked process. */
async function withSupervisor(name: string, body: (sup: Supervisor, leaks: LeakCheck, root: string) => Promise<void>): Promise<void> {
  const root = join(tmp.path, name);
  let sup: Supervisor | undefined;
  await withLeakCheck(
    async (leaks) => {
      sup = await createSupervisor({ stateDir: join(root, 'state'), spawn: leaks.spawn, pollIntervalMs: 100 });
      await body(sup, leaks, root);
    },
    async () => {
      if (!sup) return;
      for (const p of sup.list()) await sup.stop(p.id).catch(() => {});
      await sup.close();
    },
  );
}

describe('supervisor (process tier)', () => {
  test('start → ready, command.txt with redacted secrets, pid and start time persisted, graceful stop', async () => {
    await withSupervisor('basic', async (sup, _leaks, root) => {
      const spec = fixtureSpec(root, 'p1', ['--print', 'hello from fixture'], {
        env: { FIXTURE_ID: 'p1', DB_PASSWORD: 'hunter2-very-secret', API_TOKEN: 'tok-123', PLAIN: 'a b' },
      });
      const st = await sup.start(spec);
      assert.equal(st.state, 'running');
      assert.ok(st.pid);
      const ready = await sup.waitReady('p1', 5_000);
      assert.equal(ready.state, 'ready');
      assert.ok(ready.readySince);

      // The daemon's own files live in its state dir, not in the process dir the process user can write.
      const cmd = readFileSync(join(processLogDir(join(root, 'state'), 'p1'), 'command.txt'), 'utf8');
      assert.ok(cmd.includes(FIXTURE), 'argv in command.txt');
      assert.ok(cmd.includes("PLAIN='a b'"), 'values are shell-quoted');
      assert.ok(cmd.includes('DB_PASSWORD=<redacted>'));
      assert.ok(cmd.includes('API_TOKEN=<redacted>'));
      assert.ok(!cmd.includes('hunter2') && !cmd.includes('tok-123'), 'no secret value in command.txt');
      assert.equal(statSync(spec.dir).mode & 0o777, 0o700);

      // own process group (detached) so that stop can signal the group
      assert.equal(readStat(st.pid!)?.pgrp, st.pid);
      const state = JSON.parse(readFileSync(join(root, 'state', 'state.json'), 'utf8'));
      assert.equal(state.processes.p1.pid, st.pid);
      assert.equal(state.processes.p1.startTime, readStartTime(st.pid!));
      assert.equal(statSync(join(root, 'state', 'state.json')).mode & 0o777, 0o600);

      await waitFor('stdout line', async () => (await sup.logTail('p1', 10)).includes('hello from fixture'));

      const t0 = Date.now();
      await sup.stop('p1');
      assert.ok(Date.now() - t0 < spec.stopTimeoutMs, 'a process that honours SIGTERM stops before the timeout');
      const after = sup.get('p1')!;
      assert.equal(after.state, 'stopped');
      assert.equal(after.pid, undefined);
      assert.equal(after.lastExit?.code, 143);
      assert.equal(readStartTime(st.pid!), undefined);
    });
  });

  test('start is idempotent for the same spec and refuses a different one while running', async () => {
    await withSupervisor('idem', async (sup, leaks, root) => {
      const spec = fixtureSpec(root, 'p1', []);
      const a = await sup.start(spec);
      const b = await sup.start(spec);
      assert.equal(a.pid, b.pid);
      assert.equal(leaks.pids.size, 1, 'spawned once');
      await assert.rejects(sup.start({ ...spec, argv: [...spec.argv, '--print', 'x'] }), (e: unknown) => isDispatcherError(e) && e.code === 'conflict');
      await assert.rejects(sup.remove('p1'), (e: unknown) => isDispatcherError(e) && e.code === 'conflict');
      await sup.stop('p1');
      await sup.remove('p1');
      assert.equal(sup.get('p1'), undefined);
    });
  });

  test('kill -9 of a ready process: the first restart spawns at once, with no backoff state in between', async () => {
    await withSupervisor('first-crash', async (sup, leaks, root) => {
      // A slow configured backoff: if the first restart waited for it, the new pid would come 30 s late.
      const spec = fixtureSpec(root, 'victim', [], { restart: { enabled: true, initialDelayMs: 30_000, maxDelayMs: 60_000, quickFailureWindowMs: 60_000, maxQuickFailures: 5 } });
      const first = await sup.start(spec);
      await sup.waitReady('victim', 5_000);
      const states: string[] = [];
      const off = sup.onChange((s) => states.push(s.state));
      process.kill(first.pid!, 'SIGKILL');
      const again = await waitFor('a new pid', () => {
        const s = sup.get('victim');
        return s?.pid !== undefined && s.pid !== first.pid ? s : undefined;
      }, 5_000);
      off();
      assert.equal(again.restarts, 1);
      assert.equal(again.lastExit?.signal, 'SIGKILL');
      assert.ok(!states.includes('backoff'), `states after the kill: ${states.join(' → ')}`);
      assert.equal(states[0], 'starting', 'the exit goes straight to a new incarnation');
      assert.equal(leaks.pids.size, 2);
      await sup.waitReady('victim', 5_000);
    });
  });

  test('crash → restart with growing backoff; crash loop → failed with reason, exit code and log tail', async () => {
    await withSupervisor('crashloop', async (sup, leaks, root) => {
      const spec = fixtureSpec(root, 'crash', ['--print-stderr', 'something broke: disk on fire', '--exit-code', '3', '--exit-after', '20']);
      const events: Array<{ s: ProcessStatus; at: number }> = [];
      const off = sup.onChange((s) => events.push({ s, at: Date.now() }));
      await sup.start(spec);
      const failed = await waitFor('failed state', () => (sup.get('crash')?.state === 'failed' ? sup.get('crash') : undefined), 20_000);
      off();

      // 5 quick failures: the first restart at once, then 3 after a backoff of 100, 200, 400 ms, then give up.
      assert.equal(failed.restarts, 4);
      assert.equal(leaks.pids.size, 5, 'five incarnations were spawned');
      const backoffAt = events.filter((e) => e.s.state === 'backoff').map((e) => e.at);
      const startAt = events.filter((e) => e.s.state === 'running').map((e) => e.at);
      assert.equal(backoffAt.length, 3, 'no backoff before the first restart');
      const gaps = backoffAt.map((t, i) => startAt[i + 2] - t);
      const expected = [100, 200, 400];
      gaps.forEach((g, i) => assert.ok(g >= expected[i] - 5, `gap ${i} was ${g} ms, expected ≥ ${expected[i]}`));
      for (let i = 1; i < gaps.length; i++) assert.ok(gaps[i] > gaps[i - 1], `delays grow: ${gaps.join(', ')}`);

      assert.ok(failed.failure, 'failure is recorded');
      assert.equal(failed.failure!.exitCode, 3);
      assert.equal(failed.failure!.signal, null);
      assert.match(failed.failure!.reason, /gave up after 5 quick failures/);
      assert.match(failed.failure!.reason, /exit code 3/);
      assert.ok(failed.failure!.logTail.includes('something broke: disk on fire'), `log tail: ${failed.failure!.logTail.join(' | ')}`);
      assert.ok(failed.failure!.logTail.length <= 20);
      assert.deepEqual(failed.lastExit && { code: failed.lastExit.code, signal: failed.lastExit.signal }, { code: 3, signal: null });

      // failed is visible in the persisted state and makes waitReady reject at once
      // (the file is written right after the state changes in memory)
      await waitFor('failed state persisted', async () => JSON.parse(readFileSync(join(root, 'state', 'state.json'), 'utf8')).processes.crash.state === 'failed', 2_000);
      await assert.rejects(sup.waitReady('crash', 1_000), (e: unknown) => isDispatcherError(e) && /crash/.test(e.message) && /disk on fire/.test(e.message));
      // nothing restarts it behind our back
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(leaks.pids.size, 5);
    });
  });

  test('SIGTERM ignored → SIGKILL to the group after the stop timeout; the grandchild dies too', async () => {
    await withSupervisor('sigkill', async (sup, _leaks, root) => {
      const spec = fixtureSpec(root, 'stubborn', ['--ignore-sigterm', '--child'], { stopTimeoutMs: 800 });
      const st = await sup.start(spec);
      const line = await waitFor('grandchild pid', async () => (await sup.logTail('stubborn', 20)).find((l) => l.includes('grandchild')));
      const grandchild = JSON.parse(line).grandchild as number;
      assert.ok(readStartTime(grandchild) !== undefined, 'grandchild runs');
      assert.equal(readStat(grandchild)?.pgrp, st.pid, 'grandchild is in the same process group');

      const t0 = Date.now();
      await sup.stop('stubborn');
      const took = Date.now() - t0;
      assert.ok(took >= 800, `waited the stop timeout before SIGKILL (took ${took} ms)`);
      assert.ok(took < 5_000, `but not much longer (took ${took} ms)`);
      assert.equal(readStartTime(st.pid!), undefined, 'the leader is gone');
      assert.equal(readStartTime(grandchild), undefined, 'the grandchild is gone');
      const s = sup.get('stubborn')!;
      assert.equal(s.state, 'stopped');
      assert.equal(s.lastExit?.signal, 'SIGKILL');
      assert.ok((await sup.logTail('stubborn', 50)).includes('fixture-proc: ignoring SIGTERM'), 'SIGTERM was sent first');
    });
  });

  test('a leader that dies leaves no group members behind for the next incarnation', async () => {
    await withSupervisor('orphans', async (sup, _leaks, root) => {
      const spec = fixtureSpec(root, 'leader', ['--child', '--exit-code', '1', '--exit-after', '300'], {
        stopTimeoutMs: 300,
        restart: { enabled: false, initialDelayMs: 100, maxDelayMs: 100, quickFailureWindowMs: 1_000, maxQuickFailures: 3 },
      });
      await sup.start(spec);
      const line = await waitFor('grandchild pid', async () => (await sup.logTail('leader', 20)).find((l) => l.includes('grandchild')));
      const grandchild = JSON.parse(line).grandchild as number;
      const s = await waitFor('failed', () => (sup.get('leader')?.state === 'failed' ? sup.get('leader') : undefined));
      assert.equal(s.failure?.exitCode, 1);
      assert.equal(readStartTime(grandchild), undefined, 'the SIGTERM-ignoring grandchild was killed');
    });
  });

  test('waitReady waits for a slow tcp readiness', async () => {
    await withSupervisor('slow', async (sup, _leaks, root) => {
      const port = await freePort();
      const spec = fixtureSpec(root, 'slow', ['--ready-after', '700', '--port', String(port)], {
        readiness: { kind: 'tcp', host: '127.0.0.1', port },
      });
      const t0 = Date.now();
      await sup.start(spec);
      assert.notEqual(sup.get('slow')!.state, 'ready');
      const st = await sup.waitReady('slow', 10_000);
      assert.equal(st.state, 'ready');
      assert.ok(Date.now() - t0 >= 650, 'not ready before the fixture listens');
    });
  });

  test('waitReady rejects, naming the process and showing its log, when the process dies', async () => {
    await withSupervisor('dies', async (sup, _leaks, root) => {
      const port = await freePort();
      const spec = fixtureSpec(root, 'doomed', ['--print-stderr', 'fatal: cannot open data dir', '--exit-code', '7', '--exit-after', '300'], {
        readiness: { kind: 'tcp', host: '127.0.0.1', port },
      });
      await sup.start(spec);
      await assert.rejects(sup.waitReady('doomed', 10_000), (e: unknown) => {
        assert.ok(isDispatcherError(e));
        assert.match(e.message, /doomed/);
        assert.match(e.message, /exit code 7/);
        assert.match(e.message, /fatal: cannot open data dir/);
        assert.equal(e.details.exitCode, 7);
        assert.ok((e.details.logTail as string[]).includes('fatal: cannot open data dir'));
        return true;
      });
    });
  });

  test('waitReady rejects on timeout with the last probe result', async () => {
    await withSupervisor('timeout', async (sup, _leaks, root) => {
      const port = await freePort();
      await sup.start(fixtureSpec(root, 'never', [], { readiness: { kind: 'tcp', host: '127.0.0.1', port } }));
      const t0 = Date.now();
      await assert.rejects(sup.waitReady('never', 600), (e: unknown) => {
        assert.ok(isDispatcherError(e));
        assert.match(e.message, /never is not ready: not ready within 600 ms/);
        assert.match(e.message, /ECONNREFUSED/);
        return true;
      });
      assert.ok(Date.now() - t0 >= 590);
      assert.equal(sup.get('never')!.state, 'running', 'a timeout does not kill the process');
    });
  });

  test('a binary that cannot be executed → start rejects and the process is failed (no restart loop)', async () => {
    await withSupervisor('enoent', async (sup, leaks, root) => {
      const spec = fixtureSpec(root, 'ghost', [], { argv: [join(root, 'no-such-binary'), '--x'] });
      await assert.rejects(sup.start(spec), (e: unknown) => isDispatcherError(e) && /ghost/.test(e.message) && /ENOENT/.test(e.message));
      const s = sup.get('ghost')!;
      assert.equal(s.state, 'failed');
      assert.match(s.failure!.reason, /could not start/);
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(leaks.alive().length, 0);
    });
  });

  test('runAs: the process runs as nobody and its dir belongs to nobody', async () => {
    const pw = readFileSync('/etc/passwd', 'utf8').split('\n').find((l) => l.startsWith('nobody:'));
    assert.ok(pw, 'user nobody exists (the process tier needs it)');
    const [, , uidS, gidS] = pw.split(':');
    const uid = Number(uidS);
    const gid = Number(gidS);
    // nobody cannot read the checkout's dist/ necessarily: run a copy from a world-readable dir.
    const pub = tempDir('cd-fixture-');
    try {
      chmodSync(pub.path, 0o755);
      const script = join(pub.path, 'fixture-proc.mjs');
      copyFileSync(FIXTURE, script);
      chmodSync(script, 0o644);
      await withSupervisor('runas', async (sup, _leaks, root) => {
        const spec = fixtureSpec(root, 'unpriv', [], { argv: [process.execPath, script, '--print', 'as nobody'], cwd: pub.path, runAs: { uid, gid, user: 'nobody' } });
        const st = await sup.start(spec);
        await sup.waitReady('unpriv', 5_000);
        assert.equal(readUid(st.pid!), uid);
        const status = readFileSync(`/proc/${st.pid}/status`, 'utf8');
        assert.match(status, new RegExp(`^Uid:\\s+${uid}\\s+${uid}\\s+${uid}\\s+${uid}`, 'm'));
        assert.match(status, new RegExp(`^Gid:\\s+${gid}\\s+${gid}\\s+${gid}\\s+${gid}`, 'm'));
        const ds = statSync(spec.dir);
        assert.equal(ds.uid, uid);
        assert.equal(ds.mode & 0o777, 0o700);
        // The log stays root's: the process writes to the descriptor it was given, and cannot swap the file.
        assert.equal(statSync(join(processLogDir(join(root, 'state'), 'unpriv'), 'stdout.log')).uid, process.getuid!());
        await waitFor('output', async () => (await sup.logTail('unpriv', 5)).includes('as nobody'));
      });
    } finally {
      pub.cleanup();
    }
  });
});
