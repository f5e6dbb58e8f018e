/**
 * Cluster tier, issue 17: a rolling restart of every role that clients through a coordinator do not
 * notice. PostgreSQL's pgbench is the judge (-c 4 -j 2 -T 45), once with persistent connections and once
 * with a new connection per transaction (-C), while `restart` runs: 0 aborted clients, 0 failed
 * transactions. One real pg-ha cluster (etcd, Patroni/PostgreSQL, HAProxy + PgBouncer) for both runs and
 * for the bounded-pause check; the restarts also show the agents restarting with Patroni's failover held,
 * and the cluster view shows the coordinator's PgBouncer companion. About 3 minutes.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ClusterView, OperationView } from '../../api/rest.js';
import { PSQL } from '../helpers/cluster.js';
import { dispatcherClientTls, sql, startPgCluster, waitOperation, type PgCluster } from '../helpers/pg-cluster.js';
import { pgbenchInit, pgbenchRun, type PgbenchTarget } from '../helpers/pgbench.js';
import { failoverHold } from '../../server/engines/pg-ha/failover-hold.js';
import { dbserverState } from '../../server/engines/pg-ha-health.js';
import { pollUntil } from '../../shared/poll.js';

let cl: PgCluster;
let target: PgbenchTarget;

async function restartDuring(connectPerTransaction: boolean) {
  const c = cl.client(0);
  const started = Date.now();
  const bench = pgbenchRun(target, { seconds: 45, connectPerTransaction });
  await new Promise((r) => setTimeout(r, 2000));
  const { operation } = await c.post<{ operation: string }>('/v1/cluster/restart', { readyTimeoutMs: 60_000 });
  const op = await waitOperation(c, operation, 150_000);
  const r = await bench;
  // The operation's steps on pgbench's clock, for a failure message that says which step a client saw.
  const timeline = op.events.map((e) => `[${((Date.parse(e.at) - started) / 1000).toFixed(1)} s] ${e.step} ${e.message.split('\n')[0].slice(0, 100)}`).join('\n');
  return { op, r, timeline };
}

function report(label: string, op: OperationView, r: Awaited<ReturnType<typeof pgbenchRun>>) {
  const pauses = op.events.filter((e) => e.step === 'pooler-pause' || e.step === 'pooler-resume').map((e) => e.message);
  console.log(`# ${label}: ${r.processed} transactions, ${r.failed} failed, ${r.abortedClients} aborted clients, longest transaction ${r.maxLatencyMs} ms; restart ${op.result?.durationMs} ms; ${pauses.join(' | ')}`);
  // What the operation did while the longest transaction waited (which step a client noticed most).
  const from = r.maxLatencyEndMs - r.maxLatencyMs - 1000;
  const during = op.events.filter((e) => Date.parse(e.at) >= from && Date.parse(e.at) <= r.maxLatencyEndMs + 200);
  console.log(`#   during the longest transaction: ${during.map((e) => `[${Date.parse(e.at) - (r.maxLatencyEndMs - r.maxLatencyMs)} ms] ${e.step} ${e.message.slice(0, 90)}`).join(' | ')}`);
}

describe('rolling restart behind PgBouncer: pgbench sees no failure', { timeout: 600_000 }, () => {
  before(async () => {
    cl = await startPgCluster({ name: 'pausetest', basePort: 26400, coordinators: 1 });
    target = { port: cl.coordinatorPorts[0], pgpass: cl.pgpass, ca: dispatcherClientTls(cl.dispatchers[0].dataDir).ca };
    await pgbenchInit(target);
  });
  after(async () => {
    await cl?.close();
  });

  for (const connectPerTransaction of [false, true]) {
    const label = connectPerTransaction ? 'pgbench -C (a connection per transaction)' : 'pgbench (persistent connections)';
    test(`${label}: 0 aborted clients, 0 failed transactions during a restart of every role`, async () => {
      const { op, r, timeline } = await restartDuring(connectPerTransaction);
      report(label, op, r);
      assert.equal(op.state, 'succeeded', `${op.error?.message}\n${op.events.slice(-8).map((e) => e.message).join('\n')}`);
      // The switchover and the coordinator's HAProxy restart each ran paused, and each pause was resumed.
      assert.ok(op.events.filter((e) => e.step === 'pooler-pause' && /^paused/.test(e.message)).length >= 2, 'paused for the switchover and the HAProxy restart');
      assert.equal(op.events.filter((e) => e.step === 'pooler-resume' && /^resumed/.test(e.message)).length, op.events.filter((e) => e.step === 'pooler-pause' && /^paused/.test(e.message)).length);
      // The agents restarted with Patroni's failover held (acknowledged by every DB server), released before
      // the first DB server stopped (docs/DESIGN.md, "Rolling restart without failed statements").
      const at = (pred: (e: OperationView['events'][number]) => boolean) => op.events.findIndex(pred);
      const held = at((e) => e.step === 'failover-hold' && /^automatic failover held for the restart of the agents/.test(e.message));
      const released = at((e) => e.step === 'failover-release' && /^automatic failover released after \d+ ms$/.test(e.message));
      assert.ok(held >= 0 && released > held, op.events.filter((e) => e.step.startsWith('failover')).map((e) => e.message).join('\n'));
      assert.ok(at((e) => e.step === 'stop' && e.process?.startsWith('agent-') === true) > held);
      assert.ok(at((e) => e.step === 'stop' && e.process?.startsWith('dbserver-') === true) > released);
      const why = `${r.output}\n${timeline}`;
      assert.equal(r.abortedClients, 0, why);
      assert.equal(r.exitCode, 0, why);
      assert.equal(r.failed, 0, why);
      assert.ok(r.processed > 100, why);
    });
  }

  test("PgBouncer's admin console: the superuser, a wrong password and plaintext are all refused", async () => {
    const caFile = join(cl.dispatchers[0].dataDir, '..', 'pause-ca.crt');
    writeFileSync(caFile, target.ca, { mode: 0o600 });
    const attempt = (user: string, password: string, sslmode: string) =>
      new Promise<string>((resolve) =>
        execFile(PSQL, [`host=127.0.0.1 port=${target.port} user=${user} dbname=pgbouncer connect_timeout=3`, '-XtAq', '-c', 'PAUSE'], { env: { PATH: '/usr/bin:/bin', PGPASSWORD: password, PGSSLMODE: sslmode, PGSSLROOTCERT: caFile }, timeout: 10_000 }, (err, _o, stderr) =>
          resolve(err ? String(stderr) : 'ACCEPTED'),
        ),
      );
    // The database superuser is a client like any other: the console is not its to use.
    assert.match(await attempt('postgres', cl.superuserPassword, 'verify-full'), /not allowed/);
    assert.match(await attempt('dispatcher', 'not-the-password', 'verify-full'), /authentication failed/);
    const secrets = JSON.parse(readFileSync(join(cl.dispatchers[0].dataDir, 'cluster', 'secrets.json'), 'utf8')).secrets as Record<string, string>;
    assert.match(await attempt('dispatcher', secrets['pooler-admin-password'], 'disable'), /SSL required/);
    // Clients still work (nothing above paused the pooler).
    assert.equal(await sql(cl.pgpass, target.port, 'SELECT 1', 5000), '1');
    // `dispatch status` / GET /v1/cluster show the coordinator's PgBouncer under it, ready, with its pid.
    const view = await cl.client(0).get<ClusterView>('/v1/cluster');
    const coordinator = view.processes.find((p) => p.role === 'coordinator')!;
    assert.equal(coordinator.companions?.length, 1, JSON.stringify(coordinator));
    const pooler = coordinator.companions![0];
    assert.equal(pooler.id, `${coordinator.id}.pooler`);
    assert.equal(pooler.state, 'ready');
    assert.ok(pooler.pid && pooler.pid !== coordinator.pid);
  });

  test('a pause is bounded: a transaction that outlives PAUSE leaves the pooler resumed and the restart goes on', async () => {
    // A transaction held open through the coordinator keeps PAUSE from completing within its bound.
    const c = cl.client(0);
    const holder = sql(cl.pgpass, target.port, 'BEGIN; SELECT pg_sleep(20); COMMIT;', 30_000).catch((e: Error) => e);
    await new Promise((r) => setTimeout(r, 500));
    const { operation } = await c.post<{ operation: string }>('/v1/cluster/restart', { processes: { roles: ['coordinator'] }, readyTimeoutMs: 60_000 });
    const op = await waitOperation(c, operation, 90_000);
    assert.equal(op.state, 'succeeded', op.error?.message);
    assert.ok(op.events.some((e) => e.step === 'pooler-pause' && /could not pause/.test(e.message)), op.events.map((e) => e.message).join('\n'));
    // Not left paused: a new statement through the coordinator answers at once.
    assert.equal(await sql(cl.pgpass, target.port, 'SELECT 7', 5000), '7');
    await holder;
  });
  test("the failover hold keeps the DB leader through an agency without quorum; without it Patroni demotes (runs last)", async () => {
    // Two of three etcd members frozen (SIGSTOP, by pid: this test's own cluster) for longer than Patroni's
    // retry_timeout: its lock update fails. Held (the pg-ha action a rolling restart takes around the
    // agents, server/engines/pg-ha/failover-hold.ts), the leader stays; not held, it is demoted.
    const tls = dispatcherClientTls(cl.dispatchers[0].dataDir);
    const secrets = JSON.parse(readFileSync(join(cl.dispatchers[0].dataDir, 'cluster', 'secrets.json'), 'utf8')).secrets as Record<string, string>;
    const hold = failoverHold({ tls: () => tls });
    const view = await cl.client(0).get<ClusterView>('/v1/cluster');
    const agentPids = view.processes.filter((p) => p.role === 'agent').map((p) => p.pid!).slice(0, 2);
    assert.equal(agentPids.length, 2);
    const leaderState = async () => {
      const states = await Promise.all(cl.plan.processes.filter((p) => p.role === 'dbserver').map((p) => dbserverState(cl.plan, p.id, { tls })));
      return states.find((s) => s.role === 'leader' && s.running);
    };
    const frozen = async (ms: number) => {
      for (const pid of agentPids) process.kill(pid, 'SIGSTOP');
      try {
        await new Promise((r) => setTimeout(r, ms));
        return await leaderState();
      } finally {
        for (const pid of agentPids) process.kill(pid, 'SIGCONT');
      }
    };
    const before = (await leaderState())!;
    assert.ok(before, 'a running leader');

    await hold.holdFailover(cl.plan, secrets, 15_000);
    let during: Awaited<ReturnType<typeof leaderState>>;
    try {
      during = await frozen(14_000);
    } finally {
      // Released once the agency answers again (the release is written there).
      await pollUntil(() => hold.releaseFailover(cl.plan, secrets, 5000).then(() => true, () => false), (ok) => ok, { timeoutMs: 30_000, intervalMs: 500, onTimeout: () => new Error('the failover hold could not be released within 30 s') });
    }
    assert.equal(during?.id, before.id, 'held: the same leader, still running, through 14 s without agency quorum');
    assert.equal(during?.timeline, before.timeline, 'held: no promotion anywhere');
    assert.equal(await sql(cl.pgpass, target.port, 'SELECT 5', 10_000), '5');

    // The control: the same freeze without the hold demotes the leader (what a rolling restart risked).
    const unheld = await frozen(14_000);
    assert.notEqual(unheld?.id, before.id, `not held: Patroni demoted ${before.id} (leader seen: ${unheld?.id ?? 'none'})`);
  });
});
