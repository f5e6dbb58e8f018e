/**
 * REST request and response types shared by the daemon (server/) and its clients (launcher/). Requests are
 * zod schemas (validated at the edge); responses are plain TypeScript types.
 */
import { z } from 'zod';
import { FirewallPolicySchema, NameSchema, PlanSchema, RoleSchema, SpecDispatcherSchema, type FirewallPolicy, type Plan } from './plan.js';
import type { ProcessStatus } from './process-status.js';
import { PlanVersionSchema, type PlanVersion } from './plan-version.js';

/**
 * The plan version a change was computed against (from `GET /v1/cluster/plan` or a diff): when given and
 * the running plan is another version, the change is refused with 409 naming both (docs/DESIGN.md, "Plan versions").
 */
const BaseVersionField = PlanVersionSchema.optional().describe('refuse unless the running plan is still this version');

export const CredentialSchema = z.object({ user: z.string().min(1), password: z.string().min(1) }).strict();
export type Credential = z.infer<typeof CredentialSchema>;

export const LaunchRequestSchema = z
  .object({
    plan: PlanSchema,
    /**
     * Operator credentials the contacted dispatcher presents to each peer at first contact (adopting the
     * plan), by dispatcher id. A peer not listed gets the credentials the operator used for this request.
     * Every other peer call — during and after the launch — is authenticated by the dispatchers' own
     * certificates (mutual TLS), so no password travels between dispatchers afterwards.
     */
    peerCredentials: z.record(z.string(), CredentialSchema).default({}),
    /** ms to wait for each process to become ready. */
    readyTimeoutMs: z.number().int().min(1000).max(3_600_000).default(120_000),
  })
  .strict();
export type LaunchRequest = z.input<typeof LaunchRequestSchema>;

/**
 * POST /v1/cluster/scale: the plan the running cluster should become — dispatchers and processes added
 * (or removed); everything that stays must stay the same (docs/DESIGN.md, "Scaling").
 */
export const ScaleRequestSchema = z
  .object({
    plan: PlanSchema,
    baseVersion: BaseVersionField,
    /** Operator credentials for first contact with each NEW dispatcher (as a launch; default: the caller's). */
    peerCredentials: z.record(z.string(), CredentialSchema).default({}),
    readyTimeoutMs: z.number().int().min(1000).max(3_600_000).default(120_000),
  })
  .strict();
export type ScaleRequest = z.input<typeof ScaleRequestSchema>;

/**
 * POST /v1/cluster/replace: a dispatcher that is gone for good (`dead`) is replaced by a new one (`with`,
 * as a spec names a dispatcher); its processes are re-created there under new ids (docs/DESIGN.md, "Scaling").
 */
export const ReplaceRequestSchema = z
  .object({
    dead: NameSchema.describe('id of the dispatcher that is gone'),
    with: SpecDispatcherSchema.describe('the new dispatcher: id, endpoint, fingerprint, addresses'),
    baseVersion: BaseVersionField,
    /** Operator credential for first contact with the new dispatcher (default: the caller's). */
    peerCredentials: z.record(z.string(), CredentialSchema).default({}),
    readyTimeoutMs: z.number().int().min(1000).max(3_600_000).default(120_000),
  })
  .strict();
export type ReplaceRequest = z.input<typeof ReplaceRequestSchema>;

/**
 * A running dispatcher takes the next plan version of a scale operation (POST /v1/node/plan/update):
 * refused (409) unless it stores `base` now; only dispatchers and processes may change.
 */
export const NodeUpdatePlanSchema = z
  .object({
    plan: PlanSchema,
    base: PlanVersionSchema,
    /** The number the cluster gives this version (the same on every dispatcher); greater than base's. */
    number: z.number().int().min(2),
  })
  .strict();
export type NodeUpdatePlan = z.infer<typeof NodeUpdatePlanSchema>;

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
    baseVersion: BaseVersionField,
  })
  .strict();
export type RestartRequest = z.input<typeof RestartRequestSchema>;

/** A firewall change that rolls back by itself unless confirmed in time (so nobody locks themselves out). */
export const FirewallChangeSchema = z
  .object({
    firewall: FirewallPolicySchema,
    confirmWithinSeconds: z.number().int().min(5).max(3600).default(60),
    /** Set by the contacted dispatcher for its peers (one token for the change on every host); clients omit it. */
    token: z.string().regex(/^[0-9a-f]{32}$/, 'a change token is 32 hex digits').optional(),
    baseVersion: BaseVersionField,
  })
  .strict();
export type FirewallChange = z.input<typeof FirewallChangeSchema>;

/** Confirm or cancel names the change by the token its apply returned (a stale confirm cannot keep a newer change). */
export const FirewallTokenSchema = z.object({ token: z.string().regex(/^[0-9a-f]{32}$/, 'a change token is 32 hex digits') }).strict();

/** Extend moves the pending change's deadline to confirmWithinSeconds from now. */
export const FirewallExtendSchema = z
  .object({ token: FirewallTokenSchema.shape.token, confirmWithinSeconds: z.number().int().min(5).max(3600) })
  .strict();

export type OperationKind = 'launch' | 'shutdown' | 'relaunch' | 'cleanup' | 'restart' | 'rotate-certs' | 'scale';
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
  /**
   * How long what this event concludes took (ms), so a user sees where the time goes: a dispatcher's
   * answer since its step began (propagate, preflight, certificates, guard), a process's start to ready,
   * a role's start to healthy, the whole operation for the final `ready`, `done` and `failed`.
   */
  durationMs?: number;
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
  /** The dispatcher that runs (or ran) it, as recorded in the agency. */
  runner?: string;
  /** Recorded as running, but its runner's agency lease expired: resume or abort it (docs/DESIGN.md, "Operation lifecycle"). */
  stale?: boolean;
}

export interface GuardStatusView {
  backend: string;
  /** Set while a firewall change waits for confirmation: it rolls back at this time. */
  pendingConfirmUntil?: string;
  inSync: boolean | null;
  lastAppliedAt?: string;
  driftRepairs: number;
  /** Duration of the last successful apply (ms). */
  lastApplyMs?: number;
  warnings: string[];
  note?: string;
}

/** A certificate of the cluster PKI, as `dispatch status` and GET /v1/cluster show it (never a key). */
export interface CertificateView {
  /** A process id, "@dispatcher" (the dispatcher's client certificate) or "@ca". */
  name: string;
  host: string;
  subject: string;
  notAfter: string;
  ips: string[];
}

export interface NodeStatusView {
  dispatcher: string;
  cluster?: string;
  clusterState?: ClusterState;
  processes: ProcessStatus[];
  /** The plan processes' companion programs on this dispatcher (pg-ha: each coordinator's PgBouncer, "<id>.pooler"). */
  companions?: ProcessStatus[];
  guard?: GuardStatusView;
  certificates?: CertificateView[];
  /** The plan version this dispatcher stores (docs/DESIGN.md, "Plan versions"): a peer that missed a change shows another one. */
  planVersion?: PlanVersion;
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
  /** Programs supervised alongside this one (pg-ha: a coordinator's PgBouncer), with their own state. */
  companions?: CompanionView[];
}

/** A companion program of a plan process (templates/<engine>/engine.yaml `companion`), as status shows it. */
export interface CompanionView {
  /** Supervisor id: "<process id>.<companion name>", e.g. "coordinator-1.pooler". */
  id: string;
  name: string;
  state: string;
  pid?: number;
  readySince?: string;
  restarts: number;
}

export interface ClusterView {
  name: string | null;
  engine?: string;
  state: ClusterState;
  dispatchers: { id: string; endpoint: string; reachable: boolean; error?: string; guard?: GuardStatusView; planVersion?: PlanVersion }[];
  processes: ClusterProcessView[];
  coordinators: { id: string; host: string; port: number; readOnlyPort?: number }[];
  activeOperation?: string;
  /** Every certificate of the cluster PKI with its expiry (docs/SECURITY.md, "Cluster-internal TLS"). */
  certificates?: CertificateView[];
}

/**
 * What a client needs to reach the database (GET /v1/cluster/connection; `dispatch connect`): the cluster CA
 * to verify the server with sslmode=verify-full, the coordinators, and the superuser's password — for a
 * pgpass file (0600), never for a screen.
 */
export interface ClusterConnectionView {
  cluster: string;
  engine: string;
  user: string;
  database: string;
  coordinators: ClusterView['coordinators'];
  caCertificate: string;
  password: string;
}

/** A dispatcher's certificate requests: one per process of its own and one for itself. Keys stay on it. */
export const NodeCertificateRequestsSchema = z
  .object({ requests: z.array(z.object({ name: z.string().min(1).max(200), csr: z.string().min(1).max(16_384) }).strict()).max(10_000) })
  .strict();
export type NodeCertificateRequests = z.infer<typeof NodeCertificateRequestsSchema>;

/** The cluster CA certificate and the certificates it signed for one dispatcher's requests. */
export const NodeInstallCertificatesSchema = z
  .object({
    ca: z.string().min(1).max(65_536),
    certs: z.record(z.string().min(1).max(200), z.string().min(1).max(16_384)),
    /** A cross certificate of a trusted CA, sent after every leaf (since a CA rotation; docs/SECURITY.md). */
    chain: z.string().min(1).max(16_384).optional(),
  })
  .strict();
export type NodeInstallCertificates = z.infer<typeof NodeInstallCertificatesSchema>;

/** What one dispatcher did to make its running processes use their renewed certificate files. */
export const NodeCertificateReloadSchema = z
  .object({ processes: z.array(z.object({ process: z.string().min(1).max(200), pid: z.number().int().optional(), done: z.string().max(2000) }).strict()).max(10_000) })
  .strict();
export type NodeCertificateReload = z.infer<typeof NodeCertificateReloadSchema>;

/** Whether the trusted CA changed since the last pick-up (a CA rotation phase) or only the leaves. */
export const NodeReloadCertificatesSchema = z.object({ caChanged: z.boolean().default(false) }).strict();

/** A CA bundle to trust from now on (a CA rotation: new + old, then new only). */
export const NodeTrustCaSchema = z.object({ ca: z.string().min(1).max(65_536) }).strict();

/** Payload a dispatcher hands its peers when it propagates a plan. Carried only over pinned HTTPS. */
export const NodeAdoptPlanSchema = z
  .object({
    plan: PlanSchema,
    /** Engine secrets shared by the cluster (e.g. replication password). Written 0600 on each dispatcher. */
    // Generated by the contacted dispatcher as hex (server/engines/render.ts generateSecrets): nothing else
    // may reach a config file through them.
    secrets: z.record(z.string().regex(/^[a-z][a-z0-9-]{0,62}$/), z.string().regex(/^[0-9a-f]{32,256}$/, 'must be a generated hex secret')),
  })
  .strict();
export type NodeAdoptPlan = z.infer<typeof NodeAdoptPlanSchema>;

// ------------------------------------------------------------------ answers of peers (validated by the caller)
// A peer's answer is data from another machine: the peer client checks it against these schemas, so a
// malformed answer fails the operation with the peer's name instead of breaking code further on.

export const GuardStatusViewSchema = z.object({
  backend: z.string(),
  pendingConfirmUntil: z.string().optional(),
  inSync: z.boolean().nullable(),
  lastAppliedAt: z.string().optional(),
  driftRepairs: z.number().int().min(0),
  warnings: z.array(z.string()),
  note: z.string().optional(),
});

export const ProcessStatusSchema = z.object({
  id: z.string(),
  role: z.string(),
  cluster: z.string().optional(),
  state: z.enum(['starting', 'running', 'ready', 'backoff', 'stopping', 'stopped', 'failed']),
  pid: z.number().int().optional(),
  startedAt: z.string().optional(),
  readySince: z.string().optional(),
  restarts: z.number().int().min(0),
  adopted: z.boolean().optional(),
  lastExit: z.object({ code: z.number().nullable(), signal: z.string().nullable(), at: z.string() }).optional(),
  failure: z.object({ reason: z.string() }).passthrough().optional(),
  command: z.array(z.string()),
});

export const ClusterStateSchema = z.enum(['none', 'launching', 'running', 'failed', 'shutdown', 'cleaned']);

export const CertificateViewSchema = z.object({ name: z.string(), host: z.string(), subject: z.string(), notAfter: z.string(), ips: z.array(z.string()) });

export const NodeStatusViewSchema = z.object({
  dispatcher: z.string(),
  cluster: z.string().optional(),
  clusterState: ClusterStateSchema.optional(),
  processes: z.array(ProcessStatusSchema),
  companions: z.array(ProcessStatusSchema).optional(),
  guard: GuardStatusViewSchema.optional(),
  certificates: z.array(CertificateViewSchema).optional(),
  planVersion: PlanVersionSchema.optional(),
});

export const PreflightProblemSchema = z.object({ host: z.string(), check: z.string(), message: z.string() });
export const PreflightAnswerSchema = z.object({ problems: z.array(PreflightProblemSchema) });
export const LogLinesAnswerSchema = z.object({ lines: z.array(z.string()) });
/** POST /v1/node/release: what the released dispatcher kept on disk (only an explicit removal deletes data). */
export const NodeReleaseAnswerSchema = z.object({ keptDataDirs: z.array(z.string()) });
export type NodeReleaseAnswer = z.infer<typeof NodeReleaseAnswerSchema>;
/** A 204 answer: no body at all. */
export const NoContentSchema = z.undefined();

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
