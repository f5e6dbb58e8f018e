/**
 * `dispatch local`: the embedded default. Three dispatchers on loopback (own data dirs, certificates and
 * ports under one directory; launcher/local-dispatchers.ts), a pg-ha cluster planned and launched through
 * the first of them, and the CLI left pointing at it (saved context "local"). Running it again is safe: it
 * starts what is not running and reports the cluster. `--down` shuts the cluster and the dispatchers down;
 * `--purge` also deletes it. The command itself is launcher/commands/local.ts.
 */
import { chmod, mkdir, readFile, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import YAML from 'yaml';
import type { ClusterConnectionView, ClusterView, OperationView } from '../api/rest.js';
import { ROLE_ORDER } from '../api/plan.js';
import { DispatcherError } from '../api/errors.js';
import { pollUntil } from '../shared/poll.js';
import { processesUnder } from '../shared/procfs.js';
import { DispatcherClient } from '../client/dispatcher-client.js';
import { writeFileAtomic } from '../shared/atomic-file.js';
import { PG_HA_DEBIAN_BINARIES } from '../server/engines/debian.js';
import { removeContext, saveContext } from './context.js';
import { Kickstarter } from './kickstarter.js';
import { installedEngines, planFromSpec } from './planner.js';
import { progressMode, withProgress } from './progress.js';
import {
  DISPATCHERS,
  checkBinaries,
  dataDirOf,
  dispatcherd,
  initDispatcher,
  runningDaemon,
  startDaemon,
  stopDaemon,
  waitHealthy,
  type LocalDispatcher,
} from './local-dispatchers.js';

export { PG_HA_DEBIAN_BINARIES };

/** The unprivileged user deploy/install-deps.sh creates; PostgreSQL refuses to run as root. */
export const DEFAULT_RUN_AS = 'cluster-dispatcher';

export interface LocalOptions {
  dir: string;
  dbservers: number;
  coordinators: number;
  basePort: number;
  runAs?: string;
  json: boolean;
  readyTimeoutMs: number;
  /** Added to every engine default port (two local clusters side by side, or a test next to a real one). */
  enginePortOffset?: number;
}

/** spec.ports overrides moving every port of an engine by `offset`. */
function shiftedPorts(engine: string, offset: number): Record<string, number> | undefined {
  if (!offset) return undefined;
  const e = installedEngines().get(engine);
  if (!e) throw new DispatcherError('validation_failed', `unknown engine "${engine}"`);
  return Object.fromEntries(ROLE_ORDER.flatMap((role) => e.roles[role].ports.map((p) => [`${role}.${p.name}`, p.default + offset] as const)));
}

/**
 * Root's home is closed to the unprivileged user the database runs as, so root's local clusters live
 * under /var/lib; everybody else's under their own home.
 */
export function defaultLocalDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.DISPATCH_LOCAL_DIR) return env.DISPATCH_LOCAL_DIR;
  return process.getuid?.() === 0 ? '/var/lib/cluster-dispatcher/local' : join(homedir(), '.local', 'share', 'cluster-dispatcher', 'local');
}

/**
 * A libpq password file for the superuser, so the printed psql line needs no password on screen. The
 * first dispatcher writes it (`dispatcherd pgpass`): the cluster's secrets are the daemon's, not ours to read.
 */
export async function writePgpass(opts: LocalOptions): Promise<string> {
  const file = join(opts.dir, 'pgpass');
  await dispatcherd(['pgpass', '--data-dir', dataDirOf(opts.dir, 0), '--output', file]);
  return file;
}

/** Where `dispatch local` keeps the cluster CA certificate (0644: a certificate, no secret). */
export function caFileOf(opts: Pick<LocalOptions, 'dir'>): string {
  return join(opts.dir, 'ca.crt');
}

/**
 * The cluster CA next to the pgpass, from the API (GET /v1/cluster/connection), so clients can verify the
 * coordinator (PgBouncer presents a certificate of the cluster CA) with sslmode=verify-full
 * (docs/SECURITY.md, "Cluster-internal TLS").
 */
async function writeCaFile(opts: LocalOptions, client: DispatcherClient): Promise<void> {
  const conn = await client.get<ClusterConnectionView>('/v1/cluster/connection');
  await writeFileAtomic(caFileOf(opts), conn.caCertificate, 0o644);
}

/** Polls /v1/cluster until every process is ready; refuses (operation_failed) naming those that are not. */
async function waitClusterReady(client: DispatcherClient, timeoutMs: number): Promise<ClusterView> {
  return pollUntil(
    () => client.get<ClusterView>('/v1/cluster'),
    (view) => view.processes.length > 0 && view.processes.every((p) => p.state === 'ready'),
    {
      timeoutMs,
      intervalMs: 500,
      onTimeout: (view) =>
        new DispatcherError(
          'operation_failed',
          `cluster ${view?.name ?? 'local'} is not healthy: ${view?.processes.filter((p) => p.state !== 'ready').map((p) => `${p.id} on ${p.host} is ${p.state}`).join(', ') || 'no processes'} (see \`dispatch logs PROCESS\`)`,
        ),
    },
  );
}

export async function localUp(opts: LocalOptions): Promise<ClusterView> {
  await checkBinaries();
  // 0711: the database user may pass through to its own process dirs; nothing here can be listed.
  await mkdir(opts.dir, { recursive: true, mode: 0o711 });
  if (opts.runAs) await chmod(opts.dir, 0o711);
  const passwordFile = join(opts.dir, 'operator.password');
  if (!existsSync(passwordFile)) await writeFileAtomic(passwordFile, randomBytes(24).toString('base64url') + '\n', 0o600);
  const password = (await readFile(passwordFile, 'utf8')).trim();
  const mode = progressMode(opts.json);
  const say = (s: string) => {
    if (mode !== 'json') process.stderr.write(s + '\n');
  };

  say(`local cluster directory: ${opts.dir}`);
  const dispatchers: LocalDispatcher[] = [];
  for (let i = 0; i < DISPATCHERS.length; i++) dispatchers.push(await initDispatcher(opts, i, passwordFile));
  for (const d of dispatchers) {
    const pid = await startDaemon(d.dataDir);
    say(`dispatcher ${d.id}: ${d.endpoint} (pid ${pid})`);
  }
  const clients = dispatchers.map((d) => new DispatcherClient({ endpoint: d.endpoint, fingerprint: d.fingerprint, credential: { user: 'operator', password } }));
  try {
    await Promise.all(clients.map((c, i) => waitHealthy(c, dispatchers[i].dataDir)));
    await saveContext('local', { endpoint: dispatchers[0].endpoint, fingerprint: dispatchers[0].fingerprint, user: 'operator', passwordFile, localDir: opts.dir });
    const client = clients[0];
    let view = await client.get<ClusterView>('/v1/cluster');
    if (view.state !== 'running') {
      const kind = view.name && view.state !== 'cleaned' ? 'relaunch' : 'launch';
      const plan =
        kind === 'launch'
          ? planFromSpec({
              name: 'local',
              engine: 'pg-ha',
              dispatchers: dispatchers.map((d) => ({ id: d.id, endpoint: d.endpoint, fingerprint: d.fingerprint, addresses: ['127.0.0.1'] })),
              agents: 3,
              dbservers: opts.dbservers,
              coordinators: opts.coordinators,
              firewall: { backend: 'none' },
              ...(opts.enginePortOffset ? { ports: shiftedPorts('pg-ha', opts.enginePortOffset) } : {}),
            })
          : undefined;
      const lines = (plan?.processes ?? view.processes.map((p) => ({ id: p.id, dispatcher: p.host }))).map((p) => ({ id: p.id, host: p.dispatcher }));
      await withProgress(`${kind} local pg-ha cluster`, mode, lines, async (onEvent) => {
        const k = new Kickstarter(plan, client, { onEvent, readyTimeoutMs: opts.readyTimeoutMs });
        const op: OperationView = kind === 'launch' ? await k.launch() : await k.relaunch();
        return op;
      });
      view = await client.get<ClusterView>('/v1/cluster');
    } else {
      say('cluster local is recorded as running; checking that every process is ready');
    }
    // Success only when the cluster is healthy: after a reboot the daemons restart their processes
    // themselves, and "running" in the record says nothing about whether they came up.
    const ready = await waitClusterReady(client, opts.readyTimeoutMs);
    await writeCaFile(opts, client);
    return ready;
  } finally {
    for (const c of clients) c.close();
  }
}

/** A client of local dispatcher i, if its daemon answers (its own port, whatever --base-port says now). */
async function answeringClient(opts: LocalOptions, i: number, password: string): Promise<DispatcherClient | undefined> {
  const dataDir = dataDirOf(opts.dir, i);
  if (!runningDaemon(dataDir)) return undefined;
  const fingerprint = (await dispatcherd(['fingerprint', '--data-dir', dataDir])).trim();
  const port = (YAML.parse(await readFile(join(dataDir, 'config.yaml'), 'utf8')) as { port: number }).port;
  const client = new DispatcherClient({ endpoint: `https://127.0.0.1:${port}`, fingerprint, credential: { user: 'operator', password } });
  try {
    await waitHealthy(client, dataDir);
    return client;
  } catch {
    client.close();
    return undefined;
  }
}

/** Refuses (409, exit 1) to delete `dir` while a process still runs from it, naming each. */
function refuseWhileRunning(dir: string, what: string, except: number[] = []): void {
  const running = processesUnder(dir).filter((p) => !except.includes(p.pid));
  if (running.length) {
    throw new DispatcherError('conflict', `refusing to ${what}: ${running.length} process(es) of the local cluster still run from ${dir} (nothing was deleted):\n${running.map((p) => `  pid ${p.pid} (uid ${p.uid ?? '?'}): ${p.command}`).join('\n')}\nStop them (dispatch local --down, or by pid) and run --down --purge again.`, {
      details: { pids: running.map((p) => p.pid) },
    });
  }
}

/**
 * `--down`: shuts the cluster down through whichever local dispatcher answers, after starting the ones
 * that are not running (a dispatcher that is down cannot stop its processes), then stops the dispatchers.
 * `--purge` then deletes everything, but never under a running process: it checks /proc before the
 * cluster's cleanup and again before removing the directory (docs/SECURITY.md, "Local cluster").
 */
export async function localDown(opts: LocalOptions & { purge: boolean }): Promise<void> {
  const passwordFile = join(opts.dir, 'operator.password');
  if (!existsSync(opts.dir)) {
    if (opts.purge) await removeContext('local');
    return;
  }
  const say = (s: string) => {
    if (!opts.json) process.stderr.write(s + '\n');
  };
  const initialised = DISPATCHERS.map((_, i) => existsSync(join(dataDirOf(opts.dir, i), 'config.yaml')));
  if (existsSync(passwordFile)) {
    const password = (await readFile(passwordFile, 'utf8')).trim();
    for (let i = 0; i < DISPATCHERS.length; i++) {
      if (initialised[i] && !runningDaemon(dataDirOf(opts.dir, i))) {
        const pid = await startDaemon(dataDirOf(opts.dir, i));
        say(`dispatcher ${DISPATCHERS[i]} was not running: started it (pid ${pid}) so that it stops its part of the cluster`);
      }
    }
    let client: DispatcherClient | undefined;
    for (let i = 0; i < DISPATCHERS.length && !client; i++) if (initialised[i]) client = await answeringClient(opts, i, password);
    if (client) {
      try {
        const mode = progressMode(opts.json);
        const view = await client.get<ClusterView>('/v1/cluster');
        const lines = view.processes.map((p) => ({ id: p.id, host: p.host }));
        if (view.state === 'running' || view.state === 'launching' || view.state === 'failed') {
          await withProgress('shutdown local cluster', mode, lines, (onEvent) => new Kickstarter(undefined, client!, { onEvent }).shutdown());
        }
        if (opts.purge && view.name) {
          const daemons = DISPATCHERS.map((_, i) => runningDaemon(dataDirOf(opts.dir, i))).filter((p): p is number => p !== undefined);
          refuseWhileRunning(opts.dir, 'clean up the local cluster', daemons);
          await withProgress('cleanup local cluster', mode, [], (onEvent) => new Kickstarter(undefined, client!, { onEvent }).cleanup(view.name!));
        }
      } finally {
        client.close();
      }
    } else {
      say('no local dispatcher answers: the cluster could not be shut down through one');
    }
  }
  for (let i = 0; i < DISPATCHERS.length; i++) await stopDaemon(dataDirOf(opts.dir, i));
  say('dispatchers stopped');
  if (opts.purge) {
    refuseWhileRunning(opts.dir, `remove ${opts.dir}`);
    await rm(opts.dir, { recursive: true, force: true });
    await removeContext('local');
    say(`removed ${opts.dir}`);
  }
}
