/**
 * A `dispatch local` cluster for tests that drive it from outside (the CLI, a browser): the real CLI with
 * its own DISPATCH_CONFIG_DIR and DISPATCH_LOCAL_DIR, a private dispatcher port range and engine port
 * offset, so it never touches a developer's own local cluster. Brought down with `--down --purge`;
 * killMatching is the last resort.
 */
import { execFile } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { portBusy } from '../../server/cluster/listening-sockets.js';
import { REPO_ROOT, cleanEnv } from './daemon.js';
import { TEST_ROOT, killMatching } from './cluster.js';

export interface LocalCluster {
  localDir: string;
  basePort: number;
  offset: number;
  /** Endpoint, certificate (PEM) and operator password of the first dispatcher. */
  endpoint: string;
  cert: string;
  password: string;
  dispatch: DispatchRun;
  /** `dispatch local --down --purge`, then kills anything of it still running; returns what it had to kill. */
  destroy(): Promise<string[]>;
}

/** Free ports for 3 dispatchers and (offset) for the 3 port sets of the pg-ha engine. */
export async function pickPorts(): Promise<{ basePort: number; offset: number }> {
  const engineDefaults = [2381, 2382, 5433, 8008, 5000, 5001, 7000];
  for (let attempt = 0; attempt < 50; attempt++) {
    const offset = 15000 + Math.floor(Math.random() * 50) * 100;
    const basePort = 28200 + Math.floor(Math.random() * 400) * 10;
    const ports = [basePort, basePort + 1, basePort + 2, ...engineDefaults.flatMap((p) => [0, 10, 20].map((k) => p + offset + k))];
    const checks = await Promise.all(ports.map((p) => portBusy('127.0.0.1', p)));
    if (checks.every((c) => c === undefined)) return { basePort, offset };
  }
  throw new Error('no free ports for a local cluster');
}

export type DispatchRun = (args: string[], timeoutMs?: number) => Promise<{ code: number; stdout: string; stderr: string }>;

/** Runs the real CLI (bin/dispatch of `tree`, default this checkout) with its own config and local dirs. */
export function dispatchRunner(dirs: { configDir: string; localDir: string; tree?: string }): DispatchRun {
  return (args, timeoutMs = 240_000) =>
    new Promise((resolve) => {
      execFile(
        process.execPath,
        [join(dirs.tree ?? REPO_ROOT, 'bin', 'dispatch'), ...args],
        { env: cleanEnv({ DISPATCH_CONFIG_DIR: dirs.configDir, DISPATCH_LOCAL_DIR: dirs.localDir, CI: '1' }), timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 },
        (err, stdout, stderr) => resolve({ code: err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0, stdout: String(stdout), stderr: String(stderr) }),
      );
    });
}

/** `tree`: the checkout whose bin/dispatch runs (default this one; a benchmark passes a baseline's). */
export async function startLocalCluster(opts: { tree?: string } = {}): Promise<LocalCluster> {
  mkdirSync(TEST_ROOT, { recursive: true, mode: 0o711 });
  chmodSync(TEST_ROOT, 0o711);
  const parent = mkdtempSync(join(TEST_ROOT, 'lo-'));
  chmodSync(parent, 0o711);
  const localDir = join(parent, 'local');
  const configDir = mkdtempSync(join(tmpdir(), 'dispatch-config-'));
  const dispatch = dispatchRunner({ configDir, localDir, ...(opts.tree ? { tree: opts.tree } : {}) });
  const { basePort, offset } = await pickPorts();
  const common = ['--base-port', String(basePort), '--engine-port-offset', String(offset)];
  const destroy = async () => {
    await dispatch(['local', ...common, '--down', '--purge', '--json']);
    const leftovers = await killMatching(parent);
    rmSync(parent, { recursive: true, force: true });
    rmSync(configDir, { recursive: true, force: true });
    return leftovers;
  };
  const up = await dispatch(['local', ...common, '--json']);
  if (up.code !== 0) {
    await destroy();
    throw new Error(`dispatch local failed:\n${up.stderr}\n${up.stdout}`);
  }
  return {
    localDir,
    basePort,
    offset,
    endpoint: `https://127.0.0.1:${basePort}`,
    cert: readFileSync(join(localDir, 'local-1', 'tls', 'cert.pem'), 'utf8'),
    password: readFileSync(join(localDir, 'operator.password'), 'utf8').trim(),
    dispatch,
    destroy,
  };
}
