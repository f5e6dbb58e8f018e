/**
 * A dispatcher left `launching` by a dead runner rolls its own part back after the configured silence, and
 * never while the runner still talks to it (server/cluster/launch-watchdog.ts). Fakes; milliseconds.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { ClusterState } from '../../api/rest.js';
import { LaunchWatchdog } from '../../server/cluster/launch-watchdog.js';
import { fakeClock, threeHostPlan } from '../helpers/fake-cluster.js';

function setup(state: ClusterState = 'launching') {
  const plan = threeHostPlan();
  const self = plan.dispatchers[0].id;
  const clock = fakeClock();
  const calls: string[] = [];
  let runningHere = false;
  const snap = { plan, state, secrets: {} };
  const node = {
    stopProcess: async (id: string) => void calls.push(`stop ${id}`),
    setClusterState: async (s: ClusterState) => {
      calls.push(`state ${s}`);
      snap.state = s;
    },
    startProcess: () => new Promise<void>(() => {}),
  };
  const dog = new LaunchWatchdog({ self, store: { get: () => snap }, node, runningHere: () => runningHere, staleMs: 60_000, clock, log: () => {} });
  return { plan, self, clock, calls, dog, node, snap, setRunning: (v: boolean) => (runningHere = v) };
}

test('after the silence a launching peer stops its own processes, coordinators first, and records failed', async () => {
  const t = setup();
  t.clock.now = ((n) => () => n)(t.clock.now() + 59_000);
  assert.equal(await t.dog.check(), false, 'not before the silence is long enough');
  t.clock.now = ((n) => () => n)(t.clock.now() + 2_000);
  assert.equal(await t.dog.check(), true);
  const mine = t.plan.processes.filter((p) => p.dispatcher === t.self);
  const stops = t.calls.filter((c) => c.startsWith('stop ')).map((c) => c.slice(5));
  assert.deepEqual([...stops].sort(), mine.map((p) => p.id).sort(), 'only its own processes');
  const roleOf = (id: string) => t.plan.processes.find((p) => p.id === id)!.role;
  assert.deepEqual(stops.map(roleOf), [...stops.map(roleOf)].sort((a, b) => ['coordinator', 'dbserver', 'agent'].indexOf(a) - ['coordinator', 'dbserver', 'agent'].indexOf(b)));
  assert.equal(t.calls.at(-1), 'state failed');
  assert.equal(t.snap.state, 'failed');
  assert.equal(await t.dog.check(), false, 'failed is not launching: nothing more');
});

test('never while an operation runs here, while a runner call is in flight, or shortly after one', async () => {
  const t = setup();
  const base = t.clock.now();
  const at = (ms: number) => (t.clock.now = () => base + ms);
  t.setRunning(true);
  at(120_000);
  assert.equal(await t.dog.check(), false, 'the runner is this dispatcher, alive');
  t.setRunning(false);
  const watched = t.dog.observe(t.node);
  void watched.startProcess(); // a start waiting for readiness: in flight for as long as it takes
  at(500_000);
  assert.equal(await t.dog.check(), false, 'a call in flight');
  // A finished call resets the silence; a status read does not.
  const t3 = setup();
  const b3 = t3.clock.now();
  const w3 = t3.dog.observe({ preflight: async () => {}, status: async () => {} });
  t3.clock.now = () => b3 + 50_000;
  await w3.preflight();
  t3.clock.now = () => b3 + 100_000;
  assert.equal(await t3.dog.check(), false, '50 s since the last runner call');
  await w3.status();
  t3.clock.now = () => b3 + 111_000;
  assert.equal(await t3.dog.check(), true, 'status reads are not a runner');
  assert.equal(t.calls.length, 0);
});

test('a cluster that is not launching resets the silence', async () => {
  const t = setup('running');
  const base = t.clock.now();
  t.clock.now = () => base + 500_000;
  assert.equal(await t.dog.check(), false);
  t.snap.state = 'launching';
  t.clock.now = () => base + 530_000;
  assert.equal(await t.dog.check(), false, 'launching for 30 s only');
  t.clock.now = () => base + 561_000;
  assert.equal(await t.dog.check(), true);
});
