/**
 * The pure scale planner (server/core/scale-plan.ts; docs/DESIGN.md, "Scaling"): step order for scale out,
 * scale in and replace, quorum refusals, and changes that are not scale changes. Literal plans (the
 * firewall golden plan and variants): no engine, no I/O.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Plan } from '../../api/plan.js';
import type { ScaleStep } from '../../api/plan-version.js';
import { planScale, quorum } from '../../server/core/scale-plan.js';
import { guardPlan } from '../golden/firewall/plan.js';

type Proc = Plan['processes'][number];

function host(plan: Plan, id: string, n: number): void {
  plan.dispatchers.push({ ...plan.dispatchers[0], id, endpoint: `https://10.0.0.${n}:8528`, addresses: [`10.0.0.${n}`, `fd00:10::${n}`] });
}

function proc(id: string, role: Proc['role'], dispatcher: string, n: number): Proc {
  const ports: Proc['ports'] =
    role === 'agent'
      ? [{ name: 'client', port: 2379, exposure: 'cluster' }, { name: 'peer', port: 2380, exposure: 'cluster' }]
      : role === 'dbserver'
        ? [{ name: 'postgres', port: 5432, exposure: 'cluster' }, { name: 'rest', port: 8008, exposure: 'cluster' }]
        : [{ name: 'rw', port: 5000, exposure: 'public' }];
  return { id, role, dispatcher, address: `10.0.0.${n}`, ports, dataDir: `clusters/demo/${id}`, args: [] };
}

const kinds = (steps: ScaleStep[]) => steps.map((s) => ('process' in s ? `${s.kind} ${s.process}` : 'host' in s ? `${s.kind} ${s.host}` : s.kind));

/** d1..d3 with agent-1..3, db-1..3, coord-1 (the golden plan), grown by d4 (and d5) as a test asks. */
function grown(f: (p: Plan) => void): Plan {
  const p = structuredClone(guardPlan);
  f(p);
  return p;
}

describe('scale planner', () => {
  test('quorum is a strict majority', () => {
    assert.deepEqual([1, 2, 3, 4, 5].map(quorum), [1, 2, 2, 3, 3]);
  });

  test('no change: no steps, no problems', () => {
    assert.deepEqual(planScale(guardPlan, structuredClone(guardPlan)), { steps: [], problems: [] });
  });

  test('scale out: adopt the new host, widen every firewall (new addresses) first, then start, then coordinators learn the DB server', () => {
    const next = grown((p) => {
      host(p, 'd4', 4);
      p.processes.push(proc('db-4', 'dbserver', 'd4', 4));
    });
    const r = planScale(guardPlan, next);
    assert.deepEqual(r.problems, []);
    assert.deepEqual(kinds(r.steps), ['adopt-dispatcher d4', 'widen-firewall', 'add-dbserver db-4', 'reconfigure-coordinators']);
    assert.deepEqual(r.steps[1], { kind: 'widen-firewall', hosts: ['d1', 'd2', 'd3', 'd4'], addresses: ['10.0.0.4', 'fd00:10::4'] });
    assert.deepEqual(r.steps[3], { kind: 'reconfigure-coordinators', processes: ['coord-1'] });
  });

  test('scale out of the agency: one member at a time, after the firewall', () => {
    const next = grown((p) => {
      host(p, 'd4', 4);
      host(p, 'd5', 5);
      p.processes.push(proc('agent-4', 'agent', 'd4', 4), proc('agent-5', 'agent', 'd5', 5), proc('coord-2', 'coordinator', 'd4', 4));
    });
    assert.deepEqual(kinds(planScale(guardPlan, next).steps), ['adopt-dispatcher d4', 'adopt-dispatcher d5', 'widen-firewall', 'add-agent agent-4', 'add-agent agent-5', 'add-coordinator coord-2']);
  });

  test('scale in of a whole host: leader moved away, DB server removed, coordinators updated, agent removed, firewall shrinks last', () => {
    const next = grown((p) => {
      p.dispatchers = p.dispatchers.filter((d) => d.id !== 'd3');
      p.processes = p.processes.filter((x) => x.dispatcher !== 'd3');
    });
    const r = planScale(guardPlan, next);
    assert.deepEqual(r.problems, []);
    assert.deepEqual(kinds(r.steps), ['switchover-away', 'remove-dbserver db-3', 'reconfigure-coordinators', 'remove-agent agent-3', 'shrink-firewall', 'release-dispatcher d3']);
    assert.deepEqual(r.steps.at(-2), { kind: 'shrink-firewall', hosts: ['d1', 'd2'], addresses: ['10.0.0.3', 'fd00:10::3'] });
  });

  test('an address another host keeps (or already had) is neither removed from nor added to the sets', () => {
    const shared = grown((p) => {
      p.dispatchers.push({ ...p.dispatchers[0], id: 'd4', endpoint: 'https://10.0.0.1:8529', addresses: ['10.0.0.1', '10.0.0.44'] });
      p.processes.push(proc('db-4', 'dbserver', 'd4', 1));
    });
    const out = planScale(guardPlan, shared);
    assert.deepEqual(out.steps.find((s) => s.kind === 'widen-firewall'), { kind: 'widen-firewall', hosts: ['d1', 'd2', 'd3', 'd4'], addresses: ['10.0.0.44'] });
    const back = planScale(shared, guardPlan);
    assert.deepEqual(back.steps.find((s) => s.kind === 'shrink-firewall'), { kind: 'shrink-firewall', hosts: ['d1', 'd2', 'd3'], addresses: ['10.0.0.44'] });
    const sameAddress = grown((p) => {
      p.dispatchers.push({ ...p.dispatchers[0], id: 'd4', endpoint: 'https://10.0.0.1:8529' });
      p.processes.push(proc('db-4', 'dbserver', 'd4', 1));
    });
    assert.ok(!planScale(guardPlan, sameAddress).steps.some((s) => s.kind === 'widen-firewall'));
  });

  test('scale in that would lose quorum is refused with the reason (a member is already down)', () => {
    const next = grown((p) => (p.processes = p.processes.filter((x) => x.id !== 'agent-3')));
    const r = planScale(guardPlan, next, { downProcesses: new Set(['agent-2']) });
    assert.deepEqual(r.steps, []);
    assert.equal(r.problems.length, 1);
    assert.match(r.problems[0].message, /removing agent agent-3 would leave the agency with 1 live of 2 members \(a majority needs 2\).*lose quorum/);
    // All members up: the same removal is fine.
    assert.deepEqual(planScale(guardPlan, next).problems, []);
  });

  test('adding a member while one is down and stays is refused (etcd adds only while every member is connected)', () => {
    const next = grown((p) => {
      host(p, 'd4', 4);
      p.processes.push(proc('agent-4', 'agent', 'd4', 4));
    });
    const r = planScale(guardPlan, next, { downProcesses: new Set(['agent-3']) });
    assert.match(r.problems[0]?.message ?? '', /adding agent agent-4 needs every agency member up \(2 live of 3\).*remove the dead member in the same change/);
  });

  test('replace a dead host: its processes leave first, the new agent joins, no switchover from the dead DB server, no release of the dead host', () => {
    const next = grown((p) => {
      p.dispatchers = p.dispatchers.filter((d) => d.id !== 'd3');
      p.processes = p.processes.filter((x) => x.dispatcher !== 'd3');
      host(p, 'd4', 4);
      p.processes.push(proc('agent-4', 'agent', 'd4', 4), proc('db-4', 'dbserver', 'd4', 4));
    });
    const r = planScale(guardPlan, next, { downHosts: new Set(['d3']) });
    assert.deepEqual(r.problems, []);
    // The dead host's processes leave the plan first: nothing after waits for them or calls their host.
    assert.deepEqual(kinds(r.steps), [
      'remove-dead-agent agent-3',
      'remove-dbserver db-3',
      'adopt-dispatcher d4',
      'widen-firewall',
      'add-agent agent-4',
      'add-dbserver db-4',
      'reconfigure-coordinators',
      'shrink-firewall',
    ]);
  });

  test('an agency that has lost quorum allows no scale change at all, not even removing a dead member', () => {
    const next = grown((p) => (p.processes = p.processes.filter((x) => x.id !== 'agent-3')));
    const r = planScale(guardPlan, next, { downProcesses: new Set(['agent-2', 'agent-3']) });
    assert.deepEqual(r.steps, []);
    assert.match(r.problems[0].message, /lost quorum \(1 live of 3 members, a majority needs 2\)/);
  });

  test('removing every live DB server is refused', () => {
    const next = grown((p) => (p.processes = p.processes.filter((x) => x.id !== 'db-1')));
    const r = planScale(guardPlan, next, { downProcesses: new Set(['db-2', 'db-3']) });
    assert.match(r.problems.map((x) => x.message).join('\n'), /no live DB server/);
  });

  test('what stays must stay the same: each other change is named with the operation that does it', () => {
    const next = grown((p) => {
      p.processes[0].ports[0].port = 2479;
      p.firewall.clientSources = ['198.51.100.0/24'];
      p.binaries = { etcd: '/opt/etcd/etcd' };
      p.dispatchers[1].endpoint = 'https://10.0.0.2:9999';
      host(p, 'd4', 4);
      p.processes.push(proc('db-4', 'dbserver', 'd4', 4));
    });
    const r = planScale(guardPlan, next);
    assert.deepEqual(r.steps, []);
    assert.deepEqual(
      r.problems.map((x) => x.path),
      ['binaries', 'firewall', 'dispatchers[1]', 'processes[0]'],
    );
    assert.match(r.problems[0].message, /restart --upgrade/);
    assert.match(r.problems[1].message, /firewall apply/);
    assert.match(r.problems[3].message, /agent-1 stays but changes/);
  });
});
