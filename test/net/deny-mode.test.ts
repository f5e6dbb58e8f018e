/**
 * Network tier (root; nft, nmap): deny mode applied for real inside network namespaces and scanned, like
 * guard mode in firewall.test.ts. Three hosts listen (echo servers, IPv4+IPv6) on an agency port
 * (cluster), a coordinator port (public), the dispatcher port (operator), SSH (22) and a port the plan
 * does not know; an outside namespace scans them over both families:
 *  - outside sees only the public port, SSH (management stays reachable) and — only when it is an
 *    operator source — the operator port; the agency port and the unknown port are filtered;
 *  - a cluster host reaches every port of another host, the unknown one too;
 *  - sessions established before deny mode goes in (outside → public port, cluster host → agency port,
 *    outside → SSH) keep working across the apply and 20 re-applies: deny mode never cuts them;
 *  - the guard warns when conntrack's established timeout is below the 14,400 s long sessions need.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTestNet, type TestHost, type TestNet } from '../helpers/netns.js';
import type { Plan } from '../../api/plan.js';
import { guardPolicyFromPlan } from '../../server/core/firewall-policy.js';
import { NftablesBackend } from '../../server/firewall/nftables.js';
import { Guard } from '../../server/firewall/guard.js';

const FP = Array.from({ length: 32 }, () => 'CD').join(':');
const AGENT = 2379;
const COORD = 5000;
const DISP = 8528;
const SSH = 22;
const OTHER = 9999;
const PORTS = [AGENT, COORD, DISP, SSH, OTHER];

function denyPlan(net: TestNet, operatorSources: string[]): Plan {
  const hosts = net.hosts;
  return {
    apiVersion: 'dispatcher/v1',
    name: 'denytest',
    engine: 'pg-ha',
    binaries: {},
    dataRoot: 'clusters',
    dispatchers: hosts.map((h, i) => ({ id: `d${i + 1}`, endpoint: `https://${h.ipv4}:${DISP}`, fingerprint: FP, addresses: [h.ipv4, h.ipv6], allowAgents: true, allowDBservers: true, allowCoordinators: true })),
    processes: [
      ...hosts.map((h, i) => ({ id: `agent-${i + 1}`, role: 'agent' as const, dispatcher: `d${i + 1}`, address: h.ipv4, ports: [{ name: 'client', port: AGENT, exposure: 'cluster' as const }], dataDir: `a${i}`, args: [] })),
      ...hosts.map((h, i) => ({ id: `coord-${i + 1}`, role: 'coordinator' as const, dispatcher: `d${i + 1}`, address: h.ipv4, ports: [{ name: 'client', port: COORD, exposure: 'public' as const }], dataDir: `c${i}`, args: [] })),
    ],
    firewall: { mode: 'deny', backend: 'nftables', clientSources: ['0.0.0.0/0', '::/0'], operatorSources, sshPort: SSH, outboundAllow: false },
  };
}

/** Echo servers on every port, both families. */
const ECHO = `
const net = require('net'); let up = 0; const ports = process.argv.slice(1).map(Number);
for (const p of ports) net.createServer((c) => c.pipe(c)).listen({ port: p, host: '::', ipv6Only: false }, () => { if (++up === ports.length) process.stdout.write('READY\\n'); });
`;

/** Holds one connection per target open; on each stdin line, pings every one and prints which answered. */
const SESSIONS = `
const net = require('net'); const targets = JSON.parse(process.argv[1]);
const socks = targets.map((t) => { const s = net.connect({ host: t.host, port: t.port }); s.setNoDelay(true); s.on('error', () => {}); return s; });
let n = 0;
function ping() {
  n++; const msg = 'ping' + n;
  return Promise.all(socks.map((s) => new Promise((r) => {
    let buf = ''; const t = setTimeout(() => { s.removeListener('data', on); r(false); }, 2000);
    const on = (d) => { buf += d; if (buf.includes(msg)) { clearTimeout(t); s.removeListener('data', on); r(true); } };
    s.on('data', on); s.write(msg);
  })));
}
Promise.all(socks.map((s) => new Promise((r) => s.once('connect', r)))).then(() => process.stdout.write('UP\\n'));
require('readline').createInterface({ input: process.stdin }).on('line', async () => process.stdout.write(JSON.stringify(await ping()) + '\\n'));
`;

type States = Record<number, string>;

describe('deny mode in network namespaces (root, nft, nmap)', () => {
  let net: TestNet;
  const children: ChildProcess[] = [];
  const guards: Guard[] = [];
  const stateRoot = mkdtempSync(join(tmpdir(), 'cddeny-state-'));

  const nmap = async (fromNs: string, target: string): Promise<States> => {
    const r = await net.exec(fromNs, ['nmap', '-Pn', '-n', '-sS', '-T4', '--max-retries', '1', '-p', PORTS.join(','), '-oX', '-', ...(target.includes(':') ? ['-6'] : []), target], { timeoutMs: 60_000 });
    assert.equal(r.code, 0, r.stderr);
    const st: States = {};
    for (const m of r.stdout.matchAll(/<port protocol="tcp" portid="(\d+)"><state state="([a-z|]+)"/g)) st[Number(m[1])] = m[2];
    return st;
  };
  const waitLine = (c: ChildProcess, pred: (l: string) => boolean): Promise<string> =>
    new Promise((resolve, reject) => {
      let buf = '';
      const t = setTimeout(() => reject(new Error(`no line from ${c.pid}: ${buf}`)), 15_000);
      const on = (d: Buffer) => {
        buf += d.toString();
        const line = buf.split('\n').find((l) => pred(l));
        if (line !== undefined) {
          clearTimeout(t);
          c.stdout!.off('data', on);
          resolve(line);
        }
      };
      c.stdout!.on('data', on);
    });
  const spawnIn = (host: TestHost | { ns: string }, argv: string[]): ChildProcess => {
    const c = net.spawnIn(host.ns, argv, { stdio: ['pipe', 'pipe', 'inherit'] });
    children.push(c);
    return c;
  };

  before(async () => {
    net = await createTestNet({ hosts: 3, outside: true, prefix: 'cddn' });
    for (const h of net.hosts) {
      const c = spawnIn(h, [process.execPath, '-e', ECHO, ...PORTS.map(String)]);
      await waitLine(c, (l) => l === 'READY');
    }
  });

  after(async () => {
    for (const g of guards) g.stop();
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    await net?.destroy();
    rmSync(stateRoot, { recursive: true, force: true });
  });

  test('scan: outside sees public, SSH and (as operator) operator ports only; a cluster host sees everything; sessions survive', { timeout: 240_000 }, async () => {
    const h1 = net.hosts[0];
    // Sessions opened before deny mode: outside → public and SSH ports of host1, host2 → agency port of host1.
    const outsideSessions = spawnIn(net.outside!, [process.execPath, '-e', SESSIONS, JSON.stringify([{ host: h1.ipv4, port: COORD }, { host: h1.ipv6, port: SSH }])]);
    const clusterSessions = spawnIn(net.hosts[1], [process.execPath, '-e', SESSIONS, JSON.stringify([{ host: h1.ipv4, port: AGENT }, { host: h1.ipv6, port: OTHER }])]);
    await waitLine(outsideSessions, (l) => l === 'UP');
    await waitLine(clusterSessions, (l) => l === 'UP');
    const ping = async (c: ChildProcess) => {
      const p = waitLine(c, (l) => l.startsWith('['));
      c.stdin!.write('go\n');
      return JSON.parse(await p) as boolean[];
    };
    assert.deepEqual(await ping(outsideSessions), [true, true]);

    for (const [operator, what] of [[true, 'outside is an operator'], [false, 'outside is not an operator']] as const) {
      const plan = denyPlan(net, operator ? [net.outside!.ipv4, net.outside!.ipv6] : []);
      for (let i = 0; i < 3; i++) {
        if (!guards[i]) guards[i] = new Guard({ backend: new NftablesBackend({ netns: net.hosts[i].ns }), stateDir: join(stateRoot, String(i)) });
        await guards[i].apply(guardPolicyFromPlan(plan, `d${i + 1}`));
        assert.equal(await guards[i].verify(), true);
      }
      const want: States = { [AGENT]: 'filtered', [COORD]: 'open', [DISP]: operator ? 'open' : 'filtered', [SSH]: 'open', [OTHER]: 'filtered' };
      for (const h of net.hosts) {
        assert.deepEqual(await nmap(net.outside!.ns, h.ipv4), want, `${what}: IPv4 scan of ${h.name} from outside`);
        assert.deepEqual(await nmap(net.outside!.ns, h.ipv6), want, `${what}: IPv6 scan of ${h.name} from outside`);
      }
      const all: States = Object.fromEntries(PORTS.map((p) => [p, 'open']));
      assert.deepEqual(await nmap(net.hosts[1].ns, h1.ipv4), all, `${what}: host2 reaches every port of host1 (IPv4)`);
      assert.deepEqual(await nmap(net.hosts[2].ns, h1.ipv6), all, `${what}: host3 reaches every port of host1 (IPv6)`);
    }
    // The established sessions survived the switch to deny mode and survive re-applies.
    const last = denyPlan(net, []);
    for (let k = 0; k < 20; k++) await guards[0].apply(guardPolicyFromPlan(last, 'd1'));
    assert.deepEqual(await ping(outsideSessions), [true, true], 'outside sessions (public port, SSH) kept');
    assert.deepEqual(await ping(clusterSessions), [true, true], 'cluster sessions (agency port, other port) kept');
  });

  test('the guard warns in deny mode when conntrack would cut idle sessions before 14,400 s', async () => {
    const h = net.hosts[0];
    const key = 'net.netfilter.nf_conntrack_tcp_timeout_established';
    const before = (await net.exec(h.ns, ['sysctl', '-n', key])).stdout.trim();
    try {
      assert.ok(Number(before) >= 14_400, `kernel default ${before} s keeps long sessions`);
      assert.deepEqual(guards[0].status().warnings, []);
      assert.equal((await net.exec(h.ns, ['sysctl', '-q', '-w', `${key}=600`])).code, 0);
      await guards[0].apply(guardPolicyFromPlan(denyPlan(net, []), 'd1'));
      assert.match(guards[0].status().warnings.join('\n'), /timeout_established is 600 s/);
    } finally {
      await net.exec(h.ns, ['sysctl', '-q', '-w', `${key}=${before}`]);
    }
  });
});
