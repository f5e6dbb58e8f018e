/**
 * Network tier (root; nft, nmap and the pg-ha Debian packages): a REAL pg-ha cluster launched across three
 * network-namespace hosts, each running its own dispatcherd with the nftables backend, through ONE
 * dispatcher (peer calls go between namespaces over pinned HTTPS). The operator — and a database client —
 * sit in a fourth, outside namespace. Proves, on the running cluster:
 *  - the guard is on every host before the first process starts (order of the operation's events, and an
 *    outside probe of every agency/DB/Patroni port that runs during the whole launch and never connects);
 *  - from outside only the coordinator's client ports (and the operator ports: outside is an operator
 *    source) are open, over IPv4 AND IPv6 (every process listens on each plan address of its host);
 *    agency (etcd), Patroni REST and PostgreSQL ports are filtered, IPv4 and IPv6;
 *    from a cluster host the agency, Patroni and PostgreSQL ports are reachable over IPv4 and IPv6, and
 *    Patroni REST answers there on both families with the dispatcher's client certificate (and refuses a
 *    client without one); a client outside writes through a coordinator;
 *  - drift: `nft flush ruleset` on one host is repaired within the drift interval and counted in status;
 *  - shutdown keeps the rules, cleanup removes them; no cluster process is left behind.
 * Everything (namespaces, dispatchers, cluster processes, data dirs) is removed even when a test fails.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { TestNet } from '../helpers/netns.js';
import { operatorOutsideFirewall, requireExecutables, startNsHosts, tearDownNsTest } from '../helpers/ns-setup.js';
import { clientIn, ndjson, socketClient, spawnClientIn, NS_DISPATCHER_PORT, type NsCluster } from '../helpers/ns-cluster.js';
import { planFromSpec } from '../../launcher/planner.js';
import { PG_HA_DEBIAN_BINARIES } from '../../launcher/local.js';
import type { Plan } from '../../api/plan.js';
import type { ClusterView, OperationView } from '../../api/rest.js';

const NAME = 'nsguard';
const READY_TIMEOUT_MS = 120_000;

type States = Record<number, string>;

/** Probes ports from a namespace until stdin closes (or maxMs): counts open / refused / timed-out connects. */
const PROBE = `
const net = require('net');
const targets = JSON.parse(process.argv[1]); const maxMs = Number(process.argv[2]);
const end = Date.now() + maxMs; let stop = false;
const res = { attempts: 0, open: 0, refused: 0, timeout: 0, other: 0, openTargets: [] };
process.stdin.on('data', () => {}); process.stdin.on('end', () => { stop = true; });
function once(t) { return new Promise((r) => {
  const s = net.connect({ host: t.host, port: t.port }); let done = false;
  const fin = (k) => { if (done) return; done = true; s.destroy(); res.attempts++; res[k]++;
    if (k === 'open') res.openTargets.push(t.host + ':' + t.port + '@' + new Date().toISOString()); r(); };
  s.setTimeout(250, () => fin('timeout')); s.once('connect', () => fin('open'));
  s.once('error', (e) => fin(e.code === 'ECONNREFUSED' ? 'refused' : 'other'));
}); }
(async () => {
  process.stdout.write('READY\\n');
  while (!stop && Date.now() < end) { await Promise.all(targets.map(once)); }
  process.stdout.write(JSON.stringify(res) + '\\n'); process.exit(0);
})();
`;

describe('pg-ha launch across namespace hosts with the nftables guard (root, nft, nmap, pg-ha packages)', () => {
  let net: TestNet | undefined;
  let cluster: NsCluster | undefined;
  let plan: Plan;
  let launchOp: OperationView | undefined;
  let launchFailure = '';
  let launched = false;
  let cleaned = false;

  const outsideNs = () => net!.outside!.ns;
  const cred = () => ({ user: cluster!.user, password: cluster!.password });
  const d1 = () => cluster!.dispatchers[0];

  /** Runs an operation through d1 from the outside namespace (pinned HTTPS) and returns its final view. */
  const runOp = async (path: string, body: unknown, timeoutMs = 180_000): Promise<{ op: OperationView; lines: Record<string, any>[]; stderr: string }> => {
    const bodyFile = join(cluster!.root, `body-${Date.now()}.json`);
    writeFileSync(bodyFile, JSON.stringify(body), { mode: 0o600 });
    const r = await clientIn(net!, outsideNs(), d1(), cred(), ['run', path, bodyFile], timeoutMs);
    const lines = ndjson(r.stdout);
    const op = lines.find((l) => l.type === 'operation') as unknown as OperationView | undefined;
    assert.ok(op, `no operation view from the client (exit ${r.code}):\n${r.stderr}\n${r.stdout}`);
    return { op, lines, stderr: r.stderr };
  };

  const status = async (): Promise<ClusterView> => {
    const c = socketClient(d1());
    try {
      return await c.get<ClusterView>('/v1/cluster');
    } finally {
      c.close();
    }
  };

  const nftTable = (ns: string) => net!.exec(ns, ['nft', 'list', 'table', 'inet', 'dispatcher_guard']);

  const nmap = async (fromNs: string, target: string, ports: number[]): Promise<States> => {
    const v6 = target.includes(':');
    const argv = ['nmap', '-Pn', '-n', '-sS', '-T4', '--max-retries', '1', '-p', ports.join(','), '-oX', '-', ...(v6 ? ['-6'] : []), target];
    const r = await net!.exec(fromNs, argv, { timeoutMs: 60_000 });
    assert.equal(r.code, 0, `nmap failed: ${r.stderr}`);
    const states: States = {};
    for (const m of r.stdout.matchAll(/<port protocol="tcp" portid="(\d+)"><state state="([a-z|]+)"/g)) states[Number(m[1])] = m[2];
    assert.equal(Object.keys(states).length, ports.length, `nmap gave no state for some ports: ${r.stdout}`);
    return states;
  };

  /** Every port of the plan on host i, plus the dispatcher's own, with its exposure. */
  const portsOfHost = (i: number): { port: number; exposure: string; role: string; name: string }[] => {
    const id = cluster!.dispatchers[i].id;
    return [
      ...plan.processes.filter((p) => p.dispatcher === id).flatMap((p) => p.ports.map((x) => ({ port: x.port, exposure: x.exposure, role: p.role, name: x.name }))),
      { port: NS_DISPATCHER_PORT, exposure: 'operator', role: 'dispatcher', name: 'api' },
    ];
  };

  const failDetail = () =>
    `${launchFailure}\n${(launchOp?.events ?? []).map((e) => `${e.seq} ${e.step} ${e.host ?? ''} ${e.process ?? ''} ${e.message}`).join('\n')}\n` +
    `error: ${JSON.stringify(launchOp?.error)}\n` +
    (cluster?.dispatchers ?? []).map((d) => `--- ${d.id} output (tail)\n${d.output().split('\n').slice(-30).join('\n')}`).join('\n');

  before(async () => {
    requireExecutables({ ...PG_HA_DEBIAN_BINARIES, nmap: '/usr/bin/nmap', nft: '/usr/sbin/nft', curl: '/usr/bin/curl' }, 'root, nmap, nftables and the pg-ha packages: deploy/install-deps.sh');
    ({ net, cluster } = await startNsHosts('cdlg'));
    plan = planFromSpec({
      name: NAME,
      engine: 'pg-ha',
      dispatchers: cluster.specDispatchers(),
      agents: 3,
      dbservers: 3,
      coordinators: 1,
      // The operator (this test's client) sits outside: the dispatcher port must answer it.
      firewall: operatorOutsideFirewall(net),
    });
  });

  after(async () => {
    // Best effort, bounded: stop the cluster through the product so postgres shuts down cleanly; then kill
    // whatever is left by pid (ns-cluster stops the dispatchers, the net's destroy kills the rest).
    await tearDownNsTest({ launched: launched && !cleaned, cluster, net, dispatcher: d1 });
  });

  test('launch through one dispatcher: guard on every host before the first start; outside never reaches an internal port', { timeout: 240_000 }, async () => {
    // Outside probe: every cluster-only port of every host, IPv4 and IPv6, for the whole launch.
    const targets = cluster!.dispatchers.flatMap((d, i) =>
      portsOfHost(i)
        .filter((p) => p.exposure === 'cluster')
        .flatMap((p) => [{ host: d.host.ipv4, port: p.port }, { host: d.host.ipv6, port: p.port }]),
    );
    assert.ok(targets.length >= 2 * (3 * 2 + 3 * 2), `probe targets: ${JSON.stringify(targets)}`);
    const probe = net!.spawnIn(outsideNs(), [process.execPath, '-e', PROBE, JSON.stringify(targets), String(300_000)], { stdio: ['pipe', 'pipe', 'inherit'] });
    let probeOut = '';
    probe.stdout!.setEncoding('utf8').on('data', (c: string) => (probeOut += c));
    await new Promise<void>((r, j) => {
      const t = setTimeout(() => j(new Error('probe did not start')), 10_000);
      const check = () => (probeOut.includes('READY') ? (clearTimeout(t), r()) : setTimeout(check, 20));
      check();
    });

    const bodyFile = join(cluster!.root, 'launch.json');
    writeFileSync(bodyFile, JSON.stringify({ plan, peerCredentials: {}, readyTimeoutMs: READY_TIMEOUT_MS }), { mode: 0o600 });
    const started = Date.now();
    launched = true;
    const l = spawnClientIn(net!, outsideNs(), d1(), cred(), ['run', '/v1/cluster/launch', bodyFile]);
    const killer = setTimeout(() => l.child.kill('SIGKILL'), 220_000);
    const res = await l.done;
    clearTimeout(killer);
    const launchMs = Date.now() - started;
    probe.stdin!.end();
    await new Promise<void>((r) => (probe.exitCode !== null ? r() : probe.once('exit', () => r())));
    const lines = ndjson(res.stdout);
    launchOp = lines.find((x) => x.type === 'operation') as unknown as OperationView | undefined;
    launchFailure = `client exit ${res.code} after ${launchMs} ms; stderr: ${res.stderr}`;
    assert.ok(launchOp, failDetail());
    assert.equal(launchOp.state, 'succeeded', failDetail());
    process.stderr.write(`# launch of ${plan.processes.length} processes across 3 namespace hosts took ${launchMs} ms\n`);

    // Live events (the NDJSON stream) and the stored operation agree on the order.
    const live = lines.filter((x) => x.type === 'event').map((x) => x.seq as number);
    assert.deepEqual(live, launchOp.events.map((e) => e.seq), 'the stream delivered every event in order');

    // Order: every host's guard event comes before the first start event; verify comes after the last ready.
    const ev = launchOp.events;
    const firstStart = ev.find((e) => e.step === 'start');
    assert.ok(firstStart, 'a start event exists');
    for (const d of cluster!.dispatchers) {
      const g = ev.find((e) => e.step === 'guard' && e.host === d.id);
      assert.ok(g, `guard event for ${d.id}`);
      assert.ok(g.seq < firstStart.seq, `guard on ${d.id} (seq ${g.seq}) before the first start (seq ${firstStart.seq})`);
      assert.match(g.message, /nftables/, `guard on ${d.id} used nftables: ${g.message}`);
    }
    const lastReady = Math.max(...ev.filter((e) => e.step === 'ready' && e.process).map((e) => e.seq));
    const verify = ev.find((e) => e.step === 'verify');
    assert.ok(verify && verify.seq > lastReady, 'the guard is read back after the last process is ready');
    const startedIds = new Set(ev.filter((e) => e.step === 'start' && e.process).map((e) => e.process));
    assert.deepEqual([...startedIds].sort(), plan.processes.map((p) => p.id).sort());
    const guards = (launchOp.result as { guards: Record<string, { inSync: boolean; backend: string }> }).guards;
    for (const d of cluster!.dispatchers) assert.deepEqual([guards[d.id].backend, guards[d.id].inSync], ['nftables', true], `ready report guard of ${d.id}`);

    // The probe ran through the whole launch and never connected; it met the guard's drops (timeouts).
    const pr = JSON.parse(probeOut.split('\n').filter((x) => x.startsWith('{')).pop() ?? '{}') as { attempts: number; open: number; timeout: number; refused: number; openTargets: string[] };
    process.stderr.write(`# outside probe during the launch: ${JSON.stringify({ ...pr, openTargets: pr.openTargets.length })}\n`);
    assert.equal(pr.open, 0, `internal ports reachable from outside during the launch: ${pr.openTargets.join(', ')}`);
    assert.ok(pr.attempts >= targets.length * 3, `probe made ${pr.attempts} attempts`);
    assert.ok(pr.timeout > 0, 'the probe met the guard (dropped connects) during the launch');
  });

  test('status: every process ready, every dispatcher reachable with its guard in sync', { timeout: 30_000 }, async () => {
    assert.ok(launchOp?.state === 'succeeded', 'launch succeeded');
    const st = await status();
    assert.equal(st.state, 'running');
    assert.equal(st.processes.length, plan.processes.length);
    for (const p of st.processes) assert.equal(p.state, 'ready', `${p.id}: ${JSON.stringify(p)}`);
    for (const d of st.dispatchers) {
      assert.equal(d.reachable, true, `${d.id}: ${d.error}`);
      assert.equal(d.guard?.backend, 'nftables');
      assert.equal(d.guard?.inSync, true, `${d.id}: ${JSON.stringify(d.guard)}`);
    }
  });

  test('scan from outside: only coordinator client ports and operator ports open; agency, Patroni, PostgreSQL filtered (IPv4, IPv6)', { timeout: 120_000 }, async () => {
    assert.ok(launchOp?.state === 'succeeded', 'launch succeeded');
    for (let i = 0; i < 3; i++) {
      const h = cluster!.dispatchers[i].host;
      const ports = portsOfHost(i);
      const list = ports.map((p) => p.port);
      const v4 = await nmap(outsideNs(), h.ipv4, list);
      const v6 = await nmap(outsideNs(), h.ipv6, list);
      for (const p of ports) {
        const what = `${p.role} port ${p.port} (${p.exposure}) of host${i + 1}`;
        if (p.exposure === 'cluster') {
          assert.equal(v4[p.port], 'filtered', `${what} over IPv4`);
          assert.equal(v6[p.port], 'filtered', `${what} over IPv6`);
        } else {
          // public (coordinator client/readonly) and operator (HAProxy stats, the dispatcher) ports: open,
          // over both families (pg-ha processes listen on every plan address of their host: hostAddresses).
          assert.equal(v4[p.port], 'open', `${what} over IPv4`);
          assert.equal(v6[p.port], 'open', `${what} over IPv6`);
        }
      }
    }
    // From a cluster host, host1's agency, Patroni and PostgreSQL ports are reachable. The coordinator's
    // `router` port (HAProxy behind PgBouncer) binds 127.0.0.1 only: the guard lets a cluster host through,
    // and nothing listens there on the plan address (docs/FIREWALL.md, "Coordinator: PgBouncer and HAProxy").
    const h1 = cluster!.dispatchers[0].host;
    const internal = portsOfHost(0).filter((p) => p.exposure === 'cluster');
    assert.ok(internal.some((p) => p.role === 'agent') && internal.some((p) => p.role === 'dbserver'));
    const expected = (p: { role: string; name: string }) => (p.role === 'coordinator' && p.name === 'router' ? 'closed' : 'open');
    const fromHost2 = await nmap(cluster!.dispatchers[1].host.ns, h1.ipv4, internal.map((p) => p.port));
    for (const p of internal) assert.equal(fromHost2[p.port], expected(p), `${p.role} port ${p.port} (${p.name}) of host1 from host2`);
    const fromHost2v6 = await nmap(cluster!.dispatchers[1].host.ns, h1.ipv6, internal.map((p) => p.port));
    for (const p of internal) assert.equal(fromHost2v6[p.port], expected(p), `${p.role} port ${p.port} (${p.name}) of host1 from host2 over IPv6`);
  });

  test('from a cluster host, Patroni REST answers on both families with the dispatcher\'s client certificate, and refuses without one', { timeout: 60_000 }, async () => {
    assert.ok(launchOp?.state === 'succeeded', 'launch succeeded');
    // Patroni 3.0.2 binds one socket: "[::]" dual-stack on a host with IPv4 and IPv6 plan addresses.
    const h1 = cluster!.dispatchers[0].host;
    const d2 = cluster!.dispatchers[1];
    const tls = JSON.parse(readFileSync(join(d2.dataDir, 'cluster', 'tls.json'), 'utf8')) as { ca: string; certs: Record<string, string>; keys: Record<string, string> };
    const pem = (name: string, text: string) => {
      const f = join(cluster!.root, `rest-${name}.pem`);
      writeFileSync(f, text, { mode: 0o600 });
      return f;
    };
    const ca = pem('ca', tls.ca);
    const cert = pem('cert', tls.certs['@dispatcher']);
    const key = pem('key', tls.keys['@dispatcher']);
    const rests = plan.processes
      .filter((p) => p.dispatcher === cluster!.dispatchers[0].id && p.role === 'dbserver')
      .map((p) => p.ports.find((x) => x.name === 'rest')!.port);
    assert.ok(rests.length > 0, 'host1 runs a DB server');
    const curl = (url: string, withCert: boolean) =>
      net!.exec(d2.host.ns, ['curl', '-sS', '-g', '--max-time', '5', '-o', '/dev/null', '-w', '%{http_code}', '--cacert', ca, ...(withCert ? ['--cert', cert, '--key', key] : []), url], { timeoutMs: 15_000 });
    for (const port of rests) {
      for (const addr of [h1.ipv4, `[${h1.ipv6}]`]) {
        const url = `https://${addr}:${port}/liveness`;
        const ok = await curl(url, true);
        assert.equal(ok.stdout.trim(), '200', `${url} from host2 with the client certificate: ${ok.stderr}`);
        const bare = await curl(url, false);
        assert.notEqual(bare.stdout.trim(), '200', `${url} from host2 without a client certificate must be refused`);
      }
    }
  });

  test('a client outside writes through the coordinator with psql (and reads it back from a replica)', { timeout: 60_000 }, async () => {
    assert.ok(launchOp?.state === 'succeeded', 'launch succeeded');
    const raw = JSON.parse(readFileSync(join(d1().dataDir, 'cluster', 'secrets.json'), 'utf8')) as { secrets?: Record<string, string> } & Record<string, unknown>;
    const password = raw.secrets?.['superuser-password'] ?? (raw['superuser-password'] as string);
    assert.ok(password, 'superuser password in secrets.json');
    const coord = plan.processes.find((p) => p.role === 'coordinator')!;
    const rw = coord.ports.find((p) => p.name === 'client')!.port;
    const ro = coord.ports.find((p) => p.name === 'readonly')!.port;
    const pgpass = join(cluster!.root, 'pgpass');
    writeFileSync(pgpass, `*:${rw}:*:postgres:${password}\n*:${ro}:*:postgres:${password}\n`, { mode: 0o600 });
    const psql = (port: number, sql: string, host = coord.address) =>
      net!.exec(outsideNs(), ['env', `PGPASSFILE=${pgpass}`, 'PGCONNECT_TIMEOUT=5', PG_HA_DEBIAN_BINARIES.psql, '-h', host, '-p', String(port), '-U', 'postgres', '-d', 'postgres', '-XtAq', '-v', 'ON_ERROR_STOP=1', '-c', sql], { timeoutMs: 20_000 });
    const w = await psql(rw, "CREATE TABLE launch_guard (x text); INSERT INTO launch_guard VALUES ('from outside'); SELECT x, pg_is_in_recovery() FROM launch_guard");
    assert.equal(w.code, 0, w.stderr);
    assert.equal(w.stdout.trim(), 'from outside|f', 'written on the primary');
    let r = await psql(ro, 'SELECT x, pg_is_in_recovery() FROM launch_guard');
    for (let i = 0; i < 20 && r.stdout.trim() !== 'from outside|t'; i++) {
      await new Promise((res) => setTimeout(res, 250));
      r = await psql(ro, 'SELECT x, pg_is_in_recovery() FROM launch_guard');
    }
    assert.equal(r.stdout.trim(), 'from outside|t', `read back from a replica: ${r.stderr}`);
    // IPv6 parity: the same coordinator answers on its host's IPv6 address too.
    const coordHost = cluster!.dispatchers.find((d) => d.id === coord.dispatcher)!.host;
    const v6 = await psql(rw, 'SELECT x FROM launch_guard', coordHost.ipv6);
    assert.equal(v6.code, 0, `psql over IPv6 to [${coordHost.ipv6}]:${rw}: ${v6.stderr}`);
    assert.equal(v6.stdout.trim(), 'from outside');
    // Straight to a DB server's PostgreSQL from outside: dropped by the guard (no answer at all).
    const db = plan.processes.find((p) => p.role === 'dbserver')!;
    const direct = await net!.exec(outsideNs(), ['env', `PGPASSFILE=${pgpass}`, 'PGCONNECT_TIMEOUT=2', PG_HA_DEBIAN_BINARIES.psql, '-h', db.address, '-p', String(db.ports.find((p) => p.name === 'postgres')!.port), '-U', 'postgres', '-d', 'postgres', '-XtAc', 'SELECT 1'], { timeoutMs: 20_000 });
    assert.notEqual(direct.code, 0);
    assert.match(direct.stderr, /timeout/i);
  });

  test('drift: `nft flush ruleset` on a host of the running cluster is repaired within the drift interval and counted', { timeout: 60_000 }, async () => {
    assert.ok(launchOp?.state === 'succeeded', 'launch succeeded');
    const victim = cluster!.dispatchers[1];
    const before = (await status()).dispatchers.find((d) => d.id === victim.id)!.guard!.driftRepairs;
    const flushed = await net!.exec(victim.host.ns, ['nft', 'flush', 'ruleset']);
    assert.equal(flushed.code, 0, flushed.stderr);
    const t0 = Date.now();
    assert.notEqual((await nftTable(victim.host.ns)).code, 0, 'the flush removed our table');
    let back = false;
    while (!back && Date.now() - t0 < 5_000) {
      back = (await nftTable(victim.host.ns)).code === 0;
      if (!back) await new Promise((r) => setTimeout(r, 100));
    }
    const repairMs = Date.now() - t0;
    assert.ok(back, 'our table is back');
    process.stderr.write(`# drift repaired ${repairMs} ms after the flush (interval 1000 ms)\n`);
    assert.ok(repairMs <= 1000 + 1500, `repaired within the drift interval (plus one nft run): ${repairMs} ms`);
    let repairs = before;
    for (let i = 0; i < 30 && repairs <= before; i++) {
      repairs = (await status()).dispatchers.find((d) => d.id === victim.id)!.guard!.driftRepairs;
      if (repairs <= before) await new Promise((r) => setTimeout(r, 200));
    }
    assert.ok(repairs >= before + 1, `driftRepairs counted the repair (${before} -> ${repairs})`);
    // And the repaired host filters again: its agency port from outside.
    const agent = plan.processes.find((p) => p.role === 'agent' && p.dispatcher === victim.id)!;
    const client = agent.ports.find((p) => p.name === 'client')!.port;
    assert.deepEqual(await nmap(outsideNs(), victim.host.ipv4, [client]), { [client]: 'filtered' });
  });

  test('commit-confirmed: a change that cuts the operator off rolls back by itself; a confirmed change stays', { timeout: 90_000 }, async () => {
    assert.ok(launchOp?.state === 'succeeded', 'launch succeeded');
    const c = socketClient(d1(), 30_000);
    const dport = NS_DISPATCHER_PORT;
    const outsideSees = async () => (await nmap(outsideNs(), d1().host.ipv4, [dport]))[dport];
    const pending = async () => (await status()).dispatchers.map((d) => d.guard?.pendingConfirmUntil).filter(Boolean);
    try {
      assert.equal(await outsideSees(), 'open', 'the operator reaches the dispatcher before the change');
      // The mistake: a policy without the operator. It takes effect at once on every dispatcher...
      const cut = await c.post<{ confirmBy: string; token: string }>('/v1/cluster/firewall', { firewall: { ...plan.firewall, operatorSources: [] }, confirmWithinSeconds: 5 });
      assert.ok(cut.confirmBy, 'the answer names the confirm deadline');
      assert.equal((await pending()).length, 3, 'every dispatcher waits for a confirmation');
      assert.equal(await outsideSees(), 'filtered', 'the change cut the operator off the dispatcher port');
      // ...and, unconfirmed, rolls back by itself after the deadline.
      let back = '';
      for (let i = 0; i < 40 && back !== 'open'; i++) {
        await new Promise((r) => setTimeout(r, 500));
        back = await outsideSees();
      }
      assert.equal(back, 'open', 'the operator got their access back without doing anything');
      let left = (await pending()).length;
      for (let i = 0; i < 20 && left > 0; i++) {
        await new Promise((r) => setTimeout(r, 200));
        left = (await pending()).length;
      }
      assert.equal(left, 0, 'nothing pending after the rollback');
      // A confirm comes over a new connection (the change's own is refused); a rolled-back change cannot be confirmed.
      const fresh = () => socketClient(d1(), 30_000);
      const f1 = fresh();
      await assert.rejects(f1.post('/v1/cluster/firewall/confirm', { token: cut.token }), /no firewall change with this token is waiting/, 'a rolled-back change cannot be confirmed').finally(() => f1.close());

      // A change that is confirmed in time stays past its deadline and is recorded in the plan.
      const narrower = { ...plan.firewall, clientSources: [net!.outside!.ipv4, net!.outside!.ipv6] };
      const ch = await c.post<{ token: string }>('/v1/cluster/firewall', { firewall: narrower, confirmWithinSeconds: 5 });
      await assert.rejects(c.post('/v1/cluster/firewall/confirm', { token: ch.token }), /new connection/);
      const f2 = fresh();
      await f2.post('/v1/cluster/firewall/confirm', { token: ch.token }).finally(() => f2.close());
      await new Promise((r) => setTimeout(r, 6_000));
      assert.equal((await pending()).length, 0);
      const stored = JSON.parse(readFileSync(join(d1().dataDir, 'cluster', 'cluster.json'), 'utf8')).plan.firewall;
      assert.deepEqual(stored.clientSources, narrower.clientSources, 'the confirmed policy is the plan now');
      assert.equal(await outsideSees(), 'open', 'the operator still reaches the dispatcher');
    } finally {
      c.close();
    }
  });

  test('shutdown keeps the rules; cleanup removes them; nothing is left running', { timeout: 180_000 }, async () => {
    assert.ok(launchOp?.state === 'succeeded', 'launch succeeded');
    const sd = await runOp('/v1/cluster/shutdown', {});
    assert.equal(sd.op.state, 'succeeded', JSON.stringify(sd.op.error));
    for (const d of cluster!.dispatchers) assert.equal((await nftTable(d.host.ns)).code, 0, `rules kept on ${d.id} after shutdown`);
    // Nothing listens on the agency port now, yet outside sees it filtered (the guard, not an empty port).
    const agent = plan.processes.find((p) => p.role === 'agent' && p.dispatcher === 'd1')!;
    const ap = agent.ports.find((p) => p.name === 'client')!.port;
    assert.deepEqual(await nmap(outsideNs(), agent.address, [ap]), { [ap]: 'filtered' });

    const cl = await runOp('/v1/cluster/cleanup', { confirmName: NAME });
    assert.equal(cl.op.state, 'succeeded', JSON.stringify(cl.op.error));
    cleaned = true;
    for (const d of cluster!.dispatchers) {
      const t = await nftTable(d.host.ns);
      assert.notEqual(t.code, 0, `rules removed on ${d.id} after cleanup: ${t.stdout}`);
    }
    // With the guard gone, the empty agency port answers RST: closed.
    assert.deepEqual(await nmap(outsideNs(), agent.address, [ap]), { [ap]: 'closed' });

    // No cluster process outlived the shutdown: only the dispatchers are left in the host namespaces.
    const dispatcherPids = new Set(cluster!.dispatchers.map((d) => d.pid));
    for (const d of cluster!.dispatchers) {
      const pids = execFileSync('ip', ['netns', 'pids', d.host.ns], { encoding: 'utf8' }).split(/\s+/).filter(Boolean).map(Number);
      const stray = pids.filter((p) => !dispatcherPids.has(p)).map((p) => {
        try {
          return `${p}: ${readFileSync(`/proc/${p}/cmdline`, 'utf8').replace(/\0/g, ' ')}`;
        } catch {
          return `${p}`;
        }
      });
      assert.deepEqual(stray, [], `processes left in ${d.host.ns}`);
    }
  });
});
