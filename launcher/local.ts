/**
 * `dispatch local`: the embedded default. Three dispatchers on loopback (own data dirs, certificates and
 * ports under one directory), a pg-ha cluster planned and launched through the first of them, and the CLI
 * left pointing at it (saved context "local"). Running it again is safe: it starts what is not running
 * and reports the cluster. `--down` shuts the cluster and the dispatchers down; `--purge` also deletes it.
 */
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { access, chmod, constants, mkdir, open, readFile, rm, writeFile } from 'node:fs/promises';
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import type { Command } from 'commander';
import { Option } from 'commander';
import YAML from 'yaml';
import { DispatcherError } from '../api/errors.js';
import type { ClusterView, OperationView } from '../api/rest.js';
import { writeFileAtomic } from '../server/atomic-file.js';
import { pidAlive } from '../server/supervisor/procfs.js';
import { PG_HA_DEBIAN_BINARIES } from '../server/engines/debian.js';
import { DispatcherClient } from './client.js';
import { removeContext, saveContext } from './context.js';
import { Kickstarter } from './kickstarter.js';
import { planFromSpec } from './planner.js';
import { defaultEngineCatalog } from '../server/engines/loader.js';
import { ROLE_ORDER } from '../api/plan.js';
import { progressMode, withProgress } from './progress.js';

const run = promisify(execFile);

export { PG_HA_DEBIAN_BINARIES };

/** The unprivileged user deploy/install-deps.sh creates; PostgreSQL refuses to run as root. */
export const DEFAULT_RUN_AS = 'cluster-dispatcher';

const DISPATCHERD = fileURLToPath(new URL('../../bin/dispatcherd', import.meta.url));

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
  const e = defaultEngineCatalog().get(engine);
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

const DISPATCHERS = ['local-1', 'local-2', 'local-3'];

function dataDirOf(dir: string, i: number) {
  return join(dir, DISPATCHERS[i]);
}

async function dispatcherd(args: string[]): Promise<string> {
  try {
    const { stdout } = await run(process.execPath, [DISPATCHERD, ...args], { timeout: 60_000 });
    return stdout;
  } catch (e: any) {
    throw new DispatcherError('operation_failed', `dispatcherd ${args[0]} failed: ${(e.stderr || e.message).trim()}`);
  }
}


/** The pid in a pid file, if that process is alive and is a dispatcherd. */
function runningDaemon(dataDir: string): number | undefined {
  try {
    const pid = Number(readFileSync(join(dataDir, 'dispatcherd.pid'), 'utf8').trim());
    if (!pid || !pidAlive(pid)) return undefined;
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    return cmdline.includes('dispatcherd') ? pid : undefined;
  } catch {
    return undefined;
  }
}

async function checkBinaries(): Promise<void> {
  const missing: string[] = [];
  for (const [name, path] of Object.entries(PG_HA_DEBIAN_BINARIES)) {
    try {
      await access(path, constants.X_OK);
    } catch {
      missing.push(`${name} (${path})`);
    }
  }
  if (missing.length) {
    throw new DispatcherError('preflight_failed', `the pg-ha programs are not installed: ${missing.join(', ')}. Run \`sudo bash deploy/install-deps.sh\` once (Debian packages etcd-server, patroni, postgresql-15, haproxy).`);
  }
}

/** Creates (once) a dispatcher's data dir, certificate, config and operator account. Returns its fingerprint. */
async function initDispatcher(opts: LocalOptions, i: number, passwordFile: string): Promise<{ id: string; endpoint: string; fingerprint: string; dataDir: string }> {
  const dataDir = dataDirOf(opts.dir, i);
  const id = DISPATCHERS[i];
  const port = opts.basePort + i;
  const out = await dispatcherd([
    'init', '--data-dir', dataDir, '--id', id, '--address', '127.0.0.1', '--port', String(port), '--listen', '127.0.0.1',
    ...(opts.runAs ? ['--engine', 'pg-ha', '--run-as', opts.runAs] : []),
  ]);
  const fingerprint = /fingerprint: (\S+)/.exec(out)?.[1];
  if (!fingerprint) throw new DispatcherError('internal', `dispatcherd init printed no fingerprint for ${id}`);
  const configFile = join(dataDir, 'config.yaml');
  const config = YAML.parse(await readFile(configFile, 'utf8')) as Record<string, unknown>;
  const wanted = {
    ...config,
    engines: { 'pg-ha': { binaries: PG_HA_DEBIAN_BINARIES } },
    firewall: { backend: 'none', driftIntervalMs: 10_000 },
    ...(opts.runAs ? { runAs: opts.runAs } : {}),
  };
  if (JSON.stringify(wanted) !== JSON.stringify(config)) {
    await writeFileAtomic(configFile, '# dispatcherd configuration of a local cluster (written by `dispatch local`)\n' + YAML.stringify(wanted), 0o600);
  }
  const users = await dispatcherd(['user', 'list', '--data-dir', dataDir]);
  if (!/^operator\t/m.test(users)) await dispatcherd(['user', 'add', 'operator', '--data-dir', dataDir, '--password-file', passwordFile]);
  return { id, endpoint: `https://127.0.0.1:${port}`, fingerprint, dataDir };
}

async function startDaemon(dataDir: string): Promise<number> {
  const existing = runningDaemon(dataDir);
  if (existing) return existing;
  const log = await open(join(dataDir, 'dispatcherd.out'), 'a', 0o600);
  const child = spawn(process.execPath, [DISPATCHERD, 'start', '--data-dir', dataDir], {
    detached: true,
    stdio: ['ignore', log.fd, log.fd],
  });
  child.unref();
  await log.close();
  await writeFile(join(dataDir, 'dispatcherd.pid'), `${child.pid}\n`, { mode: 0o600 });
  return child.pid!;
}

async function waitHealthy(client: DispatcherClient, dataDir: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    try {
      await client.get('/v1/health', { timeoutMs: 2000 });
      return;
    } catch (e) {
      last = (e as Error).message;
    }
    if (!runningDaemon(dataDir)) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  let tail = '';
  try {
    tail = (await readFile(join(dataDir, 'dispatcherd.out'), 'utf8')).split('\n').slice(-15).join('\n');
  } catch {}
  throw new DispatcherError('peer_unreachable', `dispatcher in ${dataDir} did not come up (${last}); its output:\n${tail}`);
}

async function stopDaemon(dataDir: string): Promise<void> {
  const pid = runningDaemon(dataDir);
  if (!pid) return;
  process.kill(pid, 'SIGTERM');
  for (let i = 0; i < 100 && pidAlive(pid); i++) await new Promise((r) => setTimeout(r, 100));
  if (pidAlive(pid)) process.kill(pid, 'SIGKILL');
  await rm(join(dataDir, 'dispatcherd.pid'), { force: true });
}

/** A libpq password file for the superuser, so the printed psql line needs no password on screen. */
async function writePgpass(opts: LocalOptions, view: ClusterView): Promise<string | undefined> {
  try {
    const secrets = JSON.parse(await readFile(join(dataDirOf(opts.dir, 0), 'cluster', 'secrets.json'), 'utf8')).secrets as Record<string, string>;
    const password = secrets['superuser-password'];
    if (!password) return undefined;
    const file = join(opts.dir, 'pgpass');
    const lines = view.coordinators.flatMap((c) => [c.port, c.readOnlyPort].filter(Boolean).map((p) => `${c.host}:${p}:*:postgres:${password}`));
    await writeFileAtomic(file, lines.join('\n') + '\n', 0o600);
    return file;
  } catch {
    return undefined;
  }
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
  const dispatchers: Awaited<ReturnType<typeof initDispatcher>>[] = [];
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
    return await waitClusterReady(client, opts.readyTimeoutMs);
  } finally {
    for (const c of clients) c.close();
  }
}

/** Polls /v1/cluster until every process is ready; refuses (operation_failed) naming those that are not. */
async function waitClusterReady(client: DispatcherClient, timeoutMs: number): Promise<ClusterView> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const view = await client.get<ClusterView>('/v1/cluster');
    const notReady = view.processes.filter((p) => p.state !== 'ready');
    if (view.processes.length > 0 && notReady.length === 0) return view;
    if (Date.now() > end) {
      throw new DispatcherError(
        'operation_failed',
        `cluster ${view.name ?? 'local'} is not healthy: ${notReady.map((p) => `${p.id} on ${p.host} is ${p.state}`).join(', ') || 'no processes'} (see \`dispatch logs PROCESS\`)`,
      );
    }
    await new Promise((r) => setTimeout(r, 500));
  }
}

export async function localDown(opts: LocalOptions & { purge: boolean }): Promise<void> {
  const passwordFile = join(opts.dir, 'operator.password');
  if (!existsSync(opts.dir)) {
    if (opts.purge) await removeContext('local').catch(() => {});
    return;
  }
  const say = (s: string) => {
    if (!opts.json) process.stderr.write(s + '\n');
  };
  const first = dataDirOf(opts.dir, 0);
  if (runningDaemon(first) && existsSync(passwordFile)) {
    const fingerprint = (await dispatcherd(['fingerprint', '--data-dir', first])).trim();
    const password = (await readFile(passwordFile, 'utf8')).trim();
    // The port the cluster was created with, whatever --base-port says now.
    const port = (YAML.parse(await readFile(join(first, 'config.yaml'), 'utf8')) as { port: number }).port;
    const endpoint = `https://127.0.0.1:${port}`;
    const client = new DispatcherClient({ endpoint, fingerprint, credential: { user: 'operator', password } });
    try {
      const mode = progressMode(opts.json);
      const view = await client.get<ClusterView>('/v1/cluster');
      const lines = view.processes.map((p) => ({ id: p.id, host: p.host }));
      if (view.state === 'running' || view.state === 'launching' || view.state === 'failed') {
        await withProgress('shutdown local cluster', mode, lines, (onEvent) => new Kickstarter(undefined, client, { onEvent }).shutdown());
      }
      if (opts.purge && view.name) {
        await withProgress('cleanup local cluster', mode, [], (onEvent) => new Kickstarter(undefined, client, { onEvent }).cleanup(view.name!));
      }
    } finally {
      client.close();
    }
  }
  for (let i = 0; i < DISPATCHERS.length; i++) await stopDaemon(dataDirOf(opts.dir, i));
  say('dispatchers stopped');
  if (opts.purge) {
    await rm(opts.dir, { recursive: true, force: true });
    await removeContext('local').catch(() => {});
    say(`removed ${opts.dir}`);
  }
}

export function registerLocalCommand(program: Command): void {
  program
    .command('local')
    .description('run a pg-ha cluster on this machine: three dispatchers on loopback, launched through the first; the CLI is left pointing at it')
    .addOption(new Option('--dbservers <n>', 'PostgreSQL/Patroni DB servers').default('3'))
    .addOption(new Option('--coordinators <n>', 'HAProxy coordinators').default('1'))
    .option('--dir <dir>', 'directory holding the local dispatchers (default: $DISPATCH_LOCAL_DIR, else /var/lib/cluster-dispatcher/local for root, ~/.local/share/cluster-dispatcher/local for others)')
    .addOption(new Option('--base-port <port>', 'HTTPS port of the first dispatcher (the others follow)').default('18528'))
    .option('--run-as <user>', `unprivileged user for the database processes (default when root: ${DEFAULT_RUN_AS})`)
    .addOption(new Option('--engine-port-offset <n>', 'add N to every pg-ha default port (etcd 2381/2382, postgres 5433, patroni 8008, haproxy 5000/5001/7000)').default('0'))
    .addOption(new Option('--ready-timeout <seconds>', 'how long each process may take to become ready').default('120'))
    .option('--down', 'shut the local cluster and its dispatchers down (data stays)')
    .option('--purge', 'with --down: also delete the cluster, its data and the dispatchers')
    .addHelpText('after', '\nFirst run on a fresh Debian machine: `sudo bash deploy/install-deps.sh` (packages and the unprivileged user).')
    .action(async (o, cmd) => {
      const g = cmd.optsWithGlobals();
      const num = (v: string, what: string, min: number) => {
        if (!/^\d+$/.test(v) || Number(v) < min) throw new DispatcherError('bad_request', `--${what} must be a whole number ≥ ${min}, got ${v}`);
        return Number(v);
      };
      const opts: LocalOptions = {
        dir: o.dir ?? defaultLocalDir(),
        dbservers: num(o.dbservers, 'dbservers', 1),
        coordinators: num(o.coordinators, 'coordinators', 1),
        basePort: num(o.basePort, 'base-port', 1),
        runAs: o.runAs ?? (process.getuid?.() === 0 ? DEFAULT_RUN_AS : undefined),
        json: !!g.json,
        readyTimeoutMs: num(o.readyTimeout, 'ready-timeout', 1) * 1000,
        enginePortOffset: num(o.enginePortOffset, 'engine-port-offset', 0),
      };
      if (o.purge && !o.down) throw new DispatcherError('bad_request', '--purge goes with --down');
      if (o.down) return localDown({ ...opts, purge: !!o.purge });
      const view = await localUp(opts);
      const pgpass = await writePgpass(opts, view);
      const c = view.coordinators[0];
      if (g.json) {
        process.stdout.write(
          JSON.stringify({
            cluster: view.name,
            state: view.state,
            coordinators: view.coordinators,
            ...(c ? { url: `postgresql://postgres@${c.host}:${c.port}/postgres`, ...(c.readOnlyPort ? { readOnlyUrl: `postgresql://postgres@${c.host}:${c.readOnlyPort}/postgres` } : {}) } : {}),
            ...(pgpass ? { pgpassFile: pgpass } : {}),
          }) + '\n',
        );
        return;
      }
      process.stdout.write(`\ncluster ${view.name} is ${view.state}.\n`);
      if (c) {
        process.stdout.write(`coordinator (read-write): ${c.host}:${c.port}${c.readOnlyPort ? `   read-only: ${c.host}:${c.readOnlyPort}` : ''}\n`);
        process.stdout.write(`connect:  PGPASSFILE=${pgpass ?? '<pgpass>'} psql -h ${c.host} -p ${c.port} -U postgres postgres\n`);
      }
      process.stdout.write(`then:     dispatch status · dispatch restart · dispatch shell · dispatch local --down [--purge]\n`);
    });
}
