/**
 * More cases of the rolling restart (RestartService + RestartExecutor) against fake nodes, health, actions
 * and clock (test/helpers/fake-cluster.ts), beside test/unit/rolling-restart.test.ts: the order of a
 * selection, retry after retry, the refusals of retry and abort, an abort whose start-again fails, an abort
 * of a running restart that ends `aborted`, and resume between two processes or of an abort. Milliseconds
 * each; test/cluster/rolling-restart.test.ts runs the same code against a real pg-ha cluster.
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

const EVERY = ['agent-1', 'agent-2', 'agent-3', 'dbserver-1', 'dbserver-2', 'dbserver-3', 'coordinator-1'];

async function setup(opts: { health?: ClusterHealth } = {}) {
  const h = await restartHarness(dirs, opts);
  const running = () => EVERY.filter((id) => h.node(id).running.has(id));
  // Every process runs before the restart (the fake nodes start empty).
  for (const id of EVERY) h.node(id).running.add(id);
  return { ...h, running };
}

const isCode = (code: string, message?: RegExp) => (e: unknown) => e instanceof DispatcherError && e.code === code && (!message || message.test(e.message));

describe('rolling restart: more cases against fake nodes', () => {
  test('a selection of the DB servers restarts the replicas, switches over, then the old leader; nothing else', async () => {
    const s = await setup();
    const op = await s.service.start({ processes: { roles: ['dbserver'] } });
    const done = await s.operations.wait(op.id);
    assert.equal(done.state, 'succeeded', JSON.stringify(done.error));
    assert.deepEqual(s.restarted(), ['dbserver-2', 'dbserver-3', 'switchover:dbserver-1->dbserver-2', 'dbserver-1']);
    assert.deepEqual(s.running(), EVERY);
  });

  test('retry after retry: each continues after what the last one did, the failed process first; every process restarted', async () => {
    const s = await setup();
    s.node('agent-1').failures.push({ method: 'startProcess', process: 'agent-1', times: 1 });
    s.node('coordinator-1').failures.push({ method: 'startProcess', process: 'coordinator-1', times: 1 });
    const first = await s.service.start({});
    assert.equal((await s.operations.wait(first.id)).state, 'failed');
    const second = await s.service.retry(first.id);
    const secondDone = await s.operations.wait(second.id);
    assert.equal(secondDone.state, 'failed', 'the coordinator fails once more');
    assert.deepEqual((secondDone.progress as RestartProgress).stopped, ['coordinator-1']);
    const third = await s.service.retry(second.id);
    const thirdDone = await s.operations.wait(third.id);
    assert.equal(thirdDone.state, 'succeeded', JSON.stringify(thirdDone.error));
    // Each retry restarts first the process that failed (stop, then start) and skips what was done: only
    // those two processes were stopped twice, every other exactly once.
    const stops = s.restarted().filter((x) => !x.startsWith('switchover'));
    const twice = EVERY.filter((id) => stops.filter((x) => x === id).length === 2);
    assert.deepEqual(twice, ['agent-1', 'coordinator-1'], stops.join(', '));
    assert.deepEqual([...new Set(stops)].sort(), [...EVERY].sort(), stops.join(', '));
    assert.equal(stops.length, EVERY.length + 2, stops.join(', '));
    assert.deepEqual(s.running(), EVERY);
  });

  test('retry and abort refuse a restart that succeeded (409), and an operation that is not a restart (400)', async () => {
    const s = await setup();
    const op = await s.service.start({});
    assert.equal((await s.operations.wait(op.id)).state, 'succeeded');
    await assert.rejects(s.service.retry(op.id), isCode('conflict', /succeeded/));
    await assert.rejects(s.service.abort(op.id), isCode('conflict', /nothing to abort/));
    const other = await s.operations.start('shutdown', 'fake', async () => ({}));
    await s.operations.wait(other.id);
    await assert.rejects(s.service.retry(other.id), isCode('bad_request', /not a rolling restart/));
    await assert.rejects(s.service.abort(other.id), isCode('bad_request', /not a rolling restart/));
    assert.equal(s.restarted().length, 8, 'nothing restarted by the refused calls');
  });

  test('an abort that cannot start a process again fails naming it, and the restart is still marked aborted', async () => {
    const s = await setup();
    s.node('dbserver-2').failures.push({ method: 'startProcess', process: 'dbserver-2', times: 2 });
    const op = await s.service.start({});
    assert.equal((await s.operations.wait(op.id)).state, 'failed');
    const abort = await s.service.abort(op.id);
    const aborted = await s.operations.wait(abort.id);
    assert.equal(aborted.state, 'failed');
    assert.match(aborted.error!.message, /dbserver-2/);
    const restart = s.operations.get(op.id);
    assert.equal(restart.state, 'aborted');
    assert.match(restart.events.at(-1)!.message, /not running again: dbserver-2/);
  });

  test('an abort resumes every coordinator\'s pooler before it starts anything again (its restart may have died mid-pause)', async () => {
    const s = await setup();
    s.node('dbserver-2').failures.push({ method: 'startProcess', process: 'dbserver-2', times: 1 });
    const op = await s.service.start({});
    assert.equal((await s.operations.wait(op.id)).state, 'failed');
    const before = s.journal.length;
    const abort = await s.service.abort(op.id);
    assert.equal((await s.operations.wait(abort.id)).state, 'succeeded');
    const during = s.journal.slice(before);
    const resumed = during.indexOf('resume-poolers:coordinator-1');
    const restarted = during.findIndex((e) => e.includes(':startProcess:'));
    assert.ok(resumed >= 0, `the abort resumed the poolers:\n${during.join('\n')}`);
    assert.ok(restarted < 0 || resumed < restarted, `resumed before starting anything:\n${during.join('\n')}`);
  });

  test('abort of a running restart ends it aborted at a step boundary, with every process running', async () => {
    let aborting: Promise<OperationView> | undefined;
    let opId = '';
    const s = await setup({
      health: scriptedHealth((role, call) => {
        if (role === 'dbserver' && call === 3 && !aborting) aborting = s.service.abort(opId);
        return true;
      }),
    });
    const op = await s.service.start({});
    opId = op.id;
    await s.operations.wait(op.id);
    await aborting;
    // The abort marks the operation after it ended: look (bounded) until it did.
    for (let i = 0; i < 100 && s.operations.get(op.id).state !== 'aborted'; i++) await new Promise((r) => setImmediate(r));
    assert.equal(s.operations.get(op.id).state, 'aborted');
    assert.ok(!s.restarted().includes('coordinator-1'), s.restarted().join(', '));
    assert.deepEqual(s.running(), EVERY, 'a boundary between processes leaves none stopped');
  });

  test('resume between two processes (nothing stopped) goes on with the next one', async () => {
    const s = await setup();
    const view: OperationView = {
      id: 'interrupted-2',
      kind: 'restart',
      cluster: 'fake',
      state: 'running',
      startedAt: new Date(0).toISOString(),
      events: [],
      progress: { request: { processes: {}, mode: 'rolling', force: false, readyTimeoutMs: 120_000 }, done: ['agent-2', 'agent-3', 'agent-1', 'dbserver-2', 'dbserver-3'], stopped: [] },
    };
    await s.service.resume(view);
    const done = await s.operations.wait('interrupted-2');
    assert.equal(done.state, 'succeeded', JSON.stringify(done.error));
    assert.deepEqual(s.restarted(), ['switchover:dbserver-1->dbserver-2', 'dbserver-1', 'coordinator-1']);
  });

  test('an abort that was running when the dispatcher died is not resumed: it is marked interrupted', async () => {
    const s = await setup();
    const view: OperationView = {
      id: 'interrupted-abort',
      kind: 'restart',
      cluster: 'fake',
      state: 'running',
      startedAt: new Date(0).toISOString(),
      events: [],
      progress: { request: { processes: {}, mode: 'rolling', force: false, readyTimeoutMs: 120_000 }, done: [], stopped: [], abortOf: 'restart-1' },
    };
    await s.service.resume(view);
    const v = s.operations.get('interrupted-abort');
    assert.equal(v.state, 'failed');
    assert.match(v.error!.message, /cannot resume/);
    assert.deepEqual(s.restarted(), []);
  });
});
