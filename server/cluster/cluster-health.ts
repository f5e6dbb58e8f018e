/**
 * Cluster-level health per engine and role, beyond each process's own readiness probe: the gate between
 * the roles of a launch and after every process of a rolling restart. server/cluster/setup.ts gives the
 * real one (pg-ha: etcd leader, Patroni roles and streaming, HAProxy routing); fast tests fake it.
 */
import type { Plan, PlanProcess, Role } from '../../api/plan.js';

/** Cluster-level health of a role (beyond each process's own readiness probe). */
export interface ClusterHealth {
  check(plan: Plan, role: Role, processes: PlanProcess[], secrets: Record<string, string>): Promise<{ ok: boolean; detail: string }>;
  /** The agency's current leader (process id), so that it can be stopped last. */
  agencyLeader?(plan: Plan): Promise<string | undefined>;
}
