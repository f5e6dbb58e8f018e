/**
 * Commit-confirmed firewall change on every dispatcher (docs/FIREWALL.md, "Commit-confirmed"): the new
 * rules go in at once and roll back by themselves — a watchdog process per dispatcher, independent of the
 * daemons — unless confirmed in time. One token names the change everywhere; confirm, extend and cancel
 * must present it. An operator who cut themselves off cannot confirm, so they get their access back.
 * The cluster-wide lock and the base-version check around a change are in firewall-change.ts.
 */
import { randomBytes } from 'node:crypto';
import { DispatcherError, type Problem } from '../../api/errors.js';
import type { FirewallPolicy, Plan } from '../../api/plan.js';
import { STORED_PLAN, type ValidateOptions } from '../core/validate-plan.js';
import { combined, settleAll } from './fan-out.js';
import type { PlanNodes } from './plan-nodes.js';
import type { GuardStatusView } from '../../api/rest.js';

export type FirewallSettlement = 'confirm' | 'extend' | 'cancel';

const DONE: Record<FirewallSettlement, string> = { confirm: 'confirmed', extend: 'extended', cancel: 'cancelled' };

/** The earliest deadline among the dispatchers' pending changes. */
function earliestDeadline(guards: Map<string, GuardStatusView>): string | undefined {
  return [...guards.values()].map((g) => g.pendingConfirmUntil).filter(Boolean).sort()[0];
}

export class ClusterFirewall {
  constructor(
    private readonly nodes: PlanNodes,
    private readonly validate: (plan: Plan, opts?: ValidateOptions) => Problem[],
  ) {}

  async change(firewall: FirewallPolicy, confirmWithinSeconds: number): Promise<Record<string, unknown>> {
    return this.nodes.withStored(async ({ plan, nodes }) => {
      if (firewall.backend !== plan.firewall.backend) {
        throw new DispatcherError('bad_request', `a firewall change cannot switch the backend (${plan.firewall.backend} → ${firewall.backend}); shut down, clean up and launch again for that`);
      }
      const problems = this.validate({ ...plan, firewall }, STORED_PLAN);
      if (problems.length) throw new DispatcherError('validation_failed', 'the new firewall policy is not valid', { problems });
      const token = randomBytes(16).toString('hex');
      const res = await settleAll(nodes, (n) => n.changeFirewall(firewall, confirmWithinSeconds, token));
      if (res.failed.length) throw combined('operation_failed', 'firewall change failed (hosts that took it roll back by themselves)', res.failed);
      return { cluster: plan.name, confirmBy: earliestDeadline(res.values), token, guards: Object.fromEntries(res.values) };
    });
  }

  /** confirm / extend / cancel of the pending change on every dispatcher. */
  async settle(action: FirewallSettlement, token: string, confirmWithinSeconds = 0): Promise<Record<string, unknown>> {
    return this.nodes.withStored(async ({ plan, nodes }) => {
      const res = await settleAll(nodes, (n) =>
        action === 'confirm' ? n.confirmFirewall(token) : action === 'extend' ? n.extendFirewall(token, confirmWithinSeconds) : n.cancelFirewall(token),
      );
      if (res.failed.length) throw combined('operation_failed', `firewall change not ${DONE[action]} everywhere`, res.failed);
      const confirmBy = earliestDeadline(res.values);
      return { cluster: plan.name, [DONE[action]]: true, ...(confirmBy ? { confirmBy } : {}), guards: Object.fromEntries(res.values) };
    });
  }
}
