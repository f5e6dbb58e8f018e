/**
 * The real programs accept what the pg-ha engine renders. Needs root (to run the processes as an
 * unprivileged user: PostgreSQL refuses root) and the Debian packages etcd-server, patroni, postgresql-15,
 * haproxy. Creates the system user `cdtest` if it is missing. Everything runs on 127.0.0.2 (loopback; not
 * 127.0.0.1 because Patroni's --validate-config refuses 127.0.0.1 as a connect address) and is stopped by
 * pid in after(), even on failure.
 *
 * One single-node cluster: etcd (rendered argv) → `patroni --validate-config` → Patroni bootstraps
 * PostgreSQL 15 → the rendered readiness probe (psql) passes → HAProxy (`haproxy -c`, then run) routes to
 * exactly one primary per coordinatorRouting().
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { planFromSpec } from '../../launcher/planner.js';
import { generateSecrets, loadEngine, renderProcess, type RenderedProcess } from '../../server/engines/index.js';
import { agencyHasLeader, agencyStatus, coordinatorRouting, dbserverState } from '../../server/engines/pg-ha-health.js';
import type { Plan } from '../../api/plan.js';
import { PG_HA_DEBIAN_BINARIES } from '../../server/engines/debian.js';
import { issuePlanPki, type PlanPki } from '../../server/pki/issue-plan.js';
import { runProbe } from '../../server/supervisor/probes.js';
import { request as httpsRequest } from 'node:https';

const USER = 'cdtest';
const ADDR = '127.0.0.2';
const BINARIES = { ...PG_HA_DEBIAN_BINARIES };

function ensureUser(): { uid: number; gid: number; user: string } {
  if (spawnSync('id', ['-u', USER]).status !== 0) {
    execFileSync('useradd', ['--system', '--no-create-home', '--shell', '/usr/sbin/nologin', USER]);
  }
  const uid = Number(execFileSync('id', ['-u', USER], { encoding: 'utf8' }).trim());
  const gid = Number(execFileSync('id', ['-g', USER], { encoding: 'utf8' }).trim());
  return { uid, gid, user: USER };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs: number, logs: () => string): Promise<T> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    try {
      const v = await fn();
      if (v) return v;
    } catch {
      /* not yet */
    }
    await sleep(200);
  }
  throw new Error(`timed out waiting for ${what}\n${logs()}`);
}

describe('pg-ha programs accept the rendered argv and configs', { timeout: 120_000 }, () => {
  let root = '';
  let plan: Plan;
  let runAs: { uid: number; gid: number; user: string };
  const children: { name: string; child: ChildProcess; out: string[] }[] = [];
  const rendered: Record<string, RenderedProcess> = {};
  let secrets: Record<string, string>;
  let pki: PlanPki;

  function start(id: string): ChildProcess {
    const r = rendered[id];
    const out: string[] = [];
    const child = spawn(r.spec.argv[0], r.spec.argv.slice(1), {
      cwd: r.spec.cwd,
      env: r.spec.env,
      uid: runAs.uid,
      gid: runAs.gid,
      detached: true, // own process group: cleanup kills the group by pid
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout!.on('data', (b) => out.push(String(b)));
    child.stderr!.on('data', (b) => out.push(String(b)));
    children.push({ name: id, child, out });
    return child;
  }
  const logsOf = (id: string) => () => (children.find((c) => c.name === id)?.out.join('') ?? '').slice(-3000);

  before(async () => {
    runAs = ensureUser();
    root = mkdtempSync('/tmp/cd-engine-programs-');
    chmodSync(root, 0o711); // traversable by the unprivileged user, not listable
    const dataDir = join(root, 'data');
    mkdirSync(dataDir, { mode: 0o700 });
    chownSync(dataDir, runAs.uid, runAs.gid);
    plan = planFromSpec({
      name: 'progtest',
      dispatchers: [{ id: 'd1', endpoint: `https://${ADDR}:18528`, fingerprint: Array(32).fill('AB').join(':'), addresses: [ADDR] }],
      agents: 1,
      dbservers: 1,
      coordinators: 1,
      // Off the defaults so a cluster test running at the same time cannot collide.
      ports: { 'agent.client': 23811, 'agent.peer': 23812, 'dbserver.postgres': 25433, 'dbserver.rest': 28008, 'coordinator.client': 25000, 'coordinator.readonly': 25001, 'coordinator.stats': 27000 },
    });
    const engine = loadEngine('pg-ha');
    secrets = generateSecrets(engine);
    pki = await issuePlanPki(plan);
    for (const p of plan.processes) {
      const r = renderProcess(engine, plan, p.id, { dispatcherDataDir: dataDir, binaries: BINARIES, secrets, runAs, tls: pki.processes[p.id] });
      rendered[p.id] = r;
      for (let d = r.spec.dir; d !== dataDir; d = dirname(d)) {
        mkdirSync(d, { recursive: true, mode: 0o700 });
        chownSync(d, runAs.uid, runAs.gid);
      }
      for (const f of r.files) {
        if (!existsSync(dirname(f.path))) {
          mkdirSync(dirname(f.path), { mode: 0o700 });
          chownSync(dirname(f.path), runAs.uid, runAs.gid);
        }
        writeFileSync(f.path, f.content, { mode: f.mode });
        chmodSync(f.path, f.mode);
        chownSync(f.path, runAs.uid, runAs.gid);
      }
    }
  });

  after(async () => {
    // Reverse order; SIGTERM first (Patroni stops PostgreSQL itself), then SIGKILL the group.
    for (const { child } of [...children].reverse()) {
      if (child.exitCode === null && child.signalCode === null && child.pid) {
        try {
          process.kill(-child.pid, 'SIGTERM');
        } catch {
          /* gone */
        }
        const end = Date.now() + 15_000;
        while (child.exitCode === null && child.signalCode === null && Date.now() < end) await sleep(100);
        try {
          process.kill(-child.pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
    }
    // postgres is not Patroni's child: a leftover postmaster must not survive the test.
    const pidFile = rendered['dbserver-1']?.leftoverPidFile;
    if (pidFile && existsSync(pidFile)) {
      const pid = Number(readFileSync(pidFile, 'utf8').split('\n')[0]);
      if (pid > 0) {
        try {
          process.kill(pid, 'SIGQUIT');
        } catch {
          /* gone */
        }
      }
    }
    if (root) rmSync(root, { recursive: true, force: true });
  });

  test('haproxy -c accepts the rendered haproxy.cfg', () => {
    const cfg = rendered['coordinator-1'].files.find((f) => f.path.endsWith('haproxy.cfg'))!;
    const r = spawnSync(BINARIES.haproxy, ['-c', '-f', cfg.path], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stdout + r.stderr);
  });

  test('etcd starts with the rendered argv and elects itself leader', async () => {
    start('agent-1');
    const url = rendered['agent-1'].spec.readiness.kind === 'http' ? rendered['agent-1'].spec.readiness.url : '';
    assert.equal(url, `https://${ADDR}:23811/health`);
    // The rendered probe (the cluster CA and the process's own certificate) passes once etcd is up...
    await waitFor('etcd /health', async () => (await runProbe(rendered['agent-1'].spec.readiness)).ok, 20_000, logsOf('agent-1'));
    // ...and without a client certificate etcd refuses even /health.
    // (It trusts the cluster CA, so only the missing client certificate can make it fail.)
    const noCert = () =>
      new Promise<number>((resolve, reject) => {
        const req = httpsRequest(url, { ca: pki.ca.certPem, agent: false }, (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        });
        req.on('error', reject);
        req.end();
      });
    await assert.rejects(noCert(), 'etcd answered a client without a certificate');
    const withCert = await new Promise<number>((resolve, reject) => {
      const req = httpsRequest(url, { ca: pki.ca.certPem, cert: pki.client.cert, key: pki.client.key, agent: false }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', reject);
      req.end();
    });
    assert.equal(withCert, 200, 'the same request with the dispatcher certificate');
    const st = await agencyStatus(plan, { tls: pki.client });
    assert.equal(st.hasLeader, true, JSON.stringify(st));
    assert.equal(st.leaderId, 'agent-1');
    assert.equal(await agencyHasLeader(plan, { tls: pki.client }), true);
  });

  test('patroni --validate-config accepts the rendered patroni.yml', () => {
    const yml = rendered['dbserver-1'].files.find((f) => f.path.endsWith('patroni.yml'))!;
    const r = spawnSync(BINARIES.python3, [BINARIES.patroni, '--validate-config', yml.path], { encoding: 'utf8', uid: runAs.uid, gid: runAs.gid });
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.doesNotMatch(r.stdout + r.stderr, /error|invalid/i);
  });

  test('Patroni bootstraps PostgreSQL 15 as the unprivileged user and the rendered readiness probe passes', async () => {
    start('dbserver-1');
    const probe = rendered['dbserver-1'].spec.readiness;
    assert.equal(probe.kind, 'command');
    if (probe.kind !== 'command') return;
    await waitFor('the psql readiness probe', async () => spawnSync(probe.argv[0], probe.argv.slice(1), { timeout: 3000 }).status === 0, 60_000, logsOf('dbserver-1'));
    const st = await waitFor('Patroni leader running', async () => {
      const s = await dbserverState(plan, 'dbserver-1', { psql: BINARIES.psql, superuserPassword: secrets['superuser-password'], tls: pki.client });
      return s.role === 'leader' && s.running ? s : undefined;
    }, 20_000, logsOf('dbserver-1'));
    assert.equal(st.streaming, false); // a leader has no WAL receiver
    // PostgreSQL runs as the unprivileged user with its socket in the process dir.
    const pid = Number(readFileSync(rendered['dbserver-1'].leftoverPidFile!, 'utf8').split('\n')[0]);
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    assert.match(status, new RegExp(`^Uid:\\s+${runAs.uid}\\b`, 'm'));
    assert.ok(existsSync(join(rendered['dbserver-1'].spec.dir, '.s.PGSQL.25433')));
  });

  test('HAProxy routes to exactly one primary once its checks ran', async () => {
    start('coordinator-1');
    const routing = await waitFor('HAProxy routing', async () => {
      const r = await coordinatorRouting(plan, 'coordinator-1');
      return r.ok ? r : undefined;
    }, 20_000, logsOf('coordinator-1'));
    assert.deepEqual(routing.primariesUp, ['dbserver-1']);
    const probe = rendered['coordinator-1'].spec.readiness;
    assert.equal(probe.kind, 'http');
    if (probe.kind === 'http') assert.match(await (await fetch(probe.url)).text(), new RegExp(probe.bodyMatch!));
  });
});
