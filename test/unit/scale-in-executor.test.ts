/**
 * Scale in and replace through the scale executor (server/cluster/scale.ts) over fakes (docs/DESIGN.md,
 * "Scaling"): the removal runners of server/cluster/scale-in-steps.ts that only speak NodeApi run for real
 * (remove-coordinator, shrink-firewall, release-dispatcher), the engine ones (etcd, Patroni) are journaled
 * fakes. Checked: the order; a removed process leaves the stored plan only AFTER its step; the firewall
 * shrinks only once nothing of the gone host is planned; the released host is called last and stores no
 * further version; a dead host is never called, not even to store a version; the last version is the
 * proposed plan. The engine steps run against real etcd and Patroni in test/cluster/scale-in-engine.test.ts.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Plan } from '../../api/plan.js';
import type { PlanVersion, ScaleStep } from '../../api/plan-version.js';
import { planHash } from '../../server/core/plan-version.js';
import { replacePlan } from '../../server/core/replace-plan.js';
import { OperationStore } from '../../server/cluster/operations.js';
import { ScaleService } from '../../server/cluster/scale.js';
import type { ScaleContext, StepRunners } from '../../server/cluster/scale-steps.js';
import { scaleInRunners } from '../../server/cluster/scale-in-steps.js';
import { fakeActions, fakeClock, scriptedHealth, threeHostPlan } from '../helpers/fake-cluster.js';
import { loadEngine } from '../../server/engines/loader.js';
import { grownByD4, VersionedNode } from '../helpers/scale-fakes.js';

const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

function harness(running: Plan, down: string[] = []) {
  const base: PlanVersion = { number: 1, hash: planHash(running) };
  const journal: string[] = [];
  const ids = [...new Set([...running.dispatchers.map((d) => d.id), 'd4'])];
  const nodes = new Map(ids.map((id) => [id, new VersionedNode(id, journal)]));
  for (const d of running.dispatchers) nodes.get(d.id)!.version = base;
  const dir = mkdtempSync(join(tmpdir(), 'cd-scale-in-'));
  dirs.push(dir);
  mkdirSync(join(dir, 'operations'));
  const clock = fakeClock();
  const operations = new OperationStore(dir, undefined, clock);
  let snap = { plan: running, state: 'running' as const, secrets: {} as Record<string, string> };
  const store = { get: () => snap, save: async (s: typeof snap) => void (snap = s), version: () => base };
  /** What the plan stored on d1 said when each step ran. */
  const seen: Record<string, Plan> = {};
  const fake = async (ctx: ScaleContext, step: ScaleStep) => {
    const where = 'process' in step ? step.process : 'host' in step ? step.host : step.kind;
    journal.push(`run:${step.kind}:${where}`);
    seen[`${step.kind}:${where}`] = ctx.current();
    if (step.kind === 'adopt-dispatcher') {
      nodes.get(step.host)!.version = { number: 1, hash: planHash(ctx.proposed) };
      ctx.versions.set(step.host, nodes.get(step.host)!.version!);
      await ctx.catchUp(step.host);
    }
  };
  const journaled = <K extends ScaleStep['kind']>(real: StepRunners[K]) => (async (ctx: ScaleContext, step: ScaleStep) => {
    await fake(ctx, step);
    await (real as (c: ScaleContext, s: ScaleStep) => Promise<void>)(ctx, step);
  }) as StepRunners[K];
  const runners = {
    'adopt-dispatcher': fake,
    'widen-firewall': fake,
    'add-agent': fake,
    'add-dbserver': fake,
    'add-coordinator': fake,
    'reconfigure-coordinators': fake,
    'switchover-away': fake,
    'remove-dbserver': fake,
    'remove-agent': fake,
    'remove-dead-agent': fake,
    'remove-coordinator': journaled<'remove-coordinator'>(scaleInRunners['remove-coordinator']),
    'shrink-firewall': journaled<'shrink-firewall'>(scaleInRunners['shrink-firewall']),
    'release-dispatcher': journaled<'release-dispatcher'>(scaleInRunners['release-dispatcher']),
  } as StepRunners;
  const service = new ScaleService({
    self: nodes.get('d1')!,
    store,
    operations,
    health: scriptedHealth(),
    peer: (d) => nodes.get(d.id)!,
    view: async () =>
      ({
        dispatchers: running.dispatchers.map((d) => ({ id: d.id, reachable: !down.includes(d.id), ...(down.includes(d.id) ? {} : { planVersion: base }) })),
        processes: running.processes.map((p) => ({ id: p.id, state: down.includes(p.dispatcher) ? 'unknown' : 'ready' })),
      }) as any,
    clusterTls: () => ({ ca: 'ca', cert: 'cert', key: 'key' }),
    runners,
    actions: fakeActions(journal, {}),
    engine: () => loadEngine('pg-ha'),
    clock,
  });
  return { base, journal, nodes, operations, service, seen };
}

const calls = (journal: string[]) => journal.filter((j) => j.startsWith('run:') || /:(updatePlan|stopProcess|verifyGuard|releasePlan|refreshConfig)/.test(j));

describe('scale in and replace through the executor', () => {
  test('scale in of a host: coordinator stopped, leader away, DB server removed, firewall shrinks after, the host released last', async () => {
    const running = grownByD4(threeHostPlan());
    const proposed = threeHostPlan();
    const h = harness(running);
    const op = await h.service.start({ plan: proposed });
    const done = await h.operations.wait(op.id);
    assert.equal(done.state, 'succeeded', JSON.stringify(done.error));
    const runs = h.journal.filter((j) => j.startsWith('run:'));
    assert.deepEqual(runs, [
      'run:remove-coordinator:coordinator-d4',
      'run:switchover-away:switchover-away',
      'run:remove-dbserver:dbserver-d4',
      'run:reconfigure-coordinators:reconfigure-coordinators',
      'run:shrink-firewall:shrink-firewall',
      'run:release-dispatcher:d4',
    ]);
    // The coordinator is stopped on its host while still planned; it leaves the stored plan after.
    assert.ok(h.journal.includes('d4:stopProcess:coordinator-d4'));
    assert.ok(h.seen['remove-coordinator:coordinator-d4'].processes.some((p) => p.id === 'coordinator-d4'));
    assert.ok(h.seen['remove-dbserver:dbserver-d4'].processes.some((p) => p.id === 'dbserver-d4'), 'the DB server is still planned while its step runs');
    assert.ok(!h.seen['shrink-firewall:shrink-firewall'].processes.some((p) => p.dispatcher === 'd4'), 'nothing of d4 is planned when the firewall shrinks');
    // shrink-firewall stores the plan without d4 on d1..d3 (their guards re-render), then reads each guard back.
    const c = calls(h.journal);
    const shrinkAt = c.indexOf('run:shrink-firewall:shrink-firewall');
    assert.deepEqual(c.slice(shrinkAt + 1, shrinkAt + 4).sort(), ['d1:updatePlan', 'd2:updatePlan', 'd3:updatePlan']);
    assert.deepEqual(c.slice(shrinkAt + 4, shrinkAt + 7).sort(), ['d1:verifyGuard', 'd2:verifyGuard', 'd3:verifyGuard']);
    assert.ok(!h.nodes.get('d1')!.plans.at(-1)!.dispatchers.some((d) => d.id === 'd4'), 'the remaining plans no longer pin d4');
    // The release is the last call to d4; it never stores the version without itself.
    const d4Calls = h.journal.filter((j) => j.startsWith('d4:'));
    assert.equal(d4Calls.at(-1), 'd4:releasePlan');
    assert.ok(h.nodes.get('d4')!.plans.every((p) => p.dispatchers.some((d) => d.id === 'd4')));
    for (const id of ['d1', 'd2', 'd3']) assert.equal(h.nodes.get(id)!.version!.hash, planHash(proposed), `${id} ends at the proposed plan`);
  });

  test('replace a dead host: it is never called; its dead processes leave the plan first; the last version is the proposed plan', async () => {
    const running = threeHostPlan();
    const d4 = { ...running.dispatchers[2], id: 'd4', endpoint: 'https://10.0.0.4:8528', addresses: ['10.0.0.4'] };
    const proposed = replacePlan(running, 'd3', d4);
    const h = harness(running, ['d3']);
    const op = await h.service.start({ plan: proposed, operatorCredential: { user: 'op', password: 'pw' } });
    const done = await h.operations.wait(op.id);
    assert.equal(done.state, 'succeeded', JSON.stringify(done.error));
    assert.deepEqual(h.journal.filter((j) => j.startsWith('d3:')), [], 'the dead host is asked nothing');
    const runs = h.journal.filter((j) => j.startsWith('run:')).map((j) => j.split(':').slice(1).join(' '));
    assert.deepEqual(runs, [
      'remove-dead-agent agent-3',
      'remove-dbserver dbserver-3',
      'adopt-dispatcher d4',
      'widen-firewall widen-firewall',
      'add-agent agent-4',
      'add-dbserver dbserver-4',
      'reconfigure-coordinators reconfigure-coordinators',
      'shrink-firewall shrink-firewall',
    ]);
    // The dead DB server is out of every stored plan before anything of the new host starts.
    assert.ok(!h.seen['add-dbserver:dbserver-4'].processes.some((p) => p.id === 'dbserver-3'));
    for (const id of ['d1', 'd2', 'd4']) assert.equal(h.nodes.get(id)!.version!.hash, planHash(proposed), `${id} ends at the proposed plan`);
    assert.ok(!h.nodes.get('d1')!.plans.at(-1)!.dispatchers.some((d) => d.id === 'd3'));
  });
});
