/**
 * API tier: metrics, audit trail and web console files of a real daemon (startDaemon in-process, real
 * HTTPS with certificate verification, real users file and scrypt, a real supervised fixture process).
 * The cluster-wide metrics against a running pg-ha cluster are in test/cluster/console.test.ts.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import request from 'supertest';
import { parseConfig } from '../../server/config.js';
import { startDaemon, type DaemonHandle } from '../../server/daemon.js';
import { addUser } from '../../server/users.js';
import type { Supervisor } from '../../server/supervisor/types.js';
import { createSupervisor } from '../../server/supervisor/supervisor.js';
import { clusterDaemonOptions } from '../../server/cluster-daemon.js';
import { fixtureSpec } from '../process/fixture-spec.js';

const PASSWORD = 'observability-pass-42';
const USER = 'olga';
const SCRAPER = 'prometheus';
const SCRAPER_PASSWORD = 'scrape-only-pass-42';

/** The value of one sample line `name{labels} value` of a Prometheus exposition (labels matched as a substring). */
function sample(text: string, name: string, labels = ''): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(name + '{') && !line.startsWith(name + ' ')) continue;
    if (labels && !line.includes(labels)) continue;
    return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return undefined;
}

describe('metrics, audit trail and console files', () => {
  let root: string;
  let d: DaemonHandle;
  let supervisor: Supervisor;
  let closeCluster = () => {};
  const agent = () => request(d.url);

  before(async () => {
    root = mkdtempSync(join(tmpdir(), 'dispatcherd-obs-'));
    const dataDir = join(root, 'data');
    const config = parseConfig({ id: 'obs-test', listen: '127.0.0.1', port: 0, dataDir, auth: { maxFailures: 4, failWindowMs: 60_000 }, readOnlyUsers: [SCRAPER] }, {});
    await addUser(config.usersFile, USER, PASSWORD);
    await addUser(config.usersFile, SCRAPER, SCRAPER_PASSWORD);
    supervisor = await createSupervisor({ stateDir: join(root, 'supervisor') });
    await supervisor.start(fixtureSpec(root, 'agent-1', ['--print', 'hello']));
    await supervisor.waitReady('agent-1', 10_000);
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

  test('/metrics needs a login', async () => {
    const r = await agent().get('/metrics').ca(d.cert);
    assert.equal(r.status, 401);
    assert.doesNotMatch(r.text, /cluster_dispatcher_/);
  });

  test('/metrics: process state, restarts, HTTP traffic, failed logins and certificate expiry', async () => {
    await agent().get('/v1/processes/agent-1').ca(d.cert).auth(USER, PASSWORD).expect(200);
    await agent().get('/v1/id').ca(d.cert).auth(USER, 'wrong-password-1').expect(401);
    const r = await agent().get('/metrics').ca(d.cert).auth(USER, PASSWORD);
    assert.equal(r.status, 200);
    assert.match(String(r.headers['content-type']), /^text\/plain; version=0\.0\.4/);
    const m = r.text;
    assert.equal(sample(m, 'cluster_dispatcher_process_state', 'process="agent-1",role="agent",state="ready"'), 1);
    assert.equal(sample(m, 'cluster_dispatcher_process_state', 'process="agent-1",role="agent",state="failed"'), 0);
    assert.equal(sample(m, 'cluster_dispatcher_process_restarts_total', 'process="agent-1"'), 0);
    const readySince = sample(m, 'cluster_dispatcher_process_ready_since_seconds', 'process="agent-1"')!;
    assert.ok(Math.abs(readySince - Date.parse(supervisor.get('agent-1')!.readySince!) / 1000) < 0.01, `ready since ${readySince}`);
    // Route patterns, not raw URLs, label the requests (bounded cardinality).
    assert.equal(sample(m, 'cluster_dispatcher_http_requests_total', 'route="/v1/processes/:id",method="GET",status="200"'), 1);
    assert.equal(sample(m, 'cluster_dispatcher_http_failed_logins_total'), 1);
    assert.ok(m.includes('dispatcher="obs-test"'), 'every sample names the dispatcher');
    const notAfter = Date.parse(new X509Certificate(d.cert).validTo) / 1000;
    assert.equal(sample(m, 'cluster_dispatcher_certificate_expiry_timestamp_seconds'), notAfter);
    // Default process metrics under the same prefix (the benchmark and dashboard read RSS from it).
    assert.ok(sample(m, 'cluster_dispatcher_process_resident_memory_bytes')! > 10e6);
  });

  test('a restart of a process shows in its restart counter and last exit code', async () => {
    const before = supervisor.get('agent-1')!;
    process.kill(before.pid!, 'SIGKILL');
    for (let i = 0; i < 100 && !(supervisor.get('agent-1')!.restarts > 0 && supervisor.get('agent-1')!.state === 'ready'); i++) await new Promise((r) => setTimeout(r, 100));
    const m = (await agent().get('/metrics').ca(d.cert).auth(USER, PASSWORD).expect(200)).text;
    assert.equal(sample(m, 'cluster_dispatcher_process_restarts_total', 'process="agent-1"'), 1);
    assert.equal(sample(m, 'cluster_dispatcher_process_last_exit_code', 'process="agent-1"'), -1, 'killed by a signal');
  });

  test('GET /v1/audit: who asked for which change from where, and its outcome; bad queries are 400', async () => {
    await agent().post('/v1/cluster/shutdown').ca(d.cert).auth(USER, PASSWORD).send({});
    await agent().post('/v1/plans').ca(d.cert).auth(USER, PASSWORD).send({ name: 42 }).expect(400);
    const r = await agent().get('/v1/audit?limit=10').ca(d.cert).auth(USER, PASSWORD).expect(200);
    const [plans, shutdown] = r.body.entries;
    assert.equal(plans.action, 'POST /v1/plans');
    assert.equal(plans.user, USER);
    assert.equal(plans.source, '127.0.0.1');
    assert.equal(plans.outcome, 'failure');
    assert.equal(plans.status, 400);
    assert.equal(shutdown.action, 'POST /v1/cluster/shutdown');
    assert.ok(plans.seq > shutdown.seq, 'newest first');
    const only = await agent().get(`/v1/audit?outcome=failure&after=${shutdown.seq}`).ca(d.cert).auth(USER, PASSWORD).expect(200);
    assert.deepEqual(only.body.entries.map((e: { seq: number }) => e.seq), [plans.seq]);
    for (const bad of ['limit=abc', 'limit=0', 'outcome=maybe', 'colour=red']) {
      const b = await agent().get(`/v1/audit?${bad}`).ca(d.cert).auth(USER, PASSWORD);
      assert.equal(b.status, 400, bad);
      assert.equal(b.body.code, 'validation_failed');
      assert.ok(b.body.problems.length >= 1, bad);
    }
    // Persisted atomically, 0600, readable again.
    await d.ctx.auditTrail.flush();
    const file = join(d.ctx.config.dataDir, 'audit.json');
    assert.equal(statSync(file).mode & 0o777, 0o600);
    const onDisk = JSON.parse(readFileSync(file, 'utf8'));
    assert.ok(onDisk.entries.some((e: { seq: number }) => e.seq === plans.seq));
  });

  test('console files: no login needed, strict CSP, fixed list only; its 401s carry no browser prompt', async () => {
    const page = await agent().get('/ui/').ca(d.cert).expect(200);
    assert.match(String(page.headers['content-type']), /^text\/html/);
    const csp = String(page.headers['content-security-policy']);
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /script-src 'self'(;|$)/);
    assert.match(csp, /style-src 'self'(;|$)/);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval|https?:/);
    assert.doesNotMatch(page.text, /<script>|<style|\sstyle=|\son[a-z]+=/i, 'no inline script, style or handler');
    assert.equal((await agent().get('/ui/app.js').ca(d.cert).expect(200)).headers['content-type'], 'text/javascript; charset=utf-8');
    for (const bad of ['/ui/..%2Fpackage.json', '/ui/nope.js', '/ui/%2e%2e%2f%2e%2e%2fconfig.yaml']) {
      const r = await agent().get(bad).ca(d.cert);
      assert.equal(r.status, 404, bad);
      assert.equal(r.body.code, 'not_found', bad);
    }
    assert.equal((await agent().get('/ui').ca(d.cert)).status, 200);
    const fromConsole = await agent().get('/v1/id').ca(d.cert).set('x-dispatcher-console', '1');
    assert.equal(fromConsole.status, 401);
    assert.equal(fromConsole.headers['www-authenticate'], undefined);
    const plain = await agent().get('/v1/id').ca(d.cert);
    assert.match(String(plain.headers['www-authenticate']), /^Basic/);
  });

  test('a read-only user (readOnlyUsers) scrapes /metrics and reads, and is refused every change (403, audited as denied)', async () => {
    const m = await agent().get('/metrics').ca(d.cert).auth(SCRAPER, SCRAPER_PASSWORD);
    assert.equal(m.status, 200);
    assert.match(m.text, /cluster_dispatcher_process_state/);
    assert.equal((await agent().get('/v1/processes').ca(d.cert).auth(SCRAPER, SCRAPER_PASSWORD)).status, 200);
    for (const path of ['/v1/cluster/shutdown', '/v1/cluster/restart', '/v1/node/processes/agent-1/stop']) {
      const r = await agent().post(path).ca(d.cert).auth(SCRAPER, SCRAPER_PASSWORD).send({});
      assert.equal(r.status, 403, path);
      assert.equal(r.body.code, 'forbidden');
    }
    assert.equal(supervisor.get('agent-1')!.state, 'ready', 'nothing was stopped');
    const audit = await agent().get(`/v1/audit?user=${SCRAPER}`).ca(d.cert).auth(USER, PASSWORD).expect(200);
    // The two operator routes reach the read-only check (audited as denied); /v1/node/* is refused earlier,
    // at the peer gate, because an account is never a peer (test/api/identity.test.ts).
    assert.equal(audit.body.entries.length, 2);
    assert.ok(audit.body.entries.every((e: { outcome: string }) => e.outcome === 'denied'));
  });

  test('a read-only user may call the dry run (POST /v1/cluster/plan/diff, on its exact path only) and no other POST', async () => {
    // Past the read-only check, the route answers for itself: this dispatcher has no cluster (404, not 403).
    const dry = await agent().post('/v1/cluster/plan/diff').ca(d.cert).auth(SCRAPER, SCRAPER_PASSWORD).send({ plan: {} });
    assert.equal(dry.status, 404, JSON.stringify(dry.body));
    assert.equal(dry.body.code, 'not_found');
    // The allow list is exact: a variant Express would route to the same handler is refused, as is any
    // other POST under the same prefix.
    for (const path of ['/v1/cluster/plan/diff/', '/V1/cluster/plan/DIFF', '/v1/cluster/plan', '/v1/cluster/firewall']) {
      const r = await agent().post(path).ca(d.cert).auth(SCRAPER, SCRAPER_PASSWORD).send({});
      assert.equal(r.status, 403, path);
      assert.equal(r.body.code, 'forbidden');
    }
  });

  test('throttled sources and requests are counted (runs last: it blocks 127.0.0.1)', async () => {
    for (let i = 0; i < 6; i++) await agent().get('/v1/id').ca(d.cert).auth(USER, `wrong-${i}`);
    assert.equal((await agent().get('/v1/id').ca(d.cert).auth(USER, PASSWORD)).status, 429);
    // The socket is not throttled: read the metrics through it.
    const m = d.ctx.metrics;
    const text = (await m.scrape()).body;
    assert.ok(sample(text, 'cluster_dispatcher_http_throttled_requests_total')! >= 2);
    assert.equal(sample(text, 'cluster_dispatcher_http_throttled_sources'), 1);
  });
});
