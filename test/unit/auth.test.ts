/**
 * Pure parts of authentication: strict Basic parsing (one colon, docs/SECURITY.md, "Identities") and the login
 * throttle (in-flight attempts count, per source and per account, trusted sources, bounded memory).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseBasicCredential } from '../../server/http/auth/basic-credential.js';
import { LoginThrottle } from '../../server/http/auth/throttle.js';
import { isDispatcherError } from '../../api/errors.js';
import { userNameProblems } from '../../server/users.js';

const basic = (text: string) => 'Basic ' + Buffer.from(text).toString('base64');
const refused = (header: string) =>
  assert.throws(() => parseBasicCredential(header), (e: unknown) => isDispatcherError(e) && e.code === 'unauthorized', `refused: ${header}`);

test('Basic: exactly user:password is accepted; none is undefined', () => {
  assert.deepEqual(parseBasicCredential(basic('operator:correct-horse-battery')), { user: 'operator', password: 'correct-horse-battery' });
  assert.deepEqual(parseBasicCredential(`basic  ${Buffer.from('a:b').toString('base64')}`), { user: 'a', password: 'b' });
  assert.equal(parseBasicCredential(undefined), undefined);
  assert.equal(parseBasicCredential(''), undefined);
});

test('Basic: a second colon, an empty part, a non-Basic scheme or bad base64 are refused (401)', () => {
  refused(basic('operator:correct-horse-battery:anything'));
  refused(basic('operator::'));
  refused(basic(':password'));
  refused(basic('operator:'));
  refused(basic('operatorpassword'));
  refused('Basic !!!not-base64!!!');
  refused('Bearer abc');
  refused('Digest username="x"');
});

test('throttle: checks in flight count, so parallel guesses stop at the limit', () => {
  const t = new LoginThrottle({ maxPerSource: 10, maxPerAccount: 30, windowMs: 60_000 });
  const decisions = Array.from({ length: 100 }, () => t.begin('operator', '10.0.0.1', 1000));
  assert.equal(decisions.filter((d) => d.ok).length, 10);
  assert.ok(decisions.filter((d) => !d.ok).every((d) => !d.ok && d.limitedBy === 'source' && d.retryAfterSeconds >= 1));
});

test('throttle: a success frees its reservation; failures stay counted for the window', () => {
  const t = new LoginThrottle({ maxPerSource: 2, maxPerAccount: 30, windowMs: 10_000 });
  const a = t.begin('op', 's', 0);
  assert.ok(a.ok);
  t.succeed(a.ticket, 0);
  for (let i = 0; i < 2; i++) {
    const d = t.begin('op', 's', 1);
    assert.ok(d.ok);
    t.fail(d.ticket, 1);
  }
  assert.equal(t.begin('op', 's', 2).ok, false);
  assert.deepEqual(t.blocked('op', 's', 2)?.limitedBy, 'source');
  assert.equal(t.begin('op', 's', 10_002).ok, true, 'the window slides');
});

test('throttle: rotating sources hit the account limit; a source that logged in before is exempt from it', () => {
  const t = new LoginThrottle({ maxPerSource: 10, maxPerAccount: 30, windowMs: 60_000 });
  const good = t.begin('operator', '10.0.0.1', 0);
  assert.ok(good.ok);
  t.succeed(good.ticket, 0);
  let accepted = 0;
  for (let i = 0; i < 100; i++) {
    const d = t.begin('operator', `127.0.1.${i}`, 1);
    if (d.ok) {
      accepted++;
      t.fail(d.ticket, 1);
    } else assert.equal(d.limitedBy, 'account');
  }
  assert.equal(accepted, 30);
  assert.equal(t.begin('operator', '127.0.9.9', 2).ok, false, 'a new source is limited for this account');
  assert.equal(t.begin('operator', '10.0.0.1', 2).ok, true, 'the operator keeps working from a source that logged in before');
  assert.equal(t.begin('someone-else', '127.0.9.9', 2).ok, true, 'other accounts are not affected');
});

test('throttle: one throttled source cannot lock an account by itself', () => {
  const t = new LoginThrottle({ maxPerSource: 10, maxPerAccount: 30, windowMs: 60_000 });
  for (let i = 0; i < 100; i++) {
    const d = t.begin('operator', 'attacker', 5);
    if (d.ok) t.fail(d.ticket, 5);
  }
  assert.equal(t.blocked('operator', 'attacker', 6)?.limitedBy, 'source');
  assert.equal(t.blocked('operator', 'elsewhere', 6), undefined);
});

test('throttle: memory is bounded under a spray of sources and accounts', () => {
  const t = new LoginThrottle({ maxPerSource: 10, maxPerAccount: 30, windowMs: 60_000, maxKeys: 100 });
  for (let i = 0; i < 5000; i++) {
    const d = t.begin(`user-${i}`, `src-${i}`, 1);
    if (d.ok) (i % 2 ? t.fail(d.ticket, 1) : t.succeed(d.ticket, 1));
  }
  assert.ok(t.keys <= 300, `keys held: ${t.keys}`);
});

test("account names: 'cluster-' is reserved (legacy peer accounts are revoked at start)", () => {
  assert.equal(userNameProblems('cluster-orders').length, 1);
  assert.equal(userNameProblems('operator').length, 0);
});
