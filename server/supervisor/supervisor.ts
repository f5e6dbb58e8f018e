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
 */
import { join } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import type { ChildProcess } from 'node:child_process';
import { DispatcherError } from '../../api/errors.js';
import { decideRestart, describeExit } from '../core/restart-policy.js';
import type { ProcessSpec, ProcessStatus, Supervisor } from './types.js';
import { defaultSpawn, processLogDir, spawnProcess, STDERR_LOG, STDOUT_LOG, type SpawnFn } from './spawner.js';
import { ensureDir, openOwnFileForRead } from '../safe-files.js';
import { groupMembers, isSameProcess, readStartTime } from '../../shared/procfs.js';
import { runProbe, type ProbeFn } from './probes.js';
import { createStateStore, type ProcessRecord, type StateStore, type SupervisorState } from './state-store.js';

/** The part of a winston Logger the supervisor uses (structural, so any logger fits). */
export interface SupervisorLogger {
  info(message: string, meta?: Record<string, unknown>): unknown;
  warn(message: string, meta?: Record<string, unknown>): unknown;
  error(message: string, meta?: Record<string, unknown>): unknown;
}

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
const LIVENESS_INTERVAL_MS = 2_000;
const LIVENESS_FAILURES = 3;
/** After a SIGKILL to the group, how long to wait for it to vanish before reporting an error. */
const KILL_GRACE_MS = 10_000;

const silentLogger: SupervisorLogger = { info() {}, warn() {}, error() {} };

interface Entry {
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

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // ESRCH: the group is gone already; fall through to the leader in case it left its group.
  }
  try {
    process.kill(pid, signal);
  } catch {
    /* gone */
  }
}

/** Last `n` lines of one of the daemon's own log files (never a link, FIFO or foreign file), at most its last 256 KiB. */
async function tailFile(path: string, n: number): Promise<string[]> {
  const fh = await openOwnFileForRead(path);
  if (!fh) return [];
  try {
    const { size } = await fh.stat();
    const len = Math.min(size, 256 * 1024);
    const buf = Buffer.alloc(len);
    await fh.read(buf, 0, len, size - len);
    const lines = buf.toString('utf8').split('\n');
    if (lines[lines.length - 1] === '') lines.pop();
    if (len < size) lines.shift(); // first line is probably cut
    return n > 0 ? lines.slice(-n) : [];
  } finally {
    await fh.close();
  }
}

export async function createSupervisor(opts: SupervisorOptions): Promise<Supervisor> {
  const log = opts.logger ?? silentLogger;
  const spawn = opts.spawn ?? defaultSpawn;
  const now = opts.now ?? Date.now;
  const probe = opts.probe ?? runProbe;
  const pollMs = opts.pollIntervalMs ?? 500;
  const tailLines = opts.failureLogLines ?? 20;
  const iso = (ms: number) => new Date(ms).toISOString();

  await ensureDir(opts.stateDir, 0o700);
  const store: StateStore = createStateStore(opts.stateDir);
  // A damaged file throws state_damaged here and start-up stops; nothing is written over it.
  const loaded = await store.load();

  const entries = new Map<string, Entry>();
  const listeners = new Set<(s: ProcessStatus) => void>();
  let closed = false;

  for (const rec of Object.values(loaded.processes)) {
    entries.set(rec.spec.id, { rec, adopted: false, gen: 0, timers: new Set() });
  }

  function status(e: Entry): ProcessStatus {
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

  function emit(e: Entry): void {
    const s = status(e);
    for (const l of [...listeners]) {
      try {
        l(s);
      } catch (err) {
        log.warn('supervisor: a change listener threw', { error: String(err) });
      }
    }
  }

  function snapshot(): SupervisorState {
    const processes: Record<string, ProcessRecord> = {};
    for (const [id, e] of entries) processes[id] = structuredClone(e.rec);
    return { version: 1, processes };
  }

  // Saves run one after another, each writing the state as it is when it runs: two overlapping saves
  // could otherwise finish out of order and leave an older state in the file.
  let saving: Promise<void> = Promise.resolve();
  function persist(): Promise<void> {
    saving = saving.then(async () => {
      try {
        await store.save(snapshot());
      } catch (err) {
        // Losing a state write is serious (adoption relies on it) but must not kill supervision.
        log.error('supervisor: could not write the state file', { file: store.file, error: String(err) });
      }
    });
    return saving;
  }

  function later(e: Entry, ms: number, fn: () => void): NodeJS.Timeout {
    const t = setTimeout(() => {
      e.timers.delete(t);
      if (!closed) fn();
    }, ms);
    e.timers.add(t);
    return t;
  }

  function clearTimers(e: Entry): void {
    for (const t of e.timers) clearTimeout(t);
    e.timers.clear();
    e.backoffTimer = undefined;
  }

  function must(id: string): Entry {
    const e = entries.get(id);
    if (!e) throw new DispatcherError('not_found', `no process ${id} on this dispatcher`, { details: { process: id } });
    return e;
  }

  async function logTailOf(e: Entry, n: number): Promise<string[]> {
    const dir = processLogDir(opts.stateDir, e.rec.spec.id);
    const out = await tailFile(join(dir, STDOUT_LOG), n);
    const err = await tailFile(join(dir, STDERR_LOG), n);
    return [...out, ...err].slice(-n);
  }

  /** Probes readiness until it passes (then liveness, if any) for one incarnation. */
  function watchReadiness(e: Entry, gen: number): void {
    const spec = e.rec.spec;
    const base = spec.readinessIntervalMs ?? 250;
    const began = now();
    const tick = async () => {
      if (closed || gen !== e.gen) return;
      const r = await probe(spec.readiness);
      if (closed || gen !== e.gen) return;
      e.lastProbe = r.detail;
      if (r.ok) {
        if (e.rec.state === 'running' || e.rec.state === 'starting') {
          e.rec.state = 'ready';
          e.rec.readySince = iso(now());
          log.info('process ready', { process: spec.id, pid: e.rec.pid });
          emit(e);
          await persist();
        }
        if (spec.liveness) later(e, LIVENESS_INTERVAL_MS, () => void watchLiveness(e, gen, 0));
        return;
      }
      // Keep probing a slow starter, but less often after a minute.
      later(e, now() - began > 60_000 ? Math.max(base, 2_000) : base, () => void tick());
    };
    void tick();
  }

  /**
   * Liveness after readiness: a few failures in a row demote the process from `ready` to `running`
   * (and readiness is probed again). It does not kill: for a database a hard restart on a slow answer
   * does more harm than the supervisor can judge.
   */
  async function watchLiveness(e: Entry, gen: number, failures: number): Promise<void> {
    const spec = e.rec.spec;
    if (closed || gen !== e.gen || !spec.liveness) return;
    const r = await probe(spec.liveness);
    if (closed || gen !== e.gen) return;
    e.lastProbe = r.detail;
    if (r.ok) {
      later(e, LIVENESS_INTERVAL_MS, () => void watchLiveness(e, gen, 0));
      return;
    }
    if (failures + 1 >= LIVENESS_FAILURES) {
      log.warn('process failed its liveness probe; no longer ready', { process: spec.id, detail: r.detail });
      e.rec.state = 'running';
      e.rec.readySince = undefined;
      emit(e);
      await persist();
      watchReadiness(e, gen);
      return;
    }
    later(e, LIVENESS_INTERVAL_MS, () => void watchLiveness(e, gen, failures + 1));
  }

  /** Polls /proc for an adopted process (we are not its parent, so no exit event comes). */
  function watchAdopted(e: Entry, gen: number, pid: number, startTime: number): void {
    const check = () => {
      if (closed || gen !== e.gen) return;
      if (isSameProcess(pid, startTime)) {
        later(e, pollMs, check);
        return;
      }
      void onExit(e, gen, null, null);
    };
    later(e, pollMs, check);
  }

  async function onExit(e: Entry, gen: number, code: number | null, signal: string | null): Promise<void> {
    if (closed || gen !== e.gen) return;
    const spec = e.rec.spec;
    clearTimers(e);
    e.child = undefined;
    e.exited = undefined;
    const at = now();
    const pid = e.rec.pid;
    e.rec.lastExit = { code, signal, at: iso(at) };
    e.rec.pid = undefined;
    e.rec.startTime = undefined;
    e.rec.readySince = undefined;
    if (e.stopping) return; // stop() finishes the bookkeeping once the whole group is gone
    // The leader died on its own but members of its group may live on (a postmaster outliving Patroni):
    // they would hold ports and data dirs against the next incarnation, so they go first.
    if (pid !== undefined && groupMembers(pid).length > 0) {
      log.warn('process exited but left members of its process group; stopping them', { process: spec.id, pgid: pid });
      signalGroup(pid, spec.stopSignal);
      if (!(await waitGone(pid, undefined, Date.now() + spec.stopTimeoutMs))) {
        signalGroup(pid, 'SIGKILL');
        await waitGone(pid, undefined, Date.now() + KILL_GRACE_MS);
      }
      if (closed || gen !== e.gen) return;
    }
    if (e.rec.desired === 'stop') {
      e.rec.state = 'stopped';
      emit(e);
      await persist();
      return;
    }
    const d = decideRestart(spec.restart, { quickFailures: e.rec.quickFailures }, { code, signal, at, startedAt: e.startedAtMs ?? at });
    e.rec.quickFailures = d.history.quickFailures;
    if (d.state === 'backoff') {
      log.warn('process exited; restarting after backoff', { process: spec.id, code, signal, delayMs: d.delayMs, reason: d.reason });
      e.rec.state = 'backoff';
      e.backoffTimer = later(e, d.delayMs, () => {
        e.backoffTimer = undefined;
        if (gen !== e.gen || e.rec.desired !== 'run') return;
        e.rec.restarts += 1;
        spawnEntry(e).catch(() => {
          /* spawnEntry recorded the failure */
        });
      });
      emit(e);
      await persist();
      return;
    }
    const tail = await logTailOf(e, tailLines);
    if (gen !== e.gen) return;
    if (d.state === 'failed') {
      e.rec.state = 'failed';
      e.rec.failure = { reason: d.reason, exitCode: code, signal, logTail: tail };
      log.error('process failed; not restarting', { process: spec.id, code, signal, reason: d.reason });
    } else {
      e.rec.state = 'stopped';
      e.rec.desired = 'stop';
      log.info('process exited and is not restarted', { process: spec.id, reason: d.reason });
    }
    emit(e);
    await persist();
  }

  /** Spawns a new incarnation; on exec failure the process is `failed` and the promise rejects. */
  function spawnEntry(e: Entry): Promise<void> {
    const run = (async () => {
      const gen = ++e.gen;
      clearTimers(e);
      e.adopted = false;
      e.rec.state = 'starting';
      e.rec.readySince = undefined;
      emit(e);
      let s;
      try {
        s = await spawnProcess(e.rec.spec, processLogDir(opts.stateDir, e.rec.spec.id), spawn);
      } catch (err) {
        if (gen === e.gen) {
          e.rec.state = 'failed';
          e.rec.pid = undefined;
          e.rec.startTime = undefined;
          e.rec.failure = { reason: (err as Error).message, exitCode: null, signal: null, logTail: await logTailOf(e, tailLines) };
          log.error('process could not be started', { process: e.rec.spec.id, reason: (err as Error).message });
          emit(e);
          await persist();
        }
        throw err;
      }
      const at = now();
      e.child = s.child;
      e.exited = s.exited;
      e.startedAtMs = at;
      e.rec.pid = s.pid;
      e.rec.startTime = s.startTime;
      e.rec.startedAt = iso(at);
      e.rec.failure = undefined;
      e.rec.state = 'running';
      s.exited.then(({ code, signal }) => onExit(e, gen, code, signal));
      log.info('process started', { process: e.rec.spec.id, pid: s.pid, restarts: e.rec.restarts });
      emit(e);
      // On disk before start() resolves: a daemon killed right now still knows this pid.
      await persist();
      watchReadiness(e, gen);
    })();
    e.spawning = run.catch(() => {}).finally(() => {
      if (e.spawning === tracked) e.spawning = undefined;
    });
    const tracked = e.spawning;
    return run;
  }

  function leaderAndGroupGone(pid: number, startTime: number | undefined): boolean {
    const leaderGone = startTime === undefined ? readStartTime(pid) === undefined : !isSameProcess(pid, startTime);
    return leaderGone && groupMembers(pid).length === 0;
  }

  async function waitGone(pid: number, startTime: number | undefined, untilMs: number): Promise<boolean> {
    for (;;) {
      if (leaderAndGroupGone(pid, startTime)) return true;
      if (Date.now() >= untilMs) return false;
      await sleep(25);
    }
  }

  async function doStop(e: Entry): Promise<void> {
    const spec = e.rec.spec;
    e.rec.desired = 'stop';
    if (e.backoffTimer) {
      clearTimeout(e.backoffTimer);
      e.timers.delete(e.backoffTimer);
      e.backoffTimer = undefined;
    }
    if (e.spawning) await e.spawning;
    const pid = e.rec.pid;
    const startTime = e.rec.startTime;
    const exited = e.exited;
    const exitBefore = e.rec.lastExit;
    if (pid !== undefined) {
      e.rec.state = 'stopping';
      emit(e);
      await persist();
      log.info('stopping process', { process: spec.id, pid, signal: spec.stopSignal });
      signalGroup(pid, spec.stopSignal);
      if (!(await waitGone(pid, startTime, Date.now() + spec.stopTimeoutMs))) {
        log.warn('process did not stop in time; sending SIGKILL to its group', { process: spec.id, pid, stopTimeoutMs: spec.stopTimeoutMs });
        signalGroup(pid, 'SIGKILL');
        if (!(await waitGone(pid, startTime, Date.now() + KILL_GRACE_MS))) {
          throw new DispatcherError('operation_failed', `process ${spec.id} (pid ${pid}) is still alive ${KILL_GRACE_MS} ms after SIGKILL`, {
            details: { process: spec.id, pid },
          });
        }
      }
      // For a child, let node reap it and report code/signal (it is dead, so this is prompt).
      if (exited) await Promise.race([exited, sleep(2_000)]);
    }
    e.gen += 1;
    clearTimers(e);
    e.child = undefined;
    e.exited = undefined;
    e.adopted = false;
    e.rec.pid = undefined;
    e.rec.startTime = undefined;
    e.rec.readySince = undefined;
    // An adopted process cannot be waited for: its exit status is unknown.
    if (pid !== undefined && e.rec.lastExit === exitBefore) e.rec.lastExit = { code: null, signal: null, at: iso(now()) };
    e.rec.state = 'stopped';
    log.info('process stopped', { process: spec.id });
    emit(e);
    await persist();
  }

  async function notReadyError(e: Entry, why: string): Promise<DispatcherError> {
    const tail = e.rec.failure?.logTail.length ? e.rec.failure.logTail : await logTailOf(e, tailLines);
    const exit = e.rec.lastExit;
    const parts = [`process ${e.rec.spec.id} is not ready: ${why}`];
    if (e.rec.failure) parts.push(`(${e.rec.failure.reason})`);
    if (e.lastProbe) parts.push(`last probe: ${e.lastProbe}`);
    const msg = parts.join('; ') + (tail.length ? `\n--- last ${tail.length} log lines ---\n${tail.join('\n')}` : '');
    return new DispatcherError('operation_failed', msg, {
      details: {
        process: e.rec.spec.id,
        state: e.rec.state,
        exitCode: exit?.code ?? null,
        signal: exit?.signal ?? null,
        lastProbe: e.lastProbe,
        logTail: tail,
      },
    });
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
      return logTailOf(must(id), Math.max(0, Math.min(lines, 10_000)));
    },

    async start(spec: ProcessSpec) {
      if (closed) throw new DispatcherError('conflict', 'the supervisor is closed');
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
      await spawnEntry(e);
      return status(e);
    },

    async waitReady(id, timeoutMs) {
      const e = must(id);
      if (e.rec.state === 'ready') return status(e);
      if (e.rec.state === 'failed' || e.rec.state === 'stopped' || e.rec.state === 'stopping') {
        throw await notReadyError(e, `it is ${e.rec.state}`);
      }
      // A process in backoff is waited for through its next incarnation.
      return new Promise<ProcessStatus>((resolve, reject) => {
        let done = false;
        const finish = (fn: () => void) => {
          if (done) return;
          done = true;
          clearTimeout(timer);
          unsubscribe();
          fn();
        };
        const fail = (why: string) => {
          if (done) return;
          done = true;
          clearTimeout(timer);
          unsubscribe();
          notReadyError(e, why).then(reject, reject);
        };
        const listener = (s: ProcessStatus) => {
          if (s.id !== id) return;
          if (s.state === 'ready') finish(() => resolve(s));
          else if (s.state === 'failed') fail('it failed');
          else if (s.state === 'backoff' || s.state === 'stopped' || s.state === 'stopping') {
            const ex = s.lastExit;
            fail(s.state === 'backoff' && ex ? `it exited with ${describeExit(ex.code, ex.signal)}` : `it is ${s.state}`);
          }
        };
        listeners.add(listener);
        const unsubscribe = () => listeners.delete(listener);
        const timer = setTimeout(() => fail(`not ready within ${timeoutMs} ms`), timeoutMs);
      });
    },

    stop(id) {
      const e = must(id);
      if (e.stopping) return e.stopping;
      const p = doStop(e).finally(() => {
        e.stopping = undefined;
      });
      e.stopping = p;
      return p;
    },

    async remove(id) {
      const e = must(id);
      if (e.stopping) await e.stopping;
      if (e.rec.state !== 'stopped' && e.rec.state !== 'failed') {
        throw new DispatcherError('conflict', `process ${id} is ${e.rec.state}; stop it before removing it`, { details: { process: id } });
      }
      if (e.rec.pid !== undefined && isSameProcess(e.rec.pid, e.rec.startTime ?? -1)) {
        throw new DispatcherError('conflict', `process ${id} still runs as pid ${e.rec.pid}`, { details: { process: id } });
      }
      clearTimers(e);
      e.gen += 1;
      entries.delete(id);
      await persist();
    },

    async recover(opts: { restartGone?: boolean } = {}) {
      for (const e of entries.values()) {
        if (closed) return;
        if (e.child || e.spawning || e.stopping) continue; // already ours in this instance
        const r = e.rec;
        const alive = r.pid !== undefined && r.startTime !== undefined && isSameProcess(r.pid, r.startTime);
        if (r.desired === 'stop') {
          // The daemon died during a stop: finish it.
          if (alive) await sup.stop(r.spec.id).catch((err) => log.error('could not finish an interrupted stop', { process: r.spec.id, error: String(err) }));
          else if (r.state !== 'failed' && r.state !== 'stopped') {
            r.state = 'stopped';
            r.pid = undefined;
            r.startTime = undefined;
            emit(e);
          }
          continue;
        }
        if (r.state === 'failed') continue; // gave up before; only an explicit start() tries again
        if (alive) {
          const gen = ++e.gen;
          e.adopted = true;
          e.startedAtMs = r.startedAt ? Date.parse(r.startedAt) : now();
          r.state = 'running';
          r.readySince = undefined;
          log.info('adopted running process', { process: r.spec.id, pid: r.pid });
          emit(e);
          watchAdopted(e, gen, r.pid!, r.startTime!);
          watchReadiness(e, gen);
          continue;
        }
        if (r.pid !== undefined) {
          r.lastExit = { code: null, signal: null, at: iso(now()) };
          log.warn('recorded process is gone; starting it again', { process: r.spec.id, pid: r.pid });
          r.restarts += 1;
        }
        r.pid = undefined;
        r.startTime = undefined;
        if (opts.restartGone === false) {
          // relaunchOnBoot off: the operator relaunches; until then the process is stopped, not running.
          r.desired = 'stop';
          r.state = 'stopped';
          emit(e);
          continue;
        }
        await spawnEntry(e).catch((err) => log.error('could not start a recorded process', { process: r.spec.id, error: String(err) }));
      }
      await persist();
    },

    async close() {
      closed = true;
      for (const e of entries.values()) clearTimers(e);
      listeners.clear();
      await persist();
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
