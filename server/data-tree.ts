/**
 * The data tree's modes and owners, decided in ONE place (docs/SECURITY.md, "Process user"):
 *  - the data dir and everything of the daemon (config, TLS key, users, cluster state, supervisor state and
 *    process logs) belong to root; the data dir is 0700, or 0711 when processes run as another user, so
 *    that user may pass through it (search only: it can list nothing and open nothing of root's);
 *  - the dirs between the data dir and a process dir (dataRoot, cluster) are root's, 0711 for the same reason;
 *  - a process dir belongs to the process user, 0700.
 * `dispatcherd init` makes a NEW data dir with these modes and never changes an existing one; the daemon
 * checks the tree at start and names what is wrong (checkDataTree).
 */
import { lstatSync } from 'node:fs';
import type { Problem } from '../api/errors.js';

export const PRIVATE_DIR_MODE = 0o700;
/** Search-only for others: the process user may pass through to its own directory. */
export const TRAVERSE_DIR_MODE = 0o711;
export const PROCESS_DIR_MODE = 0o700;

/** The mode of a new data dir. */
export function dataDirMode(processesRunAsAnotherUser: boolean): number {
  return processesRunAsAnotherUser ? TRAVERSE_DIR_MODE : PRIVATE_DIR_MODE;
}

/** The bits a dir on the way to a process dir needs for the process user to pass (added, never removed). */
export function withTraverse(mode: number): number {
  return (mode & 0o7777) | 0o001;
}

/**
 * What is wrong with the data dir for a daemon running as `daemonUid`: it must be a real directory (not a
 * link), owned by the daemon, writable by nobody else. Pure apart from one lstat.
 */
export function checkDataTree(dataDir: string, daemonUid: number): Problem[] {
  let st;
  try {
    st = lstatSync(dataDir);
  } catch (e) {
    return [{ path: dataDir, message: `cannot inspect the data dir: ${(e as Error).message}` }];
  }
  const problems: Problem[] = [];
  const mode = st.mode & 0o7777;
  if (st.isSymbolicLink()) problems.push({ path: dataDir, message: 'is a symbolic link; point the config at the real directory' });
  else if (!st.isDirectory()) problems.push({ path: dataDir, message: 'is not a directory' });
  if (st.uid !== daemonUid) problems.push({ path: dataDir, message: `is owned by uid ${st.uid}, not by the dispatcher (uid ${daemonUid}): chown ${daemonUid} ${dataDir}` });
  if (mode & 0o022) problems.push({ path: dataDir, message: `mode ${mode.toString(8)} lets others write into it: chmod go-w ${dataDir}` });
  return problems;
}
