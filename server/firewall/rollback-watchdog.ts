/**
 * The rollback watchdog of a commit-confirmed firewall change: a small process of its own, started per
 * pending change in its OWN session (setsid), so it outlives a daemon killed with SIGKILL and keeps time
 * while a daemon is stopped with SIGSTOP or hangs. At the deadline it claims the pending change
 * (server/firewall/pending-change.ts) and installs the saved previous policy with the same backend code
 * the daemon uses (for nftables one `nft -f -` transaction), unless the change was confirmed or cancelled
 * first. It re-reads the state file while it waits, so `extend` moves its deadline.
 *
 *   node rollback-watchdog.js <state-dir> <token>      (started by spawnRollbackWatchdog, never by hand)
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { GuardPolicy } from '../core/firewall-policy.js';
import { createBackend } from './detect.js';
import { PendingChangeFile, type PendingChange } from './pending-change.js';
import { systemClock, type Clock } from '../../shared/poll.js';

/** How often the watchdog re-reads the state file while waiting (extend, confirm, cancel). */
const POLL_MS = 200;
/** A state file missing without an outcome (a daemon died mid-extend): roll back this long after the last deadline seen. */
const ORPHAN_GRACE_MS = 2_000;

export type Restore = (change: PendingChange, policy: GuardPolicy | null) => Promise<void>;

/** Restores with the real backend the change was made with. */
export const restoreWithBackend: Restore = async (change, policy) => {
  const backend = createBackend(change.backend, change.netns ? { netns: change.netns } : {});
  if (policy) await backend.apply(policy);
  else await backend.remove();
};

/** Waits for `token`'s deadline and rolls back unless the change was settled. Returns what happened. */
export async function watchPendingChange(dir: string, token: string, restore: Restore = restoreWithBackend, clock: Clock = systemClock): Promise<'settled' | 'rolled-back' | 'rollback-failed'> {
  const store = new PendingChangeFile(dir);
  let last: PendingChange | undefined;
  for (;;) {
    if (await store.outcome(token)) return 'settled';
    const cur = await store.read().catch(() => undefined);
    if (cur && cur.token !== token) return 'settled'; // a newer change has its own watchdog
    if (cur) last = cur;
    if (!last) return 'settled';
    const deadline = Date.parse(last.deadline);
    const due = cur ? clock.now() >= deadline : clock.now() >= deadline + ORPHAN_GRACE_MS;
    if (due) {
      const change = cur ? await store.claim(token) : last;
      if (!change) continue; // someone else settled it (or is extending it): look again
      if (cur && Date.parse(change.deadline) > clock.now()) {
        // Extended between our read and our claim: give it back and keep waiting.
        if (!(await store.putBack(change))) return 'settled';
        continue;
      }
      try {
        await restore(change, change.previous);
        await store.writeOutcome({ token, outcome: 'rolled-back', at: new Date(clock.now()).toISOString() });
        return 'rolled-back';
      } catch (e) {
        await store.writeOutcome({ token, outcome: 'rollback-failed', at: new Date(clock.now()).toISOString(), error: (e as Error).message }).catch(() => undefined);
        return 'rollback-failed';
      }
    }
    await clock.sleep(Math.max(10, Math.min(POLL_MS, deadline - clock.now())));
  }
}

/** Starts a detached watchdog for `token` (own session, no stdio, not waited for); returns its pid. */
export function spawnRollbackWatchdog(dir: string, token: string): number | undefined {
  const script = fileURLToPath(import.meta.url);
  const child = spawn(process.execPath, [script, dir, token], { detached: true, stdio: 'ignore' });
  child.unref();
  return child.pid;
}

// Entry point: run as a program (not when imported).
if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const [dir, token] = process.argv.slice(2);
  // The daemon's signals (SIGINT to its process group, SIGHUP at logout) are not ours: own session already;
  // ignore SIGHUP anyway so a controlling terminal closing cannot end the watchdog.
  process.on('SIGHUP', () => undefined);
  watchPendingChange(dir, token).then(
    (r) => process.exit(r === 'rollback-failed' ? 1 : 0),
    () => process.exit(2),
  );
}
