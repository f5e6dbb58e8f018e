/**
 * A pinned peer that answers nonsense (docs/SECURITY.md, "Identities", issue 12): a real dispatcher launches a
 * plan whose second dispatcher is a fake peer — a real HTTPS server with its own pinned certificate —
 * answering `{}`, garbage or 500. Each launch fails with an error naming the peer, the plan is discarded
 * everywhere, the dispatcher is not left `launching` (the next launch is not refused, GET /v1/cluster
 * answers). The fake also checks mutual TLS: every call presents the dispatcher's certificate, and only
 * first contact (adopting the plan) carries an operator credential.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:https';
import type { TLSSocket } from 'node:tls';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import type { Plan } from '../../api/plan.js';
import type { ClusterView, OperationView } from '../../api/rest.js';
import { ensureCertificate } from '../../server/tls.js';
import { startTestCluster, type TestCluster } from '../helpers/cluster.js';

type Mode = 'empty' | 'empty-after-plan' | 'garbage' | 'error500';
interface Seen {
  method: string;
  path: string;
  fingerprint?: string;
  authorization: boolean;
}

let tc: TestCluster;
let fake: Server;
let fakeUrl: string;
let fakeId: { cert: string; key: string; fingerprint: string };
let certDir: string;
let mode: Mode = 'empty';
const seen: Seen[] = [];

before(async () => {
  certDir = mkdtempSync(join(tmpdir(), 'fake-peer-'));
  const r = await ensureCertificate({ certFile: join(certDir, 'cert.pem'), keyFile: join(certDir, 'key.pem'), addresses: ['127.0.0.1'], commonName: 'fake' });
  fakeId = { cert: r.cert, key: readFileSync(join(certDir, 'key.pem'), 'utf8'), fingerprint: r.fingerprint };
  fake = createServer({ cert: fakeId.cert, key: fakeId.key, requestCert: true, rejectUnauthorized: false }, (req, res) => {
    const peer = (req.socket as TLSSocket).getPeerCertificate();
    seen.push({ method: req.method ?? '', path: req.url ?? '', fingerprint: peer?.fingerprint256, authorization: !!req.headers.authorization });
    req.resume();
    req.on('end', () => {
      const path = req.url ?? '';
      if (mode !== 'empty' && (path === '/v1/node/plan' || path === '/v1/node/discard')) {
        res.writeHead(204).end();
      } else if (mode === 'garbage') {
        res.writeHead(200, { 'content-type': 'text/plain' }).end('<<garbage, not JSON>>');
      } else if (mode === 'error500') {
        res.writeHead(500, { 'content-type': 'application/problem+json' }).end(JSON.stringify({ code: 'internal', detail: 'boom from the fake peer', status: 500 }));
      } else {
        res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      }
    });
  });
  await new Promise<void>((r) => fake.listen(0, '127.0.0.1', r));
  fakeUrl = `https://127.0.0.1:${(fake.address() as AddressInfo).port}`;
  tc = await startTestCluster({ n: 1, label: 'fakepeer' });
});

after(async () => {
  if (tc) {
    const { leaked } = await tc.teardown();
    assert.deepEqual(leaked, []);
  }
  fake?.close();
  rmSync(certDir, { recursive: true, force: true });
});

function planWithFake(name: string): Plan {
  const spec = tc.spec({ name });
  spec.dispatchers = [spec.dispatchers[0], { id: 'fake', endpoint: fakeUrl, fingerprint: fakeId.fingerprint, addresses: ['127.0.0.1'] }];
  return tc.plan(spec);
}

const describeOp = (op: OperationView) => `${JSON.stringify(op.error)}\n${op.events.map((e) => `${e.step} ${e.host ?? ''} ${e.message}`).join('\n')}`;

async function launchAgainstFake(m: Mode, name: string): Promise<OperationView> {
  mode = m;
  seen.length = 0;
  const op = await tc.run(0, '/v1/cluster/launch', { plan: planWithFake(name) }, 60_000);
  assert.equal(op.state, 'failed', describeOp(op));
  // Nothing is left behind on the dispatcher: no plan, and GET /v1/cluster answers.
  const st: ClusterView = await tc.status(0);
  assert.equal(st.name, null, `the dispatcher forgot the plan (has ${st.name} ${st.state})`);
  assert.deepEqual(tc.enginePids(), []);
  // Mutual TLS: every call presented the dispatcher's certificate; only adopting the plan carried a password.
  const d1 = tc.dispatchers[0].fingerprint;
  assert.ok(seen.length > 0);
  for (const s of seen) {
    assert.equal(s.fingerprint, d1, `${s.method} ${s.path} presented the dispatcher's certificate`);
    assert.equal(s.authorization, s.path === '/v1/node/plan', `${s.method} ${s.path}: a password only at first contact`);
  }
  return op;
}

test('a peer answering {} to everything: the launch fails naming the peer, nothing stays launching', async () => {
  const op = await launchAgainstFake('empty', 'fake-a');
  assert.equal(op.error?.code, 'peer_invalid_answer', describeOp(op));
  assert.equal(op.error?.host, 'fake');
  assert.match(op.error!.message, /dispatcher fake gave an invalid answer to POST \/v1\/node\/plan/);
});

test('a peer that adopts, then answers {}: preflight fails naming it, the plan is discarded everywhere', async () => {
  const op = await launchAgainstFake('empty-after-plan', 'fake-b');
  assert.equal(op.error?.code, 'preflight_failed', describeOp(op));
  assert.match(op.error!.message, /fake: dispatcher fake gave an invalid answer to POST \/v1\/node\/preflight: problems/);
  assert.ok(seen.some((s) => s.path === '/v1/node/discard'), 'the peer was told to discard the plan');
});

test('a peer answering garbage: same', async () => {
  const op = await launchAgainstFake('garbage', 'fake-c');
  assert.match(op.error!.message, /fake: dispatcher fake gave an invalid answer to POST \/v1\/node\/preflight/, describeOp(op));
  assert.ok(seen.some((s) => s.path === '/v1/node/discard'));
});

test('a peer answering 500: same, with its message', async () => {
  const op = await launchAgainstFake('error500', 'fake-d');
  assert.match(op.error!.message, /fake: dispatcher fake: .*boom from the fake peer/, describeOp(op));
  assert.ok(seen.some((s) => s.path === '/v1/node/discard'));
});

test('GET /v1/cluster with a plan whose peer answers garbage: 200, the peer reported unreachable with the reason', async () => {
  mode = 'garbage';
  const plan = planWithFake('fake-e');
  // The fake adopts the plan's first contact role itself: its certificate is pinned by the plan.
  const { request } = await import('node:https');
  const adopt = await new Promise<number>((resolve, reject) => {
    const body = Buffer.from(JSON.stringify({ plan, secrets: {} }));
    const d = tc.dispatchers[0];
    const q = request(
      { host: '127.0.0.1', port: d.port, method: 'POST', path: '/v1/node/plan', ca: d.cert, cert: fakeId.cert, key: fakeId.key, agent: false, headers: { 'content-type': 'application/json', 'content-length': String(body.length), authorization: 'Basic ' + Buffer.from(`${tc.user}:${tc.password}`).toString('base64') } },
      (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      },
    );
    q.on('error', reject);
    q.end(body);
  });
  assert.equal(adopt, 204);
  const st = await tc.status(0);
  assert.equal(st.name, 'fake-e');
  const f = st.dispatchers.find((x) => x.id === 'fake')!;
  assert.equal(f.reachable, false);
  assert.match(f.error ?? '', /invalid answer to GET \/v1\/node\/status/);
  // Clean up through the node API as the pinned peer (the plan never started).
  const discarded = await new Promise<number>((resolve, reject) => {
    const body = Buffer.from(JSON.stringify({ name: 'fake-e' }));
    const d = tc.dispatchers[0];
    const q = request({ host: '127.0.0.1', port: d.port, method: 'POST', path: '/v1/node/discard', ca: d.cert, cert: fakeId.cert, key: fakeId.key, agent: false, headers: { 'content-type': 'application/json', 'content-length': String(body.length) } }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    q.on('error', reject);
    q.end(body);
  });
  assert.equal(discarded, 204);
  assert.equal((await tc.status(0)).name, null);
});
