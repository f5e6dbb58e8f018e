/**
 * The supervisor: runs this dispatcher's processes, restarts them by the restart policy, stops them by
 * process group, and re-adopts them after a restart of the daemon.
 *
 * Two kinds of processes are watched:
 * - children (spawned by this daemon instance): their 'exit' event gives code and signal;
 * - adopted ones (spawned by an earlier instance, found alive with the recorded pid AND /proc start time):
 *   not our children, so they are polled via /proc; their exit status cannot be known.
 *
 * Every change of a process is persisted before the call that caused it resolves (start() resolves after
 * the pid and start time are on disk), so a kill -9 of the daemon right after start() never loses a pid
 * and never starts a second copy. Each incarnation of a process has a generation number; events of an
 * older generation (a late exit, a probe answer) are ignored.
 *
 * This file only wires the parts, one concern each (docs/DESIGN.md, "The supervisor"): context.ts (shared
 * table, emit, ordered persist, timers), incarnation.ts (spawn, exit, restart decision), probe-loop.ts
 * (readiness/liveness), group-kill.ts, stop.ts, wait-ready.ts, adoption.ts, log-tail.ts.
 */
import { isDeepStrictEqual } from 'node:util';
import { DispatcherError } from '../../api/errors.js';
import type { ProcessSpec, Supervisor } from './types.js';
import { defaultSpawn, type SpawnFn } from './spawner.js';
import { ensureDir } from '../safe-files.js';
import { isSameProcess } from '../../shared/procfs.js';
import { systemClock } from '../../shared/poll.js';
import { runProbe, type ProbeFn } from './probes.js';
import { createStateStore } from './state-store.js';
import { createContext, type SupervisorLogger } from './context.js';
import { spawnEntry } from './incarnation.js';
import { stopEntry } from './stop.js';
import { waitReady } from './wait-ready.js';
import { recoverRecorded } from './adoption.js';
import { processLogTail } from './log-tail.js';

export type { SupervisorLogger } from './context.js';

export interface SupervisorOptions {
  stateDir: string;
  logger?: SupervisorLogger;
  spawn?: SpawnFn;
  now?: () => number;
  probe?: ProbeFn;
  /** How often adopted processes are checked in /proc (ms, default 500). */
  pollIntervalMs?: number;
  /** Lines of log kept in a failure (default 20). */
  failureLogLines?: number;
}

const LIVE_STATES = new Set(['starting', 'running', 'ready', 'stopping']);

const silentLogger: SupervisorLogger = { info() {}, warn() {}, error() {} };

export async function createSupervisor(opts: SupervisorOptions): Promise<Supervisor> {
  await ensureDir(opts.stateDir, 0o700);
  const store = createStateStore(opts.stateDir);
  // A damaged file throws state_damaged here and start-up stops; nothing is written over it.
  const loaded = await store.load();

  const ctx = createContext({
    stateDir: opts.stateDir,
    log: opts.logger ?? silentLogger,
    spawn: opts.spawn ?? defaultSpawn,
    now: opts.now ?? systemClock.now,
    probe: opts.probe ?? runProbe,
    pollMs: opts.pollIntervalMs ?? 500,
    tailLines: opts.failureLogLines ?? 20,
    store,
  });
  const { entries, listeners, status } = ctx;

  for (const rec of Object.values(loaded.processes)) {
    entries.set(rec.spec.id, { rec, adopted: false, gen: 0, timers: new Set() });
  }

  const sup: Supervisor = {
    list() {
      return [...entries.values()].map(status).sort((a, b) => a.id.localeCompare(b.id));
    },

    get(id) {
      const e = entries.get(id);
      return e ? status(e) : undefined;
    },

    async logTail(id, lines) {
      return processLogTail(opts.stateDir, ctx.must(id).rec.spec.id, Math.max(0, Math.min(lines, 10_000)));
    },

    async start(spec: ProcessSpec) {
      if (ctx.closed) throw new DispatcherError('conflict', 'the supervisor is closed');
      if (!spec.id || spec.argv.length === 0) throw new DispatcherError('bad_request', 'a process needs an id and a non-empty argv');
      let e = entries.get(spec.id);
      if (e?.stopping) await e.stopping;
      if (e?.spawning) await e.spawning;
      if (e && e.rec.desired === 'run' && (LIVE_STATES.has(e.rec.state) || e.rec.state === 'backoff')) {
        if (isDeepStrictEqual(e.rec.spec, spec)) return status(e);
        throw new DispatcherError('conflict', `process ${spec.id} is running with a different spec; stop it first`, {
          details: { process: spec.id, state: e.rec.state },
        });
      }
      if (!e) {
        e = { rec: { spec, desired: 'run', state: 'stopped', restarts: 0, quickFailures: 0 }, adopted: false, gen: 0, timers: new Set() };
        entries.set(spec.id, e);
      }
      e.rec.spec = structuredClone(spec);
      e.rec.desired = 'run';
      e.rec.quickFailures = 0;
      e.rec.failure = undefined;
      await spawnEntry(ctx, e);
      return status(e);
    },

    waitReady(id, timeoutMs) {
      return waitReady(ctx, id, timeoutMs);
    },

    stop(id) {
      const e = ctx.must(id);
      if (e.stopping) return e.stopping;
      const p = stopEntry(ctx, e).finally(() => {
        e.stopping = undefined;
      });
      e.stopping = p;
      return p;
    },

    async remove(id) {
      const e = ctx.must(id);
      if (e.stopping) await e.stopping;
      if (e.rec.state !== 'stopped' && e.rec.state !== 'failed') {
        throw new DispatcherError('conflict', `process ${id} is ${e.rec.state}; stop it before removing it`, { details: { process: id } });
      }
      if (e.rec.pid !== undefined && isSameProcess(e.rec.pid, e.rec.startTime ?? -1)) {
        throw new DispatcherError('conflict', `process ${id} still runs as pid ${e.rec.pid}`, { details: { process: id } });
      }
      ctx.clearTimers(e);
      e.gen += 1;
      entries.delete(id);
      await ctx.persist();
    },

    recover(recoverOpts: { restartGone?: boolean } = {}) {
      return recoverRecorded(ctx, (id) => sup.stop(id), recoverOpts);
    },

    async close() {
      ctx.closed = true;
      for (const e of entries.values()) ctx.clearTimers(e);
      listeners.clear();
      await ctx.persist();
    },

    onChange(listener) {
      listeners.add(listener);
      return () => {
        listeners.delete(listener);
      };
    },
  };
  return sup;
}
