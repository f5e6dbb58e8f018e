/**
 * The scale executor (server/cluster/scale.ts; docs/DESIGN.md, "Scaling") over fakes: the steps run in the
 * planner's order through the StepRunners table, each adding step stores its plan version everywhere
 * BEFORE it runs, a change against another base version is a 409 before any operation exists, a change
 * the planner refuses is refused with every problem, and a failure half-way undoes the failed step only,
 * leaving the plan at the last true version; and the pure plan versions of a change (scale-progress.ts).
 * Fakes of nodes, health, clock and runners; the real steps are
 * exercised in test/net/scale-out.test.ts.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DispatcherError } from '../../api/errors.js';
import type { Plan } from '../../api/plan.js';
import type { PlanVersion, ScaleStep } from '../../api/plan-version.js';
import { planHash } from '../../server/core/plan-version.js';
import { commitMoment, planAfterStep } from '../../server/core/scale-progress.js';
import { OperationStore } from '../../server/cluster/operations.js';
import { ScaleService } from '../../server/cluster/scale.js';
import type { StepRunners } from '../../server/cluster/scale-steps.js';
import { scaleInRunners } from '../../server/cluster/scale-in-steps.js';
import { fakeActions, fakeClock, scriptedHealth, threeHostPlan } from '../helpers/fake-cluster.js';
import { loadEngine } from '../../server/engines/loader.js';
import { grownByD4, VersionedNode } from '../helpers/scale-fakes.js';

const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

function harness(opts: { fail?: string; view?: (plan: Plan) => { dispatchers: any[]; processes: any[] } } = {}) {
  const running = threeHostPlan();
  const base: PlanVersion = { number: 3, hash: planHash(running) };
  const journal: string[] = [];
  const nodes = new Map(['d1', 'd2', 'd3', 'd4'].map((id) => [id, new VersionedNode(id, journal)]));
  for (const id of ['d1', 'd2', 'd3']) nodes.get(id)!.version = base;
  const dir = mkdtempSync(join(tmpdir(), 'cd-scale-'));
  dirs.push(dir);
  mkdirSync(join(dir, 'operations'));
  const clock = fakeClock();
  const operations = new OperationStore(dir, undefined, clock);
  let snap = { plan: running, state: 'running' as const, secrets: {} as Record<string, string> };
  const store = {
    get: () => snap,
    save: async (s: typeof snap) => void (snap = s),
    version: () => base,
  };
  const undone: string[] = [];
  const record = (what: string) => async (ctx: Parameters<StepRunners['add-agent']>[0], step: ScaleStep) => {
    const where = 'process' in step ? step.process : 'host' in step ? step.host : step.kind;
    journal.push(`run:${step.kind}:${where}`);
    // What the step sees stored: the process it adds is in the current plan already.
    if ('process' in step) assert.ok(ctx.current().processes.some((p) => p.id === step.process), `${step.process} is in the plan before ${step.kind} runs`);
    ctx.onRollback(`${what} ${where}`, async () => void undone.push(`${what} ${where}`));
    if (step.kind === 'adopt-dispatcher') {
      nodes.get(step.host)!.version = { number: 1, hash: planHash(ctx.proposed) };
      ctx.versions.set(step.host, nodes.get(step.host)!.version!);
      await ctx.catchUp(step.host);
    }
    if (opts.fail === where) throw new DispatcherError('operation_failed', `${where} did not become ready (fake)`);
  };
  const runners = {
    ...scaleInRunners,
    'adopt-dispatcher': record('adopt'),
    'widen-firewall': record('widen'),
    'add-agent': record('start'),
    'add-dbserver': record('start'),
    'add-coordinator': record('start'),
    'reconfigure-coordinators': record('reconfigure'),
  } as StepRunners;
  const view = opts.view ?? ((plan: Plan) => ({
    dispatchers: plan.dispatchers.map((d) => ({ id: d.id, reachable: true, planVersion: base })),
    processes: plan.processes.map((p) => ({ id: p.id, state: 'ready' })),
  }));
  const service = new ScaleService({
    self: nodes.get('d1')!,
    store,
    operations,
    health: scriptedHealth(),
    peer: (d) => nodes.get(d.id)!,
    view: async () => view(running) as any,
    clusterTls: () => ({ ca: 'ca', cert: 'cert', key: 'key' }),
    runners,
    actions: fakeActions(journal, {}),
    engine: () => loadEngine('pg-ha'),
    clock,
  });
  return { running, base, journal, nodes, operations, service, undone };
}

const runs = (journal: string[]) => journal.filter((j) => j.startsWith('run:') || j.includes(':updatePlan'));

describe('scale executor', () => {
  test('scale out: steps in the planner order; each adding step stores its plan version everywhere before it runs; the last version is the proposed plan', async () => {
    const h = harness();
    const proposed = grownByD4(h.running);
    const op = await h.service.start({ plan: proposed, baseVersion: h.base, operatorCredential: { user: 'op', password: 'pw' } });
    const done = await h.operations.wait(op.id);
    assert.equal(done.state, 'succeeded', JSON.stringify(done.error));
    const j = runs(h.journal);
    // adopt: d1..d3 store the plan naming d4 first (their guards let it in), then d4 adopts and catches up.
    assert.deepEqual(j.slice(0, 5), ['d1:updatePlan', 'd2:updatePlan', 'd3:updatePlan', 'run:adopt-dispatcher:d4', 'd4:updatePlan']);
    assert.deepEqual(j.filter((x) => x.startsWith('run:')), ['run:adopt-dispatcher:d4', 'run:widen-firewall:widen-firewall', 'run:add-dbserver:dbserver-d4', 'run:add-coordinator:coordinator-d4', 'run:reconfigure-coordinators:reconfigure-coordinators']);
    const dbAt = j.indexOf('run:add-dbserver:dbserver-d4');
    assert.deepEqual(j.slice(dbAt - 4, dbAt).sort(), ['d1:updatePlan', 'd2:updatePlan', 'd3:updatePlan', 'd4:updatePlan'], 'the DB server is in every stored plan before it starts');
    for (const n of h.nodes.values()) assert.deepEqual(n.version, { number: 6, hash: planHash(proposed) }, `${n.id} ends at the proposed plan as version 6`);
    assert.deepEqual(done.result, { cluster: proposed.name, version: { number: 6, hash: planHash(proposed) }, steps: 5 });
    const stepEvents = done.events.filter((e) => /^step \d\/5 done$/.test(e.message));
    assert.equal(stepEvents.length, 5);
    assert.ok(stepEvents.every((e) => typeof e.durationMs === 'number'));
    assert.deepEqual((done.progress as any).done, 5);
  });

  test('a change computed against another version is a 409 before any operation exists', async () => {
    const h = harness();
    await assert.rejects(
      h.service.start({ plan: grownByD4(h.running), baseVersion: { number: 2, hash: h.base.hash }, operatorCredential: { user: 'op', password: 'pw' } }),
      (e: DispatcherError) => e.status === 409 && /version 2/.test(e.message) && /version 3/.test(e.message),
    );
    assert.equal(h.operations.list().length, 0);
    assert.deepEqual(runs(h.journal), []);
  });

  test('refusals name every problem: a changed port (400), an agency without quorum (409), no credential for the new host (400)', async () => {
    const h = harness();
    const changed = grownByD4(h.running);
    changed.processes[0].ports[0].port += 100;
    changed.processes[1].ports[0].port += 100;
    await assert.rejects(h.service.start({ plan: changed, operatorCredential: { user: 'op', password: 'pw' } }), (e: DispatcherError) => e.status === 400 && e.problems.length === 2);
    const agents = h.running.processes.filter((p) => p.role === 'agent').map((p) => p.id);
    const down = harness({ view: (plan) => ({ dispatchers: plan.dispatchers.map((d) => ({ id: d.id, reachable: true, planVersion: h.base })), processes: plan.processes.map((p) => ({ id: p.id, state: agents.slice(0, 2).includes(p.id) ? 'stopped' : 'ready' })) }) });
    await assert.rejects(down.service.start({ plan: grownByD4(down.running), operatorCredential: { user: 'op', password: 'pw' } }), (e: DispatcherError) => e.status === 409 && /lost quorum/.test(e.message));
    await assert.rejects(h.service.start({ plan: grownByD4(h.running) }), (e: DispatcherError) => e.status === 400 && /credentials for the new dispatchers d4/.test(e.message));
    assert.equal(h.operations.list().length + down.operations.list().length, 0);
  });

  test('failure half-way: the failed step is undone and its plan version replaced; completed steps stay; the error says what is left', async () => {
    const h = harness({ fail: 'coordinator-d4' });
    const proposed = grownByD4(h.running);
    const op = await h.service.start({ plan: proposed, operatorCredential: { user: 'op', password: 'pw' } });
    const done = await h.operations.wait(op.id);
    assert.equal(done.state, 'failed');
    assert.deepEqual(h.undone, ['start coordinator-d4'], 'only the failed step is undone');
    assert.match(done.error!.message, /step 4\/5 \(add-coordinator coordinator-d4 on d4\) failed/);
    assert.match(done.error!.message, /not done: add-coordinator coordinator-d4 on d4; reconfigure-coordinators/);
    // The plan with the DB server (step 3) is true: stored again as the next version, without the coordinator.
    const last = h.nodes.get('d2')!.plans.at(-1)!;
    assert.ok(last.processes.some((p) => p.id === 'dbserver-d4'));
    assert.ok(!last.processes.some((p) => p.id === 'coordinator-d4'));
    for (const n of h.nodes.values()) assert.deepEqual(n.version, { number: 7, hash: planHash(last) });
    assert.deepEqual((done.progress as any).done, 3);
  });
});

describe('plan versions of a scale change (server/core/scale-progress.ts)', () => {
  test('adding steps store before they run, removals after; the last version is the proposed plan itself', () => {
    const running = threeHostPlan();
    const proposed = grownByD4(running);
    const steps: ScaleStep[] = [
      { kind: 'adopt-dispatcher', host: 'd4' },
      { kind: 'widen-firewall', hosts: ['d1', 'd2', 'd3', 'd4'], addresses: ['10.0.0.4'] },
      { kind: 'add-dbserver', process: 'dbserver-d4', host: 'd4' },
      { kind: 'add-coordinator', process: 'coordinator-d4', host: 'd4' },
      { kind: 'reconfigure-coordinators', processes: ['coordinator-1'] },
    ];
    assert.deepEqual(steps.map(commitMoment), ['before', 'none', 'before', 'before', 'none']);
    let plan = running;
    const hashes: string[] = [];
    for (const s of steps) {
      plan = planAfterStep(plan, running, proposed, s);
      hashes.push(planHash(plan));
    }
    assert.equal(new Set(hashes).size, 3, 'three versions: with d4, with its DB server, with its coordinator');
    assert.equal(planHash(plan), planHash(proposed));
    // Removing the coordinator again is stored after it ran, and gives back the plan before it.
    const back = planAfterStep(proposed, running, proposed, { kind: 'remove-coordinator', process: 'coordinator-d4', host: 'd4' });
    assert.equal(commitMoment({ kind: 'remove-coordinator', process: 'coordinator-d4', host: 'd4' }), 'after');
    assert.deepEqual(back.processes.map((p) => p.id), proposed.processes.filter((p) => p.id !== 'coordinator-d4').map((p) => p.id));
  });
});
