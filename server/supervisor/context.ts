/**
 * The state one supervisor shares among its parts (docs/DESIGN.md, "The supervisor"): the table of
 * processes, the change listeners, the injected edges, and the few helpers every part uses to record a
 * change (emit to listeners, persist in order, arm and clear per-process timers).
 */
import type { ChildProcess } from 'node:child_process';
import { DispatcherError } from '../../api/errors.js';
import type { ProcessStatus } from './types.js';
import type { SpawnFn } from './spawner.js';
import type { ProbeFn } from './probes.js';
import type { ProcessRecord, StateStore, SupervisorState } from './state-store.js';

/** The part of a winston Logger the supervisor uses (structural, so any logger fits). */
export interface SupervisorLogger {
  info(message: string, meta?: Record<string, unknown>): unknown;
  warn(message: string, meta?: Record<string, unknown>): unknown;
  error(message: string, meta?: Record<string, unknown>): unknown;
}

export interface Entry {
  rec: ProcessRecord;
  adopted: boolean;
  /** Incarnation counter: bumped at every spawn, adoption and stop; stale events compare against it. */
  gen: number;
  child?: ChildProcess;
  exited?: Promise<unknown>;
  startedAtMs?: number;
  timers: Set<NodeJS.Timeout>;
  backoffTimer?: NodeJS.Timeout;
  spawning?: Promise<void>;
  stopping?: Promise<void>;
  lastProbe?: string;
}

export interface SupervisorContext {
  readonly stateDir: string;
  readonly log: SupervisorLogger;
  readonly spawn: SpawnFn;
  readonly now: () => number;
  readonly probe: ProbeFn;
  /** How often adopted processes are checked in /proc (ms). */
  readonly pollMs: number;
  /** Lines of log kept in a failure. */
  readonly tailLines: number;
  readonly entries: Map<string, Entry>;
  readonly listeners: Set<(s: ProcessStatus) => void>;
  /** Set by close(): timers that fire afterwards do nothing. */
  closed: boolean;
  iso(ms: number): string;
  status(e: Entry): ProcessStatus;
  emit(e: Entry): void;
  persist(): Promise<void>;
  later(e: Entry, ms: number, fn: () => void): NodeJS.Timeout;
  clearTimers(e: Entry): void;
  must(id: string): Entry;
}

export interface ContextParts {
  stateDir: string;
  log: SupervisorLogger;
  spawn: SpawnFn;
  now: () => number;
  probe: ProbeFn;
  pollMs: number;
  tailLines: number;
  store: StateStore;
}

export function statusOf(e: Entry): ProcessStatus {
  const r = e.rec;
  const s: ProcessStatus = {
    id: r.spec.id,
    role: String(r.spec.role),
    state: r.state,
    restarts: r.restarts,
    command: [...r.spec.argv],
  };
  if (r.spec.cluster !== undefined) s.cluster = r.spec.cluster;
  if (r.pid !== undefined) s.pid = r.pid;
  if (r.startedAt) s.startedAt = r.startedAt;
  if (r.readySince) s.readySince = r.readySince;
  if (e.adopted) s.adopted = true;
  if (r.lastExit) s.lastExit = { ...r.lastExit };
  if (r.failure) s.failure = { ...r.failure, logTail: [...r.failure.logTail] };
  return s;
}

export function createContext(parts: ContextParts): SupervisorContext {
  const { store, log } = parts;
  const entries = new Map<string, Entry>();
  const listeners = new Set<(s: ProcessStatus) => void>();

  function snapshot(): SupervisorState {
    const processes: Record<string, ProcessRecord> = {};
    for (const [id, e] of entries) processes[id] = structuredClone(e.rec);
    return { version: 1, processes };
  }

  // Saves run one after another, each writing the state as it is when it runs: two overlapping saves
  // could otherwise finish out of order and leave an older state in the file.
  let saving: Promise<void> = Promise.resolve();

  const ctx: SupervisorContext = {
    stateDir: parts.stateDir,
    log,
    spawn: parts.spawn,
    now: parts.now,
    probe: parts.probe,
    pollMs: parts.pollMs,
    tailLines: parts.tailLines,
    entries,
    listeners,
    closed: false,
    iso: (ms) => new Date(ms).toISOString(),
    status: statusOf,

    emit(e) {
      const s = statusOf(e);
      for (const l of [...listeners]) {
        try {
          l(s);
        } catch (err) {
          log.warn('supervisor: a change listener threw', { error: String(err) });
        }
      }
    },

    persist() {
      saving = saving.then(async () => {
        try {
          await store.save(snapshot());
        } catch (err) {
          // Losing a state write is serious (adoption relies on it) but must not kill supervision.
          log.error('supervisor: could not write the state file', { file: store.file, error: String(err) });
        }
      });
      return saving;
    },

    later(e, ms, fn) {
      const t = setTimeout(() => {
        e.timers.delete(t);
        if (!ctx.closed) fn();
      }, ms);
      e.timers.add(t);
      return t;
    },

    clearTimers(e) {
      for (const t of e.timers) clearTimeout(t);
      e.timers.clear();
      e.backoffTimer = undefined;
    },

    must(id) {
      const e = entries.get(id);
      if (!e) throw new DispatcherError('not_found', `no process ${id} on this dispatcher`, { details: { process: id } });
      return e;
    },
  };
  return ctx;
}
