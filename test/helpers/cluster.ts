/**
 * Cluster-tier helper: N real dispatcherd children on loopback, configured for pg-ha (Debian binaries,
 * runAs cluster-dispatcher, firewall backend none), one operator password, a spec/plan with a private port
 * range, and a teardown that goes through the API first (shutdown, cleanup), then stops the dispatchers,
 * and only as a last resort kills, by pid, any process whose argv still names this cluster's directory.
 *
 * Reused by the launch, rolling-restart and network tiers: startTestCluster({ n: 3 }) → TestCluster.
 *
 * Needs root, the pg-ha Debian packages and the `cluster-dispatcher` user (deploy/install-deps.sh).
 */
import { pidAlive } from '../../shared/procfs.js';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import type { Plan, SpecInput } from '../../api/plan.js';
import type { ClusterView, OperationView } from '../../api/rest.js';
import { DispatcherClient } from '../../client/dispatcher-client.js';
import { planFromSpec } from '../../launcher/planner.js';
import { PG_HA_DEBIAN_BINARIES, DEFAULT_RUN_AS } from '../../launcher/local.js';
import { portBusy } from '../../server/cluster/listening-sockets.js';
import { initDataDir, patchConfig, startDispatcherd, type DataDir, type RunningDispatcher } from './daemon.js';

/** Parent of every cluster test directory: 0711 so the unprivileged DB user can traverse, outside /tmp. */
// Short on purpose: Unix socket paths (HAProxy's stats socket, PostgreSQL's socket dir) must stay under
// 108 bytes, and they live deep inside <root>/<dispatcher>/data/<dataRoot>/<cluster>/<process>/.
export const TEST_ROOT = '/var/lib/cdtest';
export const PSQL = PG_HA_DEBIAN_BINARIES.psql;

export type Dispatcher = RunningDispatcher & { dir: DataDir };

/** Port names of the pg-ha engine, in the order they get offsets from the base (see portsFor). */
export const PG_HA_PORT_NAMES = ['agent.client', 'agent.peer', 'dbserver.postgres', 'dbserver.rest', 'coordinator.client', 'coordinator.readonly', 'coordinator.stats'] as const;

export interface TestClusterOptions {
  /** Number of dispatchers (default 3). */
  n?: number;
  /** Label used in the directory name. */
  label?: string;
  /** Extra config merged into every dispatcher's config.yaml (after the pg-ha defaults). */
  config?: Record<string, unknown>;
  /** Engines section (default pg-ha with Debian binaries). */
  engines?: Record<string, { binaries: Record<string, string> }>;
  /** Environment for every dispatcher (e.g. DISPATCHER_TEMPLATES_DIR). */
  env?: NodeJS.ProcessEnv;
}

export interface TestCluster {
  root: string;
  user: string;
  password: string;
  dispatchers: Dispatcher[];
  /** First port of this cluster's private range (see portsFor). */
  portBase: number;
  /** A spec over all dispatchers with this cluster's port range; fields override. */
  spec(over?: Partial<SpecInput>): SpecInput;
  plan(over?: Partial<SpecInput>): Plan;
  /** A pinned, authenticated client for dispatcher i (closed by teardown). */
  client(i: number): DispatcherClient;
  /** POSTs and answers the operation id (throws the DispatcherError of a non-2xx). */
  start(i: number, path: string, body?: unknown): Promise<string>;
  /** Polls GET /v1/operations/{id} on dispatcher i until it ends (bounded). */
  waitOp(i: number, id: string, timeoutMs?: number): Promise<OperationView>;
  /** start + waitOp. */
  run(i: number, path: string, body?: unknown, timeoutMs?: number): Promise<OperationView>;
  status(i: number): Promise<ClusterView>;
  /** Restarts dispatcher i on its old port with its old data dir (after stop() or kill9()). */
  restart(i: number): Promise<Dispatcher>;
  /** Pids of live processes whose argv names this cluster's directory (dispatchers included). */
  pids(): number[];
  /** Same, without the dispatchers. */
  enginePids(): number[];
  /** The superuser password of the pg-ha cluster (from dispatcher i's secrets file). */
  superuserPassword(i?: number): string;
  /** Writes a libpq password file for the superuser; returns its path. */
  pgpass(): string;
  /** Runs psql against host:port as postgres; resolves stdout, rejects with stderr. */
  psql(port: number, sql: string, opts?: { host?: string; timeoutMs?: number }): Promise<string>;
  /** Shutdown + (optionally) cleanup through the API, stop dispatchers, kill leftovers; removes the directory. */
  teardown(opts?: { keepDir?: boolean }): Promise<{ leaked: string[] }>;
}

function sleep(ms: number) {
  return new Promise((r) => setTimeout(r, ms));
}

/** Picks a free block of 30 consecutive loopback ports below the ephemeral range (20000-32000). */
export async function pickPortBase(width = 30): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = 20000 + Math.floor(Math.random() * 400) * 30;
    const checks = await Promise.all(Array.from({ length: width }, (_, k) => portBusy('127.0.0.1', base + k)));
    if (checks.every((c) => c === undefined)) return base;
  }
  throw new Error('no free block of loopback ports found in 20000-32000');
}

/** Spec `ports` overrides so that the pg-ha ports of this cluster are base+0..base+6 (+10 per dispatcher slot). */
export function portsFor(base: number): Record<string, number> {
  return Object.fromEntries(PG_HA_PORT_NAMES.map((n, k) => [n, base + k]));
}

/** argv of a live pid, or '' when gone. */
export function cmdlineOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').trim();
  } catch {
    return '';
  }
}

/** Live pids whose argv contains `needle` (the test process itself excluded). */
export function pidsMatching(needle: string): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const pid = Number(name);
    if (pid === process.pid) continue;
    const cmd = cmdlineOf(pid);
    if (cmd.includes(needle)) {
      // Zombies keep their cmdline empty; a live one is what matters.
      try {
        const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
        if (/\) Z /.test(stat)) continue;
      } catch {
        continue;
      }
      out.push(pid);
    }
  }
  return out;
}

export { pidAlive };

/** Last resort: TERM (INT for postgres), then KILL, every pid whose argv names `needle`. */
export async function killMatching(needle: string): Promise<string[]> {
  const found = pidsMatching(needle).map((p) => `${p} ${cmdlineOf(p)}`);
  for (const pid of pidsMatching(needle)) {
    try {
      process.kill(pid, /postgres/.test(cmdlineOf(pid)) ? 'SIGINT' : 'SIGTERM');
    } catch {
      /* gone */
    }
  }
  for (let i = 0; i < 50 && pidsMatching(needle).length; i++) await sleep(100);
  for (const pid of pidsMatching(needle)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  for (let i = 0; i < 20 && pidsMatching(needle).length; i++) await sleep(100);
  return found;
}

export async function startTestCluster(opts: TestClusterOptions = {}): Promise<TestCluster> {
  const n = opts.n ?? 3;
  mkdirSync(TEST_ROOT, { recursive: true, mode: 0o711 });
  chmodSync(TEST_ROOT, 0o711);
  const root = mkdtempSync(join(TEST_ROOT, `${opts.label ?? 'cluster'}-`));
  chmodSync(root, 0o711);
  const user = 'operator';
  const password = `pw-${Math.random().toString(36).slice(2)}-${Date.now()}`;
  const dispatchers: Dispatcher[] = [];
  const clients = new Map<number, DispatcherClient>();
  const portBase = await pickPortBase();
  const engines = opts.engines ?? { 'pg-ha': { binaries: PG_HA_DEBIAN_BINARIES } };

  const cleanupOnFail = async () => {
    for (const d of dispatchers) await d.stop(5000).catch(() => {});
    await killMatching(root);
    rmSync(root, { recursive: true, force: true });
  };
  try {
    const dirs = await Promise.all(
      Array.from({ length: n }, async (_, i) => {
        const droot = join(root, `d${i + 1}`);
        mkdirSync(droot, { mode: 0o711 });
        chmodSync(droot, 0o711);
        const dir = await initDataDir({ id: `d${i + 1}`, root: droot, addresses: ['127.0.0.1'] });
        patchConfig(dir.configFile, {
          engines,
          firewall: { backend: 'none', driftIntervalMs: 10_000 },
          runAs: DEFAULT_RUN_AS,
          ...opts.config,
        });
        return dir;
      }),
    );
    dispatchers.push(...(await Promise.all(dirs.map((dir) => startDispatcherd({ dir, user, password, env: opts.env, readyTimeoutMs: 30_000 })))));
  } catch (e) {
    await cleanupOnFail();
    throw e;
  }

  const tc: TestCluster = {
    root,
    user,
    password,
    dispatchers,
    portBase,
    spec(over = {}) {
      return {
        name: 'launch-test',
        engine: 'pg-ha',
        dispatchers: dispatchers.map((d) => ({ id: d.id, endpoint: d.url, fingerprint: d.fingerprint, addresses: ['127.0.0.1'] })),
        agents: 3,
        dbservers: 3,
        coordinators: 1,
        ports: portsFor(portBase),
        dataRoot: 'c',
        firewall: { backend: 'none' },
        ...over,
      } as SpecInput;
    },
    plan(over = {}) {
      return planFromSpec(tc.spec(over));
    },
    client(i) {
      let c = clients.get(i);
      if (!c) {
        const d = dispatchers[i];
        c = new DispatcherClient({ endpoint: d.url, fingerprint: d.fingerprint, credential: { user, password }, timeoutMs: 60_000 });
        clients.set(i, c);
      }
      return c;
    },
    async start(i, path, body = {}) {
      const r = await tc.client(i).post<{ operation: string }>(path, body);
      return r.operation;
    },
    async waitOp(i, id, timeoutMs = 240_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const v = await tc.client(i).get<OperationView>(`/v1/operations/${id}`);
        if (v.state !== 'running') return v;
        if (Date.now() > deadline) throw new Error(`operation ${id} still running after ${timeoutMs} ms; last events:\n${v.events.slice(-5).map((e) => e.message).join('\n')}`);
        await sleep(250);
      }
    },
    async run(i, path, body, timeoutMs) {
      return tc.waitOp(i, await tc.start(i, path, body), timeoutMs);
    },
    status(i) {
      return tc.client(i).get<ClusterView>('/v1/cluster');
    },
    async restart(i) {
      const old = dispatchers[i];
      await old.stop(5000);
      clients.get(i)?.close();
      clients.delete(i);
      const d = await startDispatcherd({ dir: old.dir, user, password, skipUser: true, port: old.port, env: opts.env, readyTimeoutMs: 30_000 });
      dispatchers[i] = d;
      return d;
    },
    pids() {
      return pidsMatching(root);
    },
    enginePids() {
      return pidsMatching(root).filter((p) => !/dispatcherd/.test(cmdlineOf(p)));
    },
    superuserPassword(i = 0) {
      const j = JSON.parse(readFileSync(join(dispatchers[i].dataDir, 'cluster', 'secrets.json'), 'utf8'));
      return j.secrets['superuser-password'];
    },
    pgpass() {
      const file = join(root, 'pgpass');
      writeFileSync(file, `*:*:*:postgres:${tc.superuserPassword()}\n`, { mode: 0o600 });
      return file;
    },
    psql(port, sql, o = {}) {
      const passfile = tc.pgpass();
      return new Promise((resolve, reject) => {
        execFile(
          PSQL,
          ['-h', o.host ?? '127.0.0.1', '-p', String(port), '-U', 'postgres', '-d', 'postgres', '-XtAq', '-v', 'ON_ERROR_STOP=1', '-c', sql],
          { env: { PATH: '/usr/bin:/bin', PGPASSFILE: passfile, PGCONNECT_TIMEOUT: '5' }, timeout: o.timeoutMs ?? 20_000 },
          (err, stdout, stderr) => (err ? reject(new Error(`psql -p ${port}: ${stderr || err.message}`)) : resolve(String(stdout).trim())),
        );
      });
    },
    async teardown(o = {}) {
      // Through the API first: any live dispatcher that knows the cluster shuts it down, then cleans up.
      for (let i = 0; i < dispatchers.length; i++) {
        const d = dispatchers[i];
        if (d.child.exitCode !== null || d.child.signalCode !== null) continue;
        try {
          const st = await tc.status(i);
          if (!st.name) continue;
          if (st.activeOperation) await tc.waitOp(i, st.activeOperation, 180_000).catch(() => {});
          const now = await tc.status(i);
          if (now.state === 'running' || now.state === 'launching' || now.state === 'failed') await tc.run(i, '/v1/cluster/shutdown', {}, 180_000);
          await tc.run(i, '/v1/cluster/cleanup', { confirmName: st.name }, 120_000).catch(() => {});
          break;
        } catch {
          /* try the next dispatcher */
        }
      }
      for (const c of clients.values()) c.close();
      clients.clear();
      await Promise.all(dispatchers.map((d) => d.stop(10_000)));
      const leaked = await killMatching(root);
      if (!o.keepDir) rmSync(root, { recursive: true, force: true });
      return { leaked };
    },
  };
  return tc;
}
