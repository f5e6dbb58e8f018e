/**
 * Stopping a process by pid: a polite signal, a grace period, then SIGKILL. The one such loop for code
 * that stops a process it did not spawn itself (a dispatcherd of `dispatch local`, a postmaster left by
 * Patroni). Returns whether SIGKILL was needed.
 */
import { pollUntil, systemClock, type Clock } from './poll.js';
import { pidAlive } from './procfs.js';

export interface StopWithGraceOptions {
  signal: NodeJS.Signals;
  graceMs: number;
  clock?: Clock;
  /** Injected for tests; default: process.kill and /proc. */
  kill?: (pid: number, signal: NodeJS.Signals) => void;
  alive?: (pid: number) => boolean;
}

export async function stopWithGrace(pid: number, opts: StopWithGraceOptions): Promise<{ killed: boolean }> {
  const kill = opts.kill ?? ((p: number, s: NodeJS.Signals) => void process.kill(p, s));
  const alive = opts.alive ?? pidAlive;
  if (!alive(pid)) return { killed: false };
  kill(pid, opts.signal);
  const gone = await pollUntil(async () => !alive(pid), (g) => g, {
    timeoutMs: opts.graceMs,
    intervalMs: 100,
    clock: opts.clock ?? systemClock,
    onTimeout: () => new Error('grace period over'),
  }).catch(() => false);
  if (gone) return { killed: false };
  if (alive(pid)) kill(pid, 'SIGKILL');
  return { killed: true };
}
