/**
 * A change computed against a plan version (an upgrade's restart, a firewall change) is compared with the
 * running version only under the cluster-wide lock (docs/DESIGN.md, "Plan versions"). The race it closes:
 * the request is checked, then — while it is still on its way to the lock (the restart's health precheck
 * alone takes up to 3 s) — another dispatcher's operation changes the plan and frees the lock; the request
 * then takes the lock and would run against a plan its operator never looked at. Here the window is made
 * deterministic: the lock's acquire first lets "another dispatcher" move the version. Fakes (an in-memory
 * agency with etcd's transaction semantics, fake nodes); milliseconds.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { PlanVersion } from '../../api/plan-version.js';
import type { FirewallPolicy } from '../../api/plan.js';
import { AgencyOperationLock, type ClusterLock } from '../../server/cluster/operation-lock.js';
import { OperationStore } from '../../server/cluster/operations.js';
import { changeFirewallLocked } from '../../server/cluster/firewall-change.js';
import { fakeAgency } from '../helpers/fake-agency.js';
import { restartHarness, threeHostPlan } from '../helpers/fake-cluster.js';

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const LOCK_KEY = (cluster: string) => `/cluster-dispatcher/${cluster}/operation-lock`;

/** The agency lock, with a hook that runs first in every acquire: the window between a check and the lock. */
function lockWithWindow(kv: ReturnType<typeof fakeAgency>, cluster: string, self: string, window: () => void): ClusterLock {
  const real = new AgencyOperationLock({ self, ttlSeconds: 5, agency: () => ({ kv, cluster }) });
  return {
    acquire: async (view, opts) => {
      window();
      return real.acquire(view, opts);
    },
    published: () => real.published(),
  };
}

const conflictNaming = (base: PlanVersion, running: PlanVersion) => (e: any) => {
  assert.equal(e.status, 409);
  assert.match(e.message, new RegExp(`computed against plan version ${base.number} \\(${base.hash}\\), but the running plan is version ${running.number}`));
  assert.deepEqual(e.details.runningVersion, running);
  return true;
};

test('a restart whose base version changed while it went for the lock is refused under the lock; nothing restarts, the lock is free', async () => {
  const kv = fakeAgency();
  let moveVersion = false;
  const h = await restartHarness(dirs, { clusterLock: lockWithWindow(kv, 'rr', 'd1', () => moveVersion && (h.version.current = { number: 2, hash: 'f'.repeat(16) })) });
  const base = h.version.current;
  moveVersion = true;
  await assert.rejects(h.service.start({ baseVersion: base, processes: { ids: ['agent-2'] } }), conflictNaming(base, { number: 2, hash: 'f'.repeat(16) }));
  assert.deepEqual(h.restarted(), [], 'no process was stopped');
  assert.equal(h.operations.list().length, 0, 'no operation record');
  assert.equal(kv.leases.size, 0, 'the lock taken for the check was released');
  assert.equal(kv.keys.has(LOCK_KEY('rr')), false);

  // Against the running version it goes ahead (the check is under the same lock the operation keeps).
  moveVersion = false;
  const op = await h.service.start({ baseVersion: h.version.current, processes: { ids: ['agent-2'] } });
  assert.equal((await h.operations.wait(op.id)).state, 'succeeded');
  assert.deepEqual(h.restarted(), ['agent-2']);
});

test('a firewall change: its base version is compared while the cluster lock is held, and the lock is held while it applies', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'cd-fwlock-'));
  dirs.push(dir);
  const plan = threeHostPlan();
  const kv = fakeAgency();
  let version: PlanVersion = { number: 3, hash: 'a'.repeat(16) };
  let window = () => {};
  const operations = new OperationStore(join(dir, 'd1'), undefined);
  await operations.load();
  operations.useClusterLock(lockWithWindow(kv, plan.name, 'd1', () => window()), 'd1');
  const applied: string[] = [];
  const deps = {
    operations,
    store: { get: () => ({ plan, state: 'running' as const, secrets: {} }), version: () => version },
    apply: async (firewall: FirewallPolicy) => {
      // Applied while this dispatcher holds the cluster lock, named as a firewall change.
      const holder = JSON.parse(kv.keys.get(LOCK_KEY(plan.name))!.value) as { kind: string; dispatcher: string };
      applied.push(`${firewall.backend}:${holder.kind}@${holder.dispatcher}`);
      return { token: 'x' };
    },
  };
  const change = { firewall: plan.firewall, confirmWithinSeconds: 60, baseVersion: { number: 3, hash: 'a'.repeat(16) } };

  // Another dispatcher finishes a plan change (version 4) in the window: refused, nothing applied.
  window = () => (version = { number: 4, hash: 'b'.repeat(16) });
  await assert.rejects(changeFirewallLocked(deps, change), conflictNaming(change.baseVersion, { number: 4, hash: 'b'.repeat(16) }));
  assert.deepEqual(applied, []);
  assert.equal(kv.leases.size, 0, 'the lock is free again');

  // Against the running version: applied under the lock, which is freed afterwards.
  window = () => {};
  await changeFirewallLocked(deps, { ...change, baseVersion: version });
  assert.deepEqual(applied, [`${plan.firewall.backend}:firewall change@d1`]);
  assert.equal(kv.leases.size, 0);

  // While another dispatcher's operation holds the lock, the change is refused naming it (no version race at all).
  const other = new OperationStore(join(dir, 'd2'), undefined);
  await other.load();
  other.useClusterLock(new AgencyOperationLock({ self: 'd2', ttlSeconds: 5, agency: () => ({ kv, cluster: plan.name }) }), 'd2');
  let finish!: () => void;
  const running = await other.start('restart', plan.name, () => new Promise<void>((r) => (finish = r)), { lock: 'required' });
  await assert.rejects(changeFirewallLocked(deps, { ...change, baseVersion: version }), (e: any) => {
    assert.equal(e.status, 409);
    assert.match(e.message, new RegExp(`operation ${running.id} \\(restart of ${plan.name}\\) is running on dispatcher d2`));
    return true;
  });
  assert.equal(applied.length, 1);
  finish();
  await other.wait(running.id);
});
