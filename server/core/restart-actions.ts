/**
 * The engine-specific facts and actions a rolling restart needs, as a contract: pg-ha implements it
 * (server/engines/pg-ha/restart-actions.ts), fast tests fake it. Only the interface lives here (server/core
 * imports only api/).
 */
import type { Plan } from '../../api/plan.js';

/** Engine-specific facts and actions a rolling restart needs (pg-ha's in production; fakes in tests). */
export interface RestartActions {
  agencyLeader(plan: Plan): Promise<string | undefined>;
  dbLeader(plan: Plan, secrets: Record<string, string>): Promise<string | undefined>;
  /** Before the switchover and outside any pause: work that shortens it (pg-ha: a CHECKPOINT on the leader). */
  prepareSwitchover?(plan: Plan, secrets: Record<string, string>, leader: string): Promise<void>;
  /** Moves DB leadership from `leader` to a healthy, caught-up replica (preferring `prefer`); returns the new leader. */
  switchover(plan: Plan, secrets: Record<string, string>, leader: string, prefer: string[], timeoutMs: number): Promise<string>;
  /**
   * The connection-layer pause (docs/DESIGN.md, "Rolling restart without failed statements"): hold new
   * transactions on these coordinators once the running ones finished (rejects if they do not within
   * timeoutMs); resume them; wait until each routes to `leader` only (or to exactly one primary). Engines
   * without a pooler leave them out.
   */
  pauseCoordinators?(plan: Plan, secrets: Record<string, string>, coordinators: string[], timeoutMs: number): Promise<void>;
  resumeCoordinators?(plan: Plan, secrets: Record<string, string>, coordinators: string[]): Promise<void>;
  waitCoordinatorsRouting?(plan: Plan, coordinators: string[], leader: string | undefined, timeoutMs: number): Promise<void>;
  /**
   * Holds the DB servers' automatic failover (pg-ha: Patroni's maintenance mode) and resolves once every
   * DB server that answers reports it held; releases it again (a release of a failover not held changes
   * nothing). Around the agency's restart: a DB leader then keeps its role even when an agent's shutdown
   * makes its lock update fail (docs/DESIGN.md, "Rolling restart without failed statements").
   */
  holdFailover?(plan: Plan, secrets: Record<string, string>, timeoutMs: number): Promise<void>;
  releaseFailover?(plan: Plan, secrets: Record<string, string>, timeoutMs: number): Promise<void>;
  /** Actions this engine implements (others make the operation refuse before anything restarts). */
  supports(action: string): boolean;
}
