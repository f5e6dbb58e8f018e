/**
 * A running dispatcher takes the next plan version of a scale operation (server/cluster/node-plan-update.ts;
 * docs/DESIGN.md, "Scaling"): only from the version it stores (409 otherwise), only added or removed
 * dispatchers and processes (400 otherwise), the guard re-rendered before the plan is stored (and back when
 * storing fails), with the cluster's number. An intermediate version may have an even agency; a proposal may not.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { DispatcherError } from '../../api/errors.js';
import type { Plan } from '../../api/plan.js';
import type { PlanVersion } from '../../api/plan-version.js';
import { planHash } from '../../server/core/plan-version.js';
import { STORED_PLAN, validatePlan } from '../../server/core/validate-plan.js';
import { defaultEngineCatalog } from '../../server/engines/loader.js';
import { updateNodePlan } from '../../server/cluster/node-plan-update.js';
import type { ClusterSnapshot } from '../../server/cluster/store.js';
import { threeHostPlan } from '../helpers/fake-cluster.js';

/** The plan with a fourth agent on d3 (ports 10 above agent-3's): an intermediate version of 3 → 5. */
function withFourthAgent(plan: Plan): Plan {
  const p = structuredClone(plan);
  const a = p.processes.find((x) => x.role === 'agent' && x.dispatcher === 'd3')!;
  p.processes.push({ ...structuredClone(a), id: 'agent-x', dataDir: `${p.dataRoot}/agent-x`, ports: a.ports.map((x) => ({ ...x, port: x.port + 10 })) });
  return p;
}

function node(plan: Plan, number = 4) {
  let snap: ClusterSnapshot = { plan, state: 'running', secrets: {} };
  let version: PlanVersion = { number, hash: planHash(plan) };
  const journal: string[] = [];
  let failSave = false;
  return {
    journal,
    failSaveOnce: () => (failSave = true),
    version: () => version,
    deps: {
      id: 'd3',
      store: {
        get: () => snap,
        version: () => version,
        save: async (s: ClusterSnapshot, opts: { versionNumber?: number } = {}) => {
          if (failSave) {
            failSave = false;
            throw new Error('disk full (fake)');
          }
          journal.push(`save ${opts.versionNumber} ${s.plan.processes.length}`);
          snap = s;
          version = { number: opts.versionNumber!, hash: planHash(s.plan) };
        },
      },
      guard: {
        apply: async (p: Plan) => {
          journal.push(`guard ${p.processes.length}`);
          return { backend: 'none', inSync: true, driftRepairs: 0, warnings: [] };
        },
      },
    },
  };
}

describe('a node takes the next plan version', () => {
  test('from the version it stores: guard first, then the plan with the cluster number; an even agency is fine in between', async () => {
    const plan = threeHostPlan();
    const n = node(plan);
    const next = withFourthAgent(plan);
    await updateNodePlan(n.deps, { plan: next, base: n.version(), number: 5 });
    assert.deepEqual(n.journal, [`guard ${next.processes.length}`, `save 5 ${next.processes.length}`]);
    assert.deepEqual(n.version(), { number: 5, hash: planHash(next) });
    // The same call again (its answer lost): nothing changes.
    await updateNodePlan(n.deps, { plan: next, base: { number: 4, hash: planHash(plan) }, number: 5 });
    assert.equal(n.journal.length, 2);
  });

  test('another base version is a 409; nothing is applied', async () => {
    const plan = threeHostPlan();
    const n = node(plan);
    await assert.rejects(updateNodePlan(n.deps, { plan: withFourthAgent(plan), base: { number: 3, hash: planHash(plan) }, number: 5 }), (e: DispatcherError) => e.status === 409);
    assert.deepEqual(n.journal, []);
  });

  test('a changed port, binary or firewall policy is a 400 listing each; nothing is applied', async () => {
    const plan = threeHostPlan();
    const n = node(plan);
    const bad = withFourthAgent(plan);
    bad.processes[0].ports[0].port += 100;
    bad.firewall = { ...bad.firewall, clientSources: ['10.9.9.0/24'] };
    await assert.rejects(updateNodePlan(n.deps, { plan: bad, base: n.version(), number: 5 }), (e: DispatcherError) => e.status === 400 && e.problems.length === 2 && e.problems.some((p) => p.path === 'firewall'));
    assert.deepEqual(n.journal, []);
  });

  test('storing fails: the guard goes back to the stored plan', async () => {
    const plan = threeHostPlan();
    const n = node(plan);
    n.failSaveOnce();
    const next = withFourthAgent(plan);
    await assert.rejects(updateNodePlan(n.deps, { plan: next, base: n.version(), number: 5 }), /disk full/);
    assert.deepEqual(n.journal, [`guard ${next.processes.length}`, `guard ${plan.processes.length}`]);
    assert.deepEqual(n.version(), { number: 4, hash: planHash(plan) });
  });

  test('an even agency: refused as a proposal, accepted as a stored intermediate version', () => {
    const even = withFourthAgent(threeHostPlan());
    assert.ok(validatePlan(even, defaultEngineCatalog()).some((p) => /agency size 4 is even/.test(p.message)));
    assert.deepEqual(validatePlan(even, defaultEngineCatalog(), STORED_PLAN), []);
  });
});
