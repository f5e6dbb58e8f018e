/**
 * Restart policy: a pure state machine in the manner of Nomad's restart tracker. The supervisor feeds it
 * every exit of a process it wants running; it answers what to do next. No I/O, no clock of its own (the
 * times come in with the event), so every branch is unit-tested without processes.
 *
 * Rules:
 * - the first restart is immediate (delay 0): a process that crashes once is serving again as fast as the
 *   machine can exec it (docs/DESIGN.md, "The supervisor"); waiting only lengthens the outage;
 * - an exit after a run shorter than `quickFailureWindowMs` is a quick failure; from the second quick
 *   failure in a row the backoff grows exponentially (initialDelayMs · 2^(n-2), capped at maxDelayMs), so
 *   only a process that keeps crashing is slowed down;
 * - a run at least as long as the window was healthy: restart at once, the count starts again from zero;
 * - after `maxQuickFailures` quick failures in a row the policy gives up: state `failed`, with a reason
 *   that names the exit code or signal. Giving up is never silent and never success (the ArangoDB
 *   Starter's issue #111 exited 0 there, so scripts thought the cluster was fine);
 * - with restarts disabled, a clean exit (code 0) is `stopped` and any other exit is `failed`.
 */

export interface RestartPolicyConfig {
  /** Restart when the process exits on its own (default true). */
  enabled: boolean;
  /** Backoff after the second quick failure in a row (ms); the first restart is immediate. */
  initialDelayMs: number;
  /** Cap of the exponential backoff (ms). */
  maxDelayMs: number;
  /** An exit within this long after a start counts as a quick failure (ms). */
  quickFailureWindowMs: number;
  /** Give up (state `failed`) after this many quick failures in a row. */
  maxQuickFailures: number;
}

export const DEFAULT_RESTART_POLICY: RestartPolicyConfig = {
  enabled: true,
  initialDelayMs: 500,
  maxDelayMs: 30_000,
  quickFailureWindowMs: 10_000,
  maxQuickFailures: 5,
};

/** What the tracker remembers between exits (persisted with the process). */
export interface RestartHistory {
  /** Quick failures in a row so far. */
  quickFailures: number;
}

export const INITIAL_HISTORY: RestartHistory = { quickFailures: 0 };

export interface ExitEvent {
  /** Exit code, or null when killed by a signal or when unknown (an adopted process cannot be waited for). */
  code: number | null;
  signal: string | null;
  /** When the exit was seen (ms since epoch). */
  at: number;
  /** When this incarnation started (ms since epoch). */
  startedAt: number;
}

export interface RestartDecision {
  state: 'backoff' | 'failed' | 'stopped';
  /** Wait this long before starting again (only meaningful for `backoff`, where 0 means at once; 0 otherwise). */
  delayMs: number;
  reason: string;
  /** The history to remember for the next exit. */
  history: RestartHistory;
}

/** "exit code 3", "signal SIGKILL", or "an unknown exit status" — for reasons shown to people. */
export function describeExit(code: number | null, signal: string | null): string {
  if (signal) return `signal ${signal}`;
  if (code !== null) return `exit code ${code}`;
  return 'an unknown exit status';
}

/** Delay before the restart that follows the n-th quick failure in a row: 0 for the first, then exponential. */
export function backoffDelay(policy: RestartPolicyConfig, n: number): number {
  if (n <= 1) return 0;
  const exp = n - 2;
  // 2 ** exp grows past the cap long before it loses precision; min() keeps it bounded.
  return Math.min(policy.maxDelayMs, policy.initialDelayMs * 2 ** Math.min(exp, 52));
}

/**
 * Decides what follows an exit the supervisor did not ask for. (An exit after a stop request never
 * comes here: that is simply `stopped`.)
 */
export function decideRestart(policy: RestartPolicyConfig, history: RestartHistory, exit: ExitEvent): RestartDecision {
  const what = describeExit(exit.code, exit.signal);
  const ranMs = Math.max(0, exit.at - exit.startedAt);

  if (!policy.enabled) {
    if (exit.code === 0 && !exit.signal) {
      return { state: 'stopped', delayMs: 0, reason: `exited with ${what}; restart is disabled`, history: INITIAL_HISTORY };
    }
    return { state: 'failed', delayMs: 0, reason: `exited with ${what} after ${ranMs} ms; restart is disabled`, history: history };
  }

  if (ranMs >= policy.quickFailureWindowMs) {
    // A healthy run: forget earlier trouble and restart at once.
    return {
      state: 'backoff',
      delayMs: 0,
      reason: `exited with ${what} after a run of ${ranMs} ms; restarting now`,
      history: INITIAL_HISTORY,
    };
  }

  const quick = history.quickFailures + 1;
  if (quick >= policy.maxQuickFailures) {
    return {
      state: 'failed',
      delayMs: 0,
      reason:
        `gave up after ${quick} quick failures in a row (each within ${policy.quickFailureWindowMs} ms of its start); ` +
        `last exit: ${what} after ${ranMs} ms`,
      history: { quickFailures: quick },
    };
  }
  const delayMs = backoffDelay(policy, quick);
  return {
    state: 'backoff',
    delayMs,
    reason:
      `exited with ${what} after ${ranMs} ms (quick failure ${quick} of ${policy.maxQuickFailures}); ` +
      (delayMs === 0 ? 'restarting now' : `restarting in ${delayMs} ms`),
    history: { quickFailures: quick },
  };
}
