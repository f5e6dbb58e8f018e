/**
 * The Orchestrator's launch and shutdown against fake nodes, health and clock (test/helpers/fake-cluster.ts):
 * the order of the steps, what a failure at each step leaves behind, the health gate's retry and timeout
 * — in milliseconds. test/cluster/launch.test.ts runs the same code against real dispatchers and pg-ha.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { DispatcherError } from '../../api/errors.js';
import type { Plan } from '../../api/plan.js';
import type { OperationEvent } from '../../api/rest.js';
import { Orchestrator, type ClusterHealth } from '../../server/cluster/orchestrator.js';
import type { OperationHandle } from '../../server/cluster/operations.js';
import type { ClusterSnapshot } from '../../server/cluster/store.js';
import { fakeClock, fakeNodes, scriptedHealth, threeHostPlan, type FakeNode } from '../helpers/fake-cluster.js';

const CREDENTIAL = { user: 'operator', password: 'correct horse battery' };

function fakeOp(): OperationHandle & { events: Omit<OperationEvent, 'seq' | 'at'>[] } {
  const events: Omit<OperationEvent, 'seq' | 'at'>[] = [];
  return {
    id: 'op-1',
    view: { id: 'op-1', kind: 'launch', cluster: 'fake', state: 'running', startedAt: '', events: [] },
    events,
    event: (e) => void events.push(e),
    setProgress: async () => {},
    lockCluster: async () => {},
    unlockCluster: async () => {},
    lockLost: new AbortController().signal,
  };
}

function setup(opts: { health?: ClusterHealth; snapshot?: ClusterSnapshot; plan?: Plan } = {}) {
  const plan = opts.plan ?? threeHostPlan();
  const { journal, nodes } = fakeNodes(plan);
  // The contacted dispatcher's store: what its own adoptPlan saved (the launch's CA step reads and writes it).
  let current = opts.snapshot;
  const store = { get: () => current, save: async (s: ClusterSnapshot) => void (current = s) };
  const self = nodes.get('d1')!;
  const adopt = self.adoptPlan.bind(self);
  self.adoptPlan = async (p) => {
    await adopt(p);
    current = { plan: p.plan, state: 'launching', secrets: p.secrets };
  };
  const discard = self.discardPlan.bind(self);
  self.discardPlan = async (name) => {
    await discard(name);
    if (current?.state === 'launching') current = undefined;
  };
  const clock = fakeClock();
  const health = opts.health ?? scriptedHealth();
  const orchestrator = new Orchestrator({
    self: nodes.get('d1')!,
    store,
    renderer: { generateSecrets: () => ({ 'superuser-password': 'x' }) },
    health,
    peer: (d) => nodes.get(d.id)!,
    validate: () => [],
    pollMs: 500,
    clock,
  });
  const launch = (op = fakeOp()) => orchestrator.launch(op, { plan, peerCredentials: {}, readyTimeoutMs: 60_000, operatorCredential: CREDENTIAL });
  return { plan, journal, nodes, clock, orchestrator, launch, node: (id: string) => nodes.get(id) as FakeNode };
}

const index = (journal: string[], entry: string) => {
  const i = journal.indexOf(entry);
  assert.ok(i >= 0, `${entry} not in journal:\n${journal.join('\n')}`);
  return i;
};
const last = (journal: string[], pred: (e: string) => boolean) => journal.map((e, i) => (pred(e) ? i : -1)).reduce((a, b) => Math.max(a, b), -1);
const first = (journal: string[], pred: (e: string) => boolean) => journal.findIndex(pred);

describe('Orchestrator.launch against fake nodes', () => {
  test('propagate → preflight → guard everywhere before any process starts; agents, then DB servers, then coordinators', async () => {
    const s = setup();
    const result = await s.launch();
    const j = s.journal;
    const lastOf = (m: string) => last(j, (e) => e.includes(`:${m}`));
    const firstOf = (m: string) => first(j, (e) => e.includes(`:${m}`));
    assert.ok(lastOf('adoptPlan') < firstOf('preflight'), 'every dispatcher adopts the plan before any preflight');
    assert.ok(lastOf('preflight') < firstOf('guard'), 'every preflight before any guard');
    assert.ok(lastOf('guard') < firstOf('startProcess'), 'every guard before any process starts');
    const starts = j.filter((e) => e.includes(':startProcess:')).map((e) => e.split(':')[2]);
    assert.deepEqual(
      starts.map((p) => p.split('-')[0]),
      ['agent', 'agent', 'agent', 'dbserver', 'dbserver', 'dbserver', 'coordinator'],
    );
    assert.ok(last(j, (e) => e.includes(':startProcess:')) < firstOf('verifyGuard'), 'the guard is read back after the last start');
    for (const d of ['d1', 'd2', 'd3']) assert.ok(j.includes(`${d}:setClusterState:running`));
    assert.deepEqual((result.coordinators as { id: string }[]).map((c) => c.id), ['coordinator-1']);
  });

  test('each role is gated on cluster health before the next role starts', async () => {
    const health = scriptedHealth();
    const s = setup({ health });
    await s.launch();
    assert.deepEqual(health.calls, ['agent', 'dbserver', 'coordinator']);
  });

  test('a preflight problem on one host: nothing is guarded or started, every dispatcher forgets the plan', async () => {
    const s = setup();
    s.node('d2').failures.push({ method: 'preflight', problems: [{ host: 'd2', check: 'port', message: 'port 2381 is in use' }] });
    await assert.rejects(s.launch(), (e: unknown) => e instanceof DispatcherError && e.code === 'preflight_failed' && /d2: port: port 2381 is in use/.test(e.message));
    assert.equal(first(s.journal, (e) => e.includes(':guard') || e.includes(':startProcess')), -1, s.journal.join('\n'));
    for (const d of ['d1', 'd2', 'd3']) assert.ok(s.journal.includes(`${d}:discardPlan`));
  });

  test('certificates are issued while preflight is still running (they are not on the critical path)', async () => {
    const s = setup();
    // d2's preflight answers only once d2 was asked for its certificate requests: a launch that issues
    // certificates after preflight would wait here until the fallback, and the assertion below says so.
    let asked!: () => void;
    const certificatesAsked = new Promise<void>((r) => (asked = r));
    const d2 = s.node('d2');
    const requests = d2.certificateRequests.bind(d2);
    d2.certificateRequests = async () => {
      asked();
      return requests();
    };
    let waitedInVain = false;
    const preflight = d2.preflight.bind(d2);
    d2.preflight = async (t) => {
      let fallback: NodeJS.Timeout | undefined;
      await Promise.race([certificatesAsked, new Promise<void>((r) => (fallback = setTimeout(() => ((waitedInVain = true), r()), 2_000)))]);
      clearTimeout(fallback);
      return preflight(t);
    };
    await s.launch();
    assert.equal(waitedInVain, false, 'the certificate requests went out while preflight ran');
  });

  test('a preflight problem while certificates are being installed: preflight_failed, and the plan is forgotten only after every install settled', async () => {
    const s = setup();
    s.node('d2').failures.push({ method: 'preflight', problems: [{ host: 'd2', check: 'port', message: 'port 2381 is in use' }] });
    for (const id of ['d1', 'd3']) {
      s.node(id).installCertificates = async () => {
        await new Promise((r) => setTimeout(r, 30));
        s.journal.push(`${id}:installCertificates`);
      };
    }
    // A certificate failure on top does not hide the preflight problem the operator has to fix.
    s.node('d2').installCertificates = async () => {
      throw new DispatcherError('bad_request', 'd2: certificates missing for agent-2');
    };
    await assert.rejects(s.launch(), (e: unknown) => e instanceof DispatcherError && e.code === 'preflight_failed');
    const firstDiscard = first(s.journal, (e) => e.includes(':discardPlan'));
    for (const id of ['d1', 'd3']) assert.ok(index(s.journal, `${id}:installCertificates`) < firstDiscard, s.journal.join('\n'));
    for (const d of ['d1', 'd2', 'd3']) assert.ok(s.journal.includes(`${d}:discardPlan`));
    assert.equal(first(s.journal, (e) => e.includes(':guard') || e.includes(':startProcess')), -1, s.journal.join('\n'));
  });

  test('a certificate that cannot be installed: nothing is guarded or started, every dispatcher forgets the plan', async () => {
    const s = setup();
    s.node('d3').installCertificates = async () => {
      throw new DispatcherError('bad_request', 'd3: certificates missing for agent-3');
    };
    await assert.rejects(s.launch(), /certificates missing for agent-3/);
    assert.equal(first(s.journal, (e) => e.includes(':guard') || e.includes(':startProcess')), -1, s.journal.join('\n'));
    for (const d of ['d1', 'd2', 'd3']) assert.ok(s.journal.includes(`${d}:discardPlan`));
  });

  test('a peer that cannot adopt the plan: the others forget it again and the error names the peer', async () => {
    const s = setup();
    s.node('d3').failures.push({ method: 'adoptPlan', error: new DispatcherError('peer_unreachable', 'd3: connect ECONNREFUSED') });
    await assert.rejects(s.launch(), (e: unknown) => e instanceof DispatcherError && e.code === 'peer_unreachable' && /d3: connect ECONNREFUSED/.test(e.message));
    assert.ok(s.journal.includes('d1:discardPlan') && s.journal.includes('d2:discardPlan'));
    assert.ok(!s.journal.includes('d3:discardPlan'), 'the peer that never took the plan is not asked to forget it');
    assert.equal(first(s.journal, (e) => e.includes(':preflight')), -1);
  });

  test('rollback: a coordinator that fails stops what the launch started, DB servers before agents, agency leader last', async () => {
    const s = setup({ health: scriptedHealth(() => true, 'agent-1') });
    const coordinatorHost = s.plan.processes.find((p) => p.id === 'coordinator-1')!.dispatcher;
    s.node(coordinatorHost).failures.push({ method: 'startProcess', process: 'coordinator-1' });
    const op = fakeOp();
    await assert.rejects(s.launch(op), /coordinator-1 failed \(fake\)/);
    const stops = s.journal.filter((e) => e.includes(':stopProcess:')).map((e) => e.split(':')[2]);
    assert.equal(stops.indexOf('agent-1'), stops.length - 1, `agency leader stopped last: ${stops.join(', ')}`);
    const lastDb = Math.max(...stops.map((p, i) => (p.startsWith('dbserver') ? i : -1)));
    const firstAgent = stops.findIndex((p) => p.startsWith('agent'));
    assert.ok(lastDb < firstAgent, `DB servers before agents: ${stops.join(', ')}`);
    assert.equal(stops.filter((p) => p.startsWith('dbserver')).length, 3);
    for (const d of ['d1', 'd2', 'd3']) assert.ok(s.journal.includes(`${d}:setClusterState:failed`));
    assert.equal(first(s.journal, (e) => e.includes(':cleanup')), -1, 'a failed launch never deletes data');
    assert.ok(op.events.some((e) => e.step === 'rollback'));
  });

  test('the health gate retries until the role is healthy', async () => {
    const health = scriptedHealth((role, call) => role !== 'dbserver' || call >= 4);
    const s = setup({ health });
    await s.launch();
    assert.equal(health.calls.filter((r) => r === 'dbserver').length, 4);
    assert.equal(s.clock.slept, 3 * 500, 'three waits of pollMs between four checks');
  });

  test('every event that ends a step carries its duration on the operation clock (where the time went)', async () => {
    const health = scriptedHealth((role, call) => role !== 'dbserver' || call >= 4);
    const s = setup({ health });
    const op = fakeOp();
    await s.launch(op);
    const of = (step: string, host?: boolean) => op.events.filter((e) => e.step === step && (host === undefined || Boolean(e.host) === host));
    for (const step of ['propagate', 'preflight', 'certificates', 'guard']) {
      const perHost = of(step, true);
      assert.equal(perHost.length, 3, `${step}: one event per dispatcher`);
      for (const e of perHost) assert.equal(typeof e.durationMs, 'number', `${step} on ${e.host} has a duration`);
    }
    const ready = op.events.filter((e) => e.step === 'ready' && e.process);
    assert.equal(ready.length, s.plan.processes.length);
    for (const e of ready) assert.equal(typeof e.durationMs, 'number', `${e.process} start → ready`);
    // The DB servers' gate waited three poll intervals on the fake clock, and that is what its event says.
    const healthy = of('healthy');
    assert.deepEqual(healthy.map((e) => e.durationMs), [0, 3 * 500, 0]);
    const final = op.events.filter((e) => e.step === 'ready' && !e.process).at(-1)!;
    assert.equal(final.durationMs, 3 * 500, 'the whole launch, on the same clock');
    // Announcements of a step carry no duration: only what concludes one does.
    for (const e of of('start')) assert.equal(e.durationMs, undefined);
  });

  test('a role never healthy fails after the ready timeout (fake clock: no real waiting), then rolls back', async () => {
    const health = scriptedHealth((role) => role !== 'agent');
    const s = setup({ health });
    const op = fakeOp();
    const started = Date.now();
    await assert.rejects(s.launch(op), (e: unknown) => e instanceof DispatcherError && e.code === 'operation_failed' && /agents not healthy within 60 s/.test(e.message));
    assert.ok(Date.now() - started < 5_000, 'the timeout ran on the fake clock');
    assert.ok(s.clock.slept >= 60_000);
    assert.equal(first(s.journal, (e) => e.includes(':startProcess:dbserver')), -1, 'no DB server starts while the agency is unhealthy');
    assert.equal(op.events.filter((e) => e.step === 'waiting').length, 1, 'an unchanged detail is reported once');
    assert.equal(s.journal.filter((e) => e.includes(':stopProcess:agent')).length, 3);
  });

  test('a health check that throws counts as not healthy yet, not as a failed launch', async () => {
    let calls = 0;
    const health: ClusterHealth = {
      async check() {
        calls += 1;
        if (calls === 1) throw new Error('etcd: connection refused');
        return { ok: true, detail: 'fine' };
      },
    };
    const s = setup({ health });
    await s.launch();
    assert.ok(calls >= 4);
  });
});

describe('Orchestrator.shutdown against fake nodes', () => {
  test('coordinators, DB servers, then agents (leader last); every dispatcher is told the cluster is shut down', async () => {
    const plan = threeHostPlan();
    const s = setup({ plan, health: scriptedHealth(() => true, 'agent-2'), snapshot: { plan, state: 'running', secrets: {}} });
    await s.orchestrator.shutdown(fakeOp());
    const stops = s.journal.filter((e) => e.includes(':stopProcess:')).map((e) => e.split(':')[2]);
    assert.deepEqual(stops.map((p) => p.split('-')[0]), ['coordinator', 'dbserver', 'dbserver', 'dbserver', 'agent', 'agent', 'agent']);
    assert.equal(stops.at(-1), 'agent-2');
    for (const d of ['d1', 'd2', 'd3']) assert.ok(s.journal.includes(`${d}:setClusterState:shutdown`));
  });

  test('a process that cannot be stopped: the others still stop and the error lists it', async () => {
    const plan = threeHostPlan();
    const s = setup({ plan, snapshot: { plan, state: 'running', secrets: {}} });
    const host = plan.processes.find((p) => p.id === 'dbserver-2')!.dispatcher;
    s.node(host).failures.push({ method: 'stopProcess', process: 'dbserver-2' });
    await assert.rejects(s.orchestrator.shutdown(fakeOp()), /shutdown incomplete:\s+dbserver-2 on d\d/);
    assert.equal(s.journal.filter((e) => e.includes(':stopProcess:agent')).length, 3);
  });
});
