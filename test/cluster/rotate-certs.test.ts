/**
 * Cluster tier: certificate renewal WITHOUT a restart (docs/DESIGN.md, "Certificate renewal") on a REAL
 * pg-ha cluster (3 loopback dispatchers; etcd 3.4, Patroni 3.0/PostgreSQL 15, HAProxy 2.6). A writer goes
 * through a coordinator while `rotate-certs` runs and then the three phases of `rotate-certs --ca`: no
 * statement fails, every acknowledged row is there, no process has a new pid, and what each program
 * SERVES (read with a TLS handshake: etcd, Patroni REST, PostgreSQL; HAProxy's check certificate through
 * its admin socket) is the newly installed certificate — of the new CA after the CA rotation. One cluster
 * for both steps, a few minutes.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect as netConnect } from 'node:net';
import { X509Certificate } from 'node:crypto';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import type { ClusterView, OperationView } from '../../api/rest.js';
import type { PlanProcess } from '../../api/plan.js';
import { sql, startPgCluster, startWriter, waitOperation, type PgCluster } from '../helpers/pg-cluster.js';

let cl: PgCluster;

interface StoredTls {
  ca: string;
  chain?: string;
  certs: Record<string, string>;
  keys: Record<string, string>;
}

function storedTls(dispatcher: string): StoredTls {
  const d = cl.dispatchers.find((x) => x.id === dispatcher)!;
  return JSON.parse(readFileSync(join(d.dataDir, 'cluster', 'tls.json'), 'utf8')) as StoredTls;
}

/** The dispatcher's own client certificate as it presents it: leaf, then the chain of a CA rotation. */
function dispatcherIdentity() {
  const t = storedTls(cl.plan.dispatchers[0].id);
  return { cert: t.chain ? `${t.certs['@dispatcher'].trimEnd()}\n${t.chain}` : t.certs['@dispatcher'], key: t.keys['@dispatcher'] };
}

const port = (p: PlanProcess, name: string) => p.ports.find((x) => x.name === name)!.port;

/**
 * The certificate a TLS server presents (verification is done by the caller, against the CA it expects).
 * A refused or reset connection is tried again (Patroni's REST socket has a backlog of 5 and HAProxy checks
 * it every 250-500 ms): this reads what is served, it does not judge availability.
 */
async function served(host: string, tcpPort: number, clientCert: boolean, startTls = false): Promise<X509Certificate> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await servedOnce(host, tcpPort, clientCert, startTls);
    } catch (e) {
      if (attempt >= 5 || !/ECONNRESET|ECONNREFUSED|socket hang up/.test(String((e as Error).message))) throw e;
      await new Promise((r) => setTimeout(r, 300));
    }
  }
}

function servedOnce(host: string, tcpPort: number, clientCert: boolean, startTls = false): Promise<X509Certificate> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no TLS answer from ${host}:${tcpPort}`)), 5000);
    const handshake = (socket?: ReturnType<typeof netConnect>) => {
      const id = clientCert ? dispatcherIdentity() : {};
      const s: TLSSocket = tlsConnect({ ...(socket ? { socket } : { host, port: tcpPort }), rejectUnauthorized: false, ...id }, () => {
        clearTimeout(timer);
        resolve(s.getPeerX509Certificate()!);
        s.destroy();
      });
      // on, not once: a server may reset the connection we drop after the handshake (a later, harmless error).
      s.on('error', (e) => (clearTimeout(timer), reject(e)));
    };
    if (!startTls) return handshake();
    // PostgreSQL: an SSLRequest packet first; the server answers 'S' and the TLS handshake follows.
    const sock = netConnect({ host, port: tcpPort }, () => {
      const req = Buffer.alloc(8);
      req.writeInt32BE(8, 0);
      req.writeInt32BE(80877103, 4);
      sock.write(req);
    });
    sock.once('data', (d) => (d[0] === 0x53 ? handshake(sock) : (clearTimeout(timer), reject(new Error(`PostgreSQL on ${tcpPort} refused SSL`)))));
    sock.on('error', (e) => (clearTimeout(timer), reject(e)));
  });
}

/** One HAProxy admin-socket command (the test runs as root; the socket is in the coordinator's dir). */
function haproxyAdmin(p: PlanProcess, command: string): Promise<string> {
  const d = cl.dispatchers.find((x) => x.id === p.dispatcher)!;
  return new Promise((resolve, reject) => {
    let out = '';
    const s = netConnect(join(d.dataDir, p.dataDir, 'haproxy.sock'), () => s.write(command + '\n'));
    s.on('data', (x) => (out += x));
    s.on('close', () => resolve(out));
    s.on('error', reject);
  });
}

const hexSerial = (s: string) => s.replace(/^0+/, '').toUpperCase();

/** Per process: the serial it serves now and the serial of the certificate its dispatcher installed. */
async function servedVsInstalled(): Promise<{ id: string; served: string; installed: string; issuer: string }[]> {
  const out: { id: string; served: string; installed: string; issuer: string }[] = [];
  for (const p of cl.plan.processes) {
    const installed = new X509Certificate(storedTls(p.dispatcher).certs[p.id]);
    let cert: X509Certificate | undefined;
    let servedSerial: string;
    if (p.role === 'agent') cert = await served(p.address, port(p, 'client'), true);
    if (p.role === 'coordinator') {
      const dir = join(cl.dispatchers.find((x) => x.id === p.dispatcher)!.dataDir, p.dataDir);
      const shown = await haproxyAdmin(p, `show ssl cert ${join(dir, 'tls-server.pem')}`);
      servedSerial = /^Serial: (\S+)/m.exec(shown)?.[1] ?? `none in: ${shown.slice(0, 200)}`;
      out.push({ id: p.id, served: hexSerial(servedSerial), installed: hexSerial(installed.serialNumber), issuer: /^Issuer: (.*)$/m.exec(shown)?.[1] ?? '' });
      // The public port is PgBouncer's (the coordinator's companion): clients' TLS ends there.
      const pooler = await served(p.address, port(p, 'client'), false, true);
      out.push({ id: `${p.id}.pooler`, served: hexSerial(pooler.serialNumber), installed: hexSerial(installed.serialNumber), issuer: pooler.issuer });
      continue;
    }
    if (p.role === 'dbserver') {
      const rest = await served(p.address, port(p, 'rest'), true);
      out.push({ id: `${p.id}/rest`, served: hexSerial(rest.serialNumber), installed: hexSerial(installed.serialNumber), issuer: rest.issuer });
      cert = await served(p.address, port(p, 'postgres'), false, true);
    }
    out.push({ id: p.id, served: hexSerial(cert!.serialNumber), installed: hexSerial(installed.serialNumber), issuer: cert!.issuer });
  }
  return out;
}

/** Patroni picks SIGHUP up in its next loop (loop_wait 2 s): poll until every process serves what is installed. */
async function waitServedIsInstalled(): Promise<{ id: string; served: string; installed: string; issuer: string }[]> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const now = await servedVsInstalled();
    if (now.every((x) => x.served === x.installed) || Date.now() > deadline) return now;
    await new Promise((r) => setTimeout(r, 500));
  }
}

async function pids(): Promise<Record<string, number | undefined>> {
  const v = await cl.client(0).get<ClusterView>('/v1/cluster');
  return Object.fromEntries(v.processes.map((p) => [p.id, p.pid]));
}

describe('certificate renewal without a restart (pg-ha, real cluster)', { timeout: 420_000 }, () => {
  before(async () => {
    cl = await startPgCluster({ name: 'rotest', basePort: 27300, coordinators: 1 });
    await sql(cl.pgpass, cl.coordinatorPorts[0], 'CREATE TABLE IF NOT EXISTS w (n int PRIMARY KEY)');
  });
  after(async () => {
    await cl?.close();
  });

  test('rotate-certs, then rotate-certs --ca, under a writer: no failed statement, no restart, new certificates served', async () => {
    const c = cl.client(0);
    const pidsBefore = await pids();
    assert.ok(Object.values(pidsBefore).every((p) => typeof p === 'number'), JSON.stringify(pidsBefore));
    const servedBefore = await servedVsInstalled();
    assert.deepEqual(servedBefore.filter((x) => x.served !== x.installed), [], 'before: every process serves its installed certificate');
    const expiryBefore = (await c.get<ClusterView>('/v1/cluster')).certificates!.filter((x) => x.name !== '@ca');
    assert.equal(expiryBefore.length, cl.plan.processes.length + cl.plan.dispatchers.length);
    const oldCa = new X509Certificate(storedTls(cl.plan.dispatchers[0].id).ca);

    const writer = startWriter(cl.pgpass, cl.coordinatorPorts, 'w', { maxMs: 300_000 });
    let w!: Awaited<ReturnType<typeof writer.stop>>;
    const ops: OperationView[] = [];
    const phases: string[] = [];
    let servedAfterRenewal: Awaited<ReturnType<typeof servedVsInstalled>>;
    let expiryAfter: ClusterView['certificates'];
    try {
      await new Promise((r) => setTimeout(r, 1000));
      // 1. Leaves only.
      const { operation } = await c.post<{ operation: string }>('/v1/cluster/rotate-certs', {});
      ops.push(await waitOperation(c, operation, 120_000));
      servedAfterRenewal = await waitServedIsInstalled();
      expiryAfter = (await c.get<ClusterView>('/v1/cluster')).certificates!.filter((x) => x.name !== '@ca');
      await new Promise((r) => setTimeout(r, 1000));
      // 2. The CA: one call per phase, as `dispatch rotate-certs --ca` does.
      for (let i = 0; i < 3; i++) {
        const r = await c.post<{ operation: string; phase: string; more: boolean }>('/v1/cluster/rotate-certs', { ca: true });
        phases.push(r.phase);
        ops.push(await waitOperation(c, r.operation, 120_000));
        if (ops.at(-1)!.state !== 'succeeded' || !r.more) break;
        await new Promise((r) => setTimeout(r, 1000));
      }
    } finally {
      w = await writer.stop();
    }
    for (const op of ops) assert.equal(op.state, 'succeeded', `${op.error?.message}\n${(op.error?.logTail ?? []).join('\n')}\n${op.events.slice(-6).map((e) => e.message).join('\n')}`);
    assert.ok(ops.every((op) => op.kind === 'rotate-certs'), 'a certificate pick-up, not a rolling restart');
    assert.ok(ops.every((op) => !op.events.some((e) => e.step === 'stop')), 'nothing was stopped');
    assert.deepEqual(phases, ['trust', 'leaves', 'finish']);

    // Renewal: every process serves its new certificate; the API shows the later expiry.
    assert.deepEqual(servedAfterRenewal!.filter((x) => x.served !== x.installed), [], 'after rotate-certs every process serves its newly installed certificate');
    for (const x of servedAfterRenewal!) assert.notEqual(x.served, servedBefore.find((y) => y.id === x.id)!.served, `${x.id} serves a new certificate`);
    for (const x of expiryAfter!) assert.ok(x.notAfter > expiryBefore.find((y) => y.name === x.name && y.host === x.host)!.notAfter, `${x.name} on ${x.host}: expiry moved`);

    // CA rotation: every process serves a leaf of the new CA (etcd included, though it still holds the old CA
    // in memory: the cross certificate in the chain lets it accept the dispatcher's new-CA client certificate).
    const stored = storedTls(cl.plan.dispatchers[0].id);
    assert.equal((stored.ca.match(/BEGIN CERTIFICATE/g) ?? []).length, 1, 'only the new CA is trusted afterwards');
    const newCa = new X509Certificate(stored.ca);
    assert.notEqual(newCa.fingerprint256, oldCa.fingerprint256);
    const servedAfterCa = await waitServedIsInstalled();
    assert.deepEqual(servedAfterCa.filter((x) => x.served !== x.installed), [], 'after the CA rotation every process serves its newly installed certificate');
    for (const x of servedAfterCa) assert.equal(x.issuer.replace(/^\//, '').replace(/\n/g, ''), newCa.subject.replace(/\n/g, ''), `${x.id} serves a leaf of the new CA`);
    for (const d of cl.plan.dispatchers) {
      const t = storedTls(d.id);
      for (const [name, pem] of Object.entries(t.certs)) assert.ok(new X509Certificate(pem).checkIssued(newCa) && new X509Certificate(pem).verify(newCa.publicKey), `${name} on ${d.id} is signed by the new CA`);
    }
    const coordinator = cl.plan.processes.find((p) => p.role === 'coordinator')!;
    // Patroni's REST API now trusts only the new CA: HAProxy's checks still pass, so HAProxy presents its new
    // certificate (the old one would fail the handshake and take the primary down).
    await new Promise((r) => setTimeout(r, 3000));
    const stat = await haproxyAdmin(coordinator, 'show stat');
    const primaryUp = stat.split('\n').filter((l) => /^primary,/.test(l) && !/^primary,(FRONTEND|BACKEND),/.test(l) && l.split(',')[17] === 'UP');
    assert.equal(primaryUp.length, 1, `exactly one primary up behind the coordinator:\n${stat}`);
    await sql(cl.pgpass, cl.coordinatorPorts[0], 'INSERT INTO w (n) VALUES (-1)');

    // Nothing restarted; nothing failed; nothing lost.
    assert.deepEqual(await pids(), pidsBefore, 'every process keeps its pid');
    assert.equal(w.failedAttempts, 0, `no failed statement (longest gap ${w.longestGapMs} ms)`);
    assert.ok(w.acked.length > 50, `the writer wrote throughout (${w.acked.length})`);
    const rows = new Set((await sql(cl.pgpass, cl.coordinatorPorts[0], 'SELECT n FROM w')).split('\n').filter(Boolean).map(Number));
    assert.deepEqual(w.acked.filter((n) => !rows.has(n)), [], 'acknowledged writes lost');
    console.log(`# rotate-certs + CA rotation: ${w.acked.length} writes acked, ${w.failedAttempts} failed, longest gap ${w.longestGapMs} ms`);
  });
});
