/**
 * Stopping one process (docs/DESIGN.md, "The supervisor"): the stop signal to its group, SIGKILL after
 * its stop timeout, an error if even that does not end it; the record ends `stopped` with no pid.
 */
import { DispatcherError } from '../../api/errors.js';
import type { Entry, SupervisorContext } from './context.js';
import { KILL_GRACE_MS, signalGroup, sleep, waitGone } from './group-kill.js';

export async function stopEntry(ctx: SupervisorContext, e: Entry): Promise<void> {
  const { log } = ctx;
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
    ctx.emit(e);
    await ctx.persist();
    log.info('stopping process', { process: spec.id, pid, signal: spec.stopSignal });
    signalGroup(pid, spec.stopSignal);
    if (!(await waitGone(pid, startTime, ctx.now() + spec.stopTimeoutMs, ctx.now))) {
      log.warn('process did not stop in time; sending SIGKILL to its group', { process: spec.id, pid, stopTimeoutMs: spec.stopTimeoutMs });
      signalGroup(pid, 'SIGKILL');
      if (!(await waitGone(pid, startTime, ctx.now() + KILL_GRACE_MS, ctx.now))) {
        throw new DispatcherError('operation_failed', `process ${spec.id} (pid ${pid}) is still alive ${KILL_GRACE_MS} ms after SIGKILL`, {
          details: { process: spec.id, pid },
        });
      }
    }
    // For a child, let node reap it and report code/signal (it is dead, so this is prompt).
    if (exited) await Promise.race([exited, sleep(2_000)]);
  }
  e.gen += 1;
  ctx.clearTimers(e);
  e.child = undefined;
  e.exited = undefined;
  e.adopted = false;
  e.rec.pid = undefined;
  e.rec.startTime = undefined;
  e.rec.readySince = undefined;
  // An adopted process cannot be waited for: its exit status is unknown.
  if (pid !== undefined && e.rec.lastExit === exitBefore) e.rec.lastExit = { code: null, signal: null, at: ctx.iso(ctx.now()) };
  e.rec.state = 'stopped';
  log.info('process stopped', { process: spec.id });
  ctx.emit(e);
  await ctx.persist();
}
