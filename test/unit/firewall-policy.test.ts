/** Unit tests of the pure guard policy, the Guard state machine (against a fake backend) and verify's comparison. */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { DispatcherError } from '../../api/errors.js';
import type { Plan } from '../../api/plan.js';
import { addressSet, guardPolicyFromPlan, guardPoliciesFromPlan, planWidePolicy, shouldReach, type GuardPolicy } from '../../server/core/firewall-policy.js';
import { canonicalCidr } from '../../server/core/cidr.js';
import { findForeignDrops } from '../../server/firewall/nftables.js';
import { NoneBackend } from '../../server/firewall/none.js';
import { detectBackend } from '../../server/firewall/detect.js';
import { Guard } from '../../server/firewall/guard.js';
import { watchPendingChange } from '../../server/firewall/rollback-watchdog.js';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ExecFn, FirewallBackend } from '../../server/firewall/backend.js';
import { reachableFrom, verifyRows, verifyTargets } from '../../launcher/commands/firewall.js';
import { denyPlan, guardPlan } from '../golden/firewall/plan.js';

describe('guard policy from the plan', () => {
  test('ports of the host plus its dispatcher port, with exposures, sorted', () => {
    const p = guardPolicyFromPlan(guardPlan, 'd1');
    assert.deepEqual(
      p.ports.map((x) => [x.port, x.exposure]),
      [[2379, 'cluster'], [2380, 'cluster'], [5000, 'public'], [5001, 'public'], [5432, 'cluster'], [8008, 'cluster'], [8528, 'operator']],
    );
    assert.deepEqual(p.ports.find((x) => x.port === 8528)?.names, ['dispatcher']);
    const d2 = guardPolicyFromPlan(guardPlan, 'd2');
    assert.ok(!d2.ports.some((x) => x.port === 5000), 'coordinator ports only where the coordinator runs');
  });

  test('cluster sources = every address of every dispatcher, split by family; any-sources flagged', () => {
    const p = guardPolicyFromPlan(guardPlan, 'd3');
    assert.deepEqual(p.sources.cluster, { v4: ['10.0.0.1', '10.0.0.2', '10.0.0.3'], v6: ['fd00:10::1', 'fd00:10::2', 'fd00:10::3'], any4: false, any6: false });
    assert.deepEqual(p.sources.client, { v4: [], v6: [], any4: true, any6: true });
    assert.deepEqual(p.sources.operator, { v4: ['203.0.113.10'], v6: ['2001:db8:1::/48'], any4: false, any6: false });
    assert.equal(p.mode, 'guard');
    assert.equal(p.sshPort, 22);
    assert.equal(p.outboundAllow, false);
    assert.equal(guardPolicyFromPlan(denyPlan, 'd1').outboundAllow, true);
  });

  test('host names and bad CIDRs are refused, every problem listed', () => {
    const bad: Plan = structuredClone(guardPlan);
    bad.dispatchers[1].addresses = ['db2.example.com', '10.0.0.2'];
    bad.firewall.operatorSources = ['10.0.0.0/33', 'ops.example.com'];
    assert.throws(
      () => guardPolicyFromPlan(bad, 'd1'),
      (e: unknown) => e instanceof DispatcherError && e.code === 'validation_failed' && e.problems.length === 3 && e.problems.some((p) => p.path === 'dispatchers[1].addresses[0]'),
    );
    assert.throws(() => guardPolicyFromPlan(guardPlan, 'nope'), DispatcherError);
  });

  test('an agency port marked public is still cluster-only', () => {
    const p: Plan = structuredClone(guardPlan);
    p.processes[0].ports[0].exposure = 'public';
    assert.equal(guardPolicyFromPlan(p, 'd1').ports.find((x) => x.port === 2379)?.exposure, 'cluster');
  });

  test('canonical CIDRs (network address, RFC 5952 text) and de-duplication', () => {
    assert.deepEqual(canonicalCidr('10.1.2.3/24'), { family: 4, prefix: 24, cidr: '10.1.2.0/24' });
    assert.deepEqual(canonicalCidr('FD00:0:0:0::1'), { family: 6, prefix: 128, cidr: 'fd00::1' });
    assert.deepEqual(canonicalCidr('2001:db8:0:0:1:0:0:1/64'), { family: 6, prefix: 64, cidr: '2001:db8::/64' });
    assert.equal(canonicalCidr('::ffff:10.0.0.1')?.cidr, '::ffff:a00:1');
    assert.equal(canonicalCidr('host'), null);
    const problems: { path: string; message: string }[] = [];
    assert.deepEqual(addressSet(['10.0.0.1', '10.0.0.1/32', '::/0'], 'x', problems), { v4: ['10.0.0.1'], v6: [], any4: false, any6: true });
    assert.equal(problems.length, 0);
  });

  test('per-host policies and the plan-wide union', () => {
    assert.deepEqual(guardPoliciesFromPlan(guardPlan).map((p) => p.host), ['d1', 'd2', 'd3']);
    const u = planWidePolicy(guardPlan);
    assert.equal(u.host, '*');
    assert.ok(u.ports.some((x) => x.port === 5000));
    assert.equal(u.ports.find((x) => x.port === 2379)?.names.length, 3);
  });

  test('shouldReach follows the exposures', () => {
    const p = guardPolicyFromPlan(denyPlan, 'd1');
    assert.equal(shouldReach(p, '10.0.0.2', 2379), true);
    assert.equal(shouldReach(p, '198.51.100.7', 2379), false);
    assert.equal(shouldReach(p, '198.51.100.7', 5000), true);
    assert.equal(shouldReach(p, '192.0.2.1', 5000), false);
    assert.equal(shouldReach(p, '203.0.113.10', 8528), true);
    assert.equal(shouldReach(p, '2001:db8:2::9', 5000), true);
    assert.equal(shouldReach(p, '192.0.2.1', 2222), true, 'ssh');
    assert.equal(shouldReach(p, '192.0.2.1', 9999), false, 'deny mode');
    assert.equal(shouldReach(guardPolicyFromPlan(guardPlan, 'd1'), '192.0.2.1', 9999), true, 'guard mode leaves other ports alone');
  });

  test('loopbackOnly and the none backend', async () => {
    const lo: Plan = structuredClone(guardPlan);
    lo.dispatchers = lo.dispatchers.map((d) => ({ ...d, endpoint: 'https://127.0.0.1:8528' }));
    lo.processes = lo.processes.map((p) => ({ ...p, address: '127.0.0.1' }));
    const none = new NoneBackend();
    await none.apply(guardPolicyFromPlan(lo, 'd1'));
    await assert.rejects(none.apply(guardPolicyFromPlan(guardPlan, 'd1')), (e: unknown) => e instanceof DispatcherError && e.code === 'preflight_failed');
  });
});

describe('backend detection', () => {
  const fake = (ok: Set<string>): ExecFn => async (argv) => ({ stdout: '', stderr: `${argv[0]}: not found`, code: ok.has(argv[0]) ? 0 : 127 });
  test('auto prefers nftables, falls back to iptables, otherwise explains', async () => {
    assert.equal((await detectBackend('auto', { exec: fake(new Set(['nft', 'iptables', 'ip6tables', 'ipset'])) })).name, 'nftables');
    assert.equal((await detectBackend('auto', { exec: fake(new Set(['iptables', 'ip6tables', 'ipset'])) })).name, 'iptables');
    await assert.rejects(detectBackend('auto', { exec: fake(new Set()) }), (e: unknown) => e instanceof DispatcherError && /nftables: .*iptables: .*CAP_NET_ADMIN/s.test(e.message));
    await assert.rejects(detectBackend('iptables', { exec: fake(new Set(['nft'])) }), /"iptables" was asked for/);
    assert.equal((await detectBackend('none')).name, 'none');
  });
  test('commands run inside the namespace when one is given', async () => {
    const seen: string[][] = [];
    await detectBackend('nftables', { netns: 'ns1', exec: async (argv) => { seen.push(argv); return { stdout: '', stderr: '', code: 0 }; } });
    assert.deepEqual(seen[0].slice(0, 5), ['ip', 'netns', 'exec', 'ns1', 'nft']);
  });
});

describe('foreign drops', () => {
  test('another table dropping our ports or everything is reported; ours and unrelated ports are not', () => {
    const p = guardPolicyFromPlan(guardPlan, 'd1');
    const ruleset = [
      'table inet dispatcher_guard {', '\tchain input {', '\t\ttype filter hook input priority filter - 10; policy accept;', '\t\ttcp dport 2379 drop', '\t}', '}',
      'table inet filter {', '\tchain input {', '\t\ttype filter hook input priority filter; policy drop;', '\t\ttcp dport 5000 drop', '\t\ttcp dport 9999 drop', '\t\tct state invalid drop', '\t}', '}',
    ].join('\n');
    const w = findForeignDrops(ruleset, p);
    assert.equal(w.length, 2, w.join('\n'));
    assert.match(w[0], /inet filter.*policy drop/);
    assert.match(w[1], /tcp dport 5000 drop/);
  });
});

/** An in-memory backend: "installed" is what the kernel would hold; tamper() simulates someone's flush. */
class FakeBackend implements FirewallBackend {
  readonly name = 'nftables' as const;
  installed: GuardPolicy | null = null;
  applies = 0;
  async available() { return { ok: true }; }
  async apply(p: GuardPolicy) { this.applies++; this.installed = p; }
  async read() { return this.installed ? JSON.stringify(this.installed) : null; }
  async inSync(p: GuardPolicy) { return this.installed !== null && JSON.stringify(this.installed) === JSON.stringify(p); }
  async remove() { this.installed = null; }
  async foreignDrops() { return ['table inet filter drops']; }
}

describe('Guard', () => {
  const a = guardPolicyFromPlan(guardPlan, 'd1');
  const b = guardPolicyFromPlan(denyPlan, 'd1');

  test('apply, verify, drift repair counted, warnings in status', async () => {
    const fb = new FakeBackend();
    const g = new Guard({ backend: fb, driftIntervalMs: 20 });
    assert.equal(g.status().inSync, false);
    await g.apply(a);
    assert.equal(await g.verify(), true);
    assert.deepEqual(g.status().warnings, ['table inet filter drops']);
    fb.installed = null; // someone flushed the ruleset
    assert.equal(await g.verify(), false);
    g.start();
    const end = Date.now() + 2000;
    while (g.status().driftRepairs < 1 && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
    g.stop();
    const st = g.status();
    assert.equal(st.driftRepairs, 1);
    assert.equal(st.inSync, true);
    assert.ok(st.lastAppliedAt);
    assert.deepEqual(fb.installed, a);
  });

  test('commit-confirmed: rolls back to the previous policy unless confirmed; to nothing when there was none; drift never re-installs a rolled-back change', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'guard-unit-'));
    try {
      const fb = new FakeBackend();
      // The watchdog's logic, run in this process against the fake backend (the real one is a detached process).
      const inProcess = (b: FakeBackend) => (d: string, token: string) => {
        void watchPendingChange(d, token, async (_c, p) => (p ? b.apply(p) : b.remove()));
        return undefined;
      };
      // The watchdog rolls back as soon as the machine lets it: wait (bounded) for its outcome, not a fixed
      // time, so a loaded machine (unit files run side by side) does not fail the test.
      const same = (x: unknown, y: unknown) => JSON.stringify(x) === JSON.stringify(y);
      const until = async (cond: () => boolean, ms = 5_000) => {
        const end = Date.now() + ms;
        while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
      };
      const outcomeIn = (d: string) => () => existsSync(join(d, 'outcome.json'));
      const g = new Guard({ backend: fb, stateDir: dir, startWatchdog: inProcess(fb), driftIntervalMs: 20 });
      await g.apply(a);
      const first = await g.applyWithDeadline(b, 0.5);
      assert.match(first.token, /^[0-9a-f]{32}$/);
      assert.deepEqual(fb.installed, b);
      assert.ok(g.status().pendingConfirmUntil);
      const persisted = JSON.parse(readFileSync(join(dir, 'pending.json'), 'utf8'));
      assert.equal(persisted.token, first.token);
      assert.deepEqual(persisted.previous, a, 'the state file keeps what to go back to');
      assert.equal(statSync(join(dir, 'pending.json')).mode & 0o777, 0o600);
      await until(() => outcomeIn(dir)() && same(fb.installed, a));
      assert.deepEqual(fb.installed, a, 'rolled back by the watchdog');
      assert.equal(await g.checkDrift(), false, 'drift sees the previous policy as the one to keep');
      assert.deepEqual(fb.installed, a);
      assert.equal(g.status().pendingConfirmUntil, null);
      assert.equal(await g.confirm(first.token), false, 'nothing left to confirm');

      const second = await g.applyWithDeadline(b, 0.3);
      assert.equal(await g.confirm('0'.repeat(32)), false, 'another token confirms nothing');
      const ext = await g.extend(second.token, 1.5);
      assert.ok(ext && Date.parse(ext.confirmBy) > Date.now() + 1_000, 'extended');
      await new Promise((r) => setTimeout(r, 500));
      assert.deepEqual(fb.installed, b, 'still the change after its first deadline (extended)');
      assert.deepEqual(await g.confirm(second.token), {});
      await new Promise((r) => setTimeout(r, Math.max(0, Date.parse(ext.confirmBy) - Date.now()) + 300));
      assert.deepEqual(fb.installed, b, 'confirmed change stays past the extended deadline');

      const third = await g.applyWithDeadline(a, 5);
      assert.equal(await g.cancel(third.token), true);
      assert.deepEqual(fb.installed, b, 'cancel restores the previous policy at once');
      assert.equal(g.status().pendingConfirmUntil, null);

      const fb2 = new FakeBackend();
      const g2 = new Guard({ backend: fb2, stateDir: join(dir, 'g2'), startWatchdog: inProcess(fb2) });
      await g2.applyWithDeadline(a, 0.05);
      await until(outcomeIn(join(dir, 'g2')));
      assert.equal(fb2.installed, null, 'with no previous policy the rollback removes our rules');
      assert.throws(() => g2.applyWithDeadline(a, 0), DispatcherError);
      assert.throws(() => new Guard({ backend: new FakeBackend() }).applyWithDeadline(a, 5), /state dir/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a failing backend becomes a DispatcherError naming the backend', async () => {
    const fb = new FakeBackend();
    fb.apply = async () => { throw new Error('nft: syntax error'); };
    const g = new Guard({ backend: fb });
    await assert.rejects(g.apply(a), (e: unknown) => e instanceof DispatcherError && e.code === 'operation_failed' && /nftables/.test(e.message));
    assert.equal(g.status().inSync, false);
  });
});

describe('firewall verify comparison', () => {
  test('reachability per vantage role', () => {
    assert.equal(reachableFrom('client', 'public'), true);
    assert.equal(reachableFrom('client', 'operator'), false);
    assert.equal(reachableFrom('operator', 'operator'), true);
    assert.equal(reachableFrom('operator', 'cluster'), false);
    assert.equal(reachableFrom('cluster', 'cluster'), true);
  });
  test('an open cluster port from a client is a violation; filtered and closed are fine', () => {
    const targets = verifyTargets(guardPlan);
    assert.equal(targets.length, 2 * (7 + 5 + 5));
    const results = targets.map((t) => ({ ...t, state: t.port === 5000 || (t.port === 2379 && t.host === '10.0.0.2') ? ('open' as const) : t.port === 5432 ? ('closed' as const) : ('filtered' as const) }));
    const rows = verifyRows(guardPlan, 'client', results);
    const bad = rows.filter((r) => r.verdict === 'VIOLATION');
    assert.deepEqual(bad.map((r) => `${r.host}:${r.port}`), ['d2:2379']);
    assert.equal(rows.filter((r) => r.verdict === 'unreachable').map((r) => r.port).join(), '5001,5001');
  });
});
