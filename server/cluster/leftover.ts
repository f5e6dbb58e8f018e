/**
 * The leftover-process check after a stop (a postmaster outlives its Patroni). Its own file: it trusts
 * nothing the process user can write (docs/SECURITY.md, "Process user").
 */
import { constants } from 'node:fs';
import { open, realpath } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { pidAlive, processIdentity } from '../../shared/procfs.js';

/** The part of a logger this needs. */
export interface LeftoverLogger {
  warn(message: string, meta?: Record<string, unknown>): void;
}

/**
 * Stops a postmaster its Patroni left running. The pid comes from a file the process user can write, so
 * it is only a hint: the pid is signalled only when /proc says it runs as the process user AND its working
 * directory is this node's data directory (PostgreSQL chdirs there), never because of its command line.
 */
export async function stopLeftover(pidFile: string | undefined, owner: { uid: number } | undefined, logger: LeftoverLogger): Promise<'none' | 'refused' | 'stopped'> {
  if (!pidFile) return 'none';
  let pid: number;
  try {
    const fh = await open(pidFile, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    try {
      if (!(await fh.stat()).isFile()) return 'refused';
      const buf = Buffer.alloc(32);
      const { bytesRead } = await fh.read(buf, 0, 32, 0);
      pid = Number(buf.subarray(0, bytesRead).toString('utf8').split('\n')[0]);
    } finally {
      await fh.close();
    }
  } catch {
    return 'none';
  }
  if (!Number.isInteger(pid) || pid <= 1) return 'refused';
  const alive = () => pidAlive(pid);
  if (!alive()) return 'none';
  // The process dir is root's to name (its parent is root-owned); the last segment is the engine's.
  const dataDir = join(await realpath(dirname(dirname(pidFile))).catch(() => dirname(dirname(pidFile))), basename(dirname(pidFile)));
  const who = processIdentity(pid);
  const expectedUid = owner?.uid ?? process.getuid?.();
  if (!who || who.uid !== expectedUid || who.cwd !== dataDir) {
    logger.warn('not signalling the pid of a postmaster.pid: it is not this node\'s postmaster', { pid, pidFile, uid: who?.uid, cwd: who?.cwd });
    return 'refused';
  }
  logger.warn('stopping a postmaster left running after its Patroni stopped', { pid, pidFile });
  process.kill(pid, 'SIGINT'); // PostgreSQL's "fast" shutdown
  for (let i = 0; i < 100 && alive(); i++) await new Promise((r) => setTimeout(r, 100));
  if (alive() && processIdentity(pid)?.cwd === dataDir) process.kill(pid, 'SIGKILL');
  return 'stopped';
}

