/**
 * Stopping a process means stopping its whole process group (docs/DESIGN.md, "The supervisor"): a
 * postmaster or a shell's children must not outlive the leader and hold ports and data dirs.
 */
import { groupMembers, isSameProcess, readStartTime } from '../../shared/procfs.js';
import { systemClock } from '../../shared/poll.js';

/** After a SIGKILL to the group, how long to wait for it to vanish before reporting an error. */
export const KILL_GRACE_MS = 10_000;

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export function signalGroup(pid: number, signal: NodeJS.Signals): void {
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

function leaderAndGroupGone(pid: number, startTime: number | undefined): boolean {
  const leaderGone = startTime === undefined ? readStartTime(pid) === undefined : !isSameProcess(pid, startTime);
  return leaderGone && groupMembers(pid).length === 0;
}

/** True once the leader (the same incarnation, if its start time is known) and all of its group are gone. */
export async function waitGone(pid: number, startTime: number | undefined, untilMs: number, now: () => number = systemClock.now): Promise<boolean> {
  for (;;) {
    if (leaderAndGroupGone(pid, startTime)) return true;
    if (now() >= untilMs) return false;
    await sleep(25);
  }
}
