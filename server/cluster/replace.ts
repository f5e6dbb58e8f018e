/**
 * Replace a dead machine (docs/DESIGN.md, "Scaling"): POST /v1/cluster/replace turns "DEAD is gone, NEW
 * takes its place" into the plan change of server/core/replace-plan.ts and hands it to the scale executor
 * (scale.ts) — the same precheck (a change that would break the agency's quorum, or leave no live DB
 * server, is a 409 naming why; a bad replacement a 400 naming each field), the same lock, the same steps.
 */
import { DispatcherError } from '../../api/errors.js';
import { ReplaceRequestSchema, type Credential, type OperationView, type ReplaceRequest } from '../../api/rest.js';
import { replacePlan } from '../core/replace-plan.js';
import type { ScaleService } from './scale.js';
import type { ClusterStore } from './store.js';

export async function startReplace(
  deps: { scales: Pick<ScaleService, 'start'>; store: Pick<ClusterStore, 'get'>; self: string },
  input: ReplaceRequest & { operatorCredential?: Credential },
): Promise<OperationView> {
  const { operatorCredential, ...body } = input;
  const req = ReplaceRequestSchema.parse(body);
  const snap = deps.store.get();
  if (!snap || snap.state === 'cleaned') throw new DispatcherError('not_found', `dispatcher ${deps.self} has no cluster plan; launch one first`);
  if (req.dead === deps.self) throw new DispatcherError('bad_request', `${deps.self} is the dispatcher you are talking to, so it is not dead: replace it through another dispatcher`);
  const plan = replacePlan(snap.plan, req.dead, { ...req.with, addresses: [...req.with.addresses] });
  return deps.scales.start({
    plan,
    ...(req.baseVersion ? { baseVersion: req.baseVersion } : {}),
    peerCredentials: req.peerCredentials,
    readyTimeoutMs: req.readyTimeoutMs,
    ...(operatorCredential ? { operatorCredential } : {}),
  });
}
