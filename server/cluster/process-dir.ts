/**
 * A process's data dir on this machine (docs/SECURITY.md, "Process user"): where it is (never outside the
 * dispatcher data dir), how rendered files reach it, and how it is deleted.
 */
import { chmod, rm, rmdir, stat } from 'node:fs/promises';
import { basename, dirname, resolve, sep } from 'node:path';
import { execFile } from 'node:child_process';
import { DispatcherError } from '../../api/errors.js';
import type { PlanProcess } from '../../api/plan.js';
import { ensureDir, writeFileForOwner, type Owner } from '../safe-files.js';
import { withTraverse } from '../data-tree.js';

/** The absolute data dir of a process, refusing any path that would leave the dispatcher's data dir. */
export function processDirOf(dataDir: string, p: PlanProcess): string {
  const root = resolve(dataDir);
  const dir = resolve(root, p.dataDir);
  if (dir === root || !dir.startsWith(root + sep)) {
    throw new DispatcherError('validation_failed', `process ${p.id}: data dir ${p.dataDir} escapes the data dir`, {
      problems: [{ path: `processes.${p.id}.dataDir`, message: 'must stay inside the dispatcher data dir' }],
    });
  }
  return dir;
}

/**
 * The ONE way rendered files reach a process dir (docs/SECURITY.md, "Process user"): the dir is made and
 * owned through a descriptor, each file is created new and renamed into place, owned by the process user
 * through its descriptor — whatever the process user planted at those paths is replaced, never followed.
 */
export async function writeProcessFiles(dataDir: string, dir: string, files: { path: string; content: string; mode: number }[], owner?: Owner): Promise<void> {
  await ensureDir(dir, 0o700, owner);
  if (owner) await letRunAsTraverse(dataDir, dir);
  for (const f of files) {
    if (dirname(f.path) !== dir) throw new DispatcherError('config_invalid', `engine file ${f.path} must sit directly in the process dir ${dir}`);
  }
  // Each file is its own atomic write (two fsyncs); written one after the other they were ~2 ms each on a
  // process start's critical path (docs/BENCHMARKS.md, "Launch overhead"). Together the file system can
  // commit them in one go. Every write settles before a failure is reported.
  const written = await Promise.allSettled(files.map((f) => writeFileForOwner(dir, basename(f.path), f.content, f.mode, owner)));
  const failed = written.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
}

/**
 * The unprivileged user must be able to walk from the data dir down to its process dir. Parents get
 * the search bit for others (o+x) only: nothing in them can be listed, and every secret file is 0600.
 */
async function letRunAsTraverse(dataDir: string, dir: string): Promise<void> {
  const root = resolve(dataDir);
  for (let p = dirname(dir); p.startsWith(root); p = dirname(p)) {
    const st = await stat(p);
    if ((st.mode & 0o001) === 0) await chmod(p, withTraverse(st.mode));
    if (p === root) break;
  }
}

/**
 * Deletes a process dir. Its contents belong to the process user, who could swap a subdirectory for a link
 * while root walks it; so the contents are deleted AS that user (find -delete, argv only, no shell): it can
 * only delete what the user could delete anyway. Root then removes the empty dir from its own parent.
 */
export async function removeProcessDir(dir: string, owner?: Owner): Promise<void> {
  if (owner) {
    const st = await stat(dir).catch(() => undefined);
    if (!st) return;
    await new Promise<void>((resolveRm, reject) => {
      execFile('/usr/bin/find', [dir, '-mindepth', '1', '-delete'], { uid: owner.uid, gid: owner.gid, cwd: '/', env: { PATH: '/usr/bin:/bin' }, timeout: 600_000 }, (err, _o, stderr) =>
        err ? reject(new DispatcherError('operation_failed', `could not delete ${dir} as the process user: ${String(stderr).trim().split('\n')[0] || err.message}`)) : resolveRm(),
      );
    });
    await rmdir(dir);
    return;
  }
  await rm(dir, { recursive: true, force: true });
}
