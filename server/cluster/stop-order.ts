/**
 * Stopping a cluster's processes in shutdown order, for a shutdown and for the rollback of a failed
 * launch (server/core/order.ts decides the groups). Every failure is collected, none stops the others.
 */
import type { Plan, PlanProcess } from '../../api/plan.js';
import { shutdownGroups } from '../core/order.js';
import type { Nodes } from './fan-out.js';
import type { OperationHandle } from './operations.js';
import type { ClusterHealth } from './cluster-health.js';

/**
 * Stops processes in shutdown order (coordinators, DB servers, agency), each role's processes together —
 * except the agency: followers first, the leader last (stopping every etcd member at once makes the last
 * one wait ~7 s for its peers; docs/DESIGN.md, "Processes"). Returns what could not be stopped.
 */
export async function stopInOrder(health: Pick<ClusterHealth, 'agencyLeader'>, op: OperationHandle, plan: Plan, nodes: Nodes, include: (p: PlanProcess) => boolean, step: string): Promise<string[]> {
  const failures: string[] = [];
  for (const group of shutdownGroups(plan)) {
    const procs = group.processes.filter(include);
    if (!procs.length) continue;
    // The cluster-wide operation lock lives in the agency: free it while the agency still answers.
    if (group.role === 'agent') await op.unlockCluster();
    op.event({ level: 'info', step, message: `stopping ${procs.length} ${group.role}(s)` });
    const leader = group.role === 'agent' ? await health.agencyLeader?.(plan).catch(() => undefined) : undefined;
    const waves = leader ? [procs.filter((p) => p.id !== leader), procs.filter((p) => p.id === leader)] : [procs];
    for (const wave of waves) {
      await Promise.all(
        wave.map(async (p) => {
          try {
            await nodes.get(p.dispatcher)!.stopProcess(p.id);
            op.event({ level: 'info', step, host: p.dispatcher, process: p.id, message: `${p.id} stopped` });
          } catch (e) {
            failures.push(`${p.id} on ${p.dispatcher}: ${(e as Error).message}`);
            op.event({ level: 'error', step, host: p.dispatcher, process: p.id, message: `could not stop ${p.id}: ${(e as Error).message}` });
          }
        }),
      );
    }
  }
  return failures;
}
