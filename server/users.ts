/**
 * Operator accounts: a JSON users file (0600) holding scrypt hashes only, and constant-time verification.
 * Passwords must be >= 12 characters and must not contain ':' (passport-http's BasicStrategy cuts the
 * password at the first colon, so such a password could never be typed correctly).
 */
import { randomBytes, scrypt as scryptCb, timingSafeEqual, type ScryptOptions } from 'node:crypto';
import { mkdir, readFile, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { DispatcherError, type Problem } from '../api/errors.js';
import { writeFileAtomic } from '../shared/atomic-file.js';

export const MIN_PASSWORD_LENGTH = 12;
const SCRYPT = { N: 16384, r: 8, p: 1, keylen: 32 } as const;

function scrypt(password: string, salt: Buffer, keylen: number, opts: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => scryptCb(password, salt, keylen, opts, (err, key) => (err ? reject(err) : resolve(key))));
}

export function passwordProblems(password: string): Problem[] {
  const problems: Problem[] = [];
  if ([...password].length < MIN_PASSWORD_LENGTH) problems.push({ path: 'password', message: `must be at least ${MIN_PASSWORD_LENGTH} characters` });
  if (password.includes(':')) problems.push({ path: 'password', message: "must not contain ':' (HTTP Basic authentication cuts a password at the first colon)" });
  if (/[\r\n\0]/.test(password)) problems.push({ path: 'password', message: 'must not contain line breaks or NUL' });
  return problems;
}

export function userNameProblems(name: string): Problem[] {
  return /^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$/.test(name)
    ? []
    : [{ path: 'user', message: "must be 1-64 letters, digits, '.', '_', '@' or '-', starting with a letter or digit" }];
}

/** `scrypt$N$r$p$salt$key` with base64 salt and key. */
export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  const key = await scrypt(password, salt, SCRYPT.keylen, { N: SCRYPT.N, r: SCRYPT.r, p: SCRYPT.p });
  return `scrypt$${SCRYPT.N}$${SCRYPT.r}$${SCRYPT.p}$${salt.toString('base64')}$${key.toString('base64')}`;
}

/** A well-formed hash nobody's password matches: verifying an unknown user costs the same as a known one. */
const DUMMY_HASH = `scrypt$${SCRYPT.N}$${SCRYPT.r}$${SCRYPT.p}$${Buffer.alloc(16).toString('base64')}$${Buffer.alloc(32).toString('base64')}`;

export async function verifyPassword(password: string, stored: string | undefined): Promise<boolean> {
  const parts = (stored ?? DUMMY_HASH).split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') return false;
  const [N, r, p] = parts.slice(1, 4).map(Number);
  const salt = Buffer.from(parts[4], 'base64');
  const expected = Buffer.from(parts[5], 'base64');
  const actual = await scrypt(password, salt, expected.length, { N, r, p, maxmem: 256 * N * r + 1024 * 1024 });
  return timingSafeEqual(actual, expected) && stored !== undefined;
}

export interface UserRecord {
  hash: string;
  createdAt: string;
}
export interface UsersFileContent {
  version: 1;
  users: Record<string, UserRecord>;
}

export async function readUsersFile(file: string): Promise<UsersFileContent> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { version: 1, users: {} };
    throw err;
  }
  try {
    const data = JSON.parse(text) as UsersFileContent;
    if (data?.version !== 1 || typeof data.users !== 'object' || data.users === null) throw new Error('unexpected structure');
    return data;
  } catch (err) {
    throw new DispatcherError('state_damaged', `users file ${file} is damaged (${(err as Error).message}); fix or remove it`, { cause: err });
  }
}

export async function addUser(file: string, name: string, password: string, opts: { replace?: boolean } = {}): Promise<{ replaced: boolean }> {
  const problems = [...userNameProblems(name), ...passwordProblems(password)];
  if (problems.length) throw new DispatcherError('validation_failed', 'user not added', { problems });
  const data = await readUsersFile(file);
  const replaced = name in data.users;
  if (replaced && !opts.replace) throw new DispatcherError('conflict', `user ${name} exists (use --replace to set a new password)`);
  data.users[name] = { hash: await hashPassword(password), createdAt: new Date().toISOString() };
  await mkdir(dirname(file), { recursive: true, mode: 0o700 });
  await writeFileAtomic(file, JSON.stringify(data, null, 2) + '\n', 0o600);
  return { replaced };
}

export async function removeUser(file: string, name: string): Promise<void> {
  const data = await readUsersFile(file);
  if (!(name in data.users)) throw new DispatcherError('not_found', `no user ${name}`);
  delete data.users[name];
  await writeFileAtomic(file, JSON.stringify(data, null, 2) + '\n', 0o600);
}

export async function listUsers(file: string): Promise<{ name: string; createdAt: string }[]> {
  const data = await readUsersFile(file);
  return Object.entries(data.users).map(([name, u]) => ({ name, createdAt: u.createdAt }));
}

/** What the HTTP layer needs: verify a pair, and a generation number that changes when the users change. */
export interface UserDirectory {
  verify(user: string, password: string): Promise<boolean>;
  /** Re-reads the file if it changed; returns a number that differs after every change. */
  generation(): Promise<number>;
}

/**
 * A UserDirectory over the users file. The file is edited by another process (`dispatcherd user ...`),
 * so changes are noticed by stat (at most once per `statIntervalMs`), not pushed.
 */
export function fileUserDirectory(file: string, opts: { statIntervalMs?: number } = {}): UserDirectory {
  const interval = opts.statIntervalMs ?? 250;
  let users: Record<string, UserRecord> = {};
  let signature = '';
  let gen = 0;
  let checkedAt = -Infinity;
  let pending: Promise<void> | undefined;
  async function refresh(): Promise<void> {
    let sig = 'missing';
    try {
      const s = await stat(file);
      sig = `${s.ino}:${s.size}:${s.mtimeMs}:${s.ctimeMs}`;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    if (sig !== signature) {
      users = (await readUsersFile(file)).users;
      signature = sig;
      gen++;
    }
    checkedAt = Date.now();
  }
  async function ensureFresh(): Promise<void> {
    if (Date.now() - checkedAt < interval) return;
    pending ??= refresh().finally(() => (pending = undefined));
    await pending;
  }
  return {
    async verify(user, password) {
      await ensureFresh();
      const lookup = () => (Object.prototype.hasOwnProperty.call(users, user) ? users[user] : undefined);
      if (await verifyPassword(password, lookup()?.hash)) return true;
      // A user added a moment ago (e.g. the cluster credential a peer just installed) must not wait for
      // the next stat interval: on a miss, look at the file once more before saying no.
      const before = gen;
      pending ??= refresh().finally(() => (pending = undefined));
      await pending;
      return gen !== before && verifyPassword(password, lookup()?.hash);
    },
    async generation() {
      await ensureFresh();
      return gen;
    },
  };
}
