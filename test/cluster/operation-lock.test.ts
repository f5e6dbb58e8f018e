/**
 * Cluster tier: the cluster-wide operation lock in the REAL agency (etcd of a pg-ha cluster on 3 loopback
 * dispatchers; docs/DESIGN.md, "Operation lifecycle"). Two restarts through two dispatchers at once: one
 * runs, the other is refused with 409 naming it. kill -9 of the runner mid-restart: its lease expires, and
 * the restart is resumed (first case) or aborted (second case) through another dispatcher. Needs root and
 * deploy/install-deps.sh; one cluster for the file, a few minutes.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { ClusterView, OperationView } from '../../api/rest.js';
import { chmodSync, mkdtempSync } from 'node:fs';
import { startPgCluster, waitOperation, type PgCluster } from '../helpers/pg-cluster.js';
import { killMatching } from '../helpers/cluster.js';

let cl: PgCluster;
const TTL_SECONDS = 3;
const root = mkdtempSync('/tmp/oplock-cluster-');
chmodSync(root, 0o711);

function agentsOn(hosts: string[]) {
  return { processes: { roles: ['agent'], hosts }, readyTimeoutMs: 60_000 };
}

async function waitFor<T>(what: string, get: () => Promise<T>, ok: (v: T) => boolean, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: T | undefined;
  for (;;) {
    try {
      last = await get();
      if (ok(last)) return last;
    } catch {
      /* not yet */
    }
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms (last: ${JSON.stringify(last)?.slice(0, 400)})`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** The first dispatcher runs (a test that failed after its kill -9 must not take the next ones down). */
async function ensureFirstUp() {
  const d = cl.dispatchers[0];
  if (d.child.exitCode !== null || d.child.signalCode !== null) await cl.restartDispatcher(0);
}

/**
 * Starts a restart of two agents through the first dispatcher and kills it (-9) once the agency's record
 * says the first agent is done (restarted and gated), so the second is what a takeover has left to do.
 */
async function killRunnerMidRestart(): Promise<string> {
  const ids = [cl.dispatchers[1].id, cl.dispatchers[2].id];
  const { operation } = await cl.client(0).post<{ operation: string }>('/v1/cluster/restart', agentsOn(ids));
  await waitFor('first agent done, in the agency', () => cl.client(1).get<OperationView>(`/v1/operations/${operation}`), (v) => ((v.progress as { done?: string[] } | undefined)?.done?.length ?? 0) >= 1, 60_000);
  await cl.dispatchers[0].kill9();
  return operation;
}

async function allReady() {
  return waitFor('every process ready', () => cl.client(1).get<ClusterView>('/v1/cluster'), (v) => v.processes.length > 0 && v.processes.every((p) => p.state === 'ready'), 60_000);
}

/** Shuts the cluster down through dispatcher `via`. */
async function shutdown(via: number) {
  const { operation } = await cl.client(via).post<{ operation: string }>('/v1/cluster/shutdown', {});
  const op = await waitOperation(cl.client(via), operation, 120_000);
  assert.equal(op.state, 'succeeded', op.error?.message);
}

/** Relaunches through the first dispatcher and kills it (-9) once the agency is up and the DB servers start. */
async function killRunnerMidLaunch(): Promise<string> {
  const { operation } = await cl.client(0).post<{ operation: string }>('/v1/cluster/relaunch', { readyTimeoutMs: 60_000 });
  await waitFor('DB servers starting', () => cl.client(0).get<OperationView>(`/v1/operations/${operation}`), (v) => v.events.some((e) => e.step === 'start' && /dbserver\(s\)/.test(e.message)), 90_000);
  await cl.dispatchers[0].kill9();
  return operation;
}

describe('cluster-wide operation lock (pg-ha, real etcd)', { timeout: 600_000 }, () => {
  before(async () => {
    cl = await startPgCluster({ name: 'oplock', basePort: 27700, coordinators: 1, root, config: { operations: { lockTtlSeconds: TTL_SECONDS } } });
  });
  after(async () => {
    // A test that failed after a kill -9 leaves that dispatcher down: bring it back so the shutdown reaches its processes.
    if (cl) await ensureFirstUp().catch(() => {});
    await cl?.close();
    // Last resort only: anything of this cluster still running is killed and reported.
    assert.deepEqual(await killMatching(root), [], 'processes left running after the cluster was shut down');
  });

  test('two restarts through two dispatchers at once: one runs, the other is refused with 409 naming it and its dispatcher', async () => {
    const body = { processes: { roles: ['coordinator'] }, readyTimeoutMs: 60_000 };
    const [r0, r1] = await Promise.allSettled([cl.client(0).post<{ operation: string }>('/v1/cluster/restart', body), cl.client(1).post<{ operation: string }>('/v1/cluster/restart', body)]);
    const won = [r0, r1].filter((r): r is PromiseFulfilledResult<{ operation: string }> => r.status === 'fulfilled');
    const lost = [r0, r1].filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    assert.equal(won.length, 1, `exactly one runs: ${JSON.stringify([r0, r1].map((r) => (r.status === 'rejected' ? r.reason.message : r.value)))}`);
    assert.equal(lost.length, 1);
    const winner = r0.status === 'fulfilled' ? cl.dispatchers[0].id : cl.dispatchers[1].id;
    const err = lost[0].reason as { status?: number; message: string };
    assert.equal(err.status, 409, err.message);
    assert.match(err.message, new RegExp(`operation ${won[0].value.operation} \\(restart of oplock\\) is running on dispatcher ${winner}`));
    const c = cl.client(r0.status === 'fulfilled' ? 0 : 1);
    const op = await waitOperation(c, won[0].value.operation, 120_000);
    assert.equal(op.state, 'succeeded', op.error?.message);
    // The other dispatcher reads it from the agency, with its runner.
    const seen = await cl.client(2).get<OperationView>(`/v1/operations/${op.id}`);
    assert.equal(seen.runner, winner);
    assert.equal(seen.state, 'succeeded');
    const { operations } = await cl.client(2).get<{ operations: OperationView[] }>('/v1/operations');
    assert.ok(operations.some((o) => o.id === op.id));
  });

  test('kill -9 of the runner mid-restart: its lease expires, and another dispatcher resumes it from the stored step', async () => {
    await ensureFirstUp();
    const id = await killRunnerMidRestart();
    const stale = await waitFor('stale record', () => cl.client(1).get<OperationView>(`/v1/operations/${id}`), (v) => v.stale === true, (TTL_SECONDS + 10) * 1000);
    const doneBefore = (stale.progress as { done: string[] }).done;
    assert.ok(doneBefore.length >= 1, `progress stored: ${JSON.stringify(stale.progress)}`);
    // While the lease was alive a resume was a 409; now it continues here, under the same id.
    const r = await cl.client(1).post<{ operation: string }>(`/v1/operations/${id}/resume`, {});
    assert.equal(r.operation, id);
    const op = await waitOperation(cl.client(1), id, 120_000);
    assert.equal(op.state, 'succeeded', `${op.error?.message}\n${op.events.slice(-6).map((e) => e.message).join('\n')}`);
    assert.equal(op.runner, cl.dispatchers[1].id);
    assert.ok(op.events.some((e) => e.step === 'resume'));
    const restarted = (op.result as { restarted: string[] }).restarted;
    const expected = cl.plan.processes.filter((p) => p.role === 'agent' && p.dispatcher !== cl.dispatchers[0].id).map((p) => p.id);
    assert.deepEqual([...restarted].sort(), expected.sort());
    // What was done before the kill was not restarted again after the resume.
    const resumeAt = op.events.findIndex((e) => e.step === 'resume');
    const stoppedAfter = op.events.slice(resumeAt).filter((e) => e.step === 'stop').map((e) => e.process);
    for (const p of doneBefore) assert.ok(!stoppedAfter.includes(p), `${p} restarted twice`);
    // The dead runner comes back: it learns the restart was finished elsewhere and does not run it again.
    await cl.restartDispatcher(0);
    await allReady();
    const local = await waitFor('runner marks it', () => cl.client(0).get<OperationView>(`/v1/operations/${id}`), (v) => v.state !== 'running', 30_000);
    assert.match(local.error?.message ?? local.state, /ended elsewhere|succeeded/);
  });

  test('kill -9 of the runner mid-restart, then abort through another dispatcher: what it stopped runs again, nothing is left half-stopped', async () => {
    await ensureFirstUp();
    const id = await killRunnerMidRestart();
    // While its lease lives, abort through another dispatcher is refused (it runs there).
    await waitFor('stale record', () => cl.client(2).get<OperationView>(`/v1/operations/${id}`), (v) => v.stale === true, (TTL_SECONDS + 10) * 1000);
    const r = await cl.client(2).post<{ operation: string }>(`/v1/operations/${id}/abort`, {});
    const abortOp = await waitOperation(cl.client(2), r.operation, 120_000);
    assert.equal(abortOp.state, 'succeeded', abortOp.error?.message);
    const aborted = await cl.client(1).get<OperationView>(`/v1/operations/${id}`);
    assert.equal(aborted.state, 'aborted');
    await cl.restartDispatcher(0);
    await allReady();
    const local = await waitFor('runner marks it', () => cl.client(0).get<OperationView>(`/v1/operations/${id}`), (v) => v.state !== 'running', 30_000);
    assert.notEqual(local.state, 'succeeded');
    // The lock is free again: a new restart runs.
    const again = await cl.client(0).post<{ operation: string }>('/v1/cluster/restart', { processes: { roles: ['coordinator'] }, readyTimeoutMs: 60_000 });
    assert.equal((await waitOperation(cl.client(0), again.operation, 120_000)).state, 'succeeded');
  });

  test('kill -9 of the contacted dispatcher mid-launch (agency up, DB servers starting): the launch is resumed through another dispatcher', async () => {
    await ensureFirstUp();
    await shutdown(0);
    const id = await killRunnerMidLaunch();
    const stale = await waitFor('stale launch record', () => cl.client(1).get<OperationView>(`/v1/operations/${id}`), (v) => v.stale === true, (TTL_SECONDS + 15) * 1000);
    assert.equal(stale.kind, 'relaunch');
    assert.equal(stale.runner, cl.dispatchers[0].id);
    await cl.restartDispatcher(0); // its machine is back; the launch goes on from elsewhere
    const r = await cl.client(1).post<{ operation: string }>(`/v1/operations/${id}/resume`, {});
    assert.equal(r.operation, id);
    const op = await waitOperation(cl.client(1), id, 150_000);
    assert.equal(op.state, 'succeeded', `${op.error?.message}\n${op.events.slice(-6).map((e) => e.message).join('\n')}`);
    const view = await allReady();
    assert.equal(view.state, 'running');
  });

  test('kill -9 of the contacted dispatcher mid-launch, then abort through another: everything stops, and relaunch goes on (no state blocks it)', async () => {
    await ensureFirstUp();
    await shutdown(1);
    const id = await killRunnerMidLaunch();
    await waitFor('stale launch record', () => cl.client(2).get<OperationView>(`/v1/operations/${id}`), (v) => v.stale === true, (TTL_SECONDS + 15) * 1000);
    await cl.restartDispatcher(0);
    const r = await cl.client(2).post<{ operation: string }>(`/v1/operations/${id}/abort`, {});
    const abortOp = await waitOperation(cl.client(2), r.operation, 150_000);
    assert.equal(abortOp.state, 'succeeded', abortOp.error?.message);
    assert.equal((await cl.client(2).get<OperationView>(`/v1/operations/${id}`)).state, 'aborted');
    const after = await cl.client(1).get<ClusterView>('/v1/cluster');
    assert.equal(after.state, 'failed');
    assert.ok(after.processes.every((p) => p.state !== 'ready'), `nothing half-running: ${after.processes.map((p) => `${p.id}=${p.state}`).join(', ')}`);
    const { operation } = await cl.client(1).post<{ operation: string }>('/v1/cluster/relaunch', { readyTimeoutMs: 60_000 });
    const re = await waitOperation(cl.client(1), operation, 150_000);
    assert.equal(re.state, 'succeeded', re.error?.message);
    await allReady();
  });
});
