/**
 * Network tier (root; nft, nmap, tcpdump and the pg-ha Debian packages): the cluster's own traffic is
 * encrypted and authenticated (docs/SECURITY.md, "Cluster-internal TLS"). A real pg-ha cluster across three
 * namespace hosts with the nftables guard, launched through one dispatcher, while tcpdump captures the
 * bridge between the hosts. Proves:
 *  - the capture shows only TLS records, from the first byte of every connection, on the etcd peer and
 *    client ports, Patroni's REST port and PostgreSQL (replication included) — and the analysis does find
 *    the two plaintext attempts the test makes on purpose during the capture;
 *  - from a cluster host (inside the guard) as an unprivileged user without certificates: etcd reads and
 *    writes, Patroni POST /switchover and /restart (and GET /patroni) are refused, without a certificate,
 *    with one of an attacker's own CA, and over plain HTTP; a plaintext PostgreSQL connection is refused
 *    by pg_hba. The same requests with the dispatcher's certificate succeed (the refusals are TLS, not
 *    reachability);
 *  - a client outside writes through a coordinator with sslmode=verify-full against the cluster CA (and a
 *    foreign CA makes it refuse the server);
 *  - from outside, the scan result is what the guard gives without TLS: cluster ports filtered.
 * Everything (namespaces, dispatchers, processes, data dirs, the capture) is removed even when a test fails.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { TestNet } from '../helpers/netns.js';
import { operatorOutsideFirewall, requireExecutables, startNsHosts, tearDownNsTest } from '../helpers/ns-setup.js';
import { clientIn, ndjson, type NsCluster } from '../helpers/ns-cluster.js';
import { tlsStreams } from '../helpers/pcap-tls.js';
import { planFromSpec } from '../../launcher/planner.js';
import { PG_HA_DEBIAN_BINARIES } from '../../launcher/local.js';
import { createCa, createKeyAndRequest, signRequest } from '../../server/pki/certificates.js';
import type { Plan, PlanProcess } from '../../api/plan.js';
import type { OperationView } from '../../api/rest.js';

const NAME = 'nstls';
const PSQL = PG_HA_DEBIAN_BINARIES.psql;

/**
 * Runs in a host namespace as `nobody`: each request against etcd and Patroni, with the given client
 * certificate files (or none), reporting what came back — never throws.
 */
const ATTACK = `
const https = require('https'); const http = require('http'); const fs = require('fs');
const [targets, certDir] = [JSON.parse(process.argv[1]), process.argv[2]];
const tls = certDir === '-' ? {} : { cert: fs.readFileSync(certDir + '/client.crt'), key: fs.readFileSync(certDir + '/client.key') };
function one(t) { return new Promise((r) => {
  const mod = t.scheme === 'http' ? http : https;
  const req = mod.request({ host: t.host, port: t.port, path: t.path, method: t.method, rejectUnauthorized: false, agent: false,
    headers: { 'content-type': 'application/json' }, timeout: 4000, ...(t.scheme === 'http' ? {} : tls) }, (res) => {
    let body = ''; res.on('data', (c) => body += c); res.on('end', () => r({ ...t, status: res.statusCode, body: body.slice(0, 200) }));
    res.on('error', (e) => r({ ...t, error: e.code || e.message }));
  });
  req.on('timeout', () => req.destroy(new Error('timeout')));
  req.on('error', (e) => r({ ...t, error: e.code || e.message }));
  req.end(t.body || undefined);
}); }
(async () => { const out = []; for (const t of targets) out.push(await one(t)); process.stdout.write(JSON.stringify(out)); })();
`;

type Attempt = { name: string; scheme: string; host: string; port: number; path: string; method: string; body?: string; status?: number; error?: string; body_?: string };

describe('cluster-internal TLS across namespace hosts (root, nft, nmap, tcpdump, pg-ha packages)', () => {
  let net: TestNet | undefined;
  let cluster: NsCluster | undefined;
  let plan: Plan;
  let launchOp: OperationView | undefined;
  let launched = false;
  let capture: ChildProcess | undefined;

  const d1 = () => cluster!.dispatchers[0];
  const proc = (role: string, dispatcher: string): PlanProcess => plan.processes.find((p) => p.role === role && p.dispatcher === dispatcher)!;
  const port = (p: PlanProcess, name: string) => p.ports.find((x) => x.name === name)!.port;
  const asNobody = (argv: string[]) => ['setpriv', '--reuid=nobody', '--regid=nogroup', '--clear-groups', ...argv];

  before(async () => {
    requireExecutables({ ...PG_HA_DEBIAN_BINARIES, nmap: '/usr/bin/nmap', nft: '/usr/sbin/nft', tcpdump: '/usr/bin/tcpdump' });
    ({ net, cluster } = await startNsHosts('cdtl'));
    plan = planFromSpec({
      name: NAME,
      engine: 'pg-ha',
      dispatchers: cluster.specDispatchers(),
      agents: 3,
      dbservers: 3,
      coordinators: 1,
      firewall: operatorOutsideFirewall(net),
    });
  });

  after(async () => {
    capture?.kill('SIGKILL');
    await tearDownNsTest({ launched, cluster, net, cleanupName: NAME, dispatcher: d1 });
  });

  test('launch under a packet capture: etcd peer/client, Patroni REST and PostgreSQL carry only TLS', { timeout: 300_000 }, async () => {
    const internal = (role: string, name: string) => [...new Set(plan.processes.filter((p) => p.role === role).map((p) => port(p, name)))];
    const classes = { 'etcd peer': internal('agent', 'peer'), 'etcd client': internal('agent', 'client'), 'Patroni REST': internal('dbserver', 'rest'), PostgreSQL: internal('dbserver', 'postgres') };
    const ports = Object.values(classes).flat();
    const pcap = join(cluster!.root, 'bridge.pcap');
    const filter = ports.map((p) => `tcp port ${p}`).join(' or ');
    capture = net!.spawnIn(net!.bridgeNs, ['tcpdump', '-i', 'br0', '-Z', 'root', '-s', '0', '-U', '-n', '-w', pcap, filter], { stdio: ['ignore', 'ignore', 'pipe'] });
    let capErr = '';
    capture.stderr!.setEncoding('utf8').on('data', (c: string) => (capErr += c));
    for (let i = 0; i < 100 && !capErr.includes('listening on'); i++) await new Promise((r) => setTimeout(r, 50));
    assert.match(capErr, /listening on br0/, `tcpdump did not start: ${capErr}`);

    const bodyFile = join(cluster!.root, 'launch.json');
    writeFileSync(bodyFile, JSON.stringify({ plan, peerCredentials: {}, readyTimeoutMs: 120_000 }), { mode: 0o600 });
    launched = true;
    const res = await clientIn(net!, net!.outside!.ns, d1(), { user: cluster!.user, password: cluster!.password }, ['run', '/v1/cluster/launch', bodyFile], 240_000);
    launchOp = ndjson(res.stdout).find((x) => x.type === 'operation') as unknown as OperationView | undefined;
    assert.equal(launchOp?.state, 'succeeded', `launch: ${res.stderr}\n${JSON.stringify(launchOp?.error)}\n${cluster!.dispatchers.map((d) => d.output().split('\n').slice(-20).join('\n')).join('\n---\n')}`);
    assert.ok(launchOp.events.some((e) => e.step === 'certificates' && e.host === 'd2'), 'the launch issued certificates to every dispatcher');

    // Two plaintext attempts from host2 during the capture: the analysis must find exactly these.
    const h1db = proc('dbserver', 'd1');
    const h1agent = proc('agent', 'd1');
    const plainPg = await net!.exec(cluster!.dispatchers[1].host.ns, asNobody(['env', 'PGCONNECT_TIMEOUT=5', PSQL, `host=${h1db.address} port=${port(h1db, 'postgres')} user=postgres dbname=postgres sslmode=disable`, '-XtAc', 'SELECT 1']), { timeoutMs: 20_000 });
    assert.notEqual(plainPg.code, 0, 'a plaintext PostgreSQL connection is refused');
    assert.match(plainPg.stderr, /no pg_hba\.conf entry .* no encryption/, plainPg.stderr);
    const plainEtcd = await net!.exec(cluster!.dispatchers[1].host.ns, asNobody([process.execPath, '-e', ATTACK, JSON.stringify([{ name: 'plain', scheme: 'http', host: h1agent.address, port: port(h1agent, 'client'), path: '/v3/kv/range', method: 'POST', body: '{"key":"Lw=="}' }]), '-']), { timeoutMs: 20_000 });
    const plainAnswer = JSON.parse(plainEtcd.stdout)[0] as Attempt;
    assert.notEqual(plainAnswer.status, 200, `plain HTTP to etcd: ${JSON.stringify(plainAnswer)}`);

    await new Promise((r) => setTimeout(r, 3000)); // steady-state traffic: heartbeats, checks, WAL
    capture.kill('SIGINT');
    await new Promise<void>((r) => (capture!.exitCode !== null ? r() : capture!.once('exit', () => r())));
    capture = undefined;

    const { streams, notFromStart } = tlsStreams(readFileSync(pcap), ports, classes.PostgreSQL);
    const h2 = cluster!.dispatchers[1].host.ipv4;
    const problems = streams.filter((s) => s.clientToServer.problem || s.serverToClient.problem);
    const expected = problems.filter((s) => s.key.startsWith(`${h2}:`) && (s.serverPort === port(h1db, 'postgres') || s.serverPort === port(h1agent, 'client')));
    process.stderr.write(`# capture: ${streams.length} connections from their first byte (${notFromStart} without SYN), ${problems.length} not TLS\n`);
    assert.equal(expected.length, 2, `the analysis finds the two plaintext attempts: ${JSON.stringify(problems, null, 1)}`);
    assert.deepEqual(problems.filter((s) => !expected.includes(s)), [], 'every other connection is TLS from its first byte');
    for (const [what, ps] of Object.entries(classes)) {
      const seen = streams.filter((s) => ps.includes(s.serverPort) && !expected.includes(s) && s.clientToServer.tlsRecords >= 2 && s.serverToClient.tlsRecords >= 2);
      assert.ok(seen.length >= 1, `TLS connections seen on ${what} (${ps.join(',')})`);
    }
    // Replication: a replica's walreceiver streams from the primary; its connection is one of the TLS ones.
    const pgBytes = streams.filter((s) => classes.PostgreSQL.includes(s.serverPort) && !expected.includes(s)).reduce((n, s) => n + s.serverToClient.bytes, 0);
    assert.ok(pgBytes > 1_000_000, `base backups and WAL went over TLS (${pgBytes} bytes)`);
  });

  test('a cluster host without certificates: etcd and Patroni refuse every request; with the dispatcher certificate they answer', { timeout: 120_000 }, async () => {
    assert.equal(launchOp?.state, 'succeeded', 'launch succeeded');
    const host2 = cluster!.dispatchers[1].host;
    const agent = proc('agent', 'd1');
    const db = plan.processes.find((p) => p.role === 'dbserver')!;
    const targets = [
      { name: 'etcd read', scheme: 'https', host: agent.address, port: port(agent, 'client'), path: '/v3/kv/range', method: 'POST', body: '{"key":"Lw==","range_end":"AA=="}' },
      { name: 'etcd write', scheme: 'https', host: agent.address, port: port(agent, 'client'), path: '/v3/kv/put', method: 'POST', body: '{"key":"L2V2aWw=","value":"MQ=="}' },
      { name: 'Patroni switchover', scheme: 'https', host: db.address, port: port(db, 'rest'), path: '/switchover', method: 'POST', body: '{"leader":"dbserver-1"}' },
      { name: 'Patroni restart', scheme: 'https', host: db.address, port: port(db, 'rest'), path: '/restart', method: 'POST', body: '{}' },
      { name: 'Patroni read', scheme: 'https', host: db.address, port: port(db, 'rest'), path: '/patroni', method: 'GET' },
      { name: 'Patroni plain', scheme: 'http', host: db.address, port: port(db, 'rest'), path: '/restart', method: 'POST', body: '{}' },
    ];
    const attack = async (certDir: string, nobody = true) => {
      const argv = [process.execPath, '-e', ATTACK, JSON.stringify(targets), certDir];
      const r = await net!.exec(host2.ns, nobody ? asNobody(argv) : argv, { timeoutMs: 60_000 });
      assert.equal(r.code, 0, r.stderr);
      return JSON.parse(r.stdout) as Attempt[];
    };
    // No certificate at all.
    for (const a of await attack('-')) assert.ok(a.error || (a.status !== undefined && a.status >= 400), `${a.name} without a certificate was answered: ${JSON.stringify(a)}`);
    // A certificate of the attacker's own CA, with host2's address (everything but the cluster CA's signature).
    const evil = await createCa('evil');
    const { keyPem, csrPem } = await createKeyAndRequest('evil');
    const dir = join(cluster!.root, 'evil');
    mkdirSync(dir, { mode: 0o755 });
    writeFileSync(join(dir, 'client.crt'), await signRequest(evil, csrPem, { commonName: 'dispatcher-d2.nstls', ips: [host2.ipv4, host2.ipv6], dns: [] }), { mode: 0o644 });
    writeFileSync(join(dir, 'client.key'), keyPem, { mode: 0o600 });
    chownSync(join(dir, 'client.key'), 65534, 65534);
    for (const a of await attack(dir)) assert.ok(a.error || (a.status !== undefined && a.status >= 400), `${a.name} with a foreign CA's certificate was answered: ${JSON.stringify(a)}`);
    // nobody cannot read the dispatcher's keys on its own host.
    const steal = await net!.exec(host2.ns, asNobody(['cat', join(cluster!.dispatchers[1].dataDir, 'cluster', 'tls.json')]));
    assert.notEqual(steal.code, 0, 'the dispatcher keys are not readable by an unprivileged user');

    // Control: the dispatcher's own client certificate reaches the same endpoints (read-only ones).
    const tls = JSON.parse(readFileSync(join(cluster!.dispatchers[1].dataDir, 'cluster', 'tls.json'), 'utf8')) as { keys: Record<string, string>; certs: Record<string, string> };
    const good = join(cluster!.root, 'good');
    mkdirSync(good, { mode: 0o700 });
    writeFileSync(join(good, 'client.crt'), tls.certs['@dispatcher']);
    writeFileSync(join(good, 'client.key'), tls.keys['@dispatcher'], { mode: 0o600 });
    chmodSync(good, 0o700);
    const r = await net!.exec(host2.ns, [process.execPath, '-e', ATTACK, JSON.stringify([targets[0], targets[4]]), good], { timeoutMs: 30_000 });
    const ok = JSON.parse(r.stdout) as Attempt[];
    assert.deepEqual(ok.map((a) => a.status), [200, 200], `with the cluster certificate: ${JSON.stringify(ok)}`);
  });

  test('a client outside writes through the coordinator with sslmode=verify-full against the cluster CA', { timeout: 60_000 }, async () => {
    assert.equal(launchOp?.state, 'succeeded', 'launch succeeded');
    const secrets = JSON.parse(readFileSync(join(d1().dataDir, 'cluster', 'secrets.json'), 'utf8')).secrets as Record<string, string>;
    const coord = plan.processes.find((p) => p.role === 'coordinator')!;
    const rw = port(coord, 'client');
    const ca = join(cluster!.root, 'cluster-ca.crt');
    writeFileSync(ca, readFileSync(join(d1().dataDir, 'cluster', 'ca.crt')));
    const pgpass = join(cluster!.root, 'pgpass');
    writeFileSync(pgpass, `${coord.address}:${rw}:*:postgres:${secrets['superuser-password']}\n`, { mode: 0o600 });
    const psql = (caFile: string, sql: string) =>
      net!.exec(net!.outside!.ns, ['env', `PGPASSFILE=${pgpass}`, PSQL, `host=${coord.address} port=${rw} user=postgres dbname=postgres sslmode=verify-full sslrootcert=${caFile} connect_timeout=5`, '-XtAq', '-v', 'ON_ERROR_STOP=1', '-c', sql], { timeoutMs: 20_000 });
    const w = await psql(ca, "CREATE TABLE tls_check (x text); INSERT INTO tls_check VALUES ('verified'); SELECT x, (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()) FROM tls_check");
    assert.equal(w.code, 0, w.stderr);
    assert.equal(w.stdout.trim(), 'verified|t', 'written over TLS after verifying the server against the cluster CA');
    const foreign = join(cluster!.root, 'foreign-ca.crt');
    writeFileSync(foreign, (await createCa('foreign')).certPem);
    const refused = await psql(foreign, 'SELECT 1');
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /certificate verify failed/, refused.stderr);
  });

  test('scan from outside unchanged: cluster ports filtered, public ports open (IPv4)', { timeout: 120_000 }, async () => {
    assert.equal(launchOp?.state, 'succeeded', 'launch succeeded');
    for (const d of cluster!.dispatchers) {
      const ports = plan.processes.filter((p) => p.dispatcher === d.id).flatMap((p) => p.ports);
      const r = await net!.exec(net!.outside!.ns, ['nmap', '-Pn', '-n', '-sS', '-T4', '--max-retries', '1', '-p', ports.map((p) => p.port).join(','), '-oX', '-', d.host.ipv4], { timeoutMs: 60_000 });
      assert.equal(r.code, 0, r.stderr);
      const states = Object.fromEntries([...r.stdout.matchAll(/<port protocol="tcp" portid="(\d+)"><state state="([a-z|]+)"/g)].map((m) => [Number(m[1]), m[2]]));
      for (const p of ports) assert.equal(states[p.port], p.exposure === 'cluster' ? 'filtered' : 'open', `${d.id} port ${p.port} (${p.name}, ${p.exposure})`);
    }
  });
});
