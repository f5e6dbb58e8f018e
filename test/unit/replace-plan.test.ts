/**
 * Replacing a dead machine as a plan change (server/core/replace-plan.ts) and the steps the scale planner
 * makes of it (docs/DESIGN.md, "Scaling"); plus the pure choice of the DB server that takes over when the
 * leader goes (server/engines/pg-ha/patroni-members.ts). Literal plans, no I/O.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Plan } from '../../api/plan.js';
import type { ScaleStep } from '../../api/plan-version.js';
import { DispatcherError } from '../../api/errors.js';
import { replacePlan, successorId } from '../../server/core/replace-plan.js';
import { planScale } from '../../server/core/scale-plan.js';
import { validatePlan } from '../../server/core/validate-plan.js';
import { defaultEngineCatalog } from '../../server/engines/loader.js';
import { switchoverScope } from '../../server/engines/pg-ha/patroni-members.js';
import { guardPlan } from '../golden/firewall/plan.js';

const d4: Plan['dispatchers'][number] = { ...guardPlan.dispatchers[2], id: 'd4', endpoint: 'https://10.0.0.4:8528', addresses: ['10.0.0.4', 'fd00:10::4'] };
const kinds = (steps: ScaleStep[]) => steps.map((s) => ('process' in s ? `${s.kind} ${s.process}` : 'host' in s ? `${s.kind} ${s.host}` : s.kind));

describe('replacePlan', () => {
  test('the dead host\'s processes are re-created on the new host with new ids and data dirs, in their places', () => {
    const next = replacePlan(guardPlan, 'd3', d4);
    assert.deepEqual(next.dispatchers.map((d) => d.id), ['d1', 'd2', 'd4']);
    assert.deepEqual(next.processes.map((p) => p.id), ['agent-1', 'agent-2', 'agent-4', 'db-1', 'db-2', 'db-4', 'coord-1']);
    const agent = next.processes.find((p) => p.id === 'agent-4')!;
    assert.deepEqual(
      { dispatcher: agent.dispatcher, address: agent.address, dataDir: agent.dataDir, ports: agent.ports },
      { dispatcher: 'd4', address: '10.0.0.4', dataDir: 'clusters/demo/agent-4', ports: guardPlan.processes[2].ports },
    );
    // Everything else is the same object content; the running plan is not touched.
    assert.deepEqual(next.processes.filter((p) => p.dispatcher !== 'd4'), guardPlan.processes.filter((p) => p.dispatcher !== 'd3'));
    assert.equal(guardPlan.dispatchers.length, 3);
    assert.ok(guardPlan.processes.some((p) => p.id === 'agent-3'));
    // No problem the running plan did not have (the golden plan's coordinator ports are a firewall fixture's).
    assert.deepEqual(validatePlan(next, defaultEngineCatalog()), validatePlan(guardPlan, defaultEngineCatalog()));
  });

  test('a replaced dead host becomes: its dead processes leave first, then the new host, its agent and DB server (a replica), the coordinators once, the firewall everywhere', () => {
    const next = replacePlan(guardPlan, 'd3', d4);
    const r = planScale(guardPlan, next, { downHosts: new Set(['d3']) });
    assert.deepEqual(r.problems, []);
    // What is dead leaves the plan first (no step waits for it or calls its host), then the new host comes in.
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
    assert.deepEqual(r.steps[3], { kind: 'widen-firewall', hosts: ['d1', 'd2', 'd4'], addresses: ['10.0.0.4', 'fd00:10::4'] });
    assert.deepEqual(r.steps.at(-1), { kind: 'shrink-firewall', hosts: ['d1', 'd2', 'd4'], addresses: ['10.0.0.3', 'fd00:10::3'] });
    assert.ok(!r.steps.some((s) => s.kind === 'release-dispatcher' || s.kind === 'switchover-away'), 'a dead host is asked nothing; its DB server cannot lead');
  });

  test('replacing a host when a second agent is down too is refused: the agency has no majority', () => {
    const next = replacePlan(guardPlan, 'd3', d4);
    const r = planScale(guardPlan, next, { downHosts: new Set(['d3']), downProcesses: new Set(['agent-2']) });
    assert.deepEqual(r.steps, []);
    assert.match(r.problems.map((p) => p.message).join('\n'), /lost quorum \(1 live of 3 members/);
  });

  test('bad replacements are a 400 naming each problem', () => {
    const bad = (dead: string, w: Plan['dispatchers'][number]) => {
      try {
        replacePlan(guardPlan, dead, w);
      } catch (e) {
        assert.ok(e instanceof DispatcherError && e.status === 400);
        return e.problems.map((p) => p.path);
      }
      assert.fail('expected a refusal');
    };
    assert.deepEqual(bad('d9', d4), ['dead']);
    assert.deepEqual(bad('d3', { ...d4, id: 'd2' }), ['with.id']);
    assert.deepEqual(bad('d3', { ...d4, endpoint: guardPlan.dispatchers[0].endpoint }), ['with.endpoint']);
  });

  test('successor ids: the next free number of the same stem', () => {
    assert.equal(successorId(guardPlan, 'agent-3'), 'agent-4');
    assert.equal(successorId(guardPlan, 'db-1'), 'db-4');
    assert.equal(successorId(guardPlan, 'coord-1'), 'coord-2');
    assert.equal(successorId(guardPlan, 'coord-1', new Set(['coord-2'])), 'coord-3');
    assert.equal(successorId(guardPlan, 'solo'), 'solo-1');
  });
});

describe('switchover-away scope', () => {
  test('the switchover sees the leader and the DB servers that stay, never one that goes too', () => {
    const scope = switchoverScope(guardPlan, 'db-1', ['db-1', 'db-2']);
    assert.deepEqual(scope.processes.filter((p) => p.role === 'dbserver').map((p) => p.id), ['db-1', 'db-3']);
    assert.equal(scope.processes.filter((p) => p.role !== 'dbserver').length, guardPlan.processes.filter((p) => p.role !== 'dbserver').length);
  });
});
