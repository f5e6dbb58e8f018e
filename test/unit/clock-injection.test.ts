/**
 * One clock (docs/DESIGN.md, "Time and waiting"): code that reads the time takes a Clock, so a fake one
 * drives it. Each case sets a fake clock far from the real time and checks that what the code records or
 * decides follows the fake: the firewall guard's times and commit-confirmed deadlines, the audit trail,
 * the users file, the login throttle's window, the credential cache's expiry and a certificate's validity.
 * (test/check-deps.sh keeps new code from reading the system clock directly.)
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Guard } from '../../server/firewall/guard.js';
import type { FirewallBackend } from '../../server/firewall/backend.js';
import type { GuardPolicy } from '../../server/core/firewall-policy.js';
import { AuditTrail } from '../../server/observability/audit-trail.js';
import { addUser, changePassword } from '../../server/users.js';
import { LoginThrottle } from '../../server/http/auth/throttle.js';
import { CredentialCache } from '../../server/http/auth/credential-cache.js';
import { X509Certificate } from 'node:crypto';
import { createCa } from '../../server/pki/certificates.js';
import { fakeClock } from '../helpers/fake-cluster.js';

/** 2001-09-09T01:46:40Z: nowhere near the real time, so a reading of the system clock shows. */
const T0 = 1_000_000_000_000;
const iso = (ms: number) => new Date(ms).toISOString();

const dirs: string[] = [];
const tempDir = () => {
  const d = mkdtempSync(join(tmpdir(), 'cd-clock-'));
  dirs.push(d);
  return d;
};
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

class MemoryBackend implements FirewallBackend {
  readonly name = 'nftables' as const;
  installed: GuardPolicy | null = null;
  async available() {
    return { ok: true };
  }
  async apply(p: GuardPolicy) {
    this.installed = p;
  }
  async inSync(p: GuardPolicy) {
    return JSON.stringify(this.installed) === JSON.stringify(p);
  }
  async remove() {
    this.installed = null;
  }
  async read() {
    return JSON.stringify(this.installed);
  }
}

const policy = (host: string): GuardPolicy => ({ cluster: 'c', host, mode: 'guard', loopbackOnly: false, outboundAllow: false, ports: [] }) as unknown as GuardPolicy;

test('guard: apply and check times, and a commit-confirmed deadline and its extension, come from the clock', async () => {
  const clock = fakeClock(T0);
  const g = new Guard({ backend: new MemoryBackend(), stateDir: tempDir(), startWatchdog: () => undefined, clock });
  await g.apply(policy('d1'));
  assert.equal(g.status().lastAppliedAt, iso(T0));
  await clock.sleep(5_000);
  await g.verify();
  assert.equal(g.status().lastCheckedAt, iso(T0 + 5_000));
  const { confirmBy, token } = await g.applyWithDeadline(policy('d2'), 30);
  assert.equal(confirmBy, iso(T0 + 35_000));
  assert.equal(g.status().pendingConfirmUntil, iso(T0 + 35_000));
  await clock.sleep(10_000);
  const ext = await g.extend(token, 60);
  assert.ok(ext);
  assert.equal(ext.confirmBy, iso(T0 + 75_000));
  assert.deepEqual(await g.confirm(token), {});
});

test('guard: after a restart, a pending change whose deadline passed on the clock is rolled back at once', async () => {
  const dir = tempDir();
  const clock = fakeClock(T0);
  const backend = new MemoryBackend();
  const first = new Guard({ backend, stateDir: dir, startWatchdog: () => undefined, clock });
  await first.apply(policy('before'));
  await first.applyWithDeadline(policy('after'), 30);
  // A new daemon 20 s later: still pending. 40 s later on the clock: overdue and unwatched, so rolled back.
  await clock.sleep(20_000);
  assert.ok(await new Guard({ backend, stateDir: dir, startWatchdog: () => undefined, clock }).resumePending());
  assert.deepEqual(backend.installed, policy('after'));
  await clock.sleep(20_000);
  assert.equal(await new Guard({ backend, stateDir: dir, startWatchdog: () => undefined, clock }).resumePending(), undefined);
  assert.deepEqual(backend.installed, policy('before'), 'overdue on the fake clock: rolled back');
  assert.equal(JSON.parse(readFileSync(join(dir, 'outcome.json'), 'utf8')).at, iso(T0 + 40_000));
});

test('audit trail and users file stamp the clock time', async () => {
  const dir = tempDir();
  const clock = fakeClock(T0);
  const trail = await AuditTrail.open(join(dir, 'audit.json'), { clock });
  assert.equal(trail.record({ user: 'operator', source: '127.0.0.1', action: 'launch', path: '/v1/cluster/launch', outcome: 'success' }).at, iso(T0));
  const users = join(dir, 'users.json');
  await addUser(users, 'operator', 'a-long-enough-password', { clock });
  await changePassword(users, 'operator', 'another-long-password', fakeClock(T0 + 60_000));
  const rec = JSON.parse(readFileSync(users, 'utf8')).users.operator;
  assert.equal(rec.createdAt, iso(T0));
  assert.equal(rec.passwordChangedAt, iso(T0 + 60_000));
});

test('login throttle and credential cache expire on the clock, not on the wall', async () => {
  const clock = fakeClock(T0);
  const throttle = new LoginThrottle({ maxPerSource: 1, maxPerAccount: 30, windowMs: 60_000, clock });
  const first = throttle.begin('operator', '10.0.0.1');
  assert.ok(first.ok);
  throttle.fail(first.ticket);
  assert.equal(throttle.begin('operator', '10.0.0.1').ok, false, 'blocked within the window');
  await clock.sleep(61_000);
  assert.equal(throttle.begin('operator', '10.0.0.1').ok, true, 'the window passed on the fake clock');

  const cache = new CredentialCache(1_000, 10, clock);
  cache.add('operator', 'pw');
  assert.equal(cache.has('operator', 'pw'), true);
  await clock.sleep(1_001);
  assert.equal(cache.has('operator', 'pw'), false, 'expired on the fake clock');
});

test('a new certificate is valid from the clock time (5 minutes early for skew)', async () => {
  const ca = await createCa('clocked', 10, undefined, fakeClock(T0));
  const cert = new X509Certificate(ca.certPem);
  assert.equal(Date.parse(cert.validFrom), T0 - 5 * 60_000);
  assert.equal(Date.parse(cert.validTo), T0 + 10 * 86_400_000);
});
