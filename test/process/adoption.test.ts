/**
 * Process tier: kill -9 of the supervising daemon, then a new supervisor on the same state dir adopts the
 * processes still alive (same pid and /proc start time: nothing started twice) and starts again the one
 * that died meanwhile. Uses test/fixtures/supervisor-host.ts as the daemon that gets killed.
 */
import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { once } from 'node:events';
import { createSupervisor } from '../../server/supervisor/supervisor.js';
import { readStartTime } from '../../shared/procfs.js';
import { withLeakCheck } from '../helpers/leak-check.js';
import { SUPERVISOR_HOST, fixtureSpec, tempDir, waitFor } from './fixture-spec.js';

const tmp = tempDir('cd-adopt-');
after(() => tmp.cleanup());

const counterLines = (file: string) => (existsSync(file) ? readFileSync(file, 'utf8') : '').split('\n').filter(Boolean).map(Number);

describe('adoption after kill -9 of the daemon', () => {
  test('same pids adopted, nothing started twice, a dead one started again, adopted exits are noticed', async () => {
    const stateDir = join(tmp.path, 'state');
    const counter = join(tmp.path, 'counter');
    let sup: Awaited<ReturnType<typeof createSupervisor>> | undefined;
    await withLeakCheck(async (leaks) => {
      const host = leaks.spawn(process.execPath, [SUPERVISOR_HOST, '--state-dir', stateDir, '--count', '3', '--counter', counter, '--root', tmp.path], {
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      const lines = createInterface({ input: host.stdout! });
      const [first] = (await Promise.race([
        once(lines, 'line'),
        once(host, 'exit').then(() => {
          throw new Error('supervisor-host exited before printing its pids');
        }),
      ])) as [string];
      const pids = JSON.parse(first).pids as Record<string, number>;
      for (const pid of Object.values(pids)) leaks.track(pid);
      assert.deepEqual(Object.keys(pids).sort(), ['p0', 'p1', 'p2']);
      // readiness here is /bin/true: the fixtures may not have written their counter line yet
      await waitFor('3 starts recorded', () => counterLines(counter).length >= 3);

      // The daemon dies hard; its detached processes live on.
      const hostExit = once(host, 'exit');
      host.kill('SIGKILL');
      await hostExit;
      for (const pid of Object.values(pids)) assert.ok(readStartTime(pid) !== undefined, `pid ${pid} outlived the daemon`);

      // While no daemon runs, p1 dies.
      process.kill(pids.p1, 'SIGKILL');
      await waitFor('p1 to die', () => readStartTime(pids.p1) === undefined);

      sup = await createSupervisor({ stateDir, spawn: leaks.spawn, pollIntervalMs: 100 });
      await sup.recover();
      const p0 = sup.get('p0')!;
      const p1 = sup.get('p1')!;
      const p2 = sup.get('p2')!;
      assert.equal(p0.pid, pids.p0);
      assert.equal(p2.pid, pids.p2);
      assert.equal(p0.adopted, true);
      assert.equal(p2.adopted, true);
      assert.notEqual(p1.pid, pids.p1, 'the dead one was started again');
      assert.ok(p1.pid && readStartTime(p1.pid) !== undefined);
      assert.equal(p1.adopted, undefined);
      assert.equal(p1.restarts, 1);
      for (const id of ['p0', 'p1', 'p2']) assert.equal((await sup.waitReady(id, 5_000)).state, 'ready');

      // Exactly one new start (p1); p0 and p2 were not started twice.
      await waitFor('4th start recorded', () => counterLines(counter).length >= 4);
      await new Promise((r) => setTimeout(r, 300)); // time for a wrong second start to show up
      const started = counterLines(counter);
      assert.equal(started.length, 4, `starts recorded: ${started.join(',')}`);
      assert.deepEqual(started.slice(0, 3).sort(), Object.values(pids).sort());
      assert.equal(started[3], p1.pid);

      // A second recover() in the same instance starts nothing either.
      await sup.recover();
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(counterLines(counter).length, 4);

      // An adopted process is not our child: its death is noticed by polling /proc and it is restarted.
      process.kill(pids.p2, 'SIGKILL');
      const restarted = await waitFor('p2 restarted', () => {
        const s = sup!.get('p2');
        return s && s.pid !== undefined && s.pid !== pids.p2 && s.state !== 'backoff' ? s : undefined;
      });
      assert.equal(restarted.lastExit?.code, null, 'the exit status of an adopted process is unknown');
      await waitFor('5th start recorded', () => counterLines(counter).length >= 5);
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(counterLines(counter).length, 5);

      // Stopping an adopted process (not our child) works by process group too.
      await sup.stop('p0');
      assert.equal(readStartTime(pids.p0), undefined);
      assert.equal(sup.get('p0')!.state, 'stopped');
    }, async () => {
      if (sup) {
        for (const p of sup.list()) await sup.stop(p.id).catch(() => {});
        await sup.close();
      }
    });
  });

  test('close() leaves processes running; a new supervisor adopts them and does not start stopped ones', async () => {
    const stateDir = join(tmp.path, 'close-state');
    let second: Awaited<ReturnType<typeof createSupervisor>> | undefined;
    await withLeakCheck(
      async (leaks) => {
        const first = await createSupervisor({ stateDir, spawn: leaks.spawn, pollIntervalMs: 100 });
        const a = await first.start(fixtureSpec(tmp.path, 'keep', []));
        await first.start(fixtureSpec(tmp.path, 'halt', []));
        await first.waitReady('keep', 5_000);
        await first.stop('halt');
        await first.close();
        await new Promise((r) => setTimeout(r, 200));
        assert.ok(readStartTime(a.pid!) !== undefined, 'close() does not stop processes');

        second = await createSupervisor({ stateDir, spawn: leaks.spawn, pollIntervalMs: 100 });
        assert.equal(second.get('halt')!.state, 'stopped');
        await second.recover();
        assert.equal(second.get('keep')!.pid, a.pid);
        assert.equal(second.get('keep')!.adopted, true);
        assert.equal(second.get('halt')!.state, 'stopped', 'a stopped process stays stopped');
        assert.equal(leaks.pids.size, 2, 'nothing new was spawned');
        assert.equal((await second.waitReady('keep', 5_000)).state, 'ready');
      },
      async () => {
        if (second) {
          for (const p of second.list()) await second.stop(p.id).catch(() => {});
          await second.close();
        }
      },
    );
  });
  test('relaunchOnBoot off (restartGone: false): a process gone meanwhile stays stopped, a live one is adopted', async () => {
    const stateDir = join(tmp.path, 'noboot-state');
    let second: Awaited<ReturnType<typeof createSupervisor>> | undefined;
    await withLeakCheck(
      async (leaks) => {
        const first = await createSupervisor({ stateDir, spawn: leaks.spawn, pollIntervalMs: 100 });
        const live = await first.start(fixtureSpec(tmp.path, 'live', []));
        const gone = await first.start(fixtureSpec(tmp.path, 'gone', []));
        await first.waitReady('live', 5_000);
        await first.close();
        // As after a reboot: the recorded process no longer exists.
        process.kill(gone.pid!, 'SIGKILL');
        await waitFor('gone to die', () => readStartTime(gone.pid!) === undefined);

        second = await createSupervisor({ stateDir, spawn: leaks.spawn, pollIntervalMs: 100 });
        await second.recover({ restartGone: false });
        assert.equal(second.get('live')!.pid, live.pid, 'the live one is adopted');
        assert.equal(second.get('gone')!.state, 'stopped', 'the gone one is not started again');
        assert.equal(leaks.pids.size, 2, 'nothing new was spawned');
      },
      async () => {
        if (second) {
          for (const p of second.list()) await second.stop(p.id).catch(() => {});
          await second.close();
        }
      },
    );
  });
});
