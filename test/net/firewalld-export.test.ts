/**
 * Network tier (root; firewalld, dbus, nmap): the firewalld export applied with the REAL firewalld inside
 * network-namespace hosts and scanned from outside, over IPv4 and IPv6 — the same open/filtered matrix as
 * the nft guard (test/net/firewall.test.ts): public port open, operator port open for the operator
 * (outside) only, agency and DB ports filtered (firewalld's zone rejects with ICMP "administratively
 * prohibited", which nmap reports as filtered); a cluster host reaches everything.
 *
 * firewalld needs a system D-Bus and keeps its state in /etc/firewalld: each host runs its own dbus-daemon
 * and firewalld in a private mount namespace, with a private copy of /etc/firewalld and its own /run/dbus,
 * so the machine's own firewalld (installed, never started here) and D-Bus are never touched. firewalld
 * must keep running while the scan runs (it removes its rules when it exits).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTestNet, type TestNet } from '../helpers/netns.js';
import type { Plan } from '../../api/plan.js';
import { exportPolicy } from '../../server/core/firewall-export.js';

const FP = Array.from({ length: 32 }, () => 'CD').join(':');
const AGENT = 2379;
const DB = 5432;
const COORD = 5000;
const DISP = 8528;
const PORTS = [AGENT, COORD, DB, DISP];

const LISTENER = `
const net = require('net'); let up = 0; const ports = process.argv.slice(1).map(Number);
for (const p of ports) net.createServer((c) => c.destroy()).listen({ port: p, host: '::', ipv6Only: false }, () => { if (++up === ports.length) process.stdout.write('READY\\n'); });
`;

function plan(net: TestNet): Plan {
  const hosts = net.hosts;
  return {
    apiVersion: 'dispatcher/v1',
    name: 'fwdtest',
    engine: 'pg-ha',
    binaries: {},
    dataRoot: 'clusters',
    dispatchers: hosts.map((h, i) => ({ id: `d${i + 1}`, endpoint: `https://${h.ipv4}:${DISP}`, fingerprint: FP, addresses: [h.ipv4, h.ipv6], allowAgents: true, allowDBservers: true, allowCoordinators: true })),
    processes: [
      ...hosts.map((h, i) => ({ id: `agent-${i + 1}`, role: 'agent' as const, dispatcher: `d${i + 1}`, address: h.ipv4, ports: [{ name: 'client', port: AGENT, exposure: 'cluster' as const }], dataDir: `a${i}`, args: [] })),
      ...hosts.map((h, i) => ({ id: `db-${i + 1}`, role: 'dbserver' as const, dispatcher: `d${i + 1}`, address: h.ipv4, ports: [{ name: 'postgres', port: DB, exposure: 'cluster' as const }], dataDir: `b${i}`, args: [] })),
      ...hosts.map((h, i) => ({ id: `coord-${i + 1}`, role: 'coordinator' as const, dispatcher: `d${i + 1}`, address: h.ipv4, ports: [{ name: 'client', port: COORD, exposure: 'public' as const }], dataDir: `c${i}`, args: [] })),
    ],
    firewall: { mode: 'guard', backend: 'nftables', clientSources: ['0.0.0.0/0', '::/0'], operatorSources: [net.outside!.ipv4, net.outside!.ipv6], sshPort: 22, outboundAllow: false },
  };
}

/** Waits for a line on a child's stdout. */
function waitLine(c: ChildProcess, want: string, ms: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let buf = '';
    let err = '';
    const t = setTimeout(() => reject(new Error(`no "${want}" within ${ms} ms: ${buf}\n${err}`)), ms);
    c.stderr?.on('data', (d: Buffer) => (err += d.toString()));
    c.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      if (buf.split('\n').includes(want)) {
        clearTimeout(t);
        resolve();
      }
    });
    c.once('exit', (code) => reject(new Error(`exited ${code} before "${want}": ${buf}\n${err}`)));
  });
}

describe('firewalld export applied with the real firewalld in namespaces (root, firewalld, nmap)', () => {
  let net: TestNet;
  const children: ChildProcess[] = [];
  const root = mkdtempSync(join(tmpdir(), 'cdfwd-'));

  before(async () => {
    for (const p of ['/usr/sbin/firewalld', '/usr/bin/firewall-cmd', '/usr/bin/dbus-daemon', '/usr/bin/nmap']) {
      if (!existsSync(p)) throw new Error(`this test needs ${p} (deploy/install-deps.sh installs firewalld)`);
    }
    net = await createTestNet({ hosts: 3, outside: true, prefix: 'cdfd' });
    for (const h of net.hosts) {
      const l = net.spawnIn(h.ns, [process.execPath, '-e', LISTENER, ...PORTS.map(String)], { stdio: ['ignore', 'pipe', 'inherit'] });
      children.push(l);
      await waitLine(l, 'READY', 10_000);
    }
  });

  after(async () => {
    for (const c of children) {
      c.stdin?.end();
      if (c.exitCode === null) setTimeout(() => c.kill('SIGKILL'), 5_000).unref();
    }
    await new Promise((r) => setTimeout(r, 1_000));
    await net?.destroy();
    rmSync(root, { recursive: true, force: true });
  });

  test('outside sees the public port, the operator port (it is an operator), nothing else; a cluster host sees all (IPv4, IPv6)', { timeout: 240_000 }, async () => {
    const p = plan(net);
    for (let i = 0; i < 3; i++) {
      const dir = join(root, `host${i + 1}`);
      mkdirSync(join(dir, 'run'), { recursive: true });
      execFileSync('cp', ['-a', '/etc/firewalld', join(dir, 'etc')]);
      // Runs until its stdin closes, then stops firewalld (which removes its rules).
      const script = [
        'set -e',
        `mount --bind ${join(dir, 'etc')} /etc/firewalld`,
        `mount --bind ${join(dir, 'run')} /run/dbus`,
        'dbus-daemon --system --fork --nopidfile',
        'firewalld --nofork --nopid & FWD=$!',
        'for i in $(seq 100); do firewall-cmd --state >/dev/null 2>&1 && break; sleep 0.2; done',
        exportPolicy(p, 'firewalld', { host: `d${i + 1}` }),
        'echo APPLIED',
        'cat >/dev/null',
        'kill $FWD; wait $FWD || true',
      ].join('\n');
      const c = net.spawnIn(net.hosts[i].ns, ['unshare', '--mount', '--propagation', 'private', 'bash', '-c', script], { stdio: ['pipe', 'pipe', 'pipe'] });
      children.push(c);
      await waitLine(c, 'APPLIED', 120_000);
    }
    const nmap = async (fromNs: string, target: string): Promise<Record<number, string>> => {
      const r = await net.exec(fromNs, ['nmap', '-Pn', '-n', '-sS', '-T4', '--max-retries', '1', '-p', PORTS.join(','), '-oX', '-', ...(target.includes(':') ? ['-6'] : []), target], { timeoutMs: 60_000 });
      assert.equal(r.code, 0, r.stderr);
      const st: Record<number, string> = {};
      for (const m of r.stdout.matchAll(/<port protocol="tcp" portid="(\d+)"><state state="([a-z|]+)"/g)) st[Number(m[1])] = m[2];
      return st;
    };
    const want = { [AGENT]: 'filtered', [COORD]: 'open', [DB]: 'filtered', [DISP]: 'open' };
    for (const h of net.hosts) {
      assert.deepEqual(await nmap(net.outside!.ns, h.ipv4), want, `IPv4 scan of ${h.name} from outside`);
      assert.deepEqual(await nmap(net.outside!.ns, h.ipv6), want, `IPv6 scan of ${h.name} from outside`);
    }
    const all = Object.fromEntries(PORTS.map((x) => [x, 'open']));
    assert.deepEqual(await nmap(net.hosts[1].ns, net.hosts[0].ipv4), all, 'host2 reaches every port of host1 (IPv4)');
    assert.deepEqual(await nmap(net.hosts[2].ns, net.hosts[0].ipv6), all, 'host3 reaches every port of host1 (IPv6)');
    assert.equal(execFileSync('nft', ['list', 'tables'], { encoding: 'utf8' }).includes('firewalld'), false, "the machine's own ruleset has no firewalld table");
  });
});
