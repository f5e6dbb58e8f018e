/**
 * A coordinator's companion (pg-ha: PgBouncer, supervisor id "<coordinator>.pooler") in the cluster view
 * (GET /v1/cluster), in `dispatch status` and in its health verdict: it shows under its plan process, from
 * the dispatcher that runs it, with its own state. The live view is checked on a real cluster in
 * test/cluster/pause-restart.test.ts.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { NodeStatusView } from '../../api/rest.js';
import type { ProcessStatus } from '../../api/process-status.js';
import { clusterViewOf } from '../../server/cluster/cluster-view.js';
import type { Settled } from '../../server/cluster/fan-out.js';
import { planFromSpec } from '../../launcher/planner.js';
import { isHealthy, statusText } from '../../launcher/status-view.js';

const FP = Array(32).fill('AB').join(':');
const plan = planFromSpec({
  name: 'comp',
  dispatchers: [
    { id: 'd1', endpoint: 'https://10.0.0.11:8528', fingerprint: FP, addresses: ['10.0.0.11'] },
    { id: 'd2', endpoint: 'https://10.0.0.12:8528', fingerprint: FP, addresses: ['10.0.0.12'] },
  ],
  agents: 1,
  dbservers: 2,
  coordinators: 2,
});
const coordinators = plan.processes.filter((p) => p.role === 'coordinator');

function status(id: string, state: ProcessStatus['state'], pid: number): ProcessStatus {
  return { id, role: 'coordinator', state, pid, restarts: 0, command: ['x'], ...(state === 'ready' ? { readySince: '2026-11-27T17:00:00.000Z' } : {}) };
}

/** Every plan process ready on its dispatcher; companions as given per dispatcher. */
function answers(companions: Record<string, ProcessStatus[]>, unreachable: string[] = []): Settled<NodeStatusView> {
  const values = new Map<string, NodeStatusView>();
  for (const d of plan.dispatchers) {
    if (unreachable.includes(d.id)) continue;
    const processes = plan.processes.filter((p) => p.dispatcher === d.id).map((p, i) => ({ ...status(p.id, 'ready', 100 + i), role: p.role }));
    values.set(d.id, { dispatcher: d.id, cluster: plan.name, clusterState: 'running', processes, ...(companions[d.id] ? { companions: companions[d.id] } : {}) });
  }
  return { values, ok: [...values.keys()], failed: [], ms: new Map() };
}

describe("a coordinator's companion in the cluster view and `dispatch status`", () => {
  const [c1, c2] = coordinators;
  const pooler1 = status(`${c1.id}.pooler`, 'ready', 4242);
  const pooler2 = status(`${c2.id}.pooler`, 'backoff', 4343);

  test('each companion shows under its own plan process, with its state and pid', () => {
    assert.notEqual(c1.dispatcher, c2.dispatcher, 'the planner spreads coordinators');
    const view = clusterViewOf(plan, 'running', answers({ [c1.dispatcher]: [pooler1], [c2.dispatcher]: [pooler2] }));
    const v1 = view.processes.find((p) => p.id === c1.id)!;
    const v2 = view.processes.find((p) => p.id === c2.id)!;
    assert.deepEqual(v1.companions, [{ id: `${c1.id}.pooler`, name: 'pooler', state: 'ready', pid: 4242, readySince: '2026-11-27T17:00:00.000Z', restarts: 0 }]);
    assert.deepEqual(v2.companions?.map((c) => [c.id, c.state, c.pid]), [[`${c2.id}.pooler`, 'backoff', 4343]]);
    // No other process gains a companion.
    assert.ok(view.processes.filter((p) => p.role !== 'coordinator').every((p) => p.companions === undefined));
  });

  test('`dispatch status` prints a row per companion, and a companion that is not ready makes the cluster unhealthy', () => {
    const healthy = clusterViewOf(plan, 'running', answers(Object.fromEntries(coordinators.map((c) => [c.dispatcher, coordinators.filter((x) => x.dispatcher === c.dispatcher).map((x) => status(`${x.id}.pooler`, 'ready', 1))]))));
    const text = statusText(healthy, Date.parse('2026-11-28T00:00:00Z'));
    for (const c of coordinators) assert.match(text, new RegExp(`^${c.id}\\.pooler +coordinator pooler +${c.dispatcher} +ready `, 'm'));
    assert.equal(isHealthy(healthy), true);
    const broken = clusterViewOf(plan, 'running', answers({ [c2.dispatcher]: [pooler2] }));
    assert.match(statusText(broken), new RegExp(`^${c2.id}\\.pooler +coordinator pooler +${c2.dispatcher} +backoff `, 'm'));
    assert.equal(isHealthy(broken), false);
  });

  test("an unreachable dispatcher's companions are not made up", () => {
    const view = clusterViewOf(plan, 'running', answers({ [c1.dispatcher]: [pooler1] }, [c1.dispatcher]));
    assert.equal(view.processes.find((p) => p.id === c1.id)!.companions, undefined);
    assert.equal(view.processes.find((p) => p.id === c1.id)!.state, 'unknown (dispatcher unreachable)');
  });
});
