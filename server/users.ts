/**
 * Operator accounts: a JSON users file (0600) holding scrypt hashes only, and constant-time verification.
 * Passwords must be >= 12 characters and must not contain ':' (HTTP Basic separates user and password by
 * the colon; server/http/auth/basic-credential.ts refuses a credential with more than one). Only root
 * (`dispatcherd user`) adds accounts; over REST an account changes its own password and an admin removes
 * accounts (server/http/routes/users.ts). Nothing a peer dispatcher sends touches this file.
 */
import { randomBytes, scrypt as scryptCb, timingSafeEqual, type ScryptOptions } from 'node:crypto';
import { mkdir, readFile, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { DispatcherError, type Problem } from '../api/errors.js';
import { writeFileAtomic } from '../shared/atomic-file.js';
import { systemClock, type Clock } from '../shared/poll.js';

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

/**
 * Names of the old per-cluster peer accounts (`cluster-<name>`). Dispatchers now prove themselves with
 * certificates, so these are revoked at start (revokeLegacyClusterUsers) and can no longer be created.
 */
export const LEGACY_CLUSTER_USER = /^cluster-/i;

export function userNameProblems(name: string): Problem[] {
  if (!/^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$/.test(name)) {
    return [{ path: 'user', message: "must be 1-64 letters, digits, '.', '_', '@' or '-', starting with a letter or digit" }];
  }
  if (LEGACY_CLUSTER_USER.test(name)) return [{ path: 'user', message: "must not start with 'cluster-' (reserved: such accounts are revoked at start)" }];
  return [];
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

export type UserRole = 'operator' | 'admin';

export interface UserRecord {
  hash: string;
  createdAt: string;
  /** 'admin' may remove accounts over REST; absent means 'operator'. */
  role?: UserRole;
  passwordChangedAt?: string;
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
    if (data?.version !== 1 || typeof data.users !== 'object' || data.users === null) throw new DispatcherError('state_damaged', 'unexpected structure');
    return data;
  } catch (err) {
    throw new DispatcherError('state_damaged', `users file ${file} is damaged (${(err as Error).message}); fix or remove it`, { cause: err });
  }
}

function hasUser(data: UsersFileContent, name: string): boolean {
  return Object.prototype.hasOwnProperty.call(data.users, name);
}

async function writeUsersFile(file: string, data: UsersFileContent): Promise<void> {
  await mkdir(dirname(file), { recursive: true, mode: 0o700 });
  await writeFileAtomic(file, JSON.stringify(data, null, 2) + '\n', 0o600);
}

/** Adds an account (root's `dispatcherd user add`; the API cannot create accounts). */
export async function addUser(file: string, name: string, password: string, opts: { replace?: boolean; role?: UserRole; clock?: Clock } = {}): Promise<{ replaced: boolean }> {
  const problems = [...userNameProblems(name), ...passwordProblems(password)];
  if (problems.length) throw new DispatcherError('validation_failed', 'user not added', { problems });
  const data = await readUsersFile(file);
  const replaced = hasUser(data, name);
  if (replaced && !opts.replace) throw new DispatcherError('conflict', `user ${name} exists (use --replace to set a new password)`);
  const role = opts.role ?? data.users[name]?.role;
  data.users[name] = { hash: await hashPassword(password), createdAt: new Date((opts.clock ?? systemClock).now()).toISOString(), ...(role === 'admin' ? { role } : {}) };
  await writeUsersFile(file, data);
  return { replaced };
}

/** Sets a new password for an existing account (its own owner over REST, or root with `dispatcherd user passwd`). */
export async function changePassword(file: string, name: string, password: string, clock: Clock = systemClock): Promise<void> {
  const problems = passwordProblems(password).map((p) => ({ ...p, path: 'newPassword' }));
  if (problems.length) throw new DispatcherError('validation_failed', 'password not changed', { problems });
  const data = await readUsersFile(file);
  if (!hasUser(data, name)) throw new DispatcherError('not_found', `no user ${name}`);
  data.users[name] = { ...data.users[name], hash: await hashPassword(password), passwordChangedAt: new Date(clock.now()).toISOString() };
  await writeUsersFile(file, data);
}

export async function removeUser(file: string, name: string): Promise<void> {
  const data = await readUsersFile(file);
  if (!hasUser(data, name)) throw new DispatcherError('not_found', `no user ${name}`);
  delete data.users[name];
  await writeUsersFile(file, data);
}

/** Migration: removes the `cluster-*` accounts earlier versions created for peers. Returns their names. */
export async function revokeLegacyClusterUsers(file: string): Promise<string[]> {
  const data = await readUsersFile(file);
  const legacy = Object.keys(data.users).filter((n) => LEGACY_CLUSTER_USER.test(n));
  if (!legacy.length) return [];
  for (const n of legacy) delete data.users[n];
  await writeUsersFile(file, data);
  return legacy;
}

export async function listUsers(file: string): Promise<{ name: string; createdAt: string; role: UserRole }[]> {
  const data = await readUsersFile(file);
  return Object.entries(data.users).map(([name, u]) => ({ name, createdAt: u.createdAt, role: u.role ?? 'operator' }));
}

/** What the HTTP layer needs: verify a pair, and a generation number that changes when the users change. */
export interface UserDirectory {
  verify(user: string, password: string): Promise<boolean>;
  /** True for an account with role admin. */
  isAdmin(user: string): Promise<boolean>;
  /** Re-reads the file if it changed; returns a number that differs after every change. */
  generation(): Promise<number>;
  /**
   * The users as last read, without waiting, while that read is recent (within the directory's stat
   * interval): what generation() and isAdmin() would answer right now without touching the file.
   * Undefined when the file is due to be looked at again; the caller then uses the methods above.
   */
  current?(): { generation: number; isAdmin(user: string): boolean } | undefined;
}

/**
 * A UserDirectory over the users file. The file is edited by another process (`dispatcherd user ...`),
 * so changes are noticed by stat (at most once per `statIntervalMs`), not pushed.
 */
export function fileUserDirectory(file: string, opts: { statIntervalMs?: number; clock?: Clock } = {}): UserDirectory {
  const interval = opts.statIntervalMs ?? 250;
  const clock = opts.clock ?? systemClock;
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
      const fresh = (await readUsersFile(file)).users;
      // Legacy peer accounts never log in, even before the start-up migration removed them from the file.
      users = Object.fromEntries(Object.entries(fresh).filter(([n]) => !LEGACY_CLUSTER_USER.test(n)));
      signature = sig;
      gen++;
    }
    checkedAt = clock.now();
  }
  async function ensureFresh(): Promise<void> {
    if (clock.now() - checkedAt < interval) return;
    pending ??= refresh().finally(() => (pending = undefined));
    await pending;
  }
  const asRead = {
    get generation() {
      return gen;
    },
    isAdmin: (user: string) => Object.prototype.hasOwnProperty.call(users, user) && users[user].role === 'admin',
  };
  return {
    async verify(user, password) {
      await ensureFresh();
      const lookup = () => (Object.prototype.hasOwnProperty.call(users, user) ? users[user] : undefined);
      if (await verifyPassword(password, lookup()?.hash)) return true;
      // A password changed a moment ago (e.g. `dispatcherd user passwd`) must not wait for the next stat
      // interval: on a miss, look at the file once more before saying no.
      const before = gen;
      pending ??= refresh().finally(() => (pending = undefined));
      await pending;
      return gen !== before && verifyPassword(password, lookup()?.hash);
    },
    async isAdmin(user) {
      await ensureFresh();
      return Object.prototype.hasOwnProperty.call(users, user) && users[user].role === 'admin';
    },
    async generation() {
      await ensureFresh();
      return gen;
    },
    current: () => (clock.now() - checkedAt < interval ? asRead : undefined),
  };
}
