/**
 * Files root writes or reads in places a less privileged user can reach (docs/SECURITY.md, "Process
 * user"). The daemon runs as root; the process user owns its process directory and may plant symlinks,
 * hardlinks or FIFOs there at any moment. So, by construction:
 *  - root never opens an existing path in such a directory for writing: it creates a NEW file (O_EXCL,
 *    which never follows a link) and renames it over the target (rename replaces a link, never its target);
 *  - ownership and modes are set on the open descriptor (fchown/fchmod), never by path;
 *  - a file root reads back (logs) must be a regular file owned by root with a single link, opened with
 *    O_NOFOLLOW | O_NONBLOCK (a FIFO cannot block the daemon);
 *  - a directory is opened with O_DIRECTORY | O_NOFOLLOW before its owner or mode is changed.
 * This module is the ONE way the daemon writes a process's files (server/cluster/process-dir.ts and the supervisor).
 */
import { constants } from 'node:fs';
import { lstat, mkdir, open, type FileHandle } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import { DispatcherError } from '../api/errors.js';
import { writeFileAtomic } from '../shared/atomic-file.js';

export interface Owner {
  uid: number;
  gid: number;
}

const { O_RDONLY, O_WRONLY, O_APPEND, O_CREAT, O_NOFOLLOW, O_DIRECTORY, O_NONBLOCK } = constants;

function refused(path: string, why: string): DispatcherError {
  return new DispatcherError('conflict', `refusing ${path}: ${why} (something other than the dispatcher put it there)`, { details: { path } });
}

/**
 * Creates `dir` if missing (its parent must exist and must not be writable by the owner-to-be), then sets
 * its owner and mode through a descriptor opened without following links.
 */
export async function ensureDir(dir: string, mode: number, owner?: Owner): Promise<void> {
  await mkdir(dirname(dir), { recursive: true, mode: 0o700 });
  await mkdir(dir, { mode }).catch((e: NodeJS.ErrnoException) => {
    if (e.code !== 'EEXIST') throw e;
  });
  let fh: FileHandle;
  try {
    fh = await open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ELOOP' || code === 'ENOTDIR') throw refused(dir, 'it is not a directory but a link or a file');
    throw e;
  }
  try {
    const st = await fh.stat();
    const rootOwned = st.uid === process.getuid?.();
    if (!rootOwned && (!owner || st.uid !== owner.uid)) throw refused(dir, `it is owned by uid ${st.uid}`);
    if (owner && (st.uid !== owner.uid || st.gid !== owner.gid)) await fh.chown(owner.uid, owner.gid);
    if ((st.mode & 0o7777) !== mode) await fh.chmod(mode);
  } finally {
    await fh.close();
  }
}

/**
 * Writes a file into a directory that `owner` may write to: a new file (never an existing path, so no
 * link is followed and no hardlinked inode is changed), owned by `owner` through its descriptor, renamed
 * into place. `name` is one path segment.
 */
export async function writeFileForOwner(dir: string, name: string, content: string | Uint8Array, mode: number, owner?: Owner): Promise<string> {
  if (name !== basename(name) || name === '' || name === '.' || name === '..') {
    throw new DispatcherError('config_invalid', `file name ${JSON.stringify(name)} must be one path segment`);
  }
  const st = await lstat(dir);
  if (!st.isDirectory()) throw refused(dir, 'it is not a directory');
  const path = `${dir}/${name}`;
  await writeFileAtomic(path, content, mode, owner);
  return path;
}

/** Opens (creating if missing) a root-owned log file for appending: a regular file, no link followed, one link only. */
export async function openOwnLogForAppend(path: string, mode = 0o600): Promise<FileHandle> {
  return (await openOwnFile(path, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_NONBLOCK, mode))!;
}

/** Opens a file the daemon wrote itself for reading; undefined when missing; refused when it is not ours. */
export function openOwnFileForRead(path: string): Promise<FileHandle | undefined> {
  return openOwnFile(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK);
}

/**
 * The one way both open a file of the daemon's own: `flags` always hold O_NOFOLLOW, so a planted link
 * fails the open (ELOOP) instead of being followed; the open descriptor is then checked (regular file,
 * owned by the daemon, one link) and closed again when the check fails. Undefined when the file is missing
 * (only possible without O_CREAT).
 */
async function openOwnFile(path: string, flags: number, mode?: number): Promise<FileHandle | undefined> {
  let fh: FileHandle;
  try {
    fh = await open(path, flags, mode);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' && !(flags & O_CREAT)) return undefined;
    if (code === 'ELOOP') throw refused(path, 'it is a symbolic link');
    throw e;
  }
  try {
    await checkOwnFile(fh, path);
  } catch (e) {
    await fh.close();
    throw e;
  }
  return fh;
}

async function checkOwnFile(fh: FileHandle, path: string): Promise<void> {
  const st = await fh.stat();
  if (!st.isFile()) throw refused(path, 'it is not a regular file');
  if (st.uid !== process.getuid?.()) throw refused(path, `it is owned by uid ${st.uid}, not by the dispatcher`);
  if (st.nlink !== 1) throw refused(path, `it has ${st.nlink} hard links`);
}
