/**
 * Identities and the node API, against real dispatchers (docs/SECURITY.md, "Identities"): a table of actors ×
 * routes with the expected status of each, run over real TLS (client certificates, source addresses from
 * 127.0.0.0/8) and the real control socket; a process user on the machine (runuser); the account-takeover
 * attempt of issue 12; own-password change, admin removal and the legacy-account migration, audited; and
 * the throttle under parallel guesses and rotating source addresses.
 *
 * Three dispatchers from test/helpers/cluster.ts (no engine process is started). Needs root and the
 * cdtest user.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import type { Plan } from '../../api/plan.js';
import { ensureCertificate } from '../../server/tls.js';
import { hashPassword } from '../../server/users.js';
import { addUser, runDispatcherd } from '../helpers/daemon.js';
import { startTestCluster, type Dispatcher, type TestCluster } from '../helpers/cluster.js';

interface Actor {
  name: string;
  /** Authorization header. */
  auth?: string;
  /** Client certificate and key (mutual TLS). */
  tls?: { cert: string; key: string };
  /** Source address (127.0.0.0/8). */
  source?: string;
  /** Control socket instead of the port. */
  socket?: boolean;
}
interface Answer {
  status: number;
  body: string;
  headers: Record<string, string | string[] | undefined>;
}

const basic = (user: string, password: string) => 'Basic ' + Buffer.from(`${user}:${password}`).toString('base64');

function call(d: Dispatcher, actor: Actor, method: string, path: string, body?: unknown, extraHeaders: Record<string, string> = {}): Promise<Answer> {
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  const headers: Record<string, string> = { accept: 'application/json', ...extraHeaders };
  if (payload) Object.assign(headers, { 'content-type': 'application/json', 'content-length': String(payload.length) });
  if (actor.auth) headers.authorization = actor.auth;
  return new Promise((resolve, reject) => {
    const onRes = (res: import('node:http').IncomingMessage) => {
      let text = '';
      res.setEncoding('utf8').on('data', (c: string) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text, headers: res.headers }));
    };
    const req = actor.socket
      ? httpRequest({ socketPath: d.socketPath, method, path, headers }, onRes)
      : httpsRequest(
          { host: '127.0.0.1', port: d.port, method, path, headers, ca: d.cert, agent: false, localAddress: actor.source, ...(actor.tls ? { cert: actor.tls.cert, key: actor.tls.key } : {}) },
          onRes,
        );
    req.setTimeout(20_000, () => req.destroy(new Error(`${method} ${path}: no answer`)));
    req.on('error', reject);
    if (payload) req.write(payload);
    req.end();
  });
}

let tc: TestCluster;
let d1: Dispatcher, d2: Dispatcher, d3: Dispatcher;
let plan: Plan;
let oldPlan: Plan;
let certDir: string;
const identity = (d: Dispatcher) => ({ cert: d.cert, key: readFileSync(join(d.dataDir, 'tls', 'key.pem'), 'utf8') });
let oldPeer: { cert: string; key: string; fingerprint: string };
let netHost: { cert: string; key: string };
const OP2 = { user: 'operator2', password: 'second-operator-password' };

async function makeIdentity(name: string) {
  const dir = join(certDir, name);
  const r = await ensureCertificate({ certFile: join(dir, 'cert.pem'), keyFile: join(dir, 'key.pem'), addresses: ['127.0.0.1'], commonName: name });
  return { cert: r.cert, key: readFileSync(join(dir, 'key.pem'), 'utf8'), fingerprint: r.fingerprint };
}

const sha = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex');

before(async () => {
  certDir = mkdtempSync(join(tmpdir(), 'identity-certs-'));
  tc = await startTestCluster({ n: 3, label: 'ident' });
  [d1, d2, d3] = tc.dispatchers;
  await addUser(d2.dataDir, OP2.user, OP2.password);
  oldPeer = await makeIdentity('d4');
  netHost = await makeIdentity('net-host');
  plan = tc.plan({ name: 'identity-test' });
  const spec = tc.spec({ name: 'old-plan' });
  spec.dispatchers = [spec.dispatchers[0], spec.dispatchers[1], { id: 'd4', endpoint: 'https://127.0.0.1:9', fingerprint: oldPeer.fingerprint, addresses: ['127.0.0.1'] }];
  oldPlan = tc.plan(spec);
});

after(async () => {
  if (tc) {
    const { leaked } = await tc.teardown();
    assert.deepEqual(leaked, []);
  }
  rmSync(certDir, { recursive: true, force: true });
});

test('first contact: the contacted dispatcher (its certificate, pinned by the offered plan) + an operator credential adopts a plan; no account is created', async () => {
  const usersFile = join(d2.dataDir, 'users.json');
  const before = sha(usersFile);
  const contacted: Actor = { name: 'd1 + operator', tls: identity(d1), auth: basic(tc.user, tc.password) };
  // Old plan: adopted, then d4 (pinned by it) is a peer; after discard it is nobody.
  assert.equal((await call(d2, contacted, 'POST', '/v1/node/plan', { plan: oldPlan, secrets: {} })).status, 204);
  const d4: Actor = { name: 'd4', tls: oldPeer };
  assert.equal((await call(d2, d4, 'GET', '/v1/node/status')).status, 200, 'a peer of the active plan is served');
  assert.equal((await call(d2, { name: 'd1', tls: identity(d1) }, 'POST', '/v1/node/discard', { name: 'old-plan' })).status, 204);
  assert.equal((await call(d2, d4, 'GET', '/v1/node/status')).status, 403, 'once the plan is gone its peers are not');
  // Without the operator credential, or without a pinned certificate, first contact is refused.
  assert.equal((await call(d2, { name: 'd1', tls: identity(d1) }, 'POST', '/v1/node/plan', { plan, secrets: {} })).status, 401);
  assert.equal((await call(d2, { name: 'op', auth: basic(tc.user, tc.password) }, 'POST', '/v1/node/plan', { plan, secrets: {} })).status, 403);
  assert.equal((await call(d2, { name: 'net+op', tls: netHost, auth: basic(tc.user, tc.password) }, 'POST', '/v1/node/plan', { plan, secrets: {} })).status, 403);
  assert.equal((await call(d2, contacted, 'POST', '/v1/node/plan', { plan, secrets: {} })).status, 204);
  assert.equal(sha(usersFile), before, 'adopting plans never touches the users file');
});

// Routes × actors against d2, which holds `plan` (launching) with d1 and d3 pinned.
const ROUTES = {
  health: ['GET', '/v1/health'],
  id: ['GET', '/v1/id'],
  cluster: ['GET', '/v1/cluster'],
  nodeStatus: ['GET', '/v1/node/status'],
  nodeStatusUpper: ['GET', '/V1/NODE/status'],
  nodePreflight: ['POST', '/v1/node/preflight', () => ({ callerTime: Date.now() })],
  takeover: ['POST', '/v1/node/plan', () => ({ plan, secrets: {}, clusterCredential: { user: 'operator', password: 'attacker-chosen-password' } })],
  // A scale step's next plan version (peers only; against another base version than d2 stores: 409).
  planUpdate: ['POST', '/v1/node/plan/update', () => ({ plan, base: { number: 9, hash: '0123456789abcdef' }, number: 10 })],
  // Leaving the cluster (scale in; peers only): naming another cluster than d2's releases nothing (409).
  release: ['POST', '/v1/node/release', () => ({ name: 'another-cluster' })],
  ownPassword: ['PUT', '/v1/users/me/password', () => ({})],
  removeUser: ['DELETE', '/v1/users/nobody-such'],
  listUsers: ['GET', '/v1/users'],
} as const;
type Route = keyof typeof ROUTES;

function actors(): Record<string, Actor> {
  return {
    outside: { name: 'outside client, no credentials' },
    netHost: { name: 'cluster-network host, own certificate, no credentials', tls: netHost, source: '127.0.0.7' },
    operator: { name: 'operator', auth: basic(tc.user, tc.password) },
    operator2: { name: 'second operator', auth: basic(OP2.user, OP2.password), source: '127.0.0.3' },
    peer: { name: 'peer of this plan (d1)', tls: identity(d1) },
    peer3: { name: 'peer of this plan (d3), from another source', tls: identity(d3), source: '127.0.0.4' },
    oldPeer: { name: 'peer of an old plan (d4)', tls: oldPeer },
    contacted: { name: 'peer d1 with an operator credential', tls: identity(d1), auth: basic(tc.user, tc.password) },
    root: { name: 'root via the control socket', socket: true },
  };
}

const ANON = { health: 200, id: 401, cluster: 401, nodeStatus: 401, nodeStatusUpper: 401, nodePreflight: 401, planUpdate: 401, release: 401, takeover: 401, ownPassword: 401, removeUser: 401, listUsers: 401 };
const OPERATOR = { health: 200, id: 200, cluster: 200, nodeStatus: 403, nodeStatusUpper: 403, nodePreflight: 403, planUpdate: 403, release: 403, takeover: 403, ownPassword: 400, removeUser: 403, listUsers: 403 };
const PEER = { health: 200, id: 401, cluster: 401, nodeStatus: 200, nodeStatusUpper: 200, nodePreflight: 200, planUpdate: 409, release: 409, takeover: 401, ownPassword: 401, removeUser: 401, listUsers: 401 };
const EXPECTED: Record<string, Record<Route, number>> = {
  outside: ANON,
  netHost: { ...ANON, nodeStatus: 403, nodeStatusUpper: 403, nodePreflight: 403, planUpdate: 403, release: 403 },
  operator: OPERATOR,
  operator2: OPERATOR,
  peer: PEER,
  peer3: PEER,
  oldPeer: { ...ANON, nodeStatus: 403, nodeStatusUpper: 403, nodePreflight: 403, planUpdate: 403, release: 403 },
  // Operator routes take the password; the adopt payload naming an account is not part of the API (400).
  contacted: { ...PEER, id: 200, cluster: 200, takeover: 400, ownPassword: 400, removeUser: 403, listUsers: 403 },
  root: { health: 200, id: 200, cluster: 200, nodeStatus: 403, nodeStatusUpper: 403, nodePreflight: 403, planUpdate: 403, release: 403, takeover: 403, ownPassword: 403, removeUser: 404, listUsers: 200 },
};

test('actors × routes: every answer has its expected status, errors are problem+json', async () => {
  const usersFile = join(d2.dataDir, 'users.json');
  const before = sha(usersFile);
  const mismatches: string[] = [];
  for (const [key, actor] of Object.entries(actors())) {
    for (const [route, [method, path, body]] of Object.entries(ROUTES) as [Route, readonly [string, string, (() => unknown)?]][]) {
      const r = await call(d2, actor, method, path, body?.());
      const want = EXPECTED[key][route];
      if (r.status !== want) mismatches.push(`${actor.name} ${method} ${path}: ${r.status} (want ${want}) ${r.body.slice(0, 160)}`);
      if (r.status >= 400) assert.match(String(r.headers['content-type']), /application\/problem\+json/, `${actor.name} ${method} ${path}`);
    }
  }
  assert.deepEqual(mismatches, []);
  assert.equal(sha(usersFile), before, 'no actor changed an account');
  // The takeover of issue 12 did nothing: the operator's password still works, the chosen one does not.
  assert.equal((await call(d2, { name: 'op', auth: basic('operator', tc.password) }, 'GET', '/v1/id')).status, 200);
  assert.equal((await call(d2, { name: 'attacker', auth: basic('operator', 'attacker-chosen-password'), source: '127.0.0.11' }, 'GET', '/v1/id')).status, 401);
});

test('a process user on the machine: no control socket, no key to pose as a peer, 401 on the port', async () => {
  const probe = join(tc.root, 'probe.mjs');
  writeFileSync(join(tc.root, 'ca.pem'), d2.cert, { mode: 0o644 });
  writeFileSync(
    probe,
    `import https from 'node:https'; import http from 'node:http'; import fs from 'node:fs';
const [socketPath, port, caFile, keyFile] = process.argv.slice(2);
const ca = fs.readFileSync(caFile, 'utf8');
const out = {};
const get = (opts) => new Promise((r) => { const q = (opts.socketPath ? http : https).request(opts, (res) => { res.resume(); r(res.statusCode); }); q.on('error', (e) => r(e.code)); q.end(); });
out.socket = await get({ socketPath, path: '/v1/id' });
out.id = await get({ host: '127.0.0.1', port, path: '/v1/id', ca, agent: false });
out.nodeStatus = await get({ host: '127.0.0.1', port, path: '/v1/node/status', ca, agent: false });
try { fs.readFileSync(keyFile); out.key = 'readable'; } catch (e) { out.key = e.code; }
console.log(JSON.stringify(out));`,
    { mode: 0o644 },
  );
  const out = await new Promise<string>((resolve, reject) =>
    execFile('runuser', ['-u', 'cdtest', '--', process.execPath, probe, d2.socketPath, String(d2.port), join(tc.root, 'ca.pem'), join(d1.dataDir, 'tls', 'key.pem')], { timeout: 30_000 }, (err, stdout, stderr) =>
      err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(String(stdout)),
    ),
  );
  const r = JSON.parse(out.trim());
  assert.equal(r.socket, 'EACCES', 'the control socket is root-only');
  assert.equal(r.id, 401);
  assert.equal(r.nodeStatus, 401);
  assert.equal(r.key, 'EACCES', "a dispatcher's key (its peer identity) is unreadable for other users");
});

test('an operator changes their own password; an admin removes an account; both audited without the secret', async () => {
  const newPassword = 'operator2-new-password';
  const op2: Actor = { name: 'op2', auth: basic(OP2.user, OP2.password), source: '127.0.0.3' };
  const wrong = await call(d2, op2, 'PUT', '/v1/users/me/password', { currentPassword: 'not-the-password', newPassword });
  assert.equal(wrong.status, 403);
  const bad = await call(d2, op2, 'PUT', '/v1/users/me/password', { currentPassword: OP2.password, newPassword: 'short:pw' });
  assert.equal(bad.status, 400);
  assert.equal((await call(d2, op2, 'PUT', '/v1/users/me/password', { currentPassword: OP2.password, newPassword })).status, 204);
  await new Promise((r) => setTimeout(r, 400)); // the users file is re-read at most every 250 ms
  assert.equal((await call(d2, op2, 'GET', '/v1/id')).status, 401, 'the old password is gone (cache cleared)');
  const op2new: Actor = { name: 'op2', auth: basic(OP2.user, newPassword), source: '127.0.0.3' };
  assert.equal((await call(d2, op2new, 'GET', '/v1/id')).status, 200);
  OP2.password = newPassword;

  // Removal: an operator may not, root on the socket may.
  await addUser(d2.dataDir, 'operator3', 'third-operator-password');
  assert.equal((await call(d2, op2new, 'DELETE', '/v1/users/operator3')).status, 403);
  assert.equal((await call(d2, { name: 'root', socket: true }, 'DELETE', '/v1/users/operator3')).status, 204);
  await new Promise((r) => setTimeout(r, 400));
  assert.equal((await call(d2, { name: 'op3', auth: basic('operator3', 'third-operator-password'), source: '127.0.0.12' }, 'GET', '/v1/id')).status, 401);

  // `dispatcherd user passwd` (root on the machine) works too.
  const cli = await runDispatcherd(['user', 'passwd', OP2.user, '--data-dir', d2.dataDir], { input: 'operator2-cli-password\n' });
  assert.equal(cli.code, 0, cli.stderr);
  await new Promise((r) => setTimeout(r, 400));
  assert.equal((await call(d2, { name: 'op2', auth: basic(OP2.user, 'operator2-cli-password'), source: '127.0.0.3' }, 'GET', '/v1/id')).status, 200);
  OP2.password = 'operator2-cli-password';

  await new Promise((r) => setTimeout(r, 300));
  const log = readFileSync(join(d2.dataDir, 'dispatcher.log'), 'utf8');
  const lines = log.trim().split('\n').map((l) => JSON.parse(l));
  assert.ok(lines.some((l) => l.audit && l.action === 'change own password' && l.account === 'operator2' && l.user === 'operator2'));
  assert.ok(lines.some((l) => l.audit && l.action === 'remove account' && l.account === 'operator3' && l.user === 'root@socket'));
  assert.ok(lines.some((l) => l.audit && l.action === 'change password' && l.account === 'operator2' && /@cli$/.test(l.user)));
  for (const secret of [newPassword, 'operator2-cli-password', 'third-operator-password']) assert.ok(!log.includes(secret), 'no password in the log');
});

test('legacy cluster-* accounts are revoked at start', async () => {
  const usersFile = join(d3.dataDir, 'users.json');
  const data = JSON.parse(readFileSync(usersFile, 'utf8'));
  data.users['cluster-old'] = { hash: await hashPassword('legacy-cluster-password'), createdAt: new Date().toISOString() };
  writeFileSync(usersFile, JSON.stringify(data), { mode: 0o600 });
  const fresh = await tc.restart(2);
  assert.equal(JSON.parse(readFileSync(usersFile, 'utf8')).users['cluster-old'], undefined);
  assert.equal((await call(fresh, { name: 'legacy', auth: basic('cluster-old', 'legacy-cluster-password'), source: '127.0.0.13' }, 'GET', '/v1/id')).status, 401);
  const lines = readFileSync(join(d3.dataDir, 'dispatcher.log'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.ok(lines.some((l) => l.audit && l.action === 'revoke legacy accounts' && l.accounts.includes('cluster-old')), 'the revocation is audited');
  d3 = fresh;
});

test('a credential with a second colon is refused; a 17 KB header gets a problem+json 431', async () => {
  const r = await call(d2, { name: 'colon', auth: basic(tc.user, `${tc.password}:anything`), source: '127.0.0.14' }, 'GET', '/v1/id');
  assert.equal(r.status, 401);
  assert.equal(JSON.parse(r.body).code, 'unauthorized');
  const big = await call(d2, { name: 'big', auth: 'Basic ' + 'A'.repeat(17 * 1024), source: '127.0.0.14' }, 'GET', '/v1/id');
  assert.equal(big.status, 431);
  assert.match(String(big.headers['content-type']), /application\/problem\+json/);
  assert.equal(JSON.parse(big.body).code, 'headers_too_large');
});

test('100 parallel guesses: at most maxFailures are checked, the rest 429; peers and other sources keep working', async () => {
  const answers = await Promise.all(
    Array.from({ length: 100 }, (_, i) => call(d2, { name: 'guesser', auth: basic(tc.user, `wrong-guess-number-${i}`) }, 'GET', '/v1/id')),
  );
  const by = (s: number) => answers.filter((a) => a.status === s).length;
  assert.ok(by(401) <= 10, `checked ${by(401)} guesses (limit 10)`);
  assert.equal(by(401) + by(429), 100, `only 401 and 429: ${answers.map((a) => a.status).join(',')}`);
  assert.ok(answers.filter((a) => a.status === 429).every((a) => Number(a.headers['retry-after']) >= 1));
  // The guessing source is blocked, even for the right password...
  assert.equal((await call(d2, { name: 'op', auth: basic(tc.user, tc.password) }, 'GET', '/v1/id')).status, 429);
  // ...the operator from another source is not locked out, and a peer on the same address is never throttled.
  assert.equal((await call(d2, { name: 'op', auth: basic(tc.user, tc.password), source: '127.0.0.2' }, 'GET', '/v1/id')).status, 200);
  assert.equal((await call(d2, { name: 'd1', tls: identity(d1) }, 'GET', '/v1/node/status')).status, 200);
});

test('100 guesses from 100 source addresses hit the per-account limit; the operator keeps a source they used before', async () => {
  const answers: Answer[] = [];
  for (let batch = 0; batch < 10; batch++) {
    answers.push(
      ...(await Promise.all(
        Array.from({ length: 10 }, (_, j) => call(d2, { name: 'rotating', auth: basic(OP2.user, `rotating-guess-${batch}-${j}`), source: `127.0.1.${batch * 10 + j + 1}` }, 'GET', '/v1/id')),
      )),
    );
  }
  const limited = answers.filter((a) => a.status === 429);
  assert.ok(answers.filter((a) => a.status === 401).length <= 30, `checked ${answers.filter((a) => a.status === 401).length} (account limit 30)`);
  assert.ok(limited.length >= 70);
  assert.ok(limited.every((a) => /for this account/.test(JSON.parse(a.body).detail)));
  assert.equal((await call(d2, { name: 'op2', auth: basic(OP2.user, OP2.password), source: '127.0.1.250' }, 'GET', '/v1/id')).status, 429, 'a new source is limited for this account');
  assert.equal((await call(d2, { name: 'op2', auth: basic(OP2.user, OP2.password), source: '127.0.0.3' }, 'GET', '/v1/id')).status, 200, 'the source the operator used before still works');
});
