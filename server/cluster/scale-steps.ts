/**
 * The contract of a scale operation's steps (docs/DESIGN.md, "Scaling"): what one step may use (the
 * ScaleContext) and the table of runners the executor (scale.ts) dispatches each ScaleStep kind to. The
 * scale-out runners are in scale-out-steps.ts, the removal ones in scale-in-steps.ts; fakes of the table
 * drive the executor's fast tests (test/unit/scale-executor.test.ts).
 */
import type { Plan } from '../../api/plan.js';
import type { PlanVersion, ScaleStep } from '../../api/plan-version.js';
import type { Credential } from '../../api/rest.js';
import type { Clock } from '../../shared/poll.js';
import type { RestartActions } from '../core/restart-actions.js';
import type { Engine } from '../engines/types.js';
import type { ClusterClientTls } from '../engines/cluster-https.js';
import type { ClusterHealth } from './cluster-health.js';
import type { Nodes } from './fan-out.js';
import type { OperationHandle } from './operations.js';
import type { ClusterStore } from './store.js';

/** What one scale step may use (docs/DESIGN.md, "Scaling"). */
export interface ScaleContext {
  op: OperationHandle;
  running: Plan; // the plan version the change started from
  proposed: Plan; // the plan the change ends at
  /** Every dispatcher of either plan (peers over pinned mTLS; new hosts adopted by first contact). */
  nodes: Nodes;
  secrets: Record<string, string>;
  health: ClusterHealth;
  clock: Clock;
  readyTimeoutMs: number;
  /** mTLS material for calls to the agency/Patroni/HAProxy admin from this dispatcher (clientTls). */
  clusterTls: ClusterClientTls;
  /** The engine's actions a rolling restart uses too: the pooler pause around a coordinator's restart, routing waits. */
  actions: RestartActions;
  /** The cluster's engine (its manifest: e.g. a coordinator's pause bound). */
  engine: Engine;
  /** This dispatcher's id (the one running the operation; it holds the cluster CA key). */
  self: string;
  /** This dispatcher's store: the cluster CA that signs a new dispatcher's certificates. */
  store: Pick<ClusterStore, 'get' | 'save'>;
  /** The operator credential for first contact with a new dispatcher, by id (docs/SECURITY.md, "first contact"). */
  firstContact(host: string): Credential | undefined;
  /**
   * The plan that is true right now: `running` plus what the completed steps added (minus what they
   * removed). A step that changes it calls `commit`.
   */
  current(): Plan;
  /**
   * Stores `plan` as the next plan version on every dispatcher it names that already holds one (each
   * checks its stored version is the one before: 409 otherwise) — the guard of each re-renders from it.
   */
  commit(plan: Plan): Promise<void>;
  /** The plan version each dispatcher stores now, by id (a new dispatcher has one once adopted). */
  versions: Map<string, PlanVersion>;
  /**
   * A new dispatcher that adopted a plan of its own (the proposed one: its preflight and certificates
   * cover all its future processes) stores the current version next, with the cluster's number; set
   * `versions` for it first.
   */
  catchUp(host: string): Promise<void>;
  /**
   * Records something this operation started, so a failure half-way undoes it in reverse order (e.g. stop
   * a process, remove an etcd member). Undo actions never delete a data dir.
   */
  onRollback(what: string, undo: () => Promise<void>): void;
}

export type StepRunner<K extends ScaleStep['kind']> = (ctx: ScaleContext, step: Extract<ScaleStep, { kind: K }>) => Promise<void>;
export type StepRunners = { [K in ScaleStep['kind']]: StepRunner<K> };
