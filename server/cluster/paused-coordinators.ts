/**
 * The connection-layer pause of a rolling restart (docs/DESIGN.md, "Rolling restart without failed
 * statements"): the engine's poolers hold new transactions while `work` (a switchover, a coordinator's
 * restart) runs. Its own file because its one rule — RESUME on every path, and within a bound — must be
 * easy to read whole.
 */
import { DispatcherError } from '../../api/errors.js';
import type { Plan } from '../../api/plan.js';
import type { RestartActions } from '../core/restart-actions.js';
import type { Clock } from '../../shared/poll.js';
import type { OperationHandle } from './operations.js';

/**
 * Runs `work` with the coordinators' poolers paused (docs/DESIGN.md, "Rolling restart without failed
 * statements"). RESUME happens on every path — success, failure, abort — and at the latest `maxMs` after
 * the pause began even while `work` still runs: a pause left behind is an outage. A pause that does not
 * take (a transaction running longer than the bound) is undone and `work` runs unpaused, with a warning.
 */
export async function pausedCoordinators<T>(actions: RestartActions, clock: Clock, op: OperationHandle, plan: Plan, secrets: Record<string, string>, ids: string[], maxMs: number, what: string, work: () => Promise<T>): Promise<T> {
  const { pauseCoordinators, resumeCoordinators } = actions;
  if (!ids.length || !pauseCoordinators || !resumeCoordinators) return work();
  const t0 = clock.now();
  let resumed: Promise<void> | undefined;
  const resume = (why: string) =>
    (resumed ??= (async () => {
      try {
        await resumeCoordinators.call(actions, plan, secrets, ids);
        op.event({ level: why === 'done' ? 'info' : 'warn', step: 'pooler-resume', message: `resumed ${ids.join(', ')} after ${clock.now() - t0} ms${why === 'done' ? '' : ` (${why})`}` });
      } catch (e) {
        op.event({ level: 'error', step: 'pooler-resume', message: `could not resume ${ids.join(', ')}: ${(e as Error).message}` });
        throw e;
      }
    })());
  const timer = setTimeout(() => void resume(`the pause reached its bound of ${maxMs} ms`).catch(() => undefined), maxMs);
  try {
    try {
      await pauseCoordinators.call(actions, plan, secrets, ids, Math.min(5000, maxMs));
      op.event({ level: 'info', step: 'pooler-pause', message: `paused ${ids.join(', ')} for the ${what} (${clock.now() - t0} ms to drain running transactions)` });
    } catch (e) {
      op.event({ level: 'warn', step: 'pooler-pause', message: `could not pause ${ids.join(', ')} (${(e as Error).message}); the ${what} goes ahead unpaused` });
      await resume('the pause did not take');
      return await work();
    }
    return await work();
  } finally {
    clearTimeout(timer);
    await resume('done').catch((e) => {
      throw new DispatcherError('operation_failed', `the coordinators' poolers could not be resumed after the ${what}: ${(e as Error).message}`);
    });
  }
}

/**
 * RESUMEs every coordinator's pooler (a RESUME of one that is not paused changes nothing). Every restart
 * operation starts with it, a resumed or aborted one above all: a pause left by a dispatcher that died
 * mid-switchover is an outage until someone resumes it.
 */
export async function resumeEveryCoordinator(actions: RestartActions, op: OperationHandle, plan: Plan, secrets: Record<string, string>): Promise<void> {
  const ids = plan.processes.filter((p) => p.role === 'coordinator').map((p) => p.id);
  if (!ids.length || !actions.resumeCoordinators) return;
  await actions.resumeCoordinators(plan, secrets, ids).catch((e: Error) => op.event({ level: 'warn', step: 'pooler-resume', message: `could not check that the coordinators are not paused: ${e.message}` }));
}
