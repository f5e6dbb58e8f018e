/**
 * Recovery after a restart of the daemon (docs/DESIGN.md, "The supervisor"): a recorded process still
 * alive with its pid AND /proc start time is adopted and watched through /proc; an interrupted stop is
 * finished; a process that is gone is started again (or left stopped when relaunch on boot is off).
 */
import { isSameProcess } from '../../shared/procfs.js';
import type { SupervisorContext } from './context.js';
import { spawnEntry, watchAdopted } from './incarnation.js';
import { watchReadiness } from './probe-loop.js';

export async function recoverRecorded(
  ctx: SupervisorContext,
  stop: (id: string) => Promise<void>,
  opts: { restartGone?: boolean } = {},
): Promise<void> {
  const { log } = ctx;
  for (const e of ctx.entries.values()) {
    if (ctx.closed) return;
    if (e.child || e.spawning || e.stopping) continue; // already ours in this instance
    const r = e.rec;
    const alive = r.pid !== undefined && r.startTime !== undefined && isSameProcess(r.pid, r.startTime);
    if (r.desired === 'stop') {
      // The daemon died during a stop: finish it.
      if (alive) await stop(r.spec.id).catch((err) => log.error('could not finish an interrupted stop', { process: r.spec.id, error: String(err) }));
      else if (r.state !== 'failed' && r.state !== 'stopped') {
        r.state = 'stopped';
        r.pid = undefined;
        r.startTime = undefined;
        ctx.emit(e);
      }
      continue;
    }
    if (r.state === 'failed') continue; // gave up before; only an explicit start() tries again
    if (alive) {
      const gen = ++e.gen;
      e.adopted = true;
      e.startedAtMs = r.startedAt ? Date.parse(r.startedAt) : ctx.now();
      r.state = 'running';
      r.readySince = undefined;
      log.info('adopted running process', { process: r.spec.id, pid: r.pid });
      ctx.emit(e);
      watchAdopted(ctx, e, gen, r.pid!, r.startTime!);
      watchReadiness(ctx, e, gen);
      continue;
    }
    if (r.pid !== undefined) {
      r.lastExit = { code: null, signal: null, at: ctx.iso(ctx.now()) };
      log.warn('recorded process is gone; starting it again', { process: r.spec.id, pid: r.pid });
      r.restarts += 1;
    }
    r.pid = undefined;
    r.startTime = undefined;
    if (opts.restartGone === false) {
      // relaunchOnBoot off: the operator relaunches; until then the process is stopped, not running.
      r.desired = 'stop';
      r.state = 'stopped';
      ctx.emit(e);
      continue;
    }
    await spawnEntry(ctx, e).catch((err) => log.error('could not start a recorded process', { process: r.spec.id, error: String(err) }));
  }
  await ctx.persist();
}
