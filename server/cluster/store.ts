/**
 * What a dispatcher persists about the cluster it takes part in: the plan (whose pinned fingerprints are
 * the peers it trusts) with its version history (docs/DESIGN.md, "Plan versions"), the cluster's state and
 * the engine secrets (both 0600). Files live in <dataDir>/cluster/ and are written
 * atomically. A damaged file stops start-up with a clear message instead of being silently replaced.
 */
import { readFile, mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { PlanSchema, type Plan } from '../../api/plan.js';
import { assertValidPlan, STORED_PLAN } from '../core/validate-plan.js';
import { currentVersion, historyOf, nextHistory } from '../core/plan-version.js';
import { PlanHashSchema, type PlanVersion, type PlanVersionEntry } from '../../api/plan-version.js';
import { defaultEngineCatalog } from '../engines/loader.js';
import { CredentialSchema, type ClusterState } from '../../api/rest.js';
import { DispatcherError } from '../../api/errors.js';
import { writeFileAtomic } from '../../shared/atomic-file.js';
import { systemClock, type Clock } from '../../shared/poll.js';

const ClusterRecordSchema = z
  .object({
    plan: PlanSchema,
    state: z.enum(['none', 'launching', 'running', 'failed', 'shutdown', 'cleaned']),
    updatedAt: z.string(),
    /** Plan versions, newest last (absent in records written before versions existed: then the plan is version 1). */
    versions: z.array(z.object({ number: z.number().int().min(1), hash: PlanHashSchema, at: z.string() }).strict()).optional(),
  })
  .strict();
type ClusterRecord = z.infer<typeof ClusterRecordSchema>;

// `clusterCredential` was written by earlier versions (peers logged in with it); it is read and dropped.
const SecretsSchema = z.object({ secrets: z.record(z.string(), z.string()), clusterCredential: CredentialSchema.optional() }).strict();

/**
 * This dispatcher's share of the cluster PKI (docs/SECURITY.md, "Cluster-internal TLS"): the CA certificate,
 * the private keys it made for its processes and itself (they never leave this machine), and the
 * certificates the CA signed for them. Keys are kept until their certificates arrive (pending).
 */
const ClusterTlsSchema = z
  .object({
    ca: z.string().optional(),
    keys: z.record(z.string(), z.string()),
    certs: z.record(z.string(), z.string()),
    pending: z.record(z.string(), z.string()).optional(),
    /**
     * Since a CA rotation: the new CA certified by the old one, sent after every leaf (server/pki
     * crossCertify) so a process that loaded only the old CA at its start still accepts the new leaves.
     */
    chain: z.string().optional(),
    /** Only on the dispatcher that launched the cluster: the CA's private key (it signs, nobody else). */
    caKey: z.string().optional(),
    /** Only on that dispatcher, during a CA rotation: the new CA, the old one, the phase done last and its operation. */
    rotation: z
      .object({ caKey: z.string(), ca: z.string(), oldCa: z.string(), cross: z.string().optional(), phase: z.enum(['trust', 'leaves']), operation: z.string().optional() })
      .strict()
      .optional(),
  })
  .strict();
export type ClusterTls = z.infer<typeof ClusterTlsSchema>;

export interface ClusterSnapshot {
  plan: Plan;
  state: ClusterState;
  secrets: Record<string, string>;
  tls?: ClusterTls;
}

export class ClusterStore {
  private readonly dir: string;
  private current?: ClusterSnapshot;
  private versions: PlanVersionEntry[] = [];

  constructor(
    dataDir: string,
    private readonly clock: Clock = systemClock,
  ) {
    this.dir = join(dataDir, 'cluster');
  }

  private get recordFile() {
    return join(this.dir, 'cluster.json');
  }
  private get secretsFile() {
    return join(this.dir, 'secrets.json');
  }
  private get tlsFile() {
    return join(this.dir, 'tls.json');
  }
  /** The cluster CA certificate as a file (psql's sslrootcert for health checks; `dispatch connect`). */
  get caFile() {
    return join(this.dir, 'ca.crt');
  }

  /** Loads what is on disk; throws state_damaged (keeping the file) when it cannot be read. */
  async load(): Promise<ClusterSnapshot | undefined> {
    const record = await readJson(this.recordFile, ClusterRecordSchema);
    if (!record) {
      this.versions = [];
      return (this.current = undefined);
    }
    const secrets = await readJson(this.secretsFile, SecretsSchema);
    if (!secrets) throw new DispatcherError('state_damaged', `${this.secretsFile} is missing while ${this.recordFile} exists; refusing to guess. Inspect both files.`);
    const tls = await readJson(this.tlsFile, ClusterTlsSchema);
    this.current = { plan: record.plan, state: record.state, secrets: secrets.secrets, ...(tls ? { tls } : {}) };
    this.versions = historyOf(record.plan, record.versions, record.updatedAt);
    return this.current;
  }

  get(): ClusterSnapshot | undefined {
    return this.current;
  }

  /** The running plan's version (number and hash); not_found without a plan. */
  version(): PlanVersion {
    if (!this.current) throw new DispatcherError('not_found', 'this dispatcher has no cluster plan');
    return currentVersion(this.versions);
  }

  /** The plan versions this dispatcher stored, newest last. */
  history(): PlanVersionEntry[] {
    return this.current ? [...this.versions] : [];
  }

  /** `opts.versionNumber`: the number a changed plan gets (a scale step's; server/core/plan-version.ts nextHistory). */
  async save(snapshot: ClusterSnapshot, opts: { versionNumber?: number } = {}): Promise<void> {
    // Only a valid plan is ever persisted, whichever way it came (launch, peer adoption, upgrade, firewall
    // change): the one validation (server/core/validate-plan.ts), docs/SECURITY.md "Peer dispatcher".
    assertValidPlan(snapshot.plan, defaultEngineCatalog(), STORED_PLAN);
    const updatedAt = new Date(this.clock.now()).toISOString();
    // Every change of the plan is a new version; a state change or a TLS change keeps the version.
    const versions = nextHistory(this.current && { plan: this.current.plan, history: this.versions, cleaned: this.current.state === 'cleaned' }, snapshot.plan, updatedAt, opts.versionNumber);
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    // Secrets first: a crash in between leaves secrets without a record, which load() ignores.
    await writeFileAtomic(this.secretsFile, JSON.stringify({ secrets: snapshot.secrets }), 0o600);
    if (snapshot.tls) {
      await writeFileAtomic(this.tlsFile, JSON.stringify(snapshot.tls), 0o600);
      if (snapshot.tls.ca) await writeFileAtomic(this.caFile, snapshot.tls.ca, 0o644);
    } else {
      await rm(this.tlsFile, { force: true });
    }
    const record: ClusterRecord = { plan: snapshot.plan, state: snapshot.state, updatedAt, versions };
    await writeFileAtomic(this.recordFile, JSON.stringify(record, null, 2), 0o600);
    this.current = snapshot;
    this.versions = versions;
  }

  async setState(state: ClusterState): Promise<void> {
    if (!this.current) throw new DispatcherError('not_found', 'this dispatcher has no cluster plan');
    await this.save({ ...this.current, state });
  }

  /** Forgets the plan (after cleanup, or when a launch is refused before anything started). */
  async forget(): Promise<void> {
    await rm(this.recordFile, { force: true });
    await rm(this.secretsFile, { force: true });
    await rm(this.tlsFile, { force: true });
    await rm(this.caFile, { force: true });
    this.current = undefined;
    this.versions = [];
  }
}

async function readJson<T>(file: string, schema: z.ZodType<T>): Promise<T | undefined> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e: any) {
    if (e.code === 'ENOENT') return undefined;
    throw e;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e: any) {
    throw new DispatcherError('state_damaged', `${file} is not valid JSON (${e.message}); the file was kept for inspection`);
  }
  const r = schema.safeParse(parsed);
  if (!r.success) throw new DispatcherError('state_damaged', `${file} does not match its schema (${r.error.issues[0]?.message}); the file was kept for inspection`);
  return r.data;
}
