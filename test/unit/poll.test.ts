/** shared/poll.ts (pollUntil on a fake clock) and shared/stop-with-grace.ts (against real processes). */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { pollUntil } from '../../shared/poll.js';
import { stopWithGrace } from '../../shared/stop-with-grace.js';
import { pidAlive } from '../../shared/procfs.js';
import { fakeClock } from '../helpers/fake-cluster.js';

describe('pollUntil', () => {
  test('returns the first result that is done, reporting the pending ones', async () => {
    const clock = fakeClock();
    let n = 0;
    const pending: number[] = [];
    const r = await pollUntil(async () => ++n, (x) => x === 3, { timeoutMs: 10_000, intervalMs: 250, clock, onPending: (x) => pending.push(x), onTimeout: () => new Error('no') });
    assert.equal(r, 3);
    assert.deepEqual(pending, [1, 2]);
    assert.equal(clock.slept, 500);
  });

  test('throws the error made from the last result once the time is up', async () => {
    const clock = fakeClock();
    let n = 0;
    await assert.rejects(
      pollUntil(async () => ++n, () => false, { timeoutMs: 1000, intervalMs: 300, clock, onTimeout: (last) => new Error(`gave up at ${last}`) }),
      /gave up at 5/,
    );
  });

  test('an aborted signal ends the poll with its reason', async () => {
    const ctl = new AbortController();
    let n = 0;
    const p = pollUntil(
      async () => {
        if (++n === 2) ctl.abort(new Error('operator abort'));
        return n;
      },
      () => false,
      { timeoutMs: 60_000, intervalMs: 10, clock: fakeClock(), signal: ctl.signal, onTimeout: () => new Error('timeout') },
    );
    await assert.rejects(p, /operator abort/);
    assert.equal(n, 2);
  });

  test('an attempt that throws ends the poll with that error', async () => {
    await assert.rejects(pollUntil(async () => { throw new Error('boom'); }, () => true, { timeoutMs: 1000, intervalMs: 10, clock: fakeClock(), onTimeout: () => new Error('timeout') }), /boom/);
  });
});

describe('stopWithGrace (real processes)', () => {
  test('a process that stops on the signal is not killed', async () => {
    const child = spawn('sleep', ['30'], { stdio: 'ignore' });
    await once(child, 'spawn');
    const exit = once(child, 'exit');
    assert.deepEqual(await stopWithGrace(child.pid!, { signal: 'SIGTERM', graceMs: 5_000 }), { killed: false });
    const [, signal] = await exit;
    assert.equal(signal, 'SIGTERM');
  });

  test('a process that ignores the signal gets SIGKILL after the grace period', async () => {
    const child = spawn('sh', ['-c', 'trap "" TERM; while :; do sleep 0.05; done'], { stdio: 'ignore' });
    await once(child, 'spawn');
    await new Promise((r) => setTimeout(r, 100)); // let the trap be installed
    const exit = once(child, 'exit');
    assert.deepEqual(await stopWithGrace(child.pid!, { signal: 'SIGTERM', graceMs: 400 }), { killed: true });
    const [, signal] = await exit;
    assert.equal(signal, 'SIGKILL');
    assert.equal(pidAlive(child.pid!), false);
  });
});
