/**
 * A running dispatcher takes the next plan version of a scale operation (docs/DESIGN.md, "Scaling"): the
 * node side of POST /v1/node/plan/update, called by the dispatcher that runs the operation.
 */
import { DispatcherError } from '../../api/errors.js';
import type { NodeUpdatePlan } from '../../api/rest.js';
import { assertBaseVersion, planHash } from '../core/plan-version.js';
import { scaleChangeProblems } from '../core/scale-plan.js';
import { assertValidPlan, STORED_PLAN } from '../core/validate-plan.js';
import { defaultEngineCatalog } from '../engines/loader.js';
import type { NodeGuard } from './node-api.js';
import type { ClusterStore } from './store.js';

export async function updateNodePlan(deps: { id: string; store: Pick<ClusterStore, 'get' | 'save' | 'version'>; guard: Pick<NodeGuard, 'apply'> }, payload: NodeUpdatePlan): Promise<void> {
  const { id, store, guard } = deps;
  // An intermediate version may have an even agency (one agent added at a time): STORED_PLAN.
  const plan = assertValidPlan(payload.plan, defaultEngineCatalog(), STORED_PLAN);
  const snap = store.get();
  if (!snap) throw new DispatcherError('not_found', `dispatcher ${id} has no cluster plan`, { details: { host: id } });
  if (snap.state === 'cleaned') throw new DispatcherError('conflict', `cluster ${snap.plan.name} was cleaned up on ${id}`, { details: { host: id } });
  const stored = store.version();
  // The same version again (a retried call whose answer was lost): stored already.
  if (stored.hash === planHash(plan) && stored.number === payload.number) return;
  // Computed against another version: someone changed the plan meanwhile (docs/DESIGN.md, "Plan versions").
  assertBaseVersion(stored, payload.base);
  if (!plan.dispatchers.some((d) => d.id === id)) {
    throw new DispatcherError('bad_request', `the plan ${plan.name} does not name this dispatcher (${id}); a released dispatcher forgets its plan instead`, { details: { host: id } });
  }
  // A plan version of a running cluster changes dispatchers and processes only; ports, policy and
  // binaries have their own operations (server/core/scale-plan.ts).
  const problems = scaleChangeProblems(snap.plan, plan);
  if (problems.length) throw new DispatcherError('validation_failed', `dispatcher ${id} takes only added or removed dispatchers and processes from a new plan version`, { problems, details: { host: id } });
  // The guard first, from the new plan, in one transaction (nft replaces its whole table: docs/FIREWALL.md):
  // no moment is open. If storing the plan then fails, the guard goes back to the stored plan's rules.
  await guard.apply(plan);
  try {
    await store.save({ ...snap, plan }, { versionNumber: payload.number });
  } catch (e) {
    await guard.apply(snap.plan).catch(() => {});
    throw e;
  }
}
