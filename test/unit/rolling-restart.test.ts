/**
 * The rolling restart (RestartService + RestartExecutor) against fake nodes, health, actions and clock
 * (test/helpers/fake-cluster.ts) with the real pg-ha engine profile and a real OperationStore in a temp
 * dir: ordering, switchover, retry, abort and resume, in milliseconds. test/cluster/rolling-restart.test.ts
 * runs the same code against a real pg-ha cluster.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { DispatcherError } from '../../api/errors.js';
import type { OperationView } from '../../api/rest.js';
import type { RestartProgress } from '../../server/cluster/restart.js';
import type { ClusterHealth } from '../../server/cluster/orchestrator.js';
import { restartHarness, scriptedHealth } from '../helpers/fake-cluster.js';

const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));


function setup(opts: { health?: ClusterHealth } = {}) {
  return restartHarness(dirs, opts);
}

describe('rolling restart against fake nodes', () => {
  test('agents followers-then-leader, replicas, switchover, the old DB leader, coordinators; each stopped then started', async () => {
    const s = await setup();
    const op = await s.service.start({});
    const done = await s.operations.wait(op.id);
    assert.equal(done.state, 'succeeded', JSON.stringify(done.error));
    assert.deepEqual(s.restarted(), ['agent-2', 'agent-3', 'agent-1', 'dbserver-2', 'dbserver-3', 'switchover:dbserver-1->dbserver-2', 'dbserver-1', 'coordinator-1']);
    for (const id of ['agent-1', 'dbserver-1', 'coordinator-1']) {
      const stop = s.journal.findIndex((e) => e.endsWith(`:stopProcess:${id}`));
      const start = s.journal.findIndex((e) => e.endsWith(`:startProcess:${id}`));
      assert.ok(stop >= 0 && stop < start, `${id}: stop before start`);
    }
    assert.deepEqual((done.result as { restarted: string[] }).restarted.length, 7);
  });

  test('an unhealthy cluster is refused with 409 before an operation exists (time on the fake clock)', async () => {
    const s = await setup({ health: scriptedHealth((role) => role !== 'dbserver') });
    await assert.rejects(s.service.start({}), (e: unknown) => e instanceof DispatcherError && e.code === 'conflict' && /not healthy/.test(e.message));
    assert.equal(s.operations.list().length, 0);
    assert.ok(s.clock.slept >= 3000, 'it looked again for ~3 s before refusing');
  });

  test('a bad selection is a 400 naming it, before anything restarts', async () => {
    const s = await setup();
    await assert.rejects(s.service.start({ processes: { ids: ['dbserver-9'] } }), (e: unknown) => e instanceof DispatcherError && (e.code === 'bad_request' || e.code === 'validation_failed'));
    assert.deepEqual(s.restarted(), []);
  });

  test('a failed restart keeps its progress; retry continues after what is done', async () => {
    const s = await setup();
    s.node('dbserver-3').failures.push({ method: 'startProcess', process: 'dbserver-3', times: 1 });
    const op = await s.service.start({});
    const failed = await s.operations.wait(op.id);
    assert.equal(failed.state, 'failed');
    const p = failed.progress as RestartProgress;
    assert.deepEqual(p.done, ['agent-2', 'agent-3', 'agent-1', 'dbserver-2']);
    assert.deepEqual(p.stopped, ['dbserver-3']);
    const before = s.restarted().length;
    const retry = await s.service.retry(op.id);
    const ok = await s.operations.wait(retry.id);
    assert.equal(ok.state, 'succeeded', JSON.stringify(ok.error));
    const again = s.restarted().slice(before);
    assert.ok(!again.some((x) => x.startsWith('agent') || x === 'dbserver-2'), `retry skipped what was done: ${again.join(', ')}`);
    assert.equal(again[0], 'dbserver-3', 'the process that failed goes first');
  });

  test('abort of a failed restart starts again what it stopped and marks the restart aborted', async () => {
    const s = await setup();
    s.node('agent-3').failures.push({ method: 'startProcess', process: 'agent-3', times: 1 });
    const op = await s.service.start({});
    assert.equal((await s.operations.wait(op.id)).state, 'failed');
    assert.ok(!s.node('agent-3').running.has('agent-3'));
    const abort = await s.service.abort(op.id);
    const aborted = await s.operations.wait(abort.id);
    assert.equal(aborted.state, 'succeeded', JSON.stringify(aborted.error));
    assert.ok(s.node('agent-3').running.has('agent-3'), 'agent-3 runs again');
    assert.equal(s.operations.get(op.id).state, 'aborted');
    await assert.rejects(s.service.retry(abort.id), /is an abort/);
  });

  test('abort of a running restart stops it at the next process', async () => {
    let aborting: Promise<OperationView> | undefined;
    const s = await setup({
      health: scriptedHealth((role, call) => {
        // The operation is running once its first gate is asked: abort it from there.
        if (role === 'agent' && call === 4 && !aborting) aborting = s.service.abort(opId);
        return true;
      }),
    });
    const op = await s.service.start({});
    const opId = op.id;
    const done = await s.operations.wait(op.id);
    await aborting;
    assert.equal(done.state === 'failed' || done.state === 'aborted', true, done.state);
    assert.ok(s.restarted().length < 8, `it stopped early: ${s.restarted().join(', ')}`);
    assert.ok(!s.restarted().includes('coordinator-1'));
  });

  test('resume after a dispatcher restart finishes the current process first and skips what is done', async () => {
    const s = await setup();
    const view: OperationView = {
      id: 'interrupted-1',
      kind: 'restart',
      cluster: 'fake',
      state: 'running',
      startedAt: new Date(0).toISOString(),
      events: [],
      progress: { request: { processes: {}, mode: 'rolling', force: false, readyTimeoutMs: 120_000 }, done: ['agent-2', 'agent-3', 'agent-1'], stopped: ['dbserver-3'], current: 'dbserver-3' },
    };
    await s.service.resume(view);
    const done = await s.operations.wait('interrupted-1');
    assert.equal(done.state, 'succeeded', JSON.stringify(done.error));
    const order = s.restarted();
    assert.equal(order[0], 'dbserver-3');
    assert.ok(!order.some((x) => x.startsWith('agent')), order.join(', '));
    assert.ok(order.indexOf('coordinator-1') === order.length - 1);
  });

  test('a cluster that does not become healthy after a process fails the restart at the timeout, on the fake clock', async () => {
    let unhealthy = false;
    const s = await setup({ health: scriptedHealth((role) => !(unhealthy && role === 'agent')) });
    const op = await s.service.start({ readyTimeoutMs: 60_000 });
    unhealthy = true;
    const t0 = Date.now();
    const done = await s.operations.wait(op.id);
    assert.equal(done.state, 'failed');
    assert.match(done.error!.message, /cluster not healthy within 60 s after agent-2/);
    assert.ok(Date.now() - t0 < 5_000);
    assert.deepEqual(s.restarted(), ['agent-2']);
  });
});
