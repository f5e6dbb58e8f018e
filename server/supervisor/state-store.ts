/**
 * The supervisor's persistent state: `state.json` in the state dir, always replaced atomically (temp file,
 * fsync, rename, fsync dir — shared/atomic-file.ts), so a crash at any instant leaves the old or the new
 * state. A file that does not parse or fails the schema is never loaded silently and never overwritten:
 * start-up stops with `state_damaged` naming the file, and the file stays for inspection.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { DispatcherError } from '../../api/errors.js';
import { writeFileAtomic } from '../../shared/atomic-file.js';
import type { ProcessSpec, ProcessState } from './types.js';

export const STATE_FILE = 'state.json';
export const STATE_VERSION = 1;

const probeSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('tcp'), host: z.string(), port: z.number().int() }),
  z.object({
    kind: z.literal('http'),
    url: z.string(),
    expectStatus: z.array(z.number().int()).optional(),
    bodyMatch: z.string().optional(),
    fingerprint: z.string().optional(),
    tls: z.object({ caFile: z.string(), certFile: z.string(), keyFile: z.string() }).optional(),
  }),
  z.object({ kind: z.literal('command'), argv: z.array(z.string()), timeoutMs: z.number().optional(), runAs: z.object({ uid: z.number().int(), gid: z.number().int() }).optional() }),
]);

const specSchema = z.object({
  id: z.string().min(1),
  role: z.string(),
  cluster: z.string().optional(),
  argv: z.array(z.string()).min(1),
  env: z.record(z.string(), z.string()),
  cwd: z.string(),
  dir: z.string(),
  runAs: z.object({ uid: z.number().int(), gid: z.number().int(), user: z.string().optional() }).optional(),
  readiness: probeSchema,
  readinessIntervalMs: z.number().optional(),
  liveness: probeSchema.optional(),
  stopSignal: z.string(),
  stopTimeoutMs: z.number(),
  restart: z.object({
    enabled: z.boolean(),
    initialDelayMs: z.number(),
    maxDelayMs: z.number(),
    quickFailureWindowMs: z.number(),
    maxQuickFailures: z.number(),
  }),
});

const exitSchema = z.object({ code: z.number().nullable(), signal: z.string().nullable(), at: z.string() });

const recordSchema = z.object({
  spec: specSchema,
  desired: z.enum(['run', 'stop']),
  state: z.enum(['starting', 'running', 'ready', 'backoff', 'stopping', 'stopped', 'failed']),
  pid: z.number().int().positive().optional(),
  /** /proc start time (clock ticks since boot) of `pid`: with the pid, the identity used for adoption. */
  startTime: z.number().optional(),
  startedAt: z.string().optional(),
  readySince: z.string().optional(),
  restarts: z.number().int().nonnegative(),
  quickFailures: z.number().int().nonnegative(),
  lastExit: exitSchema.optional(),
  failure: z
    .object({ reason: z.string(), exitCode: z.number().nullable(), signal: z.string().nullable(), logTail: z.array(z.string()) })
    .optional(),
});

const stateSchema = z.object({
  version: z.literal(STATE_VERSION),
  processes: z.record(z.string(), recordSchema),
});

export interface ProcessRecord {
  spec: ProcessSpec;
  desired: 'run' | 'stop';
  state: ProcessState;
  pid?: number;
  startTime?: number;
  startedAt?: string;
  readySince?: string;
  restarts: number;
  quickFailures: number;
  lastExit?: { code: number | null; signal: string | null; at: string };
  failure?: { reason: string; exitCode: number | null; signal: string | null; logTail: string[] };
}

export interface SupervisorState {
  version: typeof STATE_VERSION;
  processes: Record<string, ProcessRecord>;
}

export function emptyState(): SupervisorState {
  return { version: STATE_VERSION, processes: {} };
}

/** Validates parsed JSON; throws state_damaged naming `file` and every problem. */
export function parseState(text: string, file: string): SupervisorState {
  const hint = 'The file is kept unchanged for inspection; repair it or move it away to start with an empty state.';
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new DispatcherError('state_damaged', `state file ${file} is damaged: not valid JSON (${(e as Error).message}). ${hint}`, {
      details: { file },
    });
  }
  const r = stateSchema.safeParse(raw);
  if (!r.success) {
    const problems = r.error.issues.map((i) => ({ path: i.path.map(String).join('.'), message: i.message }));
    throw new DispatcherError(
      'state_damaged',
      `state file ${file} is damaged: it does not match the state schema (${problems
        .slice(0, 5)
        .map((p) => `${p.path || '(root)'}: ${p.message}`)
        .join('; ')}). ${hint}`,
      { problems, details: { file } },
    );
  }
  for (const [id, rec] of Object.entries(r.data.processes)) {
    if (rec.spec.id !== id) {
      throw new DispatcherError('state_damaged', `state file ${file} is damaged: entry ${id} holds the spec of ${rec.spec.id}. ${hint}`, {
        details: { file },
      });
    }
  }
  return r.data as SupervisorState;
}

export interface StateStore {
  readonly file: string;
  /** Reads the state; a missing file is an empty state, a damaged one throws state_damaged. */
  load(): Promise<SupervisorState>;
  /** Replaces the state atomically. Concurrent calls are applied in call order. */
  save(state: SupervisorState): Promise<void>;
}

export function createStateStore(stateDir: string): StateStore {
  const file = join(stateDir, STATE_FILE);
  let queue: Promise<void> = Promise.resolve();
  return {
    file,
    async load() {
      let text: string;
      try {
        text = await readFile(file, 'utf8');
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') return emptyState();
        throw e;
      }
      return parseState(text, file);
    },
    save(state) {
      // Serialise renames so an older snapshot never lands after a newer one.
      const text = JSON.stringify(state, null, 2) + '\n';
      const next = queue.then(() => writeFileAtomic(file, text, 0o600));
      queue = next.catch(() => {});
      return next;
    },
  };
}
