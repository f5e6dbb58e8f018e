/**
 * A firewall change of the running cluster (POST /v1/cluster/firewall) under the cluster-wide operation
 * lock: its base version is compared with the running plan's only once the lock is held, so no other
 * operation (a scale step, an upgrade, another firewall change through another dispatcher) can change the
 * plan between the check and the change (docs/DESIGN.md, "Plan versions"). The change itself is short
 * (every guard takes the new rules with a confirm deadline): the lock is freed when it returns; the
 * confirmation, on a new connection, settles what is pending.
 */
import type { PlanVersion } from '../../api/plan-version.js';
import type { FirewallPolicy } from '../../api/plan.js';
import { assertBaseVersion } from '../core/plan-version.js';
import type { OperationStore } from './operations.js';
import type { ClusterStore } from './store.js';

export interface FirewallChangeDeps {
  operations: Pick<OperationStore, 'exclusive'>;
  store: Pick<ClusterStore, 'get' | 'version'>;
  /** Applies the policy on every dispatcher with a confirm deadline (ClusterFirewall.change in cluster-firewall.ts). */
  apply(firewall: FirewallPolicy, confirmWithinSeconds: number): Promise<Record<string, unknown>>;
}

export async function changeFirewallLocked(
  deps: FirewallChangeDeps,
  change: { firewall: FirewallPolicy; confirmWithinSeconds: number; baseVersion?: PlanVersion },
): Promise<Record<string, unknown>> {
  const cluster = deps.store.get()?.plan.name;
  // No cluster: nothing to lock; the change answers its own 404.
  if (cluster === undefined) return deps.apply(change.firewall, change.confirmWithinSeconds);
  return deps.operations.exclusive('firewall change', cluster, async () => {
    assertBaseVersion(deps.store.version(), change.baseVersion);
    return deps.apply(change.firewall, change.confirmWithinSeconds);
  });
}
