/**
 * The operator gate's hot path (server/http/auth.ts, acceptCachedNow): a pair verified recently is accepted
 * before the middleware returns, and that path decides exactly as the full one — a password changed in the
 * users file stops working once the directory looks at the file again, a throttled source stays refused,
 * a malformed header still gets its 401. Real users file (scrypt), real directory, a fake clock for its
 * stat interval; the middleware is called with minimal request/response objects.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Request, Response } from 'express';
import { addUser, changePassword, fileUserDirectory, type UserDirectory } from '../../server/users.js';
import { createAuthenticator, type AuthUser } from '../../server/http/auth.js';
import { createLogger } from '../../server/log.js';
import { isDispatcherError } from '../../api/errors.js';
import { fakeClock } from '../helpers/fake-cluster.js';

const PASSWORD = 'correct-horse-battery';
const basic = (user: string, password: string) => 'Basic ' + Buffer.from(`${user}:${password}`).toString('base64');

interface Outcome {
  /** The middleware called next() before it returned (no promise in between). */
  synchronous: boolean;
  user?: AuthUser;
  error?: unknown;
}

async function setup() {
  const dir = mkdtempSync(join(tmpdir(), 'auth-cache-'));
  const file = join(dir, 'users.json');
  await addUser(file, 'operator', PASSWORD, { role: 'admin' });
  const clock = fakeClock();
  const directory = fileUserDirectory(file, { statIntervalMs: 250, clock });
  let scrypts = 0;
  const counting: UserDirectory = { ...directory, verify: (u, p) => (scrypts++, directory.verify(u, p)) };
  const auth = createAuthenticator(counting, { cacheTtlMs: 60_000, cacheMaxEntries: 100, maxFailures: 3, maxAccountFailures: 30, failWindowMs: 60_000 }, createLogger({ console: false }));
  const call = (authorization: string | undefined, source = '192.0.2.10') =>
    new Promise<Outcome>((resolve) => {
      let returned = false;
      const req = { headers: { authorization }, socket: { remoteAddress: source }, path: '/v1/processes', originalUrl: '/v1/processes' } as unknown as Request;
      const res = { setHeader: () => res } as unknown as Response;
      (req as unknown as { res: Response }).res = res;
      auth.operator(req, res, (err?: unknown) => resolve({ synchronous: !returned, user: req.user as AuthUser | undefined, error: err }));
      returned = true;
    });
  return { file, clock, auth, call, scrypts: () => scrypts, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

test('a verified pair is accepted again without scrypt and without waiting, as the full path would (admin role kept)', async () => {
  const s = await setup();
  try {
    const first = await s.call(basic('operator', PASSWORD));
    assert.equal(first.error, undefined);
    assert.equal(first.synchronous, false, 'the first request verifies the password (scrypt)');
    assert.equal(s.scrypts(), 1);
    const again = await s.call(basic('operator', PASSWORD));
    assert.equal(again.error, undefined);
    assert.equal(again.synchronous, true, 'a cached pair passes before the middleware returns');
    assert.deepEqual(again.user, { name: 'operator', via: 'basic', admin: true });
    assert.equal(s.scrypts(), 1);
    // Once the stat interval has passed, the directory looks at the file again first (the full path).
    s.clock.now = ((t) => () => t)(s.clock.now() + 300);
    const later = await s.call(basic('operator', PASSWORD));
    assert.equal(later.synchronous, false);
    assert.equal(later.error, undefined);
    assert.equal(s.scrypts(), 1, 'an unchanged file keeps the cache');
  } finally {
    s.remove();
  }
});

test('a password changed in the users file: the old one is refused once the file is looked at again', async () => {
  const s = await setup();
  try {
    assert.equal((await s.call(basic('operator', PASSWORD))).error, undefined);
    await changePassword(s.file, 'operator', 'another-long-password');
    const start = s.clock.now();
    s.clock.now = () => start + 300;
    const old = await s.call(basic('operator', PASSWORD));
    assert.ok(isDispatcherError(old.error) && old.error.code === 'unauthorized', String(old.error));
    // The fast path is back (the file was just read) and must not accept the old pair either.
    const oldAgain = await s.call(basic('operator', PASSWORD));
    assert.ok(isDispatcherError(oldAgain.error) && oldAgain.error.code === 'unauthorized', String(oldAgain.error));
    assert.equal((await s.call(basic('operator', 'another-long-password'))).error, undefined);
  } finally {
    s.remove();
  }
});

test('a throttled source is refused even with a cached pair; a malformed header still gets its 401', async () => {
  const s = await setup();
  try {
    const attacker = '198.51.100.7';
    assert.equal((await s.call(basic('operator', PASSWORD), attacker)).error, undefined);
    for (let i = 0; i < 3; i++) await s.call(basic('operator', `wrong-password-${i}`), attacker);
    const cached = await s.call(basic('operator', PASSWORD), attacker);
    assert.ok(isDispatcherError(cached.error) && cached.error.code === 'too_many_requests', String(cached.error));
    const malformed = await s.call('Basic ' + Buffer.from('operator:a:b').toString('base64'));
    assert.ok(isDispatcherError(malformed.error) && malformed.error.code === 'unauthorized', String(malformed.error));
  } finally {
    s.remove();
  }
});
