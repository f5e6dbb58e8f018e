/**
 * The guard and a rollback in flight (server/firewall/commit-confirmed.ts): the rollback watchdog claims
 * the pending change, installs the previous policy, THEN records its outcome. A drift check that runs in
 * between sees "our rules changed" — it must not re-install the change the watchdog is rolling back (that
 * would cut the operator off again until the next drift check). A fake clock drives the deadlines.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Guard } from '../../server/firewall/guard.js';
import type { FirewallBackend } from '../../server/firewall/backend.js';
import type { GuardPolicy } from '../../server/core/firewall-policy.js';
import { PendingChangeFile } from '../../server/firewall/pending-change.js';
import { fakeClock } from '../helpers/fake-cluster.js';

const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

class MemoryBackend implements FirewallBackend {
  readonly name = 'nftables' as const;
  installed: GuardPolicy | null = null;
  applies = 0;
  async available() {
    return { ok: true };
  }
  async apply(p: GuardPolicy) {
    this.installed = p;
    this.applies++;
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

const policy = (name: string): GuardPolicy => ({ cluster: name, host: 'd1', mode: 'guard', loopbackOnly: false, outboundAllow: false, ports: [] }) as unknown as GuardPolicy;
const same = (x: unknown, y: unknown) => JSON.stringify(x) === JSON.stringify(y);

async function pendingChange() {
  const dir = mkdtempSync(join(tmpdir(), 'cd-guard-race-'));
  dirs.push(dir);
  const clock = fakeClock();
  const backend = new MemoryBackend();
  const g = new Guard({ backend, stateDir: dir, startWatchdog: () => undefined, clock });
  await g.apply(policy('keep'));
  const { token } = await g.applyWithDeadline(policy('cut-off'), 30);
  return { dir, clock, backend, g, token, watchdog: new PendingChangeFile(dir) };
}

test('a drift check while the watchdog rolls back (claimed, restored, outcome not yet written) does not re-install the change', async () => {
  const s = await pendingChange();
  await s.clock.sleep(31_000);
  // The watchdog's first two steps: claim the change, install the previous policy.
  const change = await s.watchdog.claim(s.token);
  assert.ok(change);
  await s.backend.apply(change.previous!);
  assert.equal(await s.g.checkDrift(), false, 'no repair while the rollback is in flight');
  assert.ok(same(s.backend.installed, policy('keep')), 'the previous policy stays installed');
  // Its last step: the outcome. The next drift check learns it and keeps the previous policy.
  await s.watchdog.writeOutcome({ token: s.token, outcome: 'rolled-back', at: new Date(s.clock.now()).toISOString() });
  assert.equal(await s.g.checkDrift(), false);
  assert.ok(same(s.backend.installed, policy('keep')));
  assert.ok(same(s.g.current(), policy('keep')), 'the guard keeps the previous policy from now on');
  assert.equal(s.g.status().pendingConfirmUntil, null);
});

test('a watchdog that died in the middle of a rollback does not stop drift repair for ever', async () => {
  const s = await pendingChange();
  await s.clock.sleep(31_000);
  assert.ok(await s.watchdog.claim(s.token)); // claimed, then nothing: no restore, no outcome
  s.backend.installed = null; // and someone flushed the ruleset
  assert.equal(await s.g.checkDrift(), false, 'right after the claim: the rollback may still be on its way');
  await s.clock.sleep(120_000);
  await s.g.checkDrift();
  assert.ok(same(s.backend.installed, policy('keep')), 'long after the deadline the change counts as rolled back: the previous policy is back');
  assert.equal(s.g.status().pendingConfirmUntil, null);
  assert.equal(await s.g.checkDrift(), false, 'and drift repair goes on as usual');
});

test('an ordinary drift while a change waits for confirmation is repaired at once (the change stays)', async () => {
  const s = await pendingChange();
  s.backend.installed = null;
  assert.equal(await s.g.checkDrift(), true);
  assert.ok(same(s.backend.installed, policy('cut-off')));
  assert.ok(s.g.status().pendingConfirmUntil);
});
