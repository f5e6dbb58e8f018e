/**
 * The pause rule of a rolling restart (server/cluster/paused-coordinators.ts): RESUME on every path and
 * within the bound. Fake actions (pure logic); the real PgBouncer is exercised by
 * test/cluster/pause-restart.test.ts.
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { pausedCoordinators } from '../../server/cluster/paused-coordinators.js';
import type { RestartActions } from '../../server/core/restart-actions.js';
import type { OperationHandle } from '../../server/cluster/operations.js';
import type { Plan } from '../../api/plan.js';
import { systemClock } from '../../shared/poll.js';

function fakes(opts: { pauseFails?: boolean } = {}) {
  const calls: string[] = [];
  const events: string[] = [];
  const actions = {
    async pauseCoordinators(_p: Plan, _s: Record<string, string>, ids: string[]) {
      calls.push(`pause ${ids.join(',')}`);
      if (opts.pauseFails) throw new Error('a transaction outlived the bound');
    },
    async resumeCoordinators(_p: Plan, _s: Record<string, string>, ids: string[]) {
      calls.push(`resume ${ids.join(',')}`);
    },
  } as unknown as RestartActions;
  const op = { event: (e: { step: string; message: string }) => events.push(`${e.step}: ${e.message}`) } as unknown as OperationHandle;
  return { calls, events, actions, op };
}
const plan = {} as Plan;

describe('pausedCoordinators', () => {
  test('pause, work, resume once', async () => {
    const f = fakes();
    const r = await pausedCoordinators(f.actions, systemClock, f.op, plan, {}, ['c1', 'c2'], 10_000, 'switchover', async () => {
      f.calls.push('work');
      return 42;
    });
    assert.equal(r, 42);
    assert.deepEqual(f.calls, ['pause c1,c2', 'work', 'resume c1,c2']);
  });

  test('work that fails: resumed anyway, the error goes on', async () => {
    const f = fakes();
    await assert.rejects(
      pausedCoordinators(f.actions, systemClock, f.op, plan, {}, ['c1'], 10_000, 'switchover', async () => {
        throw new Error('switchover refused');
      }),
      /switchover refused/,
    );
    assert.deepEqual(f.calls, ['pause c1', 'resume c1']);
  });

  test('work that outlives the bound: resumed at the bound, not again afterwards', async () => {
    const f = fakes();
    await pausedCoordinators(f.actions, systemClock, f.op, plan, {}, ['c1'], 50, 'switchover', async () => {
      await new Promise((r) => setTimeout(r, 200));
      f.calls.push('work done');
    });
    assert.deepEqual(f.calls, ['pause c1', 'resume c1', 'work done']);
    assert.ok(f.events.some((e) => /bound of 50 ms/.test(e)), f.events.join('\n'));
  });

  test('a pause that does not take: undone, and the work runs unpaused with a warning', async () => {
    const f = fakes({ pauseFails: true });
    await pausedCoordinators(f.actions, systemClock, f.op, plan, {}, ['c1'], 10_000, 'restart of c1', async () => {
      f.calls.push('work');
    });
    assert.deepEqual(f.calls, ['pause c1', 'resume c1', 'work']);
    assert.ok(f.events.some((e) => /could not pause c1/.test(e)));
  });

  test('no coordinators, or an engine without a pooler: just the work', async () => {
    const f = fakes();
    await pausedCoordinators(f.actions, systemClock, f.op, plan, {}, [], 10_000, 'x', async () => void f.calls.push('work'));
    await pausedCoordinators({} as RestartActions, systemClock, f.op, plan, {}, ['c1'], 10_000, 'x', async () => void f.calls.push('work'));
    assert.deepEqual(f.calls, ['work', 'work']);
  });
});
