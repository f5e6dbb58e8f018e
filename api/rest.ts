/**
 * REST request and response types shared by the daemon (server/) and its clients (launcher/). Requests are
 * zod schemas (validated at the edge); responses are plain TypeScript types.
 */
import { z } from 'zod';
import { FirewallPolicySchema, PlanSchema, RoleSchema, type FirewallPolicy, type Plan } from './plan.js';
import type { ProcessStatus } from './process-status.js';

export const CredentialSchema = z.object({ user: z.string().min(1), password: z.string().min(1) }).strict();
export type Credential = z.infer<typeof CredentialSchema>;

export const LaunchRequestSchema = z
  .object({
    plan: PlanSchema,
    /**
     * Credentials the contacted dispatcher uses for each peer at first contact, by dispatcher id. A peer
     * not listed is called with the credentials the operator used for this request. After the launch the
     * dispatchers use a cluster credential of their own, so no operator password is needed again.
     */
    peerCredentials: z.record(z.string(), CredentialSchema).default({}),
    /** ms to wait for each process to become ready. */
    readyTimeoutMs: z.number().int().min(1000).max(3_600_000).default(120_000),
  })
  .strict();
export type LaunchRequest = z.input<typeof LaunchRequestSchema>;

export const CleanupRequestSchema = z
  .object({ confirmName: z.string().min(1).describe('must repeat the cluster name: cleanup deletes data dirs') })
  .strict();

export const RestartRequestSchema = z
  .object({
    processes: z
      .object({
        roles: z.array(RoleSchema).optional(),
        hosts: z.array(z.string()).optional(),
        ids: z.array(z.string()).optional(),
      })
      .strict()
      .default({}),
    mode: z.enum(['rolling', 'all-at-once']).default('rolling'),
    /** Upgrade: new binary path per program name (must be allowed in each machine's config). */
    upgrade: z.record(z.string(), z.string()).optional(),
    force: z.boolean().default(false),
    readyTimeoutMs: z.number().int().min(1000).max(3_600_000).default(120_000),
  })
  .strict();
export type RestartRequest = z.input<typeof RestartRequestSchema>;

/** A firewall change that rolls back by itself unless confirmed in time (so nobody locks themselves out). */
export const FirewallChangeSchema = z
  .object({
    firewall: FirewallPolicySchema,
    confirmWithinSeconds: z.number().int().min(5).max(3600).default(60),
  })
  .strict();
export type FirewallChange = z.input<typeof FirewallChangeSchema>;

export type OperationKind = 'launch' | 'shutdown' | 'relaunch' | 'cleanup' | 'restart';
export type OperationState = 'running' | 'succeeded' | 'failed' | 'aborted';

export interface OperationEvent {
  seq: number;
  at: string;
  level: 'info' | 'warn' | 'error';
  /** Machine-readable step, e.g. preflight, guard, start, ready, rollback, done. */
  step: string;
  host?: string;
  process?: string;
  message: string;
}

export interface OperationView {
  id: string;
  kind: OperationKind;
  cluster: string;
  state: OperationState;
  startedAt: string;
  endedAt?: string;
  error?: { code: string; message: string; host?: string; process?: string; logTail?: string[] };
  result?: Record<string, unknown>;
  events: OperationEvent[];
  /** Progress persisted for operations that can resume (rolling restarts). */
  progress?: Record<string, unknown>;
}

export interface GuardStatusView {
  backend: string;
  /** Set while a firewall change waits for confirmation: it rolls back at this time. */
  pendingConfirmUntil?: string;
  inSync: boolean | null;
  lastAppliedAt?: string;
  driftRepairs: number;
  warnings: string[];
  note?: string;
}

export interface NodeStatusView {
  dispatcher: string;
  cluster?: string;
  clusterState?: ClusterState;
  processes: ProcessStatus[];
  guard?: GuardStatusView;
}

export type ClusterState = 'none' | 'launching' | 'running' | 'failed' | 'shutdown' | 'cleaned';

export interface ClusterProcessView {
  id: string;
  role: string;
  host: string;
  address: string;
  ports: { name: string; port: number; exposure: string }[];
  state: string;
  pid?: number;
  readySince?: string;
  restarts: number;
}

export interface ClusterView {
  name: string | null;
  engine?: string;
  state: ClusterState;
  dispatchers: { id: string; endpoint: string; reachable: boolean; error?: string; guard?: GuardStatusView }[];
  processes: ClusterProcessView[];
  coordinators: { id: string; host: string; port: number; readOnlyPort?: number }[];
  activeOperation?: string;
}

/** Payload a dispatcher hands its peers when it propagates a plan. Carried only over pinned HTTPS. */
export const NodeAdoptPlanSchema = z
  .object({
    plan: PlanSchema,
    /** Engine secrets shared by the cluster (e.g. replication password). Written 0600 on each dispatcher. */
    secrets: z.record(z.string(), z.string()),
    /** The cluster credential every dispatcher accepts from its peers after launch. */
    clusterCredential: CredentialSchema,
  })
  .strict();
export type NodeAdoptPlan = z.infer<typeof NodeAdoptPlanSchema>;

export interface PreflightProblem {
  host: string;
  check: string;
  message: string;
}

export function coordinatorsOf(plan: Plan): ClusterView['coordinators'] {
  return plan.processes
    .filter((p) => p.role === 'coordinator')
    .map((p) => {
      const client = p.ports.find((x) => x.exposure === 'public');
      const ro = p.ports.find((x) => x.name === 'readonly');
      return { id: p.id, host: p.address, port: client?.port ?? p.ports[0].port, ...(ro ? { readOnlyPort: ro.port } : {}) };
    });
}
