/**
 * Cluster tier: rolling restarts and upgrades of a REAL pg-ha cluster (3 loopback dispatchers; etcd,
 * Patroni/PostgreSQL 15, HAProxy and PgBouncer from Debian packages). Needs root and deploy/install-deps.sh.
 * One cluster for the whole file, bounded to a few minutes.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { processLogDir } from '../../server/supervisor/spawner.js';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { OperationView } from '../../api/rest.js';
import { agencyStatus } from '../../server/engines/pg-ha-health.js';
import { breakWrapper, dispatcherClientTls, sql, startPgCluster, startWriter, waitOperation, WRAPPERS, type PgCluster } from '../helpers/pg-cluster.js';

let cl: PgCluster;

function steps(op: OperationView, step: string) {
  return op.events.filter((e) => e.step === step);
}

async function restart(body: Record<string, unknown>, i = 0): Promise<string> {
  return (await cl.client(i).post<{ operation: string }>('/v1/cluster/restart', body)).operation;
}

describe('rolling restart (pg-ha, real cluster)', { timeout: 300_000 }, () => {
  before(async () => {
    cl = await startPgCluster({ name: 'rrtest', basePort: 26100, coordinators: 2 });
    await sql(cl.pgpass, cl.coordinatorPorts[0], 'CREATE TABLE IF NOT EXISTS w (n int PRIMARY KEY)');
  });
  after(async () => {
    await cl?.close();
  });

  test('upgrade of every role onto wrapper binaries, in order, with writes and quorum kept', async () => {
    const c = cl.client(0);
    const agencySamples: { reachable: number; leader: boolean }[] = [];
    let polling = true;
    const poller = (async () => {
      while (polling) {
        const st = await agencyStatus(cl.plan, { timeoutMs: 500, tls: dispatcherClientTls(cl.dispatchers[0].dir.dataDir) });
        agencySamples.push({ reachable: st.members.filter((m) => m.reachable).length, leader: st.hasLeader });
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
    const writer = startWriter(cl.pgpass, cl.coordinatorPorts, 'w', { maxMs: 120_000 });
    await new Promise((r) => setTimeout(r, 1000));
    const id = await restart({ upgrade: { etcd: WRAPPERS.etcd, python3: WRAPPERS.python3, haproxy: WRAPPERS.haproxy }, readyTimeoutMs: 60_000 });
    // A second operation while one runs: 409.
    await assert.rejects(restart({}), (e: any) => e.status === 409 || e.code === 'conflict');
    const op = await waitOperation(c, id, 150_000);
    await new Promise((r) => setTimeout(r, 1000));
    const w = await writer.stop();
    polling = false;
    await poller;
    assert.equal(op.state, 'succeeded', `${op.error?.message}\n${op.events.slice(-8).map((e) => e.message).join('\n')}`);

    // Order: agents, DB servers (leader last, after a switchover), coordinators.
    const stops = steps(op, 'stop').map((e) => e.process!);
    const role = (id: string) => cl.plan.processes.find((p) => p.id === id)!.role;
    assert.deepEqual(stops.map(role), ['agent', 'agent', 'agent', 'dbserver', 'dbserver', 'dbserver', 'coordinator', 'coordinator']);
    const planEvent = steps(op, 'plan')[0].message;
    const dbLeader = /DB leader (\S+):/.exec(planEvent)![1];
    const agentLeader = /agency leader (\S+),/.exec(planEvent)![1];
    assert.equal(stops[2], agentLeader, 'agency leader restarted last');
    assert.equal(stops[5], dbLeader, 'DB leader restarted last');
    const sw = op.events.findIndex((e) => e.step === 'switchover' && /leads now/.test(e.message));
    const leaderStop = op.events.findIndex((e) => e.step === 'stop' && e.process === dbLeader);
    assert.ok(sw > 0 && sw < leaderStop, 'switchover happened before the old leader stopped');

    // Agency: a quorum answered at every sample.
    assert.ok(agencySamples.length > 20);
    assert.ok(agencySamples.every((s) => s.reachable >= 2), `quorum lost: ${JSON.stringify(agencySamples.filter((s) => s.reachable < 2))}`);
    const leaderless = agencySamples.filter((s) => !s.leader).length;

    // Every acknowledged row is there.
    const rows = new Set((await sql(cl.pgpass, cl.coordinatorPorts[0], 'SELECT n FROM w')).split('\n').filter(Boolean).map(Number));
    const lost = w.acked.filter((n) => !rows.has(n));
    assert.deepEqual(lost, [], 'acknowledged writes lost');
    assert.ok(w.acked.length > 50);
    // Not one failed statement: PgBouncer held new transactions across the switchover and every HAProxy
    // restart (docs/DESIGN.md, "Rolling restart without failed statements").
    assert.equal(w.failedAttempts, 0, `failed statements during the rolling upgrade (longest outage ${w.longestGapMs} ms)`);
    console.log(`# rolling upgrade: ${op.result?.durationMs} ms, ${w.acked.length} writes acked, ${w.failedAttempts} failed attempts, longest outage ${w.longestGapMs} ms, ${leaderless} leaderless agency samples of ${agencySamples.length}`);

    // Every process runs the new binary (command.txt in the dispatcher's own root-owned process log dir).
    for (const p of cl.plan.processes) {
      const d = cl.dispatchers.find((x) => x.id === p.dispatcher)!;
      const cmd = readFileSync(join(processLogDir(join(d.dataDir, 'supervisor'), p.id), 'command.txt'), 'utf8');
      const want = p.role === 'agent' ? WRAPPERS.etcd : p.role === 'dbserver' ? WRAPPERS.python3 : WRAPPERS.haproxy;
      assert.ok(cmd.includes(want), `${p.id} command.txt names ${want}:\n${cmd}`);
    }
  });

  test('an upgrade to a path the machines do not allow is refused before anything restarts', async () => {
    const id = await restart({ upgrade: { haproxy: '/usr/bin/true' } });
    const op = await waitOperation(cl.client(0), id, 30_000);
    assert.equal(op.state, 'failed');
    assert.equal(op.error?.code, 'preflight_failed');
    assert.equal(steps(op, 'stop').length, 0);
  });

  test('a DB server that will not become ready fails the operation; the cluster serves; retry after fixing completes; abort restarts what it stopped', async () => {
    const c = cl.client(0);
    breakWrapper(true);
    const id = await restart({ processes: { roles: ['dbserver'] }, upgrade: { dbserver: WRAPPERS.broken }, readyTimeoutMs: 6000 });
    const op = await waitOperation(c, id, 60_000);
    assert.equal(op.state, 'failed');
    const victim = steps(op, 'stop')[0].process!;
    assert.match(op.error!.message, new RegExp(victim));
    assert.deepEqual((op.progress as any).stopped, [victim]);
    // Still serving through a coordinator.
    await sql(cl.pgpass, cl.coordinatorPorts[0], 'INSERT INTO w (n) VALUES (-1)');

    // Abort: the stopped process must run again (on the fixed wrapper).
    breakWrapper(false);
    const abortId = (await c.post<{ operation: string }>(`/v1/operations/${id}/abort`, {})).operation;
    const ab = await waitOperation(c, abortId, 60_000);
    assert.equal(ab.state, 'succeeded', ab.error?.message);
    assert.equal((await c.get<OperationView>(`/v1/operations/${id}`)).state, 'aborted');
    const view = await c.get<{ processes: { id: string; state: string }[] }>('/v1/cluster');
    assert.ok(view.processes.every((p) => p.state === 'ready'), JSON.stringify(view.processes));

    // Retry the aborted restart: continues and completes every DB server.
    const retryId = (await c.post<{ operation: string }>(`/v1/operations/${id}/retry`, {})).operation;
    const rt = await waitOperation(c, retryId, 120_000);
    assert.equal(rt.state, 'succeeded', rt.error?.message);
    assert.equal(steps(rt, 'stop').length, 3);
    await sql(cl.pgpass, cl.coordinatorPorts[0], 'INSERT INTO w (n) VALUES (-2)');
  });

  test('kill -9 of the dispatcher running the operation: after its restart the operation resumes', async () => {
    const c = cl.client(0);
    const id = await restart({ processes: { roles: ['dbserver'] }, upgrade: { dbserver: WRAPPERS.python3 } });
    // Wait until one process is done, then kill.
    const deadline = Date.now() + 60_000;
    for (;;) {
      const v = await c.get<OperationView>(`/v1/operations/${id}`);
      if (((v.progress as any)?.done ?? []).length >= 1 || v.state !== 'running') break;
      assert.ok(Date.now() < deadline);
      await new Promise((r) => setTimeout(r, 100));
    }
    await cl.dispatchers[0].kill9();
    await cl.restartDispatcher(0);
    const op = await waitOperation(cl.client(0), id, 120_000);
    assert.equal(op.state, 'succeeded', op.error?.message);
    assert.ok(steps(op, 'resume').length === 1, 'resumed once');
    assert.equal(new Set(steps(op, 'ready').map((e) => e.process)).size, 3);
  });
  // Certificate renewal (rotate-certs, --ca) has its own cluster test: test/cluster/rotate-certs.test.ts.
});
