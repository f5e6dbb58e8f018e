/**
 * The DB servers' failover held around the agency's restart (server/cluster/held-failover.ts; pg-ha:
 * Patroni's maintenance mode, server/engines/pg-ha/failover-hold.ts): taken before the first etcd member
 * stops, released after the last one is back and the cluster is healthy, before any DB server restarts;
 * released on failure too, and by every restart operation's start (a dead runner's leftover). Against
 * fake nodes and actions (test/helpers/fake-cluster.ts); the engine's side against a real cluster in
 * test/cluster/pause-restart.test.ts.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { restartHarness } from '../helpers/fake-cluster.js';
import { reportsPaused } from '../../server/engines/pg-ha/failover-hold.js';
import { loadEngine } from '../../server/engines/loader.js';

const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

const EVERY = ['agent-1', 'agent-2', 'agent-3', 'dbserver-1', 'dbserver-2', 'dbserver-3', 'coordinator-1'];

async function setup() {
  const h = await restartHarness(dirs);
  for (const id of EVERY) h.node(id).running.add(id);
  /** The journal's hold/release entries and process stops, in order. */
  const steps = () => h.journal.filter((e) => e.includes('failover') || e.includes(':stopProcess:')).map((e) => (e.includes(':stopProcess:') ? `stop ${e.split(':')[2]}` : e));
  return { ...h, steps };
}

test('pg-ha declares the hold for its agents only', () => {
  const roles = loadEngine('pg-ha').manifest.roles;
  assert.ok(roles.agent.rollingRestart.holdFailover);
  assert.equal(roles.dbserver.rollingRestart.holdFailover, undefined, 'the DB servers restart with automatic failover (the switchover needs it)');
  assert.equal(roles.coordinator.rollingRestart.holdFailover, undefined);
});

test('a restart of every role holds failover exactly around the agents; the DB servers restart with it released', async () => {
  const s = await setup();
  const op = await s.service.start({});
  const done = await s.operations.wait(op.id);
  assert.equal(done.state, 'succeeded', JSON.stringify(done.error));
  assert.deepEqual(s.steps(), [
    'release-failover', // the operation's start: a leftover of a dead runner is released
    'hold-failover',
    'stop agent-2',
    'stop agent-3',
    'stop agent-1',
    'release-failover',
    'stop dbserver-2',
    'stop dbserver-3',
    'stop dbserver-1',
    'stop coordinator-1',
  ]);
  const held = done.events.find((e) => e.step === 'failover-hold')!;
  assert.match(held.message, /automatic failover held for the restart of the agents/);
  assert.match(done.events.find((e) => e.step === 'plan')!.message, /hold-failover \(agents\): Patroni maintenance mode/);
});

test('an agent that fails to start: the hold is released before the operation fails', async () => {
  const s = await setup();
  s.node('agent-3').failures.push({ method: 'startProcess', process: 'agent-3', times: 1 });
  const op = await s.service.start({});
  const done = await s.operations.wait(op.id);
  assert.equal(done.state, 'failed');
  assert.deepEqual(s.steps(), ['release-failover', 'hold-failover', 'stop agent-2', 'stop agent-3', 'release-failover']);
  // The retry holds again for the agents left, and releases after them.
  const retry = await s.service.retry(op.id);
  assert.equal((await s.operations.wait(retry.id)).state, 'succeeded');
  assert.deepEqual(s.steps().slice(5, 10), ['release-failover', 'hold-failover', 'stop agent-3', 'stop agent-1', 'release-failover']);
});

test('a DB-server-only restart never holds failover', async () => {
  const s = await setup();
  const op = await s.service.start({ processes: { roles: ['dbserver'] } });
  assert.equal((await s.operations.wait(op.id)).state, 'succeeded');
  assert.equal(s.steps().filter((x) => x === 'hold-failover').length, 0);
});

test("Patroni's GET /patroni answer: paused only with pause true on a real status", () => {
  assert.equal(reportsPaused('{"state":"running","role":"master","pause":true}'), true);
  assert.equal(reportsPaused('{"state":"running","role":"replica"}'), false);
  assert.equal(reportsPaused('{"pause":true}'), undefined, 'not a member status');
  assert.equal(reportsPaused('<html>'), undefined);
});
