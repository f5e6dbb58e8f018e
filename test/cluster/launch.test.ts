/**
 * Cluster tier: three dispatchers as separate processes on loopback launch a REAL pg-ha cluster (etcd,
 * Patroni + PostgreSQL 15, HAProxy) through one of them. One cluster, several phases in order:
 * launch → write through the coordinator, read back from replicas → a second plan is refused (409) →
 * status from another dispatcher → kill -9 of a dispatcher (processes keep serving, adopted on restart) →
 * shutdown from a third dispatcher → cleanup needs the name → relaunch keeps data → cleanup removes data.
 *
 * Needs root, the pg-ha Debian packages and the cluster-dispatcher user (deploy/install-deps.sh).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import type { Plan } from '../../api/plan.js';
import type { ClusterView } from '../../api/rest.js';
import type { ProcessStatus } from '../../server/supervisor/types.js';
import { isDispatcherError } from '../../api/errors.js';
import { startTestCluster, pidAlive, type TestCluster } from '../helpers/cluster.js';

let tc: TestCluster;
let plan: Plan;

function port(p: Plan, id: string, name: string): number {
  const proc = p.processes.find((x) => x.id === id)!;
  return proc.ports.find((x) => x.name === name)!.port;
}

async function eventually<T>(what: string, fn: () => Promise<T>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      return await fn();
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${timeoutMs} ms: ${(last as Error)?.message}`);
    await new Promise((r) => setTimeout(r, 300));
  }
}

before(async () => {
  tc = await startTestCluster({ n: 3, label: 'launch' });
  plan = tc.plan({ name: 'launch-test' });
});

after(async () => {
  if (!tc) return;
  const { leaked } = await tc.teardown();
  assert.deepEqual(leaked, [], `processes left after teardown: ${leaked.join('\n')}`);
});

test('launch through one dispatcher: every process ready, coordinators reported, guard none says so', async () => {
  const t0 = Date.now();
  const op = await tc.run(0, '/v1/cluster/launch', { plan, readyTimeoutMs: 120_000 });
  assert.equal(op.state, 'succeeded', `launch failed: ${JSON.stringify(op.error)}\n${op.events.map((e) => `${e.host ?? ''} ${e.process ?? ''} ${e.message}`).join('\n')}`);
  console.log(`# launch-to-ready ${Date.now() - t0} ms`);
  const steps = op.events.map((e) => e.step);
  // Ordered flow: propagate → preflight → guard → start … → verify → ready.
  for (const [a, b] of [['propagate', 'preflight'], ['preflight', 'guard'], ['guard', 'start'], ['start', 'verify']]) {
    assert.ok(steps.indexOf(a) < steps.indexOf(b), `${a} before ${b}: ${steps.join(',')}`);
  }
  // Agency ready before the first DB server starts; DB servers healthy before the coordinator starts.
  const firstStart = (role: string) => op.events.findIndex((e) => e.step === 'start' && e.process?.startsWith(role));
  const healthy = (role: string) => op.events.findIndex((e) => e.step === 'healthy' && e.message.startsWith(role));
  assert.ok(healthy('agent') < firstStart('dbserver') && healthy('dbserver') < firstStart('coordinator'), 'health-gated order');
  const coords = (op.result as { coordinators: { port: number }[] }).coordinators;
  assert.equal(coords[0].port, port(plan, 'coordinator-1', 'client'));

  const st = await tc.status(0);
  assert.equal(st.state, 'running');
  assert.equal(st.processes.length, 7);
  for (const p of st.processes) assert.equal(p.state, 'ready', `${p.id} is ${p.state}`);
  for (const d of st.dispatchers) {
    assert.equal(d.reachable, true);
    assert.equal(d.guard?.backend, 'none');
    assert.match(d.guard?.note ?? '', /no firewall/);
  }
  // Every process is alive with the pid reported.
  for (const p of st.processes) assert.ok(p.pid && pidAlive(p.pid), `${p.id} pid ${p.pid} alive`);
});

test('psql writes through the coordinator and reads back from replicas', async () => {
  const rw = port(plan, 'coordinator-1', 'client');
  const ro = port(plan, 'coordinator-1', 'readonly');
  await tc.psql(rw, 'CREATE TABLE t (id int primary key, v text); INSERT INTO t VALUES (1, \'one\');');
  assert.equal(await tc.psql(rw, 'SELECT pg_is_in_recovery()'), 'f', 'the read-write port reaches the primary');
  const viaRo = await eventually('row visible through the read-only port', async () => {
    const v = await tc.psql(ro, 'SELECT v FROM t WHERE id = 1');
    if (v !== 'one') throw new Error(`got ${JSON.stringify(v)}`);
    return v;
  });
  assert.equal(viaRo, 'one');
  assert.equal(await tc.psql(ro, 'SELECT pg_is_in_recovery()'), 't', 'the read-only port reaches a replica');
  // And directly on each replica's own PostgreSQL port.
  let replicas = 0;
  for (const id of ['dbserver-1', 'dbserver-2', 'dbserver-3']) {
    const p = port(plan, id, 'postgres');
    if ((await tc.psql(p, 'SELECT pg_is_in_recovery()')) !== 't') continue;
    replicas++;
    await eventually(`row on replica ${id}`, async () => assert.equal(await tc.psql(p, 'SELECT v FROM t WHERE id = 1'), 'one'));
  }
  assert.equal(replicas, 2);
});

test('a second launch of another plan while one is active is refused with 409 naming the active plan', async () => {
  const other = tc.plan({ name: 'other-cluster' });
  for (const i of [0, 1]) {
    await assert.rejects(
      () => tc.client(i).post('/v1/cluster/launch', { plan: other }),
      (e: unknown) => isDispatcherError(e) && e.code === 'conflict' && e.details.status === 409 && /launch-test/.test(e.message),
    );
  }
  assert.equal((await tc.status(1)).name, 'launch-test');
});

test('status works from a dispatcher other than the one first contacted', async () => {
  const st = await tc.status(2);
  assert.equal(st.name, 'launch-test');
  assert.equal(st.state, 'running');
  assert.ok(st.processes.every((p) => p.state === 'ready'));
  assert.ok(st.dispatchers.every((d) => d.reachable));
  const log = await tc.client(2).get<{ host: string; lines: string[] }>('/v1/cluster/processes/agent-1/log?lines=5');
  assert.equal(log.host, plan.processes.find((p) => p.id === 'agent-1')!.dispatcher);
});

test('kill -9 of a dispatcher: its processes keep serving and are adopted on restart', async () => {
  const i = 1;
  const id = tc.dispatchers[i].id;
  const before = (await tc.client(i).get<{ processes: ProcessStatus[] }>('/v1/processes')).processes.filter((p) => p.pid);
  assert.ok(before.length >= 2, `dispatcher ${id} runs processes`);
  await tc.dispatchers[i].kill9();
  for (const p of before) assert.ok(pidAlive(p.pid!), `${p.id} (pid ${p.pid}) survives its dispatcher`);
  // Still serving: write and read through the coordinator.
  const rw = port(plan, 'coordinator-1', 'client');
  await tc.psql(rw, "INSERT INTO t VALUES (2, 'two')");
  assert.equal(await tc.psql(rw, 'SELECT count(*) FROM t'), '2');
  const st: ClusterView = await tc.status(0);
  assert.equal(st.dispatchers.find((d) => d.id === id)?.reachable, false, 'status shows the dead dispatcher unreachable');

  await tc.restart(i);
  const afterList = (await tc.client(i).get<{ processes: ProcessStatus[] }>('/v1/processes')).processes;
  for (const p of before) {
    const now = afterList.find((x) => x.id === p.id);
    assert.equal(now?.pid, p.pid, `${p.id} keeps pid ${p.pid}`);
    assert.equal(now?.adopted, true, `${p.id} adopted`);
  }
  await eventually('cluster healthy again', async () => {
    const s = await tc.status(0);
    assert.ok(s.dispatchers.every((d) => d.reachable) && s.processes.every((p) => p.state === 'ready'), JSON.stringify(s.processes.map((p) => [p.id, p.state])));
  });
});

test('shutdown from a third dispatcher stops every process; cleanup needs the name', async () => {
  const op = await tc.run(2, '/v1/cluster/shutdown', {});
  assert.equal(op.state, 'succeeded', JSON.stringify(op.error));
  assert.deepEqual(tc.enginePids(), [], 'no engine process left');
  for (const i of [0, 1, 2]) assert.equal((await tc.status(i)).state, 'shutdown');

  await assert.rejects(() => tc.client(0).post('/v1/cluster/cleanup', {}), (e: unknown) => isDispatcherError(e) && e.details.status === 400);
  await assert.rejects(
    () => tc.client(0).post('/v1/cluster/cleanup', { confirmName: 'wrong-name' }),
    (e: unknown) => isDispatcherError(e) && e.details.status === 400 && /launch-test/.test(e.message),
  );
  for (const p of plan.processes) {
    const d = tc.dispatchers.find((x) => x.id === p.dispatcher)!;
    assert.ok(existsSync(join(d.dataDir, p.dataDir)), `${p.id} data dir kept`);
  }
});

test('a relaunch refused at preflight leaves every dispatcher in its previous state, not launching', async () => {
  const blocker = createServer((socket) => socket.destroy());
  // It only holds the port: a dispatcher that reaches for the agency there (operation records) is cut off
  // at once, and close() does not wait for a connection nobody ends.
  const taken = port(plan, 'agent-1', 'client');
  await new Promise<void>((r) => blocker.listen(taken, '127.0.0.1', r));
  try {
    const op = await tc.run(1, '/v1/cluster/relaunch', { readyTimeoutMs: 60_000 });
    assert.equal(op.state, 'failed');
    assert.equal(op.error?.code, 'preflight_failed', JSON.stringify(op.error));
  } finally {
    await new Promise((r) => blocker.close(r));
  }
  for (const i of [0, 1, 2]) assert.equal((await tc.status(i)).state, 'shutdown');
  assert.deepEqual(tc.enginePids(), []);
});

test('relaunch keeps the data', async () => {
  const op = await tc.run(1, '/v1/cluster/relaunch', { readyTimeoutMs: 120_000 });
  assert.equal(op.state, 'succeeded', JSON.stringify(op.error));
  const rw = port(plan, 'coordinator-1', 'client');
  assert.equal(await tc.psql(rw, 'SELECT string_agg(v, \',\' ORDER BY id) FROM t'), 'one,two');
});

test('cleanup with the name removes every data dir and the plan', async () => {
  assert.equal((await tc.run(0, '/v1/cluster/shutdown', {})).state, 'succeeded');
  const op = await tc.run(0, '/v1/cluster/cleanup', { confirmName: 'launch-test' });
  assert.equal(op.state, 'succeeded', JSON.stringify(op.error));
  for (const p of plan.processes) {
    const d = tc.dispatchers.find((x) => x.id === p.dispatcher)!;
    assert.equal(existsSync(join(d.dataDir, p.dataDir)), false, `${p.id} data dir removed`);
  }
  for (const i of [0, 1, 2]) assert.equal((await tc.status(i)).name, null);
  assert.deepEqual(tc.enginePids(), []);
});
