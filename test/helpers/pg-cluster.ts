/**
 * A real pg-ha cluster on loopback for the cluster tier and the rolling-restart bench: three real
 * dispatcherd children (test/helpers/daemon.ts), the Debian pg-ha binaries, processes as the unprivileged
 * user deploy/install-deps.sh creates, firewall backend none, and a port range of its own so it can run
 * next to other clusters on the same machine. Also: a bounded psql writer through the coordinators.
 * Needs root and the pg-ha packages (deploy/install-deps.sh).
 */
import { execFile } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DispatcherClient } from '../../client/dispatcher-client.js';
import { planFromSpec } from '../../launcher/planner.js';
import { PG_HA_DEBIAN_BINARIES } from '../../launcher/local.js';
import type { Plan } from '../../api/plan.js';
import type { OperationView } from '../../api/rest.js';
import { initDataDir, patchConfig, startDispatcherd, type DataDir, type RunningDispatcher } from './daemon.js';

export const PSQL = '/usr/lib/postgresql/15/bin/psql';
export const WRAPPER_DIR = '/usr/local/lib/cluster-dispatcher-test';

/** Wrapper scripts that exec the real programs: a "new version" at a different path. */
export const WRAPPERS = {
  etcd: `${WRAPPER_DIR}/etcd-wrapper`,
  python3: `${WRAPPER_DIR}/patroni-wrapper`,
  haproxy: `${WRAPPER_DIR}/haproxy-wrapper`,
  broken: `${WRAPPER_DIR}/broken-wrapper`,
};

export function writeWrappers(): void {
  mkdirSync(WRAPPER_DIR, { recursive: true, mode: 0o755 });
  writeFileSync(WRAPPERS.etcd, '#!/bin/sh\n# fake etcd 3.4.23-next\nexec /usr/bin/etcd "$@"\n', { mode: 0o755 });
  // dbserver's program is python3 running patroni: the wrapper replaces python3 in argv[0].
  writeFileSync(WRAPPERS.python3, '#!/bin/sh\n# fake patroni 3.0.2-next\nexec /usr/bin/python3 "$@"\n', { mode: 0o755 });
  writeFileSync(WRAPPERS.haproxy, '#!/bin/sh\n# fake haproxy 2.6-next\nexec /usr/sbin/haproxy "$@"\n', { mode: 0o755 });
  breakWrapper(true);
}

/** The broken wrapper exits at once (a DB server that never becomes ready), or is fixed to exec python3. */
export function breakWrapper(broken: boolean): void {
  writeFileSync(WRAPPERS.broken, broken ? '#!/bin/sh\necho "broken on purpose" >&2\nexit 1\n' : '#!/bin/sh\nexec /usr/bin/python3 "$@"\n', { mode: 0o755 });
  chmodSync(WRAPPERS.broken, 0o755);
}

export interface PgCluster {
  plan: Plan;
  dispatchers: (RunningDispatcher & { dir: DataDir })[];
  client(i?: number): DispatcherClient;
  superuserPassword: string;
  pgpass: string;
  coordinatorPorts: number[];
  /** Restarts dispatcher i (same data dir and port), e.g. after kill -9. */
  restartDispatcher(i: number): Promise<void>;
  close(): Promise<void>;
}

/** A dispatcher's client certificate for the cluster's etcd and Patroni (root reads it from its store). */
export function dispatcherClientTls(dataDir: string): { ca: string; cert: string; key: string } {
  const t = JSON.parse(readFileSync(join(dataDir, 'cluster', 'tls.json'), 'utf8')) as { ca: string; certs: Record<string, string>; keys: Record<string, string> };
  return { ca: t.ca, cert: t.certs['@dispatcher'], key: t.keys['@dispatcher'] };
}

export async function waitOperation(c: DispatcherClient, id: string, timeoutMs: number, onView?: (v: OperationView) => void): Promise<OperationView> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let v: OperationView | undefined;
    try {
      v = await c.get<OperationView>(`/v1/operations/${id}`, { timeoutMs: 5000 });
      onView?.(v);
      if (v.state !== 'running') return v;
    } catch {
      /* dispatcher restarting */
    }
    if (Date.now() > deadline) throw new Error(`operation ${id} still ${v?.state ?? 'unknown'} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

export async function startPgCluster(opts: { name: string; basePort: number; coordinators?: number; root?: string; config?: Record<string, unknown> }): Promise<PgCluster> {
  writeWrappers();
  const root = opts.root ?? mkdtempSync('/tmp/rr-cluster-');
  chmodSync(root, 0o711);
  const dispatchers: PgCluster['dispatchers'] = [];
  const clients: DispatcherClient[] = [];
  const close = async () => {
    for (const c of clients) c.close();
    await Promise.all(dispatchers.map((d) => d.stop(20_000)));
  };
  try {
    for (let i = 0; i < 3; i++) {
      const sub = join(root, `d${i + 1}`);
      mkdirSync(sub, { mode: 0o711 });
      const dir = await initDataDir({ id: `${opts.name}-d${i + 1}`, addresses: ['127.0.0.1'], root: sub });
      chmodSync(sub, 0o711);
      patchConfig(dir.configFile, {
        engines: {
          'pg-ha': {
            // Per program, the paths an upgrade may choose (the Debian path first: the default).
            binaries: {
              ...PG_HA_DEBIAN_BINARIES,
              etcd: [PG_HA_DEBIAN_BINARIES.etcd, WRAPPERS.etcd],
              python3: [PG_HA_DEBIAN_BINARIES.python3, WRAPPERS.python3, WRAPPERS.broken],
              haproxy: [PG_HA_DEBIAN_BINARIES.haproxy, WRAPPERS.haproxy],
            },
          },
        },
        firewall: { backend: 'none', driftIntervalMs: 10_000 },
        runAs: 'cluster-dispatcher',
        ...(opts.config ?? {}),
      });
      dispatchers.push(await startDispatcherd({ dir }));
    }
    const b = opts.basePort;
    const plan = planFromSpec({
      name: opts.name,
      engine: 'pg-ha',
      dispatchers: dispatchers.map((d) => ({ id: d.id, endpoint: d.url, fingerprint: d.fingerprint, addresses: ['127.0.0.1'] })),
      agents: 3,
      dbservers: 3,
      coordinators: opts.coordinators ?? 2,
      ports: {
        'agent.client': b,
        'agent.peer': b + 1,
        'dbserver.postgres': b + 100,
        'dbserver.rest': b + 101,
        'coordinator.client': b + 200,
        'coordinator.readonly': b + 201,
        'coordinator.stats': b + 202,
        'coordinator.router': b + 203,
      },
      firewall: { backend: 'none' },
    });
    const client = (i = 0) => {
      const d = dispatchers[i];
      const c = new DispatcherClient({ endpoint: d.url, fingerprint: d.fingerprint, credential: { user: d.user, password: d.password }, timeoutMs: 30_000 });
      clients.push(c);
      return c;
    };
    const c0 = client(0);
    const { operation } = await c0.post<{ operation: string }>('/v1/cluster/launch', { plan, readyTimeoutMs: 90_000 });
    const op = await waitOperation(c0, operation, 120_000);
    if (op.state !== 'succeeded') throw new Error(`launch failed: ${op.error?.message}\n${op.events.slice(-10).map((e) => e.message).join('\n')}`);
    const secrets = JSON.parse(readFileSync(join(dispatchers[0].dataDir, 'cluster', 'secrets.json'), 'utf8')).secrets as Record<string, string>;
    const coordinatorPorts = plan.processes.filter((p) => p.role === 'coordinator').map((p) => p.ports.find((x) => x.name === 'client')!.port);
    const pgpass = join(root, 'pgpass');
    writeFileSync(pgpass, coordinatorPorts.map((p) => `127.0.0.1:${p}:*:postgres:${secrets['superuser-password']}`).join('\n') + '\n', { mode: 0o600 });
    return {
      plan,
      dispatchers,
      client,
      superuserPassword: secrets['superuser-password'],
      pgpass,
      coordinatorPorts,
      async restartDispatcher(i) {
        const d = dispatchers[i];
        dispatchers[i] = await startDispatcherd({ dir: d.dir, skipUser: true, port: d.port, user: d.user, password: d.password });
      },
      async close() {
        try {
          const c = client(0);
          const { operation } = await c.post<{ operation: string }>('/v1/cluster/shutdown', {});
          await waitOperation(c, operation, 120_000);
          const cl = await c.post<{ operation: string }>('/v1/cluster/cleanup', { confirmName: opts.name });
          await waitOperation(c, cl.operation, 120_000);
        } catch {
          /* best effort; dispatchers stop below */
        }
        await close();
        rmSync(root, { recursive: true, force: true });
      },
    };
  } catch (e) {
    await close();
    throw e;
  }
}

/** One SQL statement through a coordinator port (psql, PGPASSFILE); rejects with psql's stderr. */
export function sql(pgpass: string, port: number, statement: string, timeoutMs = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(PSQL, [`host=127.0.0.1 port=${port} user=postgres dbname=postgres connect_timeout=2`, '-XtAq', '-c', statement], { env: { PGPASSFILE: pgpass, PATH: '/usr/bin:/bin' }, timeout: timeoutMs }, (err, stdout, stderr) =>
      err ? reject(new Error(String(stderr).trim() || err.message)) : resolve(String(stdout).trim()),
    );
  });
}

export interface WriterResult {
  acked: number[];
  failedAttempts: number;
  /** Longest time between two acknowledged writes (ms): the client-visible outage. */
  longestGapMs: number;
  attempts: number;
}

/**
 * A bounded writer: numbered INSERTs (one psql call each) through the coordinators, the next coordinator on
 * a connection error, until `stop()` or maxRows. Each row is retried until acknowledged or the writer stops.
 */
export function startWriter(pgpass: string, ports: number[], table: string, opts: { maxRows?: number; maxMs?: number } = {}) {
  let stopped = false;
  const res: WriterResult = { acked: [], failedAttempts: 0, longestGapMs: 0, attempts: 0 };
  const t0 = Date.now();
  const done = (async () => {
    let last = Date.now();
    let k = 0;
    for (let n = 1; !stopped && n <= (opts.maxRows ?? 100_000) && Date.now() - t0 < (opts.maxMs ?? 300_000); n++) {
      for (;;) {
        // Bounded even when every attempt fails (a test that failed before stop() must not spin forever).
        if (stopped || Date.now() - t0 >= (opts.maxMs ?? 300_000)) break;
        res.attempts++;
        try {
          // 12 s: a statement PgBouncer holds during a rolling restart's pause (bounded at 10 s) is latency,
          // reported as the longest gap, not a failure.
          await sql(pgpass, ports[k % ports.length], `INSERT INTO ${table} (n) VALUES (${n}) ON CONFLICT DO NOTHING`, 12_000);
          const now = Date.now();
          res.longestGapMs = Math.max(res.longestGapMs, now - last);
          last = now;
          res.acked.push(n);
          break;
        } catch {
          res.failedAttempts++;
          k++;
          await new Promise((r) => setTimeout(r, 20));
        }
      }
    }
    return res;
  })();
  return {
    stop: async () => {
      stopped = true;
      return done;
    },
  };
}
