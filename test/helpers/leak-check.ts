/**
 * Leak check for process tests (zx's idea): wrap the spawn function so that every pid spawned is
 * recorded; at the end `assertNoLeaks()` fails the test if any recorded process — or any member of its
 * process group (grandchildren) — is still alive, and kills them first so the machine stays clean.
 * Processes spawned elsewhere (by a helper program) are registered with track().
 */
import type { SpawnFn } from '../../server/supervisor/spawner.js';
import { defaultSpawn } from '../../server/supervisor/spawner.js';
import { readFileSync } from 'node:fs';
import { groupMembers, readStartTime, readStat } from '../../shared/procfs.js';

export interface LeakCheck {
  /** A spawn function that records every pid. Pass it to createSupervisor. */
  spawn: SpawnFn;
  /** Record a pid spawned by something else (it is treated as a process group leader too). */
  track(pid: number): void;
  /** Pids recorded so far. */
  readonly pids: ReadonlySet<number>;
  /** Recorded pids (and members of their groups) still alive. */
  alive(): number[];
  /** Kills what is left (SIGKILL to each group and pid), then throws if anything was left. */
  assertNoLeaks(): Promise<void>;
  /** Kills what is left without failing (for after() hooks after a failed test). */
  killAll(): Promise<void>;
}

/** "pid (state, pgrp) argv" for a leak report. */
function describe(pid: number): string {
  const st = readStat(pid);
  let cmd = '';
  try {
    cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').trim();
  } catch {
    /* gone */
  }
  return `${pid} [${st?.state ?? '?'} pgrp ${st?.pgrp ?? '?'}] ${cmd}`;
}

export function createLeakCheck(inner: SpawnFn = defaultSpawn): LeakCheck {
  const pids = new Set<number>();
  const startTimes = new Map<number, number | undefined>();
  const track = (pid: number) => {
    pids.add(pid);
    // Remember the start time so a reused pid of an unrelated process is never reported or killed.
    if (!startTimes.has(pid)) startTimes.set(pid, readStartTime(pid));
  };
  const alive = () => {
    const out = new Set<number>();
    for (const pid of pids) {
      const st = readStartTime(pid);
      if (st !== undefined && st === startTimes.get(pid)) out.add(pid);
      for (const m of groupMembers(pid)) out.add(m);
    }
    return [...out].sort((a, b) => a - b);
  };
  const killAll = async () => {
    for (let round = 0; round < 100; round++) {
      const left = alive();
      if (left.length === 0) return;
      for (const pid of pids) {
        try { process.kill(-pid, 'SIGKILL'); } catch { /* no such group */ }
      }
      for (const pid of left) {
        try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  return {
    spawn: (command, args, options) => {
      const child = inner(command, args, options);
      if (child.pid !== undefined) track(child.pid);
      return child;
    },
    track,
    pids,
    alive,
    killAll,
    async assertNoLeaks() {
      const left = alive();
      const described = left.map(describe);
      await killAll();
      if (left.length > 0) throw new Error(`leaked processes still alive at the end of the test: ${described.join('; ')}`);
    },
  };
}

/**
 * Runs `body` with a fresh leak check, then `cleanup` (e.g. stopping a supervisor), then the leak
 * assertion. When the body failed, its error is the one reported (leftovers are still killed).
 */
export async function withLeakCheck(body: (leaks: LeakCheck) => Promise<void>, cleanup: () => Promise<void> = async () => {}): Promise<void> {
  const leaks = createLeakCheck();
  let failed = false;
  try {
    await body(leaks);
  } catch (err) {
    failed = true;
    throw err;
  } finally {
    try {
      await cleanup();
    } finally {
      if (failed) await leaks.killAll();
      else await leaks.assertNoLeaks();
    }
  }
}
