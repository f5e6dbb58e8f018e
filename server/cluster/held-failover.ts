/**
 * The DB servers' automatic failover held around a role's restart (docs/DESIGN.md, "Rolling restart
 * without failed statements"; pg-ha: Patroni's maintenance mode while the etcd members restart). Its own
 * file, like paused-coordinators.ts, because its one rule — RELEASE on every path, and within a bound —
 * must be easy to read whole: a hold left behind means a dead DB leader is never replaced.
 */
import { DispatcherError } from '../../api/errors.js';
import type { Plan } from '../../api/plan.js';
import type { RestartActions } from '../core/restart-actions.js';
import type { Clock } from '../../shared/poll.js';
import type { OperationHandle } from './operations.js';

/** How long a hold or a release may take to be acknowledged by every DB server. */
const ACK_MS = 15_000;

/**
 * Runs `work` with automatic failover held. RELEASE happens on every path — success, failure, abort — and
 * at the latest `maxMs` after the hold began even while `work` still runs. A hold that does not take is
 * a warning, and `work` runs without it (the restart goes on as before this hold existed).
 */
export async function withFailoverHeld<T>(actions: RestartActions, clock: Clock, op: OperationHandle, plan: Plan, secrets: Record<string, string>, maxMs: number, what: string, work: () => Promise<T>): Promise<T> {
  const { holdFailover, releaseFailover } = actions;
  if (!holdFailover || !releaseFailover) return work();
  const t0 = clock.now();
  let released: Promise<void> | undefined;
  const release = (why: string) =>
    (released ??= (async () => {
      try {
        await releaseFailover.call(actions, plan, secrets, ACK_MS);
        op.event({ level: why === 'done' ? 'info' : 'warn', step: 'failover-release', message: `automatic failover released after ${clock.now() - t0} ms${why === 'done' ? '' : ` (${why})`}` });
      } catch (e) {
        op.event({ level: 'error', step: 'failover-release', message: `could not release the failover hold: ${(e as Error).message}` });
        throw e;
      }
    })());
  const timer = setTimeout(() => void release(`the hold reached its bound of ${maxMs} ms`).catch(() => undefined), maxMs);
  try {
    try {
      await holdFailover.call(actions, plan, secrets, Math.min(ACK_MS, maxMs));
      op.event({ level: 'info', step: 'failover-hold', message: `automatic failover held for the ${what} (${clock.now() - t0} ms until every DB server acknowledged)` });
    } catch (e) {
      op.event({ level: 'warn', step: 'failover-hold', message: `could not hold automatic failover (${(e as Error).message}); the ${what} goes ahead without it` });
      await release('the hold did not take').catch(() => undefined);
      return await work();
    }
    return await work();
  } finally {
    clearTimeout(timer);
    await release('done').catch((e) => {
      throw new DispatcherError('operation_failed', `automatic failover could not be released after the ${what}: ${(e as Error).message}`);
    });
  }
}

/**
 * Releases a hold a dead runner may have left (a release of a failover not held changes nothing). Every
 * restart operation — a resumed or aborted one above all — starts with it.
 */
export async function releaseLeftoverHold(actions: RestartActions, op: OperationHandle, plan: Plan, secrets: Record<string, string>): Promise<void> {
  if (!actions.releaseFailover) return;
  await actions.releaseFailover(plan, secrets, ACK_MS).catch((e: Error) => op.event({ level: 'warn', step: 'failover-release', message: `could not check that automatic failover is not held: ${e.message}` }));
}
