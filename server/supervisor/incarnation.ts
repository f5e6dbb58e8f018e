/**
 * One incarnation of a process, from spawn to exit (docs/DESIGN.md, "The supervisor"): spawning it,
 * watching an adopted one through /proc, and deciding on its exit (by the pure restart policy) whether
 * it goes to backoff, failed or stopped. Events carry the generation they belong to; stale ones are ignored.
 */
import { decideRestart } from '../core/restart-policy.js';
import { groupMembers, isSameProcess } from '../../shared/procfs.js';
import { processLogDir, spawnProcess } from './spawner.js';
import type { Entry, SupervisorContext } from './context.js';
import { KILL_GRACE_MS, signalGroup, waitGone } from './group-kill.js';
import { processLogTail } from './log-tail.js';
import { watchReadiness } from './probe-loop.js';

/** Spawns a new incarnation; on exec failure the process is `failed` and the promise rejects. */
export function spawnEntry(ctx: SupervisorContext, e: Entry): Promise<void> {
  const run = (async () => {
    const gen = ++e.gen;
    ctx.clearTimers(e);
    e.adopted = false;
    e.rec.state = 'starting';
    e.rec.readySince = undefined;
    ctx.emit(e);
    let s;
    try {
      s = await spawnProcess(e.rec.spec, processLogDir(ctx.stateDir, e.rec.spec.id), ctx.spawn);
    } catch (err) {
      if (gen === e.gen) {
        e.rec.state = 'failed';
        e.rec.pid = undefined;
        e.rec.startTime = undefined;
        e.rec.failure = {
          reason: (err as Error).message,
          exitCode: null,
          signal: null,
          logTail: await processLogTail(ctx.stateDir, e.rec.spec.id, ctx.tailLines),
        };
        ctx.log.error('process could not be started', { process: e.rec.spec.id, reason: (err as Error).message });
        ctx.emit(e);
        await ctx.persist();
      }
      throw err;
    }
    const at = ctx.now();
    e.child = s.child;
    e.exited = s.exited;
    e.startedAtMs = at;
    e.rec.pid = s.pid;
    e.rec.startTime = s.startTime;
    e.rec.startedAt = ctx.iso(at);
    e.rec.failure = undefined;
    e.rec.state = 'running';
    s.exited.then(({ code, signal }) => onExit(ctx, e, gen, code, signal));
    ctx.log.info('process started', { process: e.rec.spec.id, pid: s.pid, restarts: e.rec.restarts });
    ctx.emit(e);
    // On disk before start() resolves: a daemon killed right now still knows this pid.
    await ctx.persist();
    watchReadiness(ctx, e, gen);
  })();
  e.spawning = run.catch(() => {}).finally(() => {
    if (e.spawning === tracked) e.spawning = undefined;
  });
  const tracked = e.spawning;
  return run;
}

/** Polls /proc for an adopted process (we are not its parent, so no exit event comes). */
export function watchAdopted(ctx: SupervisorContext, e: Entry, gen: number, pid: number, startTime: number): void {
  const check = () => {
    if (ctx.closed || gen !== e.gen) return;
    if (isSameProcess(pid, startTime)) {
      ctx.later(e, ctx.pollMs, check);
      return;
    }
    void onExit(ctx, e, gen, null, null);
  };
  ctx.later(e, ctx.pollMs, check);
}

async function onExit(ctx: SupervisorContext, e: Entry, gen: number, code: number | null, signal: string | null): Promise<void> {
  if (ctx.closed || gen !== e.gen) return;
  const { log } = ctx;
  const spec = e.rec.spec;
  ctx.clearTimers(e);
  e.child = undefined;
  e.exited = undefined;
  const at = ctx.now();
  const pid = e.rec.pid;
  e.rec.lastExit = { code, signal, at: ctx.iso(at) };
  e.rec.pid = undefined;
  e.rec.startTime = undefined;
  e.rec.readySince = undefined;
  if (e.stopping) return; // stop() finishes the bookkeeping once the whole group is gone
  // The leader died on its own but members of its group may live on (a postmaster outliving Patroni):
  // they would hold ports and data dirs against the next incarnation, so they go first.
  if (pid !== undefined && groupMembers(pid).length > 0) {
    log.warn('process exited but left members of its process group; stopping them', { process: spec.id, pgid: pid });
    signalGroup(pid, spec.stopSignal);
    if (!(await waitGone(pid, undefined, ctx.now() + spec.stopTimeoutMs, ctx.now))) {
      signalGroup(pid, 'SIGKILL');
      await waitGone(pid, undefined, ctx.now() + KILL_GRACE_MS, ctx.now);
    }
    if (ctx.closed || gen !== e.gen) return;
  }
  if (e.rec.desired === 'stop') {
    e.rec.state = 'stopped';
    ctx.emit(e);
    await ctx.persist();
    return;
  }
  const d = decideRestart(spec.restart, { quickFailures: e.rec.quickFailures }, { code, signal, at, startedAt: e.startedAtMs ?? at });
  e.rec.quickFailures = d.history.quickFailures;
  if (d.state === 'backoff' && d.delayMs === 0) {
    // A first crash: spawn now, before any bookkeeping, so the outage is only the exec (docs/DESIGN.md,
    // "The supervisor"); spawnEntry emits and persists the new incarnation itself.
    log.warn('process exited; restarting now', { process: spec.id, code, signal, reason: d.reason });
    e.rec.restarts += 1;
    await spawnEntry(ctx, e).catch(() => {
      /* spawnEntry recorded the failure */
    });
    return;
  }
  if (d.state === 'backoff') {
    log.warn('process exited; restarting after backoff', { process: spec.id, code, signal, delayMs: d.delayMs, reason: d.reason });
    e.rec.state = 'backoff';
    e.backoffTimer = ctx.later(e, d.delayMs, () => {
      e.backoffTimer = undefined;
      if (gen !== e.gen || e.rec.desired !== 'run') return;
      e.rec.restarts += 1;
      spawnEntry(ctx, e).catch(() => {
        /* spawnEntry recorded the failure */
      });
    });
    ctx.emit(e);
    await ctx.persist();
    return;
  }
  const tail = await processLogTail(ctx.stateDir, spec.id, ctx.tailLines);
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
  ctx.emit(e);
  await ctx.persist();
}
