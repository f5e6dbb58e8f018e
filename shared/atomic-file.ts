/**
 * Atomic file writes: a reader (or a crash at any instant) sees either the old
 * content or the new content, never a torn file. Recipe: write a temp file in the
 * same directory (rename is only atomic within one file system), fsync it, rename
 * over the target, then fsync the directory so the rename itself is durable.
 */
import { constants } from 'node:fs';
import { open, rename, unlink } from 'node:fs/promises';
import { dirname, basename, join } from 'node:path';
import { randomBytes } from 'node:crypto';

export async function writeFileAtomic(
  path: string,
  data: string | Uint8Array,
  mode = 0o600,
  /** Owner of the new file, set on its descriptor (never by path: see server/safe-files.ts). */
  owner?: { uid: number; gid: number },
): Promise<void> {
  const dir = dirname(path);
  const tmp = join(dir, `.${basename(path)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  // O_EXCL: never follow or clobber a pre-existing file (or link) at the temp name.
  const fh = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, mode);
  try {
    await fh.writeFile(data);
    // open()'s mode is filtered by the umask; chmod makes the requested mode exact.
    await fh.chmod(mode);
    if (owner) await fh.chown(owner.uid, owner.gid);
    await fh.sync();
  } catch (err) {
    await fh.close().catch(() => {});
    await unlink(tmp).catch(() => {});
    throw err;
  }
  await fh.close();
  try {
    await rename(tmp, path);
  } catch (err) {
    await unlink(tmp).catch(() => {});
    throw err;
  }
  await fsyncDir(dir);
}

/** fsync a directory so a rename/create in it survives a power loss. */
export async function fsyncDir(dir: string): Promise<void> {
  const dh = await open(dir, 'r');
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}
