/**
 * Reading /proc: the facts the supervisor needs to recognise a process again after its own restart.
 * A pid alone is not an identity (pids are reused); pid + start time (field 22 of /proc/<pid>/stat,
 * clock ticks since boot) is. Zombies count as dead: a process whose parent died is reaped by pid 1,
 * and a pid 1 that does not reap (some container inits) would otherwise keep it "alive" forever.
 */
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';

export interface ProcStat {
  pid: number;
  /** One-letter state: R, S, D, Z, T, ... */
  state: string;
  ppid: number;
  pgrp: number;
  /** Start time in clock ticks since boot (field 22). */
  startTime: number;
}

/** Parses the text of /proc/<pid>/stat. The command name (field 2) may contain spaces and ')'. */
export function parseStat(text: string): ProcStat | undefined {
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  if (open < 0 || close < 0) return undefined;
  const pid = Number(text.slice(0, open).trim());
  // Fields after the name start at field 3 (state); field N is at index N-3.
  const rest = text.slice(close + 2).trim().split(/\s+/);
  const startTime = Number(rest[22 - 3]);
  if (!Number.isInteger(pid) || !Number.isFinite(startTime)) return undefined;
  return { pid, state: rest[0], ppid: Number(rest[1]), pgrp: Number(rest[2]), startTime };
}

export function readStat(pid: number): ProcStat | undefined {
  try {
    return parseStat(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return undefined;
  }
}

/** Start time (clock ticks since boot) of a live, non-zombie process, or undefined. */
export function readStartTime(pid: number): number | undefined {
  const st = readStat(pid);
  if (!st || st.state === 'Z' || st.state === 'X') return undefined;
  return st.startTime;
}

/** True when `pid` runs and is the same incarnation as recorded (same start time). */
export function isSameProcess(pid: number, startTime: number): boolean {
  return readStartTime(pid) === startTime;
}

/** Pids of the live (non-zombie) members of a process group. */
export function groupMembers(pgid: number): number[] {
  const out: number[] = [];
  for (const pid of allPids()) {
    const st = readStat(pid);
    if (st && st.pgrp === pgid && st.state !== 'Z' && st.state !== 'X') out.push(st.pid);
  }
  return out;
}

/** Every pid in /proc right now (none when /proc cannot be read). */
function allPids(): number[] {
  try {
    return readdirSync('/proc').filter((name) => /^\d+$/.test(name)).map(Number);
  } catch {
    return [];
  }
}

/** Real uid of a process (from /proc/<pid>/status), or undefined. */
export function readUid(pid: number): number | undefined {
  try {
    const m = /^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** Whether a process with this pid exists (signal 0 checks without sending anything). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The real uid and the working directory of a live process (from /proc), or undefined when it is gone. */
export function processIdentity(pid: number): { uid: number; cwd: string } | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = /^Uid:\s+(\d+)/m.exec(status);
    if (!m) return undefined;
    return { uid: Number(m[1]), cwd: readlinkSync(`/proc/${pid}/cwd`) };
  } catch {
    return undefined;
  }
}

/**
 * Live processes that belong to a directory tree: their working directory or executable is inside `dir`,
 * or an argument names a path inside it (etcd --data-dir, patroni's config, haproxy -f). Used before
 * deleting a tree, so it errs towards finding too much: a false hit refuses a delete, never allows one.
 */
export function processesUnder(dir: string): { pid: number; uid: number | undefined; command: string }[] {
  const root = dir.replace(/\/+$/, '') + '/';
  const inside = (p: string) => p === root.slice(0, -1) || p.startsWith(root);
  const out: { pid: number; uid: number | undefined; command: string }[] = [];
  for (const pid of allPids()) {
    if (pid === process.pid) continue;
    const st = readStat(pid);
    if (!st || st.state === 'Z' || st.state === 'X') continue;
    let args: string[] = [];
    let cwd = '';
    let exe = '';
    try {
      args = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
    } catch {
      continue; // gone
    }
    try {
      cwd = readlinkSync(`/proc/${pid}/cwd`);
    } catch {
      /* not readable: judged by its arguments */
    }
    try {
      exe = readlinkSync(`/proc/${pid}/exe`);
    } catch {
      /* kernel thread or not readable */
    }
    if (inside(cwd) || inside(exe) || args.some((a) => a.includes(root) || inside(a))) out.push({ pid, uid: readUid(pid), command: args.join(' ').slice(0, 200) });
  }
  return out;
}
