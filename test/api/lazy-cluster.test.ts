/**
 * The lazy cluster side (docs/DESIGN.md, "The lazy cluster side"): real `dispatcherd start` children whose
 * every loaded module of ours is logged by a module hook (test/helpers/module-log.ts), so an eager import
 * of the cluster runtime — from any file — fails the first test.
 * (a) A daemon that stores no plan serves health, processes, metrics, the audit trail and the full OpenAPI
 *     document without loading server/cluster/setup.ts or the orchestrator.
 * (b) Its first cluster requests, sent concurrently, all get their real answers, and the runtime is loaded.
 * (c) A daemon that stores a plan (state shutdown) loads the runtime at start, before any request.
 * (d) A load that fails answers every waiting request with the DispatcherError's problem+json (one error
 *     handler), and the next request loads again (in-process daemon: the data dir made unsafe after start).
 */
import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { httpsGet, initDataDir, startDispatcherd, type RunningDispatcher } from '../helpers/daemon.js';
import { planFromSpec } from '../../launcher/planner.js';
import { ClusterStore } from '../../server/cluster/store.js';
import { clusterDaemonOptions } from '../../server/cluster-daemon.js';
import { parseConfig } from '../../server/config.js';
import { startDaemon } from '../../server/daemon.js';
import { addUser } from '../../server/users.js';

const HOOK = fileURLToPath(new URL('../helpers/module-log.js', import.meta.url));
/** Modules only the cluster runtime loads: if any is loaded, the cluster side is. */
const RUNTIME_MODULES = ['server/cluster/setup.js', 'server/cluster/orchestrator.js', 'server/cluster/service.js', 'server/cluster/restart.js'];

const logDir = mkdtempSync(join(tmpdir(), 'dispatcherd-lazy-'));
after(() => rmSync(logDir, { recursive: true, force: true }));

function loadedRuntime(log: string): string[] {
  const urls = existsSync(log) ? readFileSync(log, 'utf8').split('\n') : [];
  return RUNTIME_MODULES.filter((m) => urls.some((u) => u.endsWith('/dist/' + m)));
}

async function start(name: string, dir?: Awaited<ReturnType<typeof initDataDir>>): Promise<{ d: RunningDispatcher & { dir: Awaited<ReturnType<typeof initDataDir>> }; log: string }> {
  const log = join(logDir, `${name}.modules`);
  const d = await startDispatcherd({ ...(dir ? { dir } : {}), env: { MODULE_LOG: log, NODE_OPTIONS: `--import ${HOOK}` } });
  return { d, log };
}

/** One HTTPS request with the operator's password, over the daemon's pinned certificate. */
async function req(d: RunningDispatcher, method: string, path: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const { request } = await import('node:https');
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const r = request(`${d.url}${path}`, { method, ca: d.cert, auth: `${d.user}:${d.password}`, headers: data ? { 'content-type': 'application/json' } : {} }, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (c: string) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, json: text ? (JSON.parse(text) as Record<string, unknown>) : {} }));
    });
    r.on('error', reject);
    r.end(data);
  });
}

describe('the cluster side loads on first use when no plan is stored', () => {
  test('(a) an idle daemon without a plan has not loaded the cluster runtime; (b) concurrent first cluster requests load it once and all succeed', async () => {
    const { d, log } = await start('no-plan');
    try {
      // Routes that do not need the cluster side, the OpenAPI document (every route) among them.
      assert.equal((await httpsGet(`${d.url}/v1/health`, d.cert)).status, 200);
      assert.equal((await req(d, 'GET', '/v1/processes')).status, 200);
      assert.equal((await req(d, 'GET', '/v1/audit')).status, 200);
      assert.equal((await httpsGet(`${d.url}/metrics`, d.cert, { auth: `${d.user}:${d.password}` })).status, 200);
      const doc = await req(d, 'GET', '/openapi.json');
      assert.equal(doc.status, 200);
      for (const path of ['/v1/cluster', '/v1/cluster/launch', '/v1/cluster/restart', '/v1/cluster/scale', '/v1/cluster/replace', '/v1/plans', '/v1/cluster/plan/diff']) {
        assert.ok(Object.hasOwn(doc.json.paths as object, path), `${path} missing from the OpenAPI document`);
      }
      await new Promise((r) => setTimeout(r, 300));
      assert.ok(existsSync(log), 'the module hook logged nothing: the test would prove nothing');
      assert.ok(readFileSync(log, 'utf8').includes('/dist/server/daemon.js'), 'the module log does not list the daemon itself');
      assert.deepEqual(loadedRuntime(log), [], 'an idle daemon without a plan loaded the cluster runtime');

      // Three first requests at once: each gets the real handler's answer (the planner's plan; state none; no plan version).
      const spec = { name: 'lazy', dispatchers: [{ id: d.id, endpoint: d.url, fingerprint: d.fingerprint, addresses: ['127.0.0.1'] }], agents: 1, dbservers: 1, coordinators: 1 };
      const [plan, cluster, versions] = await Promise.all([req(d, 'POST', '/v1/plans', spec), req(d, 'GET', '/v1/cluster'), req(d, 'GET', '/v1/cluster/plan')]);
      assert.equal(plan.status, 200, JSON.stringify(plan.json));
      assert.equal((plan.json as { name?: string }).name, 'lazy');
      assert.equal(cluster.status, 200, JSON.stringify(cluster.json));
      assert.equal(cluster.json.state, 'none');
      assert.equal(versions.status, 404, JSON.stringify(versions.json));
      assert.deepEqual(loadedRuntime(log), RUNTIME_MODULES, 'the first cluster request did not load the cluster runtime');
      // Loaded once: the runtime's modules are each in the log once (one shared import).
      const setupLoads = readFileSync(log, 'utf8').split('\n').filter((u) => u.endsWith('/dist/server/cluster/setup.js'));
      assert.equal(setupLoads.length, 1);
      // Served from the loaded side from now on.
      assert.equal((await req(d, 'GET', '/v1/cluster')).json.state, 'none');
      assert.doesNotMatch(d.output(), /could not load the cluster side/);
    } finally {
      await d.stop();
      d.dir.remove();
    }
  });

  test('(c) a daemon that stores a plan loads the cluster runtime at start, without any request', async () => {
    const dir = await initDataDir({ id: 'lazy-stored' });
    // A stored, shut-down cluster on loopback with firewall backend none: nothing on the host changes.
    const plan = planFromSpec({
      name: 'stored',
      dispatchers: [{ id: dir.id, endpoint: 'https://127.0.0.1:18540', fingerprint: dir.fingerprint, addresses: ['127.0.0.1'] }],
      agents: 1,
      dbservers: 1,
      coordinators: 1,
      firewall: { backend: 'none' },
    });
    await new ClusterStore(dir.dataDir).save({ plan, state: 'shutdown', secrets: {} });
    const { d, log } = await start('stored', dir);
    try {
      // Only health has been asked (by startDispatcherd): the runtime came in at start.
      assert.deepEqual(loadedRuntime(log), RUNTIME_MODULES, 'a daemon with a stored plan did not load the cluster runtime at start');
      const cluster = await req(d, 'GET', '/v1/cluster');
      assert.equal(cluster.status, 200, JSON.stringify(cluster.json));
      assert.equal(cluster.json.state, 'shutdown');
    } finally {
      await d.stop();
      d.dir.remove();
    }
  });

  test('(d) a failed load is a problem+json answer for every waiting request, and the next request loads again', async () => {
    const root = mkdtempSync(join(tmpdir(), 'dispatcherd-lazy-fail-'));
    const config = parseConfig({ id: 'lazy-fail', listen: '127.0.0.1', port: 0, dataDir: join(root, 'data') }, {});
    await addUser(config.usersFile, 'operator', 'correct-horse-battery');
    const cluster = clusterDaemonOptions();
    const d = await startDaemon(config, { console: false, modules: cluster.modules, extendContext: cluster.extendContext, beforeProcesses: cluster.beforeProcesses });
    const handle = { url: d.url, cert: d.cert, user: 'operator', password: 'correct-horse-battery' } as RunningDispatcher;
    try {
      assert.equal(cluster.loaded(), false);
      // Others may write into the data dir now: the runtime refuses to come up (server/cluster/start-checks.ts).
      chmodSync(config.dataDir, 0o777);
      const answers = await Promise.all([req(handle, 'GET', '/v1/cluster'), req(handle, 'GET', '/v1/cluster/plan')]);
      for (const a of answers) {
        assert.equal(a.status, 500, JSON.stringify(a.json));
        assert.equal(a.json.code, 'config_invalid');
        assert.match(String(a.json.detail ?? a.json.title ?? JSON.stringify(a.json)), /data dir is not safe|lets others write/);
      }
      assert.equal(cluster.loaded(), false);
      chmodSync(config.dataDir, 0o700);
      const again = await req(handle, 'GET', '/v1/cluster');
      assert.equal(again.status, 200, JSON.stringify(again.json));
      assert.equal(again.json.state, 'none');
      assert.equal(cluster.loaded(), true);
    } finally {
      cluster.runtime()?.close();
      await d.close();
      rmSync(root, { recursive: true, force: true });
    }
  });
});
