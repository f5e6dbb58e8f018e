/**
 * The three loopback dispatchers of `dispatch local`: created once with `dispatcherd init` (argv, never a
 * shell), started detached, waited for until healthy, and stopped by pid. Only this file knows their data
 * dirs, pid files and ports; the cluster flow (launcher/local.ts) asks it for clients.
 */
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { access, constants, open, readFile, rm, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import { DispatcherError } from '../api/errors.js';
import { DispatcherClient } from '../client/dispatcher-client.js';
import { writeFileAtomic } from '../shared/atomic-file.js';
import { pollUntil } from '../shared/poll.js';
import { pidAlive } from '../shared/procfs.js';
import { stopWithGrace } from '../shared/stop-with-grace.js';
import { PG_HA_DEBIAN_BINARIES } from '../server/engines/debian.js';

const run = promisify(execFile);

const DISPATCHERD = fileURLToPath(new URL('../../bin/dispatcherd', import.meta.url));

/**
 * V8 settings of a running daemon, the same as bin/dispatcherd's `#!` line (which systemd and
 * `dispatch deploy` execute directly): a young generation of 1 MiB semi-spaces instead of up to 16 MiB
 * keeps an idle daemon ~8 MiB smaller at no measurable cost in request throughput (docs/BENCHMARKS.md,
 * "Daemon memory and authenticated throughput"). Here the daemon is started through node itself.
 */
export const DAEMON_NODE_FLAGS = ['--max-semi-space-size=1'];

export const DISPATCHERS = ['local-1', 'local-2', 'local-3'];

export interface LocalDispatcher {
  id: string;
  endpoint: string;
  fingerprint: string;
  dataDir: string;
}

export function dataDirOf(dir: string, i: number): string {
  return join(dir, DISPATCHERS[i]);
}

/** Runs `dispatcherd ARGS` and returns its stdout; a failure names the subcommand and what it printed. */
export async function dispatcherd(args: string[]): Promise<string> {
  try {
    const { stdout } = await run(process.execPath, [DISPATCHERD, ...args], { timeout: 60_000 });
    return stdout;
  } catch (e: any) {
    throw new DispatcherError('operation_failed', `dispatcherd ${args[0]} failed: ${(e.stderr || e.message).trim()}`, { cause: e });
  }
}

/** The pid in a pid file, if that process is alive and is a dispatcherd. */
export function runningDaemon(dataDir: string): number | undefined {
  let pid: number;
  try {
    pid = Number(readFileSync(join(dataDir, 'dispatcherd.pid'), 'utf8').trim());
  } catch {
    return undefined; // no pid file: never started (or stopped cleanly)
  }
  if (!pid || !pidAlive(pid)) return undefined;
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('dispatcherd') ? pid : undefined;
  } catch {
    return undefined; // gone between the two reads
  }
}

export async function checkBinaries(): Promise<void> {
  const missing: string[] = [];
  for (const [name, path] of Object.entries(PG_HA_DEBIAN_BINARIES)) {
    try {
      await access(path, constants.X_OK);
    } catch {
      missing.push(`${name} (${path})`);
    }
  }
  if (missing.length) {
    throw new DispatcherError('preflight_failed', `the pg-ha programs are not installed: ${missing.join(', ')}. Run \`bash deploy/install-deps.sh\` once as root (Debian packages etcd-server, patroni, postgresql-15, haproxy, pgbouncer).`);
  }
}

/** Creates (once) a dispatcher's data dir, certificate, config and operator account. */
export async function initDispatcher(opts: { dir: string; basePort: number; runAs?: string }, i: number, passwordFile: string): Promise<LocalDispatcher> {
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

export async function startDaemon(dataDir: string): Promise<number> {
  const existing = runningDaemon(dataDir);
  if (existing) return existing;
  const log = await open(join(dataDir, 'dispatcherd.out'), 'a', 0o600);
  const child = spawn(process.execPath, [...DAEMON_NODE_FLAGS, DISPATCHERD, 'start', '--data-dir', dataDir], {
    detached: true,
    stdio: ['ignore', log.fd, log.fd],
  });
  child.unref();
  await log.close();
  await writeFile(join(dataDir, 'dispatcherd.pid'), `${child.pid}\n`, { mode: 0o600 });
  return child.pid!;
}

/** Waits until the dispatcher answers /v1/health; gives up early when its process is gone, showing its output. */
export async function waitHealthy(client: DispatcherClient, dataDir: string, timeoutMs = 30_000): Promise<void> {
  type Attempt = { ok: boolean; detail: string; gone: boolean };
  const attempt = async (): Promise<Attempt> => {
    try {
      await client.get('/v1/health', { timeoutMs: 2000 });
      return { ok: true, detail: '', gone: false };
    } catch (e) {
      return { ok: false, detail: (e as Error).message, gone: !runningDaemon(dataDir) };
    }
  };
  // Both "healthy" and "its process is gone" end the wait; only the first is success.
  const timedOut = new Error('timed out');
  let last: Attempt = { ok: false, detail: 'no answer yet', gone: false };
  const result = await pollUntil(attempt, (a) => a.ok || a.gone, { timeoutMs, intervalMs: 200, onPending: (a) => (last = a), onTimeout: () => timedOut }).catch((e) => {
    if (e === timedOut) return last;
    throw e;
  });
  if (!result.ok) throw await notUp(dataDir, result.detail);
}

async function notUp(dataDir: string, last: string): Promise<DispatcherError> {
  const tail = await readFile(join(dataDir, 'dispatcherd.out'), 'utf8').then(
    (t) => t.split('\n').slice(-15).join('\n'),
    (e: NodeJS.ErrnoException) => `(no output: ${e.code ?? e.message})`,
  );
  return new DispatcherError('peer_unreachable', `dispatcher in ${dataDir} did not come up (${last}); its output:\n${tail}`);
}

export async function stopDaemon(dataDir: string): Promise<void> {
  const pid = runningDaemon(dataDir);
  if (!pid) return;
  await stopWithGrace(pid, { signal: 'SIGTERM', graceMs: 10_000 });
  await rm(join(dataDir, 'dispatcherd.pid'), { force: true });
}
