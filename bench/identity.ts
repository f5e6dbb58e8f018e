/**
 * Identities (docs/SECURITY.md, "Identities"), on one real dispatcherd (child process, loopback):
 *  1. throughput with keep-alive: unauthenticated GET /v1/health (baseline) vs an operator's GET /v1/id
 *     (HTTP Basic, verified-credential cache) — the issue asks for authenticated >= 0.8x unauthenticated —
 *     and a peer's GET /v1/node/status (mutual TLS, pinned by the active plan) vs an operator's
 *     GET /v1/processes (Basic; the same work: listing supervised processes);
 *  2. peer call latency: the product's PeerClient (mutual TLS) vs the same call shape with HTTP Basic (how
 *     peers called each other before), sequential calls, on a kept-alive connection and on a new connection
 *     per call (where the client certificate costs a signature and a verification in the handshake).
 * Rounds alternate the variants; medians and spread (min-max) of the rounds are printed as JSON.
 *
 *   npx tsc -p . && node dist/bench/identity.js [--seconds 3] [--clients 16] [--rounds 5] [--calls 200]
 */
import { Agent, request } from 'node:https';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startDispatcherd } from '../test/helpers/daemon.js';
import { ensureCertificate } from '../server/tls.js';
import { planFromSpec } from '../launcher/planner.js';
import { DispatcherClient } from '../client/dispatcher-client.js';
import { PeerClient } from '../server/cluster/peer-client.js';
import { NodeStatusViewSchema } from '../api/rest.js';
import { z } from 'zod';
import { median, minMax, numberArg } from './stats.js';

async function load(url: string, ca: string, opts: { auth?: string; tls?: { cert: string; key: string } }, seconds: number, clients: number): Promise<number> {
  const agent = new Agent({ keepAlive: true, maxSockets: clients, ca, ...(opts.tls ?? {}) });
  const end = Date.now() + seconds * 1000;
  let ok = 0;
  const one = () =>
    new Promise<void>((resolve) => {
      const req = request(url, { agent, auth: opts.auth }, (res) => {
        res.resume();
        res.on('end', () => {
          if (res.statusCode === 200) ok++;
          else throw new Error(`${url}: ${res.statusCode}`);
          resolve();
        });
      });
      req.on('error', (e) => {
        throw e;
      });
      req.end();
    });
  const t0 = Date.now();
  await Promise.all(Array.from({ length: clients }, async () => {
    while (Date.now() < end) await one();
  }));
  agent.destroy();
  return ok / ((Date.now() - t0) / 1000);
}

/** Median latency (ms) of `calls` sequential calls. */
async function latency(calls: number, fn: () => Promise<unknown>): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < calls; i++) {
    const t = process.hrtime.bigint();
    await fn();
    times.push(Number(process.hrtime.bigint() - t) / 1e6);
  }
  return median(times);
}

const seconds = numberArg('seconds', 3);
const clients = numberArg('clients', 16);
const rounds = numberArg('rounds', 5);
const calls = numberArg('calls', 200);
const dir = mkdtempSync(join(tmpdir(), 'bench-identity-'));
const d = await startDispatcherd({ id: 'bench' });
try {
  // A peer identity pinned by a plan the dispatcher adopts (first contact: its certificate + the operator).
  const r = await ensureCertificate({ certFile: join(dir, 'cert.pem'), keyFile: join(dir, 'key.pem'), addresses: ['127.0.0.1'], commonName: 'peer' });
  const peerTls = { cert: r.cert, key: readFileSync(join(dir, 'key.pem'), 'utf8') };
  const plan = planFromSpec({
    name: 'bench-identity',
    engine: 'pg-ha',
    dispatchers: [
      { id: 'peer', endpoint: 'https://127.0.0.1:9', fingerprint: r.fingerprint, addresses: ['127.0.0.1'] },
      { id: d.id, endpoint: d.url, fingerprint: d.fingerprint, addresses: ['127.0.0.1'] },
    ],
    agents: 3,
    dbservers: 2,
    coordinators: 1,
    firewall: { backend: 'none' },
  } as Parameters<typeof planFromSpec>[0]);
  const operator = { user: d.user, password: d.password };
  const adopt = new DispatcherClient({ endpoint: d.url, fingerprint: d.fingerprint, credential: operator, clientCertificate: peerTls });
  await adopt.post('/v1/node/plan', { plan, secrets: {} });
  adopt.close();

  const auth = `${d.user}:${d.password}`;
  const target = plan.dispatchers.find((x) => x.id === d.id)!;
  const peerOf = () => new PeerClient(target, peerTls);
  const basicOf = () => new DispatcherClient({ endpoint: d.url, fingerprint: d.fingerprint, credential: operator });
  const AnySchema = z.unknown();
  // Warm-up: JIT, TLS, and the one scrypt check that fills the credential cache.
  await load(`${d.url}/v1/id`, d.cert, { auth }, 1, clients);
  await load(`${d.url}/v1/node/status`, d.cert, { tls: peerTls }, 1, clients);

  const res = { health: [] as number[], basic: [] as number[], basicProcs: [] as number[], mtls: [] as number[], peerKeep: [] as number[], basicKeep: [] as number[], peerNew: [] as number[], basicNew: [] as number[] };
  for (let i = 0; i < rounds; i++) {
    res.health.push(await load(`${d.url}/v1/health`, d.cert, {}, seconds, clients));
    res.basic.push(await load(`${d.url}/v1/id`, d.cert, { auth }, seconds, clients));
    // Like for like: GET /v1/processes (operator) and GET /v1/node/status (peer) both list supervised processes.
    res.basicProcs.push(await load(`${d.url}/v1/processes`, d.cert, { auth }, seconds, clients));
    res.mtls.push(await load(`${d.url}/v1/node/status`, d.cert, { tls: peerTls }, seconds, clients));
    const p = peerOf();
    const b = basicOf();
    res.peerKeep.push(await latency(calls, () => p.call('GET', '/v1/node/status', NodeStatusViewSchema)));
    // The same route shape with Basic: an operator route (peer routes take no password any more).
    res.basicKeep.push(await latency(calls, () => b.get('/v1/processes')));
    p.close();
    b.close();
    res.peerNew.push(await latency(Math.ceil(calls / 4), async () => {
      const c = peerOf();
      await c.call('GET', '/v1/node/status', AnySchema);
      c.close();
    }));
    res.basicNew.push(await latency(Math.ceil(calls / 4), async () => {
      const c = basicOf();
      await c.get('/v1/processes');
      c.close();
    }));
  }
  const out = {
    node: process.version,
    seconds,
    clients,
    rounds,
    throughput: {
      healthRps: { median: Math.round(median(res.health)), spread: minMax(res.health).map(Math.round) },
      basicRps: { median: Math.round(median(res.basic)), spread: minMax(res.basic).map(Math.round) },
      basicProcessesRps: { median: Math.round(median(res.basicProcs)), spread: minMax(res.basicProcs).map(Math.round) },
      mtlsPeerStatusRps: { median: Math.round(median(res.mtls)), spread: minMax(res.mtls).map(Math.round) },
      basicVsHealth: Number((median(res.basic) / median(res.health)).toFixed(3)),
      mtlsStatusVsBasicProcesses: Number((median(res.mtls) / median(res.basicProcs)).toFixed(3)),
      mtlsStatusVsHealth: Number((median(res.mtls) / median(res.health)).toFixed(3)),
    },
    peerLatencyMs: {
      keepAlive: { mtls: median(res.peerKeep), basic: median(res.basicKeep), ratio: Number((median(res.peerKeep) / median(res.basicKeep)).toFixed(3)), mtlsSpread: minMax(res.peerKeep), basicSpread: minMax(res.basicKeep) },
      newConnection: { mtls: median(res.peerNew), basic: median(res.basicNew), ratio: Number((median(res.peerNew) / median(res.basicNew)).toFixed(3)), mtlsSpread: minMax(res.peerNew), basicSpread: minMax(res.basicNew) },
    },
  };
  console.log(JSON.stringify(out, null, 2));
} finally {
  await d.stop();
  d.dir.remove();
  rmSync(dir, { recursive: true, force: true });
}
