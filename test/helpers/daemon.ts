/**
 * Test helpers around a REAL dispatcherd: init a temp data dir with the CLI, add a user with the CLI
 * (password on stdin), start `bin/dispatcherd start` as a child process on a free loopback port, wait
 * for /v1/health (verifying the certificate), and stop exactly that pid. Reused by the cluster tiers.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml, stringify as toYaml } from 'yaml';

/** Repository root (this file runs from dist/test/helpers/). */
export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
export const DISPATCHERD_BIN = join(REPO_ROOT, 'bin', 'dispatcherd');

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `dispatcherd ARGS` (argv array, no shell) with optional stdin; never throws on a non-zero exit. */
export function runDispatcherd(args: string[], opts: { input?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<CliResult> {
  return new Promise((resolveRun) => {
    const child = execFile(process.execPath, [DISPATCHERD_BIN, ...args], { env: opts.env ?? cleanEnv(), timeout: opts.timeoutMs ?? 30_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : 1) : 0;
      resolveRun({ code, stdout: String(stdout), stderr: String(stderr) });
    });
    child.stdin?.end(opts.input ?? '');
  });
}

/** process.env without DISPATCHER_* (a developer's shell must not change what a test starts). */
export function cleanEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('DISPATCHER_')) env[k] = v;
  return { ...env, ...extra };
}

export interface DataDir {
  /** The temp directory holding dataDir (remove() deletes it). */
  root: string;
  dataDir: string;
  configFile: string;
  id: string;
  fingerprint: string;
  /** PEM of the certificate, for `.ca(cert)` / `https.request({ ca })`. */
  cert: string;
  remove(): void;
}

export async function initDataDir(opts: { id?: string; addresses?: string[]; root?: string } = {}): Promise<DataDir> {
  const root = opts.root ?? mkdtempSync(join(tmpdir(), 'dispatcherd-test-'));
  const dataDir = join(root, 'data');
  const args = ['init', '--data-dir', dataDir, '--listen', '127.0.0.1'];
  if (opts.id) args.push('--id', opts.id);
  for (const a of opts.addresses ?? []) args.push('--address', a);
  const r = await runDispatcherd(args);
  if (r.code !== 0) throw new Error(`dispatcherd init failed (${r.code}): ${r.stderr}`);
  const id = /^id: (.+)$/m.exec(r.stdout)?.[1] ?? '';
  const fingerprint = /^fingerprint: (.+)$/m.exec(r.stdout)?.[1] ?? '';
  return {
    root,
    dataDir,
    configFile: join(dataDir, 'config.yaml'),
    id,
    fingerprint,
    cert: readFileSync(join(dataDir, 'tls', 'cert.pem'), 'utf8'),
    remove: () => rmSync(root, { recursive: true, force: true }),
  };
}

/** Adds a user through the real CLI, password on stdin. Throws with the CLI's stderr on failure. */
export async function addUser(dataDir: string, name: string, password: string): Promise<void> {
  const r = await runDispatcherd(['user', 'add', name, '--data-dir', dataDir], { input: password + '\n' });
  if (r.code !== 0) throw new Error(`dispatcherd user add failed (${r.code}): ${r.stderr}`);
}

/** Merges keys into the data dir's config file (e.g. { auth: { maxFailures: 3 } }). */
export function patchConfig(configFile: string, patch: Record<string, unknown>): void {
  const cur = (parseYaml(readFileSync(configFile, 'utf8')) ?? {}) as Record<string, unknown>;
  writeFileSync(configFile, toYaml({ ...cur, ...patch }), { mode: 0o600 });
}

/** A port that was free a moment ago on 127.0.0.1 (the daemon retries on EADDRINUSE via startDispatcherd). */
export function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      s.close(() => resolvePort(port));
    });
  });
}

/** GET over HTTPS with the given CA (verification on). Resolves with status and body. */
export function httpsGet(url: string, ca: string, opts: { auth?: string; timeoutMs?: number } = {}): Promise<{ status: number; body: string; headers: Record<string, unknown> }> {
  return new Promise((resolveGet, reject) => {
    const req = httpsRequest(url, { ca, method: 'GET', auth: opts.auth, timeout: opts.timeoutMs ?? 2000, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (body += c));
      res.on('end', () => resolveGet({ status: res.statusCode ?? 0, body, headers: res.headers }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

export interface RunningDispatcher {
  url: string;
  port: number;
  id: string;
  fingerprint: string;
  cert: string;
  pid: number;
  dataDir: string;
  configFile: string;
  socketPath: string;
  user: string;
  password: string;
  /** Everything the child wrote to stdout/stderr so far. */
  output(): string;
  /** SIGTERM to this pid only, SIGKILL after `timeoutMs`; resolves with the exit code/signal. */
  stop(timeoutMs?: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** kill -9 of this pid (to test adoption after a crash). */
  kill9(): Promise<void>;
  child: ChildProcess;
}

export interface StartOptions {
  /** Reuse an initialised data dir (default: a fresh one via initDataDir). */
  dir?: DataDir;
  id?: string;
  user?: string;
  password?: string;
  /** Skip adding the user (when the data dir already has it). */
  skipUser?: boolean;
  env?: NodeJS.ProcessEnv;
  /** Fixed port (default: a free loopback port). */
  port?: number;
  readyTimeoutMs?: number;
}

const running = new Set<ChildProcess>();
// Last resort: never leave a daemon behind when the test process exits abnormally.
process.once('exit', () => {
  for (const c of running) if (c.exitCode === null && c.signalCode === null && c.pid) {
    try {
      process.kill(c.pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
});

function waitExit(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  return new Promise((r) => child.once('exit', (code, signal) => r({ code, signal })));
}

/** Starts a real `dispatcherd start` child on 127.0.0.1 and waits until /v1/health answers over verified TLS. */
export async function startDispatcherd(opts: StartOptions = {}): Promise<RunningDispatcher & { dir: DataDir }> {
  const dir = opts.dir ?? (await initDataDir({ id: opts.id }));
  const user = opts.user ?? 'operator';
  const password = opts.password ?? 'correct-horse-battery';
  if (!opts.skipUser) await addUser(dir.dataDir, user, password);
  let lastError = '';
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = opts.port ?? (await freePort());
    const child = spawn(process.execPath, [DISPATCHERD_BIN, 'start', '--config', dir.configFile], {
      env: cleanEnv({ DISPATCHER_PORT: String(port), DISPATCHER_LISTEN: '127.0.0.1', ...opts.env }),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    running.add(child);
    child.once('exit', () => running.delete(child));
    let out = '';
    child.stdout!.setEncoding('utf8').on('data', (c: string) => (out += c));
    child.stderr!.setEncoding('utf8').on('data', (c: string) => (out += c));
    const url = `https://127.0.0.1:${port}`;
    const deadline = Date.now() + (opts.readyTimeoutMs ?? 15_000);
    let up = false;
    while (Date.now() < deadline && child.exitCode === null && child.signalCode === null) {
      try {
        const r = await httpsGet(`${url}/v1/health`, dir.cert, { timeoutMs: 1000 });
        if (r.status === 200) {
          up = true;
          break;
        }
      } catch {
        /* not yet listening */
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    const handle: RunningDispatcher = {
      url,
      port,
      id: dir.id,
      fingerprint: dir.fingerprint,
      cert: dir.cert,
      pid: child.pid!,
      dataDir: dir.dataDir,
      configFile: dir.configFile,
      socketPath: join(dir.dataDir, 'control.sock'),
      user,
      password,
      child,
      output: () => out,
      async stop(timeoutMs = 10_000) {
        if (child.exitCode === null && child.signalCode === null) {
          child.kill('SIGTERM');
          const t = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
          const r = await waitExit(child);
          clearTimeout(t);
          return r;
        }
        return waitExit(child);
      },
      async kill9() {
        child.kill('SIGKILL');
        await waitExit(child);
      },
    };
    if (up) return { ...handle, dir };
    await handle.stop(2000);
    lastError = out;
    if (!/EADDRINUSE/.test(out) || opts.port) break;
  }
  throw new Error(`dispatcherd did not become healthy; its output:\n${lastError}`);
}
