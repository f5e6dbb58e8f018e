import { readFile } from 'node:fs/promises';
import { DispatcherError } from '../../api/errors.js';

/**
 * Reads /etc/passwd to resolve a user name without a shell. Refuses any account whose uid is 0 (root and
 * its aliases such as `toor`): cluster processes never run as root (docs/SECURITY.md, "Process user").
 */
export async function resolveUser(name: string, passwdFile = '/etc/passwd'): Promise<{ uid: number; gid: number; user: string }> {
  const passwd = await readFile(passwdFile, 'utf8');
  for (const line of passwd.split('\n')) {
    const f = line.split(':');
    if (f[0] === name) {
      const uid = Number(f[2]);
      if (!Number.isInteger(uid) || uid === 0) throw new DispatcherError('config_invalid', `runAs: user ${name} has uid ${f[2]}: cluster processes must run as an unprivileged user, never as uid 0`);
      return { user: name, uid, gid: Number(f[3]) };
    }
  }
  throw new DispatcherError('config_invalid', `runAs: no user named ${name} on this machine (create it, e.g. useradd --system ${name})`);
}
