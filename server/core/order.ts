/**
 * Pure ordering of cluster processes: launch goes agency → DB servers → coordinators, each group started
 * together and waited for before the next; shutdown and rollback go the other way.
 */
import { ROLE_ORDER, type Plan, type PlanProcess, type Role } from '../../api/plan.js';

export interface ProcessGroup {
  role: Role;
  processes: PlanProcess[];
}

/** Groups of processes in launch order; roles without processes are left out. */
export function launchGroups(plan: Plan): ProcessGroup[] {
  return ROLE_ORDER.map((role) => ({ role, processes: plan.processes.filter((p) => p.role === role) })).filter(
    (g) => g.processes.length > 0,
  );
}

/** Groups in shutdown order: coordinators first, the agency last (so DB servers can still reach it). */
export function shutdownGroups(plan: Plan): ProcessGroup[] {
  return launchGroups(plan).reverse();
}

/** The processes of one dispatcher, in launch order. */
export function processesOn(plan: Plan, dispatcherId: string): PlanProcess[] {
  return launchGroups(plan).flatMap((g) => g.processes.filter((p) => p.dispatcher === dispatcherId));
}
