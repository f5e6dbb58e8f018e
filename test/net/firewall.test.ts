/**
 * Network tier (root): the guard in real network namespaces. Three cluster hosts and one outside host on a
 * bridge (test/helpers/netns.ts); TCP listeners on every plan port of each host; real nft/iptables inside
 * each host namespace (never the root namespace's firewall); real nmap scans from the outside namespace and
 * from a cluster host, IPv4 and IPv6.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTestNet, type TestHost, type TestNet } from '../helpers/netns.js';
import type { Plan } from '../../api/plan.js';
import { guardPolicyFromPlan, type GuardPolicy } from '../../server/core/firewall-policy.js';
import { exportPolicy } from '../../server/core/firewall-export.js';
import { NftablesBackend } from '../../server/firewall/nftables.js';
import { IptablesBackend } from '../../server/firewall/iptables.js';
import { Guard } from '../../server/firewall/guard.js';
import { detectBackend } from '../../server/firewall/detect.js';

const FP = Array.from({ length: 32 }, () => 'CD').join(':');
const AGENT = 2379;
const DB = 5432;
const COORD = 5000;
const DISP = 8528;

function makePlan(net: TestNet, operatorSources: string[]): Plan {
  const hosts = net.hosts;
  return {
    apiVersion: 'dispatcher/v1',
    name: 'nettest',
    engine: 'pg-ha',
    binaries: {},
    dataRoot: 'clusters',
    dispatchers: hosts.map((h, i) => ({
      id: `d${i + 1}`,
      endpoint: `https://${h.ipv4}:${DISP}`,
      fingerprint: FP,
      addresses: [h.ipv4, h.ipv6],
      allowAgents: true,
      allowDBservers: true,
      allowCoordinators: true,
    })),
    processes: [
      ...hosts.map((h, i) => ({ id: `agent-${i + 1}`, role: 'agent' as const, dispatcher: `d${i + 1}`, address: h.ipv4, ports: [{ name: 'client', port: AGENT, exposure: 'cluster' as const }], dataDir: `a${i}`, args: [] })),
      ...hosts.map((h, i) => ({ id: `db-${i + 1}`, role: 'dbserver' as const, dispatcher: `d${i + 1}`, address: h.ipv4, ports: [{ name: 'postgres', port: DB, exposure: 'cluster' as const }], dataDir: `b${i}`, args: [] })),
      { id: 'coord-1', role: 'coordinator', dispatcher: 'd1', address: hosts[0].ipv4, ports: [{ name: 'client', port: COORD, exposure: 'public' }], dataDir: 'c1', args: [] },
    ],
    firewall: { mode: 'guard', backend: 'nftables', clientSources: ['0.0.0.0/0', '::/0'], operatorSources, sshPort: 22, outboundAllow: false },
  };
}

/** Listens on the given ports (dual stack) and prints one line per accepted connection: `A <port> <remote>`. */
const LISTENER = `
const net = require('net');
const ports = process.argv.slice(1).map(Number);
let up = 0;
for (const p of ports) {
  const s = net.createServer((c) => { process.stdout.write('A ' + p + ' ' + c.remoteAddress + '\\n'); c.destroy(); });
  s.listen({ port: p, host: '::', ipv6Only: false }, () => { if (++up === ports.length) process.stdout.write('READY\\n'); });
}
`;

interface Listener {
  child: ChildProcess;
  accepts: string[];
}

function startListener(net: TestNet, host: TestHost, ports: number[]): Promise<Listener> {
  const child = net.spawnIn(host.ns, [process.execPath, '-e', LISTENER, ...ports.map(String)], { stdio: ['ignore', 'pipe', 'inherit'] });
  const l: Listener = { child, accepts: [] };
  return new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error(`listener in ${host.ns} not ready`)), 10_000);
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (line === 'READY') {
          clearTimeout(timer);
          resolve(l);
        } else if (line.startsWith('A ')) l.accepts.push(line);
      }
    });
    child.once('exit', (c) => { clearTimeout(timer); reject(new Error(`listener exited ${c}`)); });
  });
}

type States = Record<number, string>;

async function nmap(net: TestNet, fromNs: string, target: string, ports: number[]): Promise<States> {
  const v6 = target.includes(':');
  const argv = ['nmap', '-Pn', '-n', '-sS', '-T4', '--max-retries', '1', '-p', ports.join(','), '-oX', '-', ...(v6 ? ['-6'] : []), target];
  const r = await net.exec(fromNs, argv, { timeoutMs: 60_000 });
  assert.equal(r.code, 0, `nmap failed: ${r.stderr}`);
  const states: States = {};
  for (const m of r.stdout.matchAll(/<port protocol="tcp" portid="(\d+)"><state state="([a-z|]+)"/g)) states[Number(m[1])] = m[2];
  assert.equal(Object.keys(states).length, ports.length, `nmap gave no state for some ports: ${r.stdout}`);
  return states;
}

const hostPorts = (i: number): number[] => (i === 0 ? [AGENT, COORD, DB, DISP] : [AGENT, DB, DISP]);

/** What the outside namespace must see, per host index: only public ports (and the dispatcher when operator). */
function expectedOutside(i: number, operator: boolean): States {
  const out: States = {};
  for (const p of hostPorts(i)) out[p] = p === COORD || (p === DISP && operator) ? 'open' : 'filtered';
  return out;
}

async function scanAll(net: TestNet, fromNs: string): Promise<{ v4: States[]; v6: States[] }> {
  const v4: States[] = [];
  const v6: States[] = [];
  for (let i = 0; i < net.hosts.length; i++) {
    v4.push(await nmap(net, fromNs, net.hosts[i].ipv4, hostPorts(i)));
    v6.push(await nmap(net, fromNs, net.hosts[i].ipv6, hostPorts(i)));
  }
  return { v4, v6 };
}

async function assertOutsideView(net: TestNet, operator: boolean, what: string): Promise<void> {
  const { v4, v6 } = await scanAll(net, net.outside!.ns);
  for (let i = 0; i < net.hosts.length; i++) {
    assert.deepEqual(v4[i], expectedOutside(i, operator), `${what}: IPv4 scan of host${i + 1} from outside`);
    assert.deepEqual(v6[i], expectedOutside(i, operator), `${what}: IPv6 scan of host${i + 1} from outside`);
  }
}

async function waitFor(cond: () => Promise<boolean>, timeoutMs: number, stepMs = 100): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await cond()) return true;
    await new Promise((r) => setTimeout(r, stepMs));
  }
  return cond();
}

/** Bounded connect flood from a namespace: `count` attempts max, `maxMs` max; prints the successes. */
const FLOOD = `
const net = require('net');
const [host, port, count, maxMs] = process.argv.slice(1);
let started = 0, done = 0, ok = 0; const end = Date.now() + Number(maxMs);
process.stdin.on('data', () => { stop = true; }); let stop = false;
function one() {
  if (stop || started >= Number(count) || Date.now() > end) { if (done === started) { process.stdout.write(JSON.stringify({ attempts: started, ok }) + '\\n'); process.exit(0); } return; }
  started++;
  const s = net.connect({ host, port: Number(port) });
  const fin = () => { s.destroy(); done++; setImmediate(one); };
  s.setTimeout(150, fin); s.once('connect', () => { ok++; fin(); }); s.once('error', fin);
}
for (let i = 0; i < 64; i++) one();
`;

describe('firewall guard in network namespaces (root, nft, iptables, nmap)', () => {
  let net: TestNet;
  const listeners: Listener[] = [];
  const guards: Guard[] = [];
  // Commit-confirmed changes are persisted here (one dir per host) for their rollback watchdogs.
  const stateRoot = mkdtempSync(join(tmpdir(), 'cdfw-state-'));
  let planClosed: Plan;
  let planOperator: Plan;
  const policies = (plan: Plan): GuardPolicy[] => plan.dispatchers.map((d) => guardPolicyFromPlan(plan, d.id));

  before(async () => {
    net = await createTestNet({ hosts: 3, outside: true, prefix: 'cdfw' });
    planClosed = makePlan(net, []);
    planOperator = makePlan(net, [net.outside!.ipv4, net.outside!.ipv6]);
    for (let i = 0; i < net.hosts.length; i++) listeners.push(await startListener(net, net.hosts[i], hostPorts(i)));
  });

  after(async () => {
    for (const g of guards) g.stop();
    await net?.destroy();
    rmSync(stateRoot, { recursive: true, force: true });
  });

  test('without a guard every port is open from outside (the listeners work)', async () => {
    const s = await nmap(net, net.outside!.ns, net.hosts[0].ipv4, hostPorts(0));
    assert.deepEqual(s, { [AGENT]: 'open', [COORD]: 'open', [DB]: 'open', [DISP]: 'open' });
  });

  test('nft guard: outside sees only public ports, IPv4 and IPv6; a cluster host reaches agency and DB ports', async () => {
    const pols = policies(planClosed);
    for (let i = 0; i < net.hosts.length; i++) {
      const backend = await detectBackend('auto', { netns: net.hosts[i].ns });
      assert.equal(backend.name, 'nftables');
      const g = new Guard({ backend, driftIntervalMs: 300, stateDir: join(stateRoot, `host${i + 1}`) });
      guards.push(g);
      await g.apply(pols[i]);
      assert.equal(await g.verify(), true);
    }
    await assertOutsideView(net, false, 'nft guard');
    // From a cluster host: everything of host1 open on both families.
    for (const target of [net.hosts[0].ipv4, net.hosts[0].ipv6]) {
      assert.deepEqual(await nmap(net, net.hosts[1].ns, target, hostPorts(0)), { [AGENT]: 'open', [COORD]: 'open', [DB]: 'open', [DISP]: 'open' });
    }
    // The drops were counted (drop => filtered: the guard answered, not a missing process).
    const listing = await net.exec(net.hosts[0].ns, ['nft', 'list', 'table', 'inet', 'dispatcher_guard']);
    assert.match(listing.stdout, /counter packets [1-9]\d* bytes \d+ drop comment "guard cluster"/);
  });

  test('drift: `nft flush ruleset` on one host -> the guard is back within the drift interval', async () => {
    const g = guards[2];
    g.start();
    const flushed = await net.exec(net.hosts[2].ns, ['nft', 'flush', 'ruleset']);
    assert.equal(flushed.code, 0);
    const back = await waitFor(async () => (await net.exec(net.hosts[2].ns, ['nft', 'list', 'table', 'inet', 'dispatcher_guard'])).code === 0, 3_000);
    assert.ok(back, 'rules re-applied');
    await waitFor(async () => g.status().driftRepairs >= 1, 2_000);
    const st = g.status();
    assert.ok(st.driftRepairs >= 1, JSON.stringify(st));
    assert.equal(st.inSync, true);
    assert.equal(st.backend, 'nftables');
    // A change inside our table (someone deletes the drop rules) is drift too.
    const flushChain = await net.exec(net.hosts[2].ns, ['nft', 'flush', 'chain', 'inet', 'dispatcher_guard', 'input']);
    assert.equal(flushChain.code, 0);
    assert.ok(await waitFor(async () => g.status().driftRepairs >= 2, 3_000), 'changed chain repaired');
    g.stop();
    assert.deepEqual(await nmap(net, net.outside!.ns, net.hosts[2].ipv4, hostPorts(2)), expectedOutside(2, false));
  });

  test('`dispatch firewall verify` from the outside (client) passes, and from outside as "cluster" reports the blocked ports', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cd-fwverify-'));
    try {
      const planFile = join(dir, 'plan.json');
      writeFileSync(planFile, JSON.stringify(planClosed));
      const mod = new URL('../../launcher/commands/firewall.js', import.meta.url).href;
      const script = `import(${JSON.stringify(mod)}).then(async (m) => { const { Command } = await import('commander');
        const p = new Command(); m.registerFirewallCommands(p); await p.parseAsync(['node', 'dispatch', 'firewall', 'verify', '--plan', ${JSON.stringify(planFile)}, '--json', '--from-role', process.argv[1]]); });`;
      const asClient = await net.exec(net.outside!.ns, [process.execPath, '--input-type=module', '-e', script, 'client'], { timeoutMs: 30_000 });
      assert.equal(asClient.code, 0, asClient.stderr);
      const rows = JSON.parse(asClient.stdout) as { port: number; state: string; verdict: string }[];
      assert.equal(rows.length, 2 * (4 + 3 + 3));
      assert.ok(rows.filter((r) => r.port !== COORD).every((r) => r.state === 'filtered'), asClient.stdout);
      assert.ok(rows.filter((r) => r.port === COORD).every((r) => r.state === 'open' && r.verdict === 'ok'));
      // The exit code is about ports open that must not be: none here, even when more was expected.
      const asCluster = await net.exec(net.outside!.ns, [process.execPath, '--input-type=module', '-e', script, 'cluster'], { timeoutMs: 30_000 });
      assert.equal(asCluster.code, 0, asCluster.stderr);
      assert.ok((JSON.parse(asCluster.stdout) as { verdict: string }[]).some((r) => r.verdict === 'unreachable'));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('200 atomic re-applies under a connection flood from outside let no connection through', async () => {
    const host = net.hosts[0];
    const before = listeners[0].accepts.filter((l) => l.includes(net.outside!.ipv4)).length;
    const flood = net.spawnIn(net.outside!.ns, [process.execPath, '-e', FLOOD, host.ipv4, String(AGENT), '200000', '60000'], { stdio: ['pipe', 'pipe', 'inherit'] });
    let out = '';
    flood.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<void>((r) => flood.once('exit', () => r()));
    const pol = policies(planClosed)[0];
    for (let i = 0; i < 200; i++) await guards[0].apply(pol);
    flood.stdin!.end('stop\n');
    await exited;
    const res = JSON.parse(out) as { attempts: number; ok: number };
    assert.ok(res.attempts > 100, `flood made only ${res.attempts} attempts`);
    assert.equal(res.ok, 0, 'a flood connection got through');
    const afterCount = listeners[0].accepts.filter((l) => l.includes(net.outside!.ipv4)).length;
    assert.equal(afterCount - before, 0, 'the listener accepted a connection from outside');
  });

  test('commit-confirmed: an unconfirmed change that cuts the operator off is rolled back (by the detached watchdog process)', async () => {
    const g = guards[0];
    await g.apply(policies(planOperator)[0]);
    assert.deepEqual(await nmap(net, net.outside!.ns, net.hosts[0].ipv4, [DISP]), { [DISP]: 'open' });
    const { confirmBy } = await g.applyWithDeadline(policies(planClosed)[0], 2);
    assert.ok(g.status().pendingConfirmUntil === confirmBy);
    assert.deepEqual(await nmap(net, net.outside!.ns, net.hosts[0].ipv4, [DISP]), { [DISP]: 'filtered' }, 'the change cut the operator off');
    const back = await waitFor(async () => g.status().pendingConfirmUntil === null && (await g.verify()), 6_000, 200);
    assert.ok(back, 'rolled back');
    assert.deepEqual(await nmap(net, net.outside!.ns, net.hosts[0].ipv4, [DISP]), { [DISP]: 'open' }, 'the operator can connect again');
    assert.deepEqual(await nmap(net, net.outside!.ns, net.hosts[0].ipv6, [DISP]), { [DISP]: 'open' });
    // A confirmed change stays.
    const { token } = await g.applyWithDeadline(policies(planClosed)[0], 1);
    assert.deepEqual(await g.confirm(token), {});
    await new Promise((r) => setTimeout(r, 1_500));
    assert.deepEqual(await nmap(net, net.outside!.ns, net.hosts[0].ipv4, [DISP]), { [DISP]: 'filtered' });
    // An operator-visible scan of every host with the operator plan.
    for (let i = 0; i < 3; i++) await guards[i].apply(policies(planOperator)[i]);
    await assertOutsideView(net, true, 'nft guard, outside is an operator');
    for (const gg of guards) await gg.remove();
    assert.equal((await net.exec(net.hosts[0].ns, ['nft', 'list', 'table', 'inet', 'dispatcher_guard'])).code !== 0, true, 'removed');
  });

  test('iptables backend (+ipset, IPv4 and IPv6): the same scan results', async () => {
    const pols = policies(planClosed);
    const bs = net.hosts.map((h) => new IptablesBackend({ netns: h.ns }));
    try {
      for (let i = 0; i < 3; i++) {
        assert.deepEqual(await bs[i].available(), { ok: true });
        await bs[i].apply(pols[i]);
        await bs[i].apply(pols[i]); // idempotent: no second jump
        assert.equal(await bs[i].inSync(pols[i]), true);
      }
      const jumps = await net.exec(net.hosts[0].ns, ['iptables', '-S', 'INPUT']);
      assert.equal(jumps.stdout.split('\n').filter((l) => l.includes('DISPATCHER-GUARD')).length, 1);
      await assertOutsideView(net, false, 'iptables guard');
      assert.deepEqual(await nmap(net, net.hosts[1].ns, net.hosts[0].ipv6, [AGENT, DB]), { [AGENT]: 'open', [DB]: 'open' });
      // Drift detection works for iptables too.
      await net.exec(net.hosts[1].ns, ['iptables', '-F', 'DISPATCHER-GUARD']);
      assert.equal(await bs[1].inSync(pols[1]), false);
    } finally {
      for (const b of bs) await b.remove();
    }
    for (const h of net.hosts) {
      const s = await net.exec(h.ns, ['iptables-save']);
      assert.doesNotMatch(s.stdout, /DISPATCHER-GUARD/);
      assert.equal((await net.exec(h.ns, ['ipset', 'list', '-n'])).stdout.trim(), '');
    }
  });

  test('exports: the nft and iptables exports load in the namespaces and give the same scan result', async () => {
    for (let i = 0; i < 3; i++) {
      const text = exportPolicy(planClosed, 'nft', { host: `d${i + 1}` });
      const r = await net.exec(net.hosts[i].ns, ['nft', '-f', '-'], { input: text });
      assert.equal(r.code, 0, r.stderr);
    }
    await assertOutsideView(net, false, 'nft export');
    for (const h of net.hosts) await new NftablesBackend({ netns: h.ns }).remove();

    for (let i = 0; i < 3; i++) {
      const script = exportPolicy(planClosed, 'iptables', { host: `d${i + 1}` });
      // The export is a script for people to run; here it runs inside the test namespace only.
      const r = await net.exec(net.hosts[i].ns, ['bash', '-s'], { input: script });
      assert.equal(r.code, 0, r.stderr);
    }
    try {
      await assertOutsideView(net, false, 'iptables export');
    } finally {
      for (const h of net.hosts) await new IptablesBackend({ netns: h.ns }).remove();
    }
  });

  test('ufw export: applied with the real ufw inside each namespace, the same scan result (operator outside)', { timeout: 180_000 }, async () => {
    if (!existsSync('/usr/sbin/ufw')) assert.fail('this test needs ufw (deploy/install-deps.sh installs it)');
    // ufw keeps its state in /etc/ufw: each host gets a private copy, bind-mounted in a private mount
    // namespace, so the machine's own ufw configuration is never touched (and stays disabled).
    const etcCopies = net.hosts.map((_h, i) => {
      const dir = join(stateRoot, `ufw-etc-${i + 1}`);
      execFileSync('cp', ['-a', '/etc/ufw', dir]);
      return dir;
    });
    for (let i = 0; i < 3; i++) {
      const script = `set -e\nmount --bind ${etcCopies[i]} /etc/ufw\n${exportPolicy(planOperator, 'ufw', { host: `d${i + 1}` })}`;
      const r = await net.exec(net.hosts[i].ns, ['unshare', '--mount', '--propagation', 'private', 'bash', '-s'], { input: script, timeoutMs: 120_000 });
      assert.equal(r.code, 0, `ufw script on host${i + 1}: ${r.stderr}`);
    }
    assert.match(readFileSync('/etc/ufw/ufw.conf', 'utf8'), /ENABLED=no/, "the machine's ufw is untouched");
    await assertOutsideView(net, true, 'ufw export');
    for (const target of [net.hosts[0].ipv4, net.hosts[0].ipv6]) {
      assert.deepEqual(await nmap(net, net.hosts[1].ns, target, hostPorts(0)), { [AGENT]: 'open', [COORD]: 'open', [DB]: 'open', [DISP]: 'open' }, `a cluster host reaches host1 (${target})`);
    }
  });
});
