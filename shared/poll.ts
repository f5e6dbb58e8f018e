/**
 * Time, waiting and polling, in one place. Code that waits takes a Clock (injected; systemClock in
 * production, a fake that moves time instantly in fast tests), and every "try until it works or the time
 * is up" loop is one call of pollUntil — so the timeout, the abort and the interval behave the same
 * everywhere (docs/DESIGN.md, "Time and waiting").
 */

export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
  /** Resolves after `ms`; rejects with the signal's reason when it aborts first. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  sleep: (ms, signal) =>
    new Promise<void>((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const timer = setTimeout(() => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      }, ms);
      const onAbort = () => {
        clearTimeout(timer);
        reject(signal!.reason);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
    }),
};

export interface PollOptions<T> {
  timeoutMs: number;
  intervalMs: number;
  clock?: Clock;
  /** Checked before every wait; an aborted signal ends the poll with its reason. */
  signal?: AbortSignal;
  /** Called with every result that is not done yet (e.g. to report progress). */
  onPending?: (last: T) => void;
  /** The error thrown when the time is up, made from the last result. */
  onTimeout: (last: T) => Error;
}

/**
 * Calls `attempt` until `done(result)`, at most until `timeoutMs` have passed (the last attempt runs
 * after the deadline is noticed, never more than one interval late). Returns the result that was done.
 * An attempt that throws ends the poll: wrap it when a failure should count as "not yet".
 */
export async function pollUntil<T>(attempt: () => Promise<T>, done: (result: T) => boolean, opts: PollOptions<T>): Promise<T> {
  const clock = opts.clock ?? systemClock;
  const deadline = clock.now() + opts.timeoutMs;
  for (;;) {
    const result = await attempt();
    if (done(result)) return result;
    opts.onPending?.(result);
    if (clock.now() > deadline) throw opts.onTimeout(result);
    if (opts.signal?.aborted) throw opts.signal.reason;
    await clock.sleep(opts.intervalMs);
  }
}

/** A health-style check as a value: a thrown error becomes "not ok" with its message. */
export async function settledCheck(check: () => Promise<{ ok: boolean; detail: string }>): Promise<{ ok: boolean; detail: string }> {
  try {
    return await check();
  } catch (e) {
    return { ok: false, detail: e instanceof Error ? e.message : String(e) };
  }
}
