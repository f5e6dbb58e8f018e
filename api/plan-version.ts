/**
 * Plan versions and plan diffs as REST sees them (docs/DESIGN.md, "Plan versions"). Every change of a
 * running cluster's plan is a new version: a number (the launched plan is 1) and a hash of the plan's
 * content. A diff is computed against one version; a change that names an older version is refused (409).
 */
import { z } from 'zod';
import { PlanSchema, type Role } from './plan.js';

/** A plan's content hash: the first 16 hex digits of the SHA-256 of its canonical JSON. */
export const PlanHashSchema = z.string().regex(/^[0-9a-f]{16}$/, 'a plan hash is 16 lower-case hex digits');

export const PlanVersionSchema = z
  .object({
    number: z.number().int().min(1).describe('1 for the launched plan, +1 for every change'),
    hash: PlanHashSchema,
  })
  .strict();
export type PlanVersion = z.infer<typeof PlanVersionSchema>;

/** One entry of a cluster's plan history (kept in its cluster store, newest last). */
export interface PlanVersionEntry extends PlanVersion {
  /** When this dispatcher stored the version (ISO 8601). */
  at: string;
}

/** POST /v1/cluster/plan/diff: the plan you would apply; the answer names the version it was computed against. */
export const PlanDiffRequestSchema = z.object({ plan: PlanSchema }).strict();

/** The plan version each dispatcher of the plan stores (absent when it did not answer). */
export interface DispatcherPlanVersion {
  id: string;
  reachable: boolean;
  version?: PlanVersion;
}

/** GET /v1/cluster/plan. */
export interface RunningPlanView {
  cluster: string;
  state: string;
  version: PlanVersion;
  history: PlanVersionEntry[];
  /** Every dispatcher's version: one that answers with another version missed a change. */
  dispatchers: DispatcherPlanVersion[];
  plan: z.infer<typeof PlanSchema>;
}

/** One changed value, named by its path in the plan (e.g. `ports.postgres.port`, `firewall.clientSources`). */
export interface FieldChange {
  path: string;
  from?: unknown;
  to?: unknown;
}

export interface ProcessSummary {
  id: string;
  role: Role;
  host: string;
  address: string;
  ports: { name: string; port: number; exposure: string }[];
}

/** One line of a rule text diff: '+' only in the proposed rules, '-' only in the running ones. */
export interface RuleLineChange {
  op: '+' | '-';
  /** 1-based line number in the running text ('-') or the proposed text ('+'). */
  line: number;
  text: string;
}

/** The firewall rules of one host (as the nft renderer writes them), running vs proposed. */
export interface HostRulesDiff {
  host: string;
  change: 'added' | 'removed' | 'changed' | 'unchanged';
  lines: RuleLineChange[];
}

export interface PlanDiff {
  cluster: string;
  /** Whether anything at all differs. */
  changed: boolean;
  /** Cluster-wide settings: name, engine, dataRoot, binaries.*, firewall.* (policy). */
  settings: FieldChange[];
  dispatchers: { added: string[]; removed: string[]; changed: { id: string; changes: FieldChange[] }[] };
  processes: { added: ProcessSummary[]; removed: ProcessSummary[]; changed: { id: string; changes: FieldChange[] }[] };
  /** Every host of either plan, in plan order (running plan first, then hosts only the proposed plan has). */
  firewall: HostRulesDiff[];
}

/** The answer of POST /v1/cluster/plan/diff: what would change against `base` (the running version). */
export interface PlanDiffView {
  base: PlanVersion;
  proposed: { hash: string };
  diff: PlanDiff;
  /** Dispatchers that answered with another version than `base` (they missed a change), or did not answer. */
  behind: DispatcherPlanVersion[];
  /** The scale operation this change amounts to with the cluster's health now: its steps, or every reason it would be refused. */
  scale: ScalePlan;
}

/**
 * One step of a scale operation (docs/DESIGN.md, "Scaling"), in the order it would run. What the dry run
 * shows; the scale operations execute the same list.
 */
export type ScaleStep =
  /** First contact with a new dispatcher: it adopts the new plan version (docs/SECURITY.md, "first contact"). */
  | { kind: 'adopt-dispatcher'; host: string }
  /** Every host's guard lets the new hosts' addresses in, BEFORE any of their processes start. */
  | { kind: 'widen-firewall'; hosts: string[]; addresses: string[] }
  /** A dead member leaves the agency first, so the new one does not join a cluster that has lost a vote. */
  | { kind: 'remove-dead-agent'; process: string; host: string }
  /** `etcd member add`, then the new member starts with --initial-cluster-state=existing; one at a time. */
  | { kind: 'add-agent'; process: string; host: string }
  /** A new DB server starts and joins as a Patroni replica (it clones from the leader). */
  | { kind: 'add-dbserver'; process: string; host: string }
  | { kind: 'add-coordinator'; process: string; host: string }
  /** Coordinators re-render their config for the new DB server list and reload gracefully. */
  | { kind: 'reconfigure-coordinators'; processes: string[] }
  /** The Patroni leader, if it is on a DB server that goes, is moved to one that stays first. */
  | { kind: 'switchover-away'; from: string[] }
  | { kind: 'remove-coordinator'; process: string; host: string }
  /** Stop, then `patronictl remove` of its member key. */
  | { kind: 'remove-dbserver'; process: string; host: string }
  /** `etcd member remove`, then stop; one at a time, quorum checked before each. */
  | { kind: 'remove-agent'; process: string; host: string }
  /** After the processes are gone: every remaining host's guard stops letting the old hosts in. */
  | { kind: 'shrink-firewall'; hosts: string[]; addresses: string[] }
  /** The dispatcher forgets the cluster (its data dirs are kept; cleanup is explicit). */
  | { kind: 'release-dispatcher'; host: string };

/** The scale operation a proposed plan amounts to: its steps, or why it would be refused (every reason). */
export interface ScalePlan {
  steps: ScaleStep[];
  problems: { path: string; message: string }[];
}
