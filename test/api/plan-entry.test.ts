/**
 * One validation for every way a plan enters a dispatcher (docs/SECURITY.md, "Operator account" and "Peer
 * dispatcher"): the real daemon over HTTPS. A plan that /v1/cluster/launch refuses is refused the same way
 * by the peer route /v1/node/plan (400, every problem listed, nothing stored); names that exist on every
 * JavaScript object are 400s on /v1/plans, /v1/cluster/launch and /v1/node/plan, never 500s.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import request from 'supertest';
import type { Plan } from '../../api/plan.js';
import { planFromSpec } from '../../launcher/planner.js';
import { parseConfig } from '../../server/config.js';
import { startDaemon, type DaemonHandle } from '../../server/daemon.js';
import { addUser } from '../../server/users.js';
import { createSupervisor } from '../../server/supervisor/supervisor.js';
import type { Supervisor } from '../../server/supervisor/types.js';
import { clusterDaemonOptions } from '../../server/cluster-daemon.js';
import { PG_HA_DEBIAN_BINARIES } from '../../server/engines/debian.js';
import { ensureCertificate } from '../../server/tls.js';

const PASSWORD = 'very-secret-pass-42';
const USER = 'alice';
const FP = Array(32).fill('AB').join(':');

describe('one validation for every entry of a plan', () => {
  let root: string;
  let dataDir: string;
  let d: DaemonHandle;
  let supervisor: Supervisor;
  let closeCluster = () => {};
  /** The certificate of peer-2: first contact on /v1/node/plan needs a certificate the offered plan pins. */
  let peer: { cert: string; key: string; fingerprint: string };
  const post = (path: string, body: unknown) => {
    const r = request(d.url).post(path).ca(d.cert).auth(USER, PASSWORD);
    return (path.startsWith('/v1/node/') ? r.cert(peer.cert).key(peer.key) : r).set('content-type', 'application/json').send(JSON.stringify(body));
  };

  const spec = (over: Record<string, unknown> = {}) => ({
    name: 'entry',
    dispatchers: [
      { id: 'entry-test', endpoint: 'https://127.0.0.1:18528', fingerprint: FP, addresses: ['127.0.0.1'] },
      { id: 'peer-2', endpoint: 'https://127.0.0.1:18529', fingerprint: peer.fingerprint, addresses: ['127.0.0.1'] },
      { id: 'peer-3', endpoint: 'https://127.0.0.1:18530', fingerprint: FP, addresses: ['127.0.0.1'] },
    ],
    agents: 3,
    dbservers: 1,
    coordinators: 1,
    ...over,
  });
  const plan = (): Plan => planFromSpec(spec());
  const adopt = (p: unknown) => ({ plan: p, secrets: { 'superuser-password': 'a'.repeat(48), 'replication-password': 'b'.repeat(48), 'rewind-password': 'c'.repeat(48) } });
  const expect400 = (r: request.Response, path?: string) => {
    assert.equal(r.status, 400, r.text);
    const p = JSON.parse(r.text);
    assert.equal(p.code, 'validation_failed');
    assert.ok(Array.isArray(p.problems) && p.problems.length > 0, r.text);
    if (path) assert.ok(p.problems.some((x: { path: string }) => x.path === path || x.path.endsWith(path)), `${path} not in ${r.text}`);
    return p;
  };

  before(async () => {
    root = mkdtempSync(join(tmpdir(), 'dispatcherd-entry-'));
    dataDir = join(root, 'data');
    const id = await ensureCertificate({ certFile: join(root, 'peer.pem'), keyFile: join(root, 'peer.key'), addresses: ['127.0.0.1'], commonName: 'peer-2' });
    peer = { cert: id.cert, key: readFileSync(join(root, 'peer.key'), 'utf8'), fingerprint: id.fingerprint };
    const config = parseConfig({ id: 'entry-test', listen: '127.0.0.1', port: 0, dataDir, engines: { 'pg-ha': { binaries: PG_HA_DEBIAN_BINARIES } }, runAs: 'nobody', firewall: { backend: 'none' } }, {});
    await addUser(config.usersFile, USER, PASSWORD);
    supervisor = await createSupervisor({ stateDir: join(root, 'supervisor') });
    const cluster = clusterDaemonOptions();
    d = await startDaemon(config, { supervisor, console: false, modules: cluster.modules, extendContext: cluster.extendContext });
    closeCluster = () => cluster.runtime()?.close();
  });
  after(async () => {
    closeCluster();
    await d?.close();
    rmSync(root, { recursive: true, force: true });
  });

  test('a plan with options outside the allow list: 400 on /v1/cluster/launch AND on the peer route /v1/node/plan; nothing stored', async () => {
    for (const args of [['--enable-pprof'], ['--listen-metrics-urls=http://0.0.0.0:9999'], ['--log-outputs=/etc/passwd']]) {
      const p = plan();
      p.processes[0].args = args;
      expect400(await post('/v1/cluster/launch', { plan: p }), 'processes[0].args[0]');
      expect400(await post('/v1/node/plan', adopt(p)), 'processes[0].args[0]');
    }
    const p = plan();
    p.processes.find((x) => x.role === 'coordinator')!.dataDir = 'clusters/entry/c\nlisten evil';
    expect400(await post('/v1/node/plan', adopt(p)), 'dataDir');
    assert.equal(existsSync(join(dataDir, 'cluster')), false, 'a refused plan left a stored cluster');
  });

  test('a secret that is not a generated hex string is refused by the peer route', async () => {
    const body = adopt(plan());
    body.secrets['superuser-password'] = 'x\n*:*:*:*:y';
    expect400(await post('/v1/node/plan', body), 'secrets.superuser-password');
  });

  test('names that exist on every JavaScript object are 400 everywhere, never 500', async () => {
    for (const n of ['constructor', '__proto__', 'toString', 'hasOwnProperty']) {
      expect400(await post('/v1/plans', spec({ engine: n })));
      expect400(await post('/v1/plans', JSON.parse(JSON.stringify(spec({ ports: JSON.parse(`{"agent.${n}": 3000}`) })))));
      expect400(await post('/v1/plans', JSON.parse(JSON.stringify(spec({ ports: JSON.parse(`{"${n}.client": 3000}`) })))));
      const e = plan();
      e.engine = n;
      expect400(await post('/v1/cluster/launch', { plan: e }));
      expect400(await post('/v1/node/plan', adopt(e)));
      const port = plan();
      port.processes[0].ports[0].name = n;
      expect400(await post('/v1/cluster/launch', { plan: port }));
      expect400(await post('/v1/node/plan', adopt(port)));
      const bin = JSON.parse(JSON.stringify(plan()));
      bin.binaries = JSON.parse(`{"${n}": "/usr/bin/etcd"}`);
      expect400(await post('/v1/cluster/launch', { plan: bin }));
      expect400(await post('/v1/node/plan', adopt(bin)));
    }
  });

  test('the valid plan is accepted by the peer route (the refusals above are not blanket refusals)', async () => {
    const r = await post('/v1/node/plan', adopt(plan()));
    assert.equal(r.status, 204, r.text);
  });
});
