/**
 * Fakes the scale executor's unit tests share (test/unit/scale-executor.test.ts, scale-in-executor.test.ts):
 * a plan grown by a fourth host, and a node that keeps the plan versions it stores and checks the base as
 * the real node route does (server/cluster/node-plan-update.ts).
 */
import { DispatcherError } from '../../api/errors.js';
import type { Plan } from '../../api/plan.js';
import type { PlanVersion } from '../../api/plan-version.js';
import type { NodeUpdatePlan } from '../../api/rest.js';
import { planHash } from '../../server/core/plan-version.js';
import { FakeNode } from './fake-cluster.js';

/** `base` grown by d4 with a DB server and a coordinator (copies of the first ones, on d4's address; the agency stays as it is). */
export function grownByD4(base: Plan): Plan {
  const p = structuredClone(base);
  p.dispatchers.push({ ...p.dispatchers[0], id: 'd4', endpoint: 'https://10.0.0.4:8528', addresses: ['10.0.0.4'] });
  for (const role of ['dbserver', 'coordinator'] as const) {
    const src = p.processes.find((x) => x.role === role)!;
    p.processes.push({ ...structuredClone(src), id: `${role}-d4`, dispatcher: 'd4', address: '10.0.0.4', dataDir: `${src.dataDir}-d4` });
  }
  return p;
}

/** A node that keeps the plan versions it stores (updatePlan checks the base as the real one does). */
export class VersionedNode extends FakeNode {
  version: PlanVersion | undefined;
  plans: Plan[] = [];
  override async updatePlan(payload: NodeUpdatePlan) {
    await super.updatePlan(payload);
    if (!this.version || this.version.number !== payload.base.number || this.version.hash !== payload.base.hash) throw new DispatcherError('conflict', `${this.id} stores another version`);
    this.version = { number: payload.number, hash: planHash(payload.plan) };
    this.plans.push(payload.plan);
  }
}
