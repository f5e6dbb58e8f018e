/**
 * API tier: the real daemon (startDaemon) in-process over real HTTPS with certificate verification on
 * (supertest `.ca(cert)`), real users file and scrypt, a real supervisor running one fixture process.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import request from 'supertest';
import { parseConfig } from '../../server/config.js';
import { startDaemon, type DaemonHandle } from '../../server/daemon.js';
import { addUser } from '../../server/users.js';
import { registeredRoutes, toOpenApiPath } from '../../server/http/app.js';
import type { Supervisor } from '../../server/supervisor/types.js';
import { createSupervisor } from '../../server/supervisor/supervisor.js';
import { clusterDaemonOptions } from '../../server/cluster-daemon.js';
import { fixtureSpec } from '../process/fixture-spec.js';

const PASSWORD = 'very-secret-pass-42';
const USER = 'alice';

describe('dispatcherd HTTPS API', () => {
  let root: string;
  let d: DaemonHandle;
  let hash: string;
  let supervisor: Supervisor;
  let closeCluster = () => {};
  const bodies: string[] = [];
  const agent = () => request(d.url);
  const keep = (r: request.Response) => {
    bodies.push(r.text ?? '', JSON.stringify(r.headers));
    return r;
  };

  before(async () => {
    root = mkdtempSync(join(tmpdir(), 'dispatcherd-api-'));
    const dataDir = join(root, 'data');
    const config = parseConfig({ id: 'api-test', listen: '127.0.0.1', port: 0, dataDir, maxBodyBytes: 4096, auth: { maxFailures: 5, failWindowMs: 60_000 } }, {});
    await addUser(config.usersFile, USER, PASSWORD);
    hash = JSON.parse(readFileSync(config.usersFile, 'utf8')).users[USER].hash;
    supervisor = await createSupervisor({ stateDir: join(root, 'supervisor') });
    await supervisor.start(fixtureSpec(root, 'agent-1', ['--print', 'line 1', '--print', 'line 2', '--print', 'line 3']));
    await supervisor.waitReady('agent-1', 10_000);
    // The same route modules as `dispatcherd start`, so the OpenAPI check covers the cluster API too.
    const cluster = clusterDaemonOptions();
    d = await startDaemon(config, { supervisor, console: false, modules: cluster.modules, extendContext: cluster.extendContext });
    closeCluster = () => cluster.runtime()?.close();
  });
  after(async () => {
    closeCluster();
    await d?.close();
    await supervisor?.stop('agent-1');
    rmSync(root, { recursive: true, force: true });
  });

  test('health answers without credentials and says only that it is up', async () => {
    const r = keep(await agent().get('/v1/health').ca(d.cert));
    assert.equal(r.status, 200);
    assert.deepEqual(r.body, { status: 'up' });
  });

  test('401 with WWW-Authenticate and problem+json without credentials', async () => {
    const r = keep(await agent().get('/v1/processes').ca(d.cert));
    assert.equal(r.status, 401);
    assert.match(String(r.headers['www-authenticate']), /^Basic realm=/);
    assert.match(String(r.headers['content-type']), /^application\/problem\+json/);
    assert.equal(JSON.parse(r.text).code, 'unauthorized');
  });

  test('wrong password is 401, right password is 200', async () => {
    const bad = keep(await agent().get('/v1/processes').ca(d.cert).auth(USER, 'wrong-password-123'));
    assert.equal(bad.status, 401);
    const unknown = keep(await agent().get('/v1/processes').ca(d.cert).auth('mallory', PASSWORD));
    assert.equal(unknown.status, 401);
    const ok = keep(await agent().get('/v1/processes').ca(d.cert).auth(USER, PASSWORD));
    assert.equal(ok.status, 200);
    assert.equal(ok.body.processes[0].id, 'agent-1');
    // second call is served from the verified-credential cache
    const again = keep(await agent().get('/v1/id').ca(d.cert).auth(USER, PASSWORD));
    assert.equal(again.status, 200);
    assert.equal(again.body.id, 'api-test');
    assert.equal(again.body.fingerprint, d.fingerprint);
    assert.equal(again.body.endpoint, `https://127.0.0.1:${d.port}`);
  });

  test('process routes: one, 404, log tail, invalid lines listed as problems', async () => {
    const one = keep(await agent().get('/v1/processes/agent-1').ca(d.cert).auth(USER, PASSWORD));
    assert.equal(one.status, 200);
    assert.equal(one.body.pid, supervisor.get('agent-1')!.pid);
    assert.ok(one.body.pid > 0);
    const none = keep(await agent().get('/v1/processes/nope').ca(d.cert).auth(USER, PASSWORD));
    assert.equal(none.status, 404);
    assert.match(String(none.headers['content-type']), /^application\/problem\+json/);
    assert.equal(JSON.parse(none.text).code, 'not_found');
    const log = keep(await agent().get('/v1/processes/agent-1/log?lines=3').ca(d.cert).auth(USER, PASSWORD));
    assert.equal(log.status, 200);
    assert.deepEqual(log.body.lines, ['line 1', 'line 2', 'line 3']);
    const bad = keep(await agent().get('/v1/processes/agent-1/log?lines=abc&extra=1').ca(d.cert).auth(USER, PASSWORD));
    assert.equal(bad.status, 400);
    assert.match(String(bad.headers['content-type']), /^application\/problem\+json/);
    const p = JSON.parse(bad.text);
    assert.equal(p.code, 'validation_failed');
    const paths = p.problems.map((x: { path: string }) => x.path);
    assert.ok(paths.includes('lines'), JSON.stringify(p.problems));
    assert.ok(p.problems.some((x: { message: string }) => /extra/.test(x.message)), 'every problem is listed, not only the first');
    const big = keep(await agent().get('/v1/processes/agent-1/log?lines=100000').ca(d.cert).auth(USER, PASSWORD));
    assert.equal(big.status, 400);
  });

  test('problem+json for unknown routes (404), bad JSON (400) and oversized bodies (413)', async () => {
    const nf = keep(await agent().get('/v1/nothing-here').ca(d.cert).auth(USER, PASSWORD));
    assert.equal(nf.status, 404);
    assert.equal(JSON.parse(nf.text).code, 'not_found');
    const badJson = keep(await agent().post('/v1/nothing-here').ca(d.cert).auth(USER, PASSWORD).set('content-type', 'application/json').send('{"a":'));
    assert.equal(badJson.status, 400);
    assert.match(String(badJson.headers['content-type']), /^application\/problem\+json/);
    assert.equal(JSON.parse(badJson.text).code, 'bad_request');
    const big = keep(await agent().post('/v1/nothing-here').ca(d.cert).auth(USER, PASSWORD).send({ blob: 'x'.repeat(10_000) }));
    assert.equal(big.status, 413);
    assert.match(String(big.headers['content-type']), /^application\/problem\+json/);
    assert.equal(JSON.parse(big.text).code, 'payload_too_large');
  });

  test('the OpenAPI document and the registered routes match', async () => {
    const r = keep(await agent().get('/openapi.json').ca(d.cert).auth(USER, PASSWORD));
    assert.equal(r.status, 200);
    assert.equal(r.body.openapi, '3.1.0');
    const documented = new Set<string>();
    for (const [p, ops] of Object.entries(r.body.paths as Record<string, object>)) for (const m of Object.keys(ops)) documented.add(`${m.toUpperCase()} ${p}`);
    const routes = registeredRoutes(d.app);
    assert.ok(routes.length >= 30, `only ${routes.length} routes registered`);
    for (const rt of routes) assert.ok(documented.has(`${rt.method} ${toOpenApiPath(rt.path)}`), `route ${rt.method} ${rt.path} (${rt.module}) is not documented`);
    const registered = new Set(routes.map((rt) => `${rt.method} ${toOpenApiPath(rt.path)}`));
    for (const doc of documented) {
      assert.ok(registered.has(doc), `documented ${doc} is not registered`);
      const [method, path] = doc.split(' ');
      const concrete = path.replace(/\{[^}]+\}/g, 'agent-1');
      const res = keep(await (agent() as unknown as Record<string, (p: string) => request.Test>)[method.toLowerCase()](concrete).ca(d.cert).auth(USER, PASSWORD));
      // A 404 from the route itself ("no cluster plan", "no operation") is fine; "no route" is not.
      assert.ok(res.status !== 404 || !/^no route /.test(JSON.parse(res.text).detail), `${method} ${concrete} has no route`);
    }
  });

  test('the control socket is 0600 and serves the API without a password', async () => {
    assert.equal(statSync(d.socketPath).mode & 0o777, 0o600);
    assert.ok(statSync(d.socketPath).isSocket());
    const r = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = httpRequest({ socketPath: d.socketPath, path: '/v1/processes', method: 'GET' }, (res) => {
        let body = '';
        res.on('data', (c) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
      req.on('error', reject);
      req.end();
    });
    bodies.push(r.body);
    assert.equal(r.status, 200);
    assert.equal(JSON.parse(r.body).processes[0].id, 'agent-1');
  });

  test('changing requests are audited with user, source and outcome', async () => {
    keep(await agent().post('/v1/nothing-here').ca(d.cert).auth(USER, PASSWORD).send({ a: 1 }));
    await new Promise((r) => setTimeout(r, 200)); // file transport writes asynchronously
    const lines = readFileSync(d.ctx.config.log.file, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    const audit = lines.find((l) => l.audit === true && l.user === USER && l.action === 'POST /v1/nothing-here');
    assert.ok(audit, 'audit line present');
    assert.equal(audit.outcome, 'failure');
    assert.equal(audit.status, 404);
    assert.match(audit.source, /127\.0\.0\.1/);
  });

  test('429 with Retry-After after repeated failed logins, checked before the password', async () => {
    let last: request.Response | undefined;
    for (let i = 0; i < 8; i++) last = keep(await agent().get('/v1/id').ca(d.cert).auth(USER, `wrong-password-${i}`));
    assert.equal(last!.status, 429);
    assert.ok(Number(last!.headers['retry-after']) >= 1);
    assert.equal(JSON.parse(last!.text).code, 'too_many_requests');
    // even the right password is refused while blocked: the limit is per source address
    const blocked = keep(await agent().get('/v1/id').ca(d.cert).auth(USER, PASSWORD));
    assert.equal(blocked.status, 429);
    // health stays reachable
    assert.equal((await agent().get('/v1/health').ca(d.cert)).status, 200);
  });

  test('no password or hash in any answer or log line', async () => {
    await new Promise((r) => setTimeout(r, 200));
    const log = readFileSync(d.ctx.config.log.file, 'utf8');
    assert.ok(log.length > 0);
    const salt = hash.split('$')[4];
    const key = hash.split('$')[5];
    for (const text of [...bodies, log]) {
      for (const secret of [PASSWORD, hash, salt, key, 'scrypt$', Buffer.from(`${USER}:${PASSWORD}`).toString('base64')]) {
        assert.ok(!text.includes(secret), `a secret leaked into: ${text.slice(0, 200)}`);
      }
    }
  });
});
