/**
 * What the rolling-restart service (restart.ts) and its executor (restart-executor.ts) share: the
 * contracts a restart runs against (NodeApi, UpgradeNode, RestartActions, ClusterHealth), what it persists,
 * and how it finds the running cluster and its nodes. Fakes of these contracts drive the fast tests
 * (test/unit/rolling-restart.test.ts).
 */
import { DispatcherError } from '../../api/errors.js';
import { ROLE_ORDER, type Plan, type PlanDispatcher, type Role } from '../../api/plan.js';
import type { PreflightProblem, RestartRequestSchema } from '../../api/rest.js';
import type { RoleSteps } from '../core/restart-plan.js';
import type { Engine } from '../engines/types.js';
import type { Clock } from '../../shared/poll.js';
import type { RestartActions } from '../core/restart-actions.js';
import type { ClusterSnapshot, ClusterStore } from './store.js';
import type { NodeApi } from './node-api.js';
import type { OperationStore } from './operations.js';
import type { ClusterHealth } from './cluster-health.js';

export type NormalizedRestartRequest = ReturnType<(typeof RestartRequestSchema)['parse']>;

/** What a restart operation persists (OperationView.progress). */
export interface RestartProgress {
  request: NormalizedRestartRequest;
  /** Processes restarted and gated; skipped by a retry or a resume. */
  done: string[];
  /** Stopped by this operation and not yet ready again (abort starts them). */
  stopped: string[];
  /** The process being restarted right now (a resume finishes it first). */
  current?: string;
  /** The plan's binaries after an upgrade was adopted everywhere. */
  binaries?: Record<string, string>;
  retryOf?: string;
  abortOf?: string;
  [k: string]: unknown;
}

/** The upgrade side of a dispatcher: preflight a changed plan, and adopt it (binaries only). */
export interface UpgradeNode {
  preflightPlan(plan: Plan): Promise<PreflightProblem[]>;
  adoptPlan(plan: Plan): Promise<void>;
  close?(): void;
}

export type { RestartActions } from '../core/restart-actions.js';

/** What a rolling restart needs, narrowed to what it uses (fakes drive test/unit/rolling-restart.test.ts). */
export interface RestartDeps {
  /** This dispatcher (LocalNode in production). */
  self: NodeApi;
  /** The running plan, and its version (an upgrade's base version is checked against it under the lock). */
  store: Pick<ClusterStore, 'get' | 'version'>;
  operations: OperationStore;
  health: ClusterHealth;
  engine(name: string): Engine;
  /** A peer over mutual TLS (this dispatcher's certificate, pinned in the plan). */
  peer(d: PlanDispatcher): NodeApi & { close?(): void };
  /** This dispatcher's upgrade side, and a peer's over HTTPS. */
  localUpgrade: UpgradeNode;
  peerUpgrade(d: PlanDispatcher): UpgradeNode;
  actions: RestartActions;
  pollMs?: number;
  /** Time for gates, durations and waits (default: the system clock). */
  clock?: Clock;
}

export type RestartNodes = Map<string, NodeApi & { close?(): void }>;

export function stepsOf(engine: Engine): Record<Role, RoleSteps> {
  return Object.fromEntries(ROLE_ORDER.map((r) => [r, engine.manifest.roles[r].rollingRestart])) as Record<Role, RoleSteps>;
}

/** Actions that the executor itself fulfils for every engine (the gates). */
export const GATE_ACTIONS = new Set(['wait-ready', 'wait-agency-leader', 'wait-replica-streaming', 'wait-routing']);

/** The cluster a restart works on: it must exist and be running. */
export function runningSnapshot(deps: RestartDeps): ClusterSnapshot {
  const snap = deps.store.get();
  if (!snap) throw new DispatcherError('not_found', `dispatcher ${deps.self.id} has no cluster plan; launch one first`);
  if (snap.state !== 'running') throw new DispatcherError('conflict', `cluster ${snap.plan.name} is ${snap.state}; a rolling restart needs a running cluster`);
  return snap;
}

/** Every dispatcher of the plan: this one directly, peers over HTTPS. */
export function restartNodes(deps: RestartDeps, plan: Plan): RestartNodes {
  const nodes: RestartNodes = new Map();
  for (const d of plan.dispatchers) nodes.set(d.id, d.id === deps.self.id ? deps.self : deps.peer(d));
  return nodes;
}

export function abortedError(): DispatcherError {
  return new DispatcherError('operation_failed', 'aborted by the operator');
}
