/**
 * Cluster tier: a launch that cannot work starts nothing, and says where and why — a port already taken,
 * an engine binary missing, an unreachable peer, a certificate that is not the pinned one. A DB server that
 * never becomes ready makes the launch roll back: nothing of it keeps running, data dirs stay.
 *
 * Three real dispatchers on loopback, real pg-ha binaries. Needs root, the pg-ha Debian packages and the
 * cluster-dispatcher user (deploy/install-deps.sh).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:net';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Plan } from '../../api/plan.js';
import type { OperationView } from '../../api/rest.js';
import { PG_HA_DEBIAN_BINARIES } from '../../launcher/local.js';
import { patchConfig } from '../helpers/daemon.js';
import { startTestCluster, type TestCluster } from '../helpers/cluster.js';

let tc: TestCluster;
let plan: Plan;

before(async () => {
  tc = await startTestCluster({ n: 3, label: 'pf' });
  plan = tc.plan({ name: 'preflight-test' });
});

after(async () => {
  if (!tc) return;
  const { leaked } = await tc.teardown();
  assert.deepEqual(leaked, [], `processes left after teardown: ${leaked.join('\n')}`);
});

function describeOp(op: OperationView): string {
  return `${JSON.stringify(op.error)}\n${op.events.map((e) => `${e.step} ${e.host ?? ''} ${e.message}`).join('\n')}`;
}

/** Nothing runs, and no dispatcher that answers keeps the refused plan. */
async function assertNothingStarted(reachable: number[]) {
  assert.deepEqual(tc.enginePids(), [], 'no engine process runs anywhere');
  for (const i of reachable) {
    const st = await tc.status(i);
    assert.equal(st.name, null, `dispatcher ${tc.dispatchers[i].id} forgot the refused plan (has ${st.name} ${st.state})`);
    assert.equal(st.processes.length, 0);
  }
}

test('a port already taken: preflight names the host and the port, nothing starts', async () => {
  const victim = plan.processes.find((p) => p.id === 'agent-2')!;
  const port = victim.ports.find((x) => x.name === 'client')!.port;
  const blocker: Server = createServer((socket) => socket.destroy());
  // It only holds the port: a dispatcher that reaches for the agency there (operation records) is cut off
  // at once, and close() does not wait for a connection nobody ends.
  await new Promise<void>((r) => blocker.listen(port, '127.0.0.1', r));
  try {
    const op = await tc.run(0, '/v1/cluster/launch', { plan });
    assert.equal(op.state, 'failed');
    assert.equal(op.error?.code, 'preflight_failed', describeOp(op));
    assert.match(op.error!.message, new RegExp(`${victim.dispatcher}: port: agent-2: 127\\.0\\.0\\.1:${port} \\(client\\) is not free: in use`));
    assert.ok(op.events.some((e) => e.step === 'preflight' && e.level === 'error' && e.host === victim.dispatcher));
    assert.ok(!op.events.some((e) => e.step === 'start' || e.step === 'guard'), 'no guard and no start after a failed preflight');
  } finally {
    await new Promise((r) => blocker.close(r));
  }
  await assertNothingStarted([0, 1, 2]);
});

test('a wrong fingerprint in the plan: the peer is not trusted, named, and nothing starts', async () => {
  const bad: Plan = structuredClone(plan);
  bad.dispatchers[1].fingerprint = tc.dispatchers[0].fingerprint; // d2 pinned to d1's certificate
  const op = await tc.run(0, '/v1/cluster/launch', { plan: bad });
  assert.equal(op.state, 'failed');
  assert.equal(op.error?.code, 'peer_untrusted', describeOp(op));
  assert.equal(op.error?.host, 'd2');
  assert.match(op.error!.message, /d2: .*fingerprint .* is not the pinned/);
  await assertNothingStarted([0, 1, 2]);
});

test('an unreachable peer: named with the cause, nothing starts', async () => {
  await tc.dispatchers[1].stop();
  try {
    const op = await tc.run(0, '/v1/cluster/launch', { plan });
    assert.equal(op.state, 'failed');
    assert.equal(op.error?.code, 'peer_unreachable', describeOp(op));
    assert.equal(op.error?.host, 'd2');
    assert.match(op.error!.message, /d2: .*ECONNREFUSED/);
    await assertNothingStarted([0, 2]);
  } finally {
    await tc.restart(1);
  }
  await assertNothingStarted([1]);
});

test('an engine binary missing on one machine: preflight names host and path, nothing starts', async () => {
  const d3 = tc.dispatchers[2];
  patchConfig(d3.configFile, { engines: { 'pg-ha': { binaries: { ...PG_HA_DEBIAN_BINARIES, etcd: '/nonexistent/bin/etcd' } } } });
  await tc.restart(2);
  try {
    const op = await tc.run(0, '/v1/cluster/launch', { plan });
    assert.equal(op.state, 'failed');
    assert.equal(op.error?.code, 'preflight_failed', describeOp(op));
    assert.match(op.error!.message, /d3: binary: agent: \/nonexistent\/bin\/etcd is missing or not executable/);
    assert.doesNotMatch(op.error!.message, /\bd1: |\bd2: /, 'only d3 has a problem');
    await assertNothingStarted([0, 1, 2]);
  } finally {
    patchConfig(d3.configFile, { engines: { 'pg-ha': { binaries: PG_HA_DEBIAN_BINARIES } } });
    await tc.restart(2);
  }
});

test('a DB server that never becomes ready: rollback stops everything, data dirs stay', async () => {
  // d3's readiness probe program is /bin/false: Patroni runs, but dbserver-3 never passes its probe.
  const d3 = tc.dispatchers[2];
  patchConfig(d3.configFile, { engines: { 'pg-ha': { binaries: { ...PG_HA_DEBIAN_BINARIES, psql: '/bin/false' } } } });
  await tc.restart(2);
  try {
    const op = await tc.run(0, '/v1/cluster/launch', { plan, readyTimeoutMs: 20_000 }, 180_000);
    assert.equal(op.state, 'failed', describeOp(op));
    assert.equal(op.error?.code, 'operation_failed');
    assert.equal(op.error?.host, 'd3');
    assert.equal(op.error?.process, 'dbserver-3');
    assert.ok(Array.isArray(op.error?.logTail), 'the failure carries the tail of the process log');
    assert.ok(op.events.some((e) => e.step === 'rollback'), 'rollback reported');
    // Coordinators never started; agents were stopped after the DB servers (reverse order).
    assert.ok(!op.events.some((e) => e.step === 'start' && e.process?.startsWith('coordinator')));
    const stops = op.events.filter((e) => e.step === 'rollback' && e.process).map((e) => e.process!);
    const lastDb = Math.max(...stops.map((s, k) => (s.startsWith('dbserver') ? k : -1)));
    const firstAgent = stops.findIndex((s) => s.startsWith('agent'));
    assert.ok(lastDb < firstAgent, `DB servers stopped before agents: ${stops.join(',')}`);

    // Nothing of the launch keeps running (bounded wait for process exit after the stop calls returned).
    for (let k = 0; k < 50 && tc.enginePids().length; k++) await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(tc.enginePids(), []);
    const st = await tc.status(0);
    assert.equal(st.state, 'failed');
    for (const p of st.processes) assert.ok(!['ready', 'running', 'starting'].includes(p.state), `${p.id} is ${p.state}`);
    // Data dirs of everything that started remain.
    for (const p of plan.processes.filter((x) => x.role !== 'coordinator')) {
      const d = tc.dispatchers.find((x) => x.id === p.dispatcher)!;
      assert.ok(existsSync(join(d.dataDir, p.dataDir)), `${p.id} data dir kept`);
    }
  } finally {
    patchConfig(d3.configFile, { engines: { 'pg-ha': { binaries: PG_HA_DEBIAN_BINARIES } } });
    await tc.restart(2);
  }
});
