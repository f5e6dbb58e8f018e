/**
 * Real dispatchers inside network-namespace hosts (test/helpers/netns.ts), for the network tier: each
 * cluster host runs `ip netns exec NS node bin/dispatcherd start --data-dir D`, configured for the pg-ha
 * engine (Debian binaries, processes run as the unprivileged `cluster-dispatcher` user) with a real
 * firewall backend inside its namespace. Needs root, iproute2, nft and the pg-ha packages.
 *
 * The root namespace blackholes the test subnets, so the test process reaches a dispatcher in two ways:
 *  - its control socket (a Unix socket is not namespaced): `socketClient(d)`, for status and inspection;
 *  - a client program run INSIDE a namespace (the operator's machine, e.g. the outside host) over pinned
 *    HTTPS with a password: `clientIn(...)` / `spawnClientIn(...)`, which run client/dispatcher-client.ts and
 *    launcher/kickstarter.ts from dist/.
 *
 * Data dirs live under /var/lib/cluster-dispatcher-test/<random>, made 0711 so the database user can walk
 * to its own process dirs (not under /tmp: world-writable parents, and the system temp dir may be private).
 * `teardown()` stops every dispatcher by pid (SIGTERM, then SIGKILL), kills whatever still runs in the
 * host namespaces (the netns helper's destroy does that by pid too) and removes the data root.
 */
import type { ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse as parseYaml, stringify as toYaml } from 'yaml';
import { DispatcherClient } from '../../client/dispatcher-client.js';
import { PG_HA_DEBIAN_BINARIES, DEFAULT_RUN_AS } from '../../launcher/local.js';
import { DISPATCHERD_BIN, REPO_ROOT, addUser, cleanEnv, runDispatcherd } from './daemon.js';
import type { ExecResult, TestHost, TestNet } from './netns.js';

export const NS_DISPATCHER_PORT = 8528;
const DATA_PARENT = '/var/lib/cluster-dispatcher-test';

export interface NsDispatcher {
  id: string;
  host: TestHost;
  dataDir: string;
  configFile: string;
  socketPath: string;
  endpoint: string;
  fingerprint: string;
  child?: ChildProcess;
  pid?: number;
  output(): string;
}

export interface NsClusterOptions {
  /** Drift check period of every dispatcher's guard (config firewall.driftIntervalMs). */
  driftIntervalMs?: number;
  backend?: 'nftables' | 'iptables' | 'auto';
  runAs?: string;
  user?: string;
  password?: string;
  /** Dispatcher id of host i (0-based); default d1, d2, ... */
  idOf?: (i: number) => string;
  /** Engines allowed besides pg-ha (config `engines`), e.g. a test engine found through `env`. */
  engines?: Record<string, { binaries: Record<string, string> }>;
  /** Extra environment of every dispatcher (e.g. DISPATCHER_TEMPLATES_DIR for a test engine). */
  env?: NodeJS.ProcessEnv;
}

export interface NsCluster {
  net: TestNet;
  root: string;
  dispatchers: NsDispatcher[];
  user: string;
  password: string;
  /** Spec entries for planFromSpec (endpoint over IPv4, both addresses). */
  specDispatchers(): { id: string; endpoint: string; fingerprint: string; addresses: string[] }[];
  startAll(readyTimeoutMs?: number): Promise<void>;
  /** Starts one dispatcher again (after stop() or a kill) and waits until it answers. */
  start(d: NsDispatcher, readyTimeoutMs?: number): Promise<void>;
  /** SIGTERM to the pid (SIGKILL after timeoutMs); resolves when it exited. */
  stop(d: NsDispatcher, timeoutMs?: number): Promise<void>;
  teardown(): Promise<void>;
}

/** A client on a dispatcher's control socket (root only; no password needed). */
export function socketClient(d: NsDispatcher, timeoutMs = 30_000): DispatcherClient {
  return new DispatcherClient({ endpoint: 'https://localhost', socketPath: d.socketPath, timeoutMs });
}

function waitExit(child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((r) => {
    const t = setTimeout(() => r(false), ms);
    child.once('exit', () => {
      clearTimeout(t);
      r(true);
    });
  });
}

export async function createNsCluster(net: TestNet, opts: NsClusterOptions = {}): Promise<NsCluster> {
  mkdirSync(DATA_PARENT, { recursive: true, mode: 0o711 });
  chmodSync(DATA_PARENT, 0o711);
  const root = mkdtempSync(join(DATA_PARENT, 'ns-'));
  chmodSync(root, 0o711);
  const user = opts.user ?? 'operator';
  const password = opts.password ?? 'ns-cluster-correct-horse';
  const dispatchers: NsDispatcher[] = [];
  const outputs = new Map<string, string>();
  let tornDown = false;

  const stop = async (d: NsDispatcher, timeoutMs = 15_000): Promise<void> => {
    const c = d.child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    // `ip netns exec` execs the program: the child's pid is the daemon's pid.
    c.kill('SIGTERM');
    if (!(await waitExit(c, timeoutMs))) {
      c.kill('SIGKILL');
      await waitExit(c, 5_000);
    }
  };

  const teardown = async (): Promise<void> => {
    if (tornDown) return;
    tornDown = true;
    await Promise.all(dispatchers.map((d) => stop(d).catch(() => undefined)));
    // Leftover cluster processes (etcd, Patroni, postgres, HAProxy) live in the host namespaces: the net's
    // destroy() kills them by pid; the caller destroys the net after this. The data root goes here.
    rmSync(root, { recursive: true, force: true });
  };

  try {
    for (let i = 0; i < net.hosts.length; i++) {
      const host = net.hosts[i];
      const id = opts.idOf ? opts.idOf(i) : `d${i + 1}`;
      const dataDir = join(root, id);
      const r = await runDispatcherd([
        'init', '--data-dir', dataDir, '--id', id,
        '--address', host.ipv4, '--address', host.ipv6,
        '--listen', '::', '--port', String(NS_DISPATCHER_PORT),
      ]);
      if (r.code !== 0) throw new Error(`dispatcherd init ${id} failed (${r.code}): ${r.stderr}`);
      const fingerprint = /^fingerprint: (.+)$/m.exec(r.stdout)?.[1] ?? '';
      const configFile = join(dataDir, 'config.yaml');
      const cfg = (parseYaml(readFileSync(configFile, 'utf8')) ?? {}) as Record<string, unknown>;
      const endpoint = `https://${host.ipv4}:${NS_DISPATCHER_PORT}`;
      writeFileSync(
        configFile,
        toYaml({
          ...cfg,
          endpoint,
          engines: { 'pg-ha': { binaries: PG_HA_DEBIAN_BINARIES }, ...opts.engines },
          runAs: opts.runAs ?? DEFAULT_RUN_AS,
          firewall: { backend: opts.backend ?? 'nftables', driftIntervalMs: opts.driftIntervalMs ?? 1000 },
          relaunchOnBoot: false,
        }),
        { mode: 0o600 },
      );
      await addUser(dataDir, user, password);
      outputs.set(id, '');
      dispatchers.push({ id, host, dataDir, configFile, socketPath: join(dataDir, 'control.sock'), endpoint, fingerprint, output: () => outputs.get(id) ?? '' });
    }
  } catch (e) {
    await teardown();
    throw e;
  }

  const spawnOne = (d: NsDispatcher): void => {
    const child = net.spawnIn(d.host.ns, [process.execPath, DISPATCHERD_BIN, 'start', '--data-dir', d.dataDir], {
      env: cleanEnv(opts.env),
      cwd: REPO_ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    d.child = child;
    d.pid = child.pid;
    const append = (s: string) => outputs.set(d.id, (outputs.get(d.id) ?? '') + s);
    child.stdout!.setEncoding('utf8').on('data', append);
    child.stderr!.setEncoding('utf8').on('data', append);
  };

  const waitHealthy = async (list: NsDispatcher[], readyTimeoutMs: number): Promise<void> => {
    const deadline = Date.now() + readyTimeoutMs;
    await Promise.all(
      list.map(async (d) => {
        const c = socketClient(d, 2_000);
        try {
          for (;;) {
            if (d.child!.exitCode !== null || d.child!.signalCode !== null) throw new Error(`dispatcher ${d.id} exited early:\n${d.output()}`);
            try {
              await c.get('/v1/health');
              return;
            } catch {
              /* not up yet */
            }
            if (Date.now() > deadline) throw new Error(`dispatcher ${d.id} not healthy within ${readyTimeoutMs} ms:\n${d.output()}`);
            await new Promise((r) => setTimeout(r, 150));
          }
        } finally {
          c.close();
        }
      }),
    );
  };

  const startAll = async (readyTimeoutMs = 30_000): Promise<void> => {
    for (const d of dispatchers) spawnOne(d);
    await waitHealthy(dispatchers, readyTimeoutMs);
  };

  /** Starts one dispatcher again (after stop() or a kill) and waits until it answers. */
  const start = async (d: NsDispatcher, readyTimeoutMs = 30_000): Promise<void> => {
    spawnOne(d);
    await waitHealthy([d], readyTimeoutMs);
  };

  return {
    net,
    root,
    dispatchers,
    user,
    password,
    specDispatchers: () => dispatchers.map((d) => ({ id: d.id, endpoint: d.endpoint, fingerprint: d.fingerprint, addresses: [d.host.ipv4, d.host.ipv6] })),
    startAll,
    start,
    stop,
    teardown,
  };
}

/**
 * A client program for a namespace: pinned HTTPS + basic credential through client/dispatcher-client.ts. argv:
 * <endpoint> <fingerprint> <user> then a command:
 *   get <path>                → prints the JSON answer
 *   run <path> <bodyFile>     → POSTs the body, follows the operation's events (one NDJSON line each,
 *                               {"type":"event",...}), then prints {"type":"operation", ...view}
 * The password comes on stdin (never on a command line).
 */
const CLIENT_SCRIPT = `
const [clientUrl, kickUrl, endpoint, fingerprint, user, cmd, a1, a2] = process.argv.slice(1);
const { DispatcherClient } = await import(clientUrl);
const { Kickstarter } = await import(kickUrl);
const { readFileSync } = await import('node:fs');
let password = '';
for await (const c of process.stdin) password += c;
password = password.trim();
const client = new DispatcherClient({ endpoint, fingerprint, credential: { user, password }, timeoutMs: 60000 });
const out = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
try {
  if (cmd === 'get') {
    out(await client.get(a1));
  } else if (cmd === 'run') {
    const body = JSON.parse(readFileSync(a2, 'utf8'));
    const { operation } = await client.post(a1, body);
    out({ type: 'started', operation });
    const k = new Kickstarter(undefined, client, { onEvent: (e) => out({ type: 'event', ...e }) });
    try { await k.waitFor(operation); } catch (e) { out({ type: 'failed', message: e.message }); }
    out({ type: 'operation', ...(await client.get('/v1/operations/' + encodeURIComponent(operation))) });
  } else throw new Error('unknown command ' + cmd);
} catch (e) {
  process.stderr.write((e && e.message ? e.message : String(e)) + '\\n');
  process.exitCode = 1;
} finally {
  client.close();
}
`;

function clientArgv(d: { endpoint: string; fingerprint: string }, user: string, cmd: string[]): string[] {
  const url = (p: string) => new URL(`file://${join(REPO_ROOT, 'dist', p)}`).href;
  return [process.execPath, '--input-type=module', '-e', CLIENT_SCRIPT, url('client/dispatcher-client.js'), url('launcher/kickstarter.js'), d.endpoint, d.fingerprint, user, ...cmd];
}

/** Runs a client command inside namespace `ns` and waits for it. */
export function clientIn(
  net: TestNet,
  ns: string,
  d: { endpoint: string; fingerprint: string },
  cred: { user: string; password: string },
  cmd: string[],
  timeoutMs = 60_000,
): Promise<ExecResult> {
  return net.exec(ns, clientArgv(d, cred.user, cmd), { input: cred.password + '\n', timeoutMs });
}

/** Starts a client command inside namespace `ns` (e.g. a launch followed while the test probes). */
export function spawnClientIn(net: TestNet, ns: string, d: { endpoint: string; fingerprint: string }, cred: { user: string; password: string }, cmd: string[]): { child: ChildProcess; done: Promise<{ code: number | null; stdout: string; stderr: string }> } {
  const child = net.spawnIn(ns, clientArgv(d, cred.user, cmd), { stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (c: string) => (stdout += c));
  child.stderr!.setEncoding('utf8').on('data', (c: string) => (stderr += c));
  child.stdin!.on('error', () => undefined);
  child.stdin!.end(cred.password + '\n');
  const done = new Promise<{ code: number | null; stdout: string; stderr: string }>((r) => child.once('exit', (code) => r({ code, stdout, stderr })));
  return { child, done };
}

/** Parses NDJSON lines of a client's stdout. */
export function ndjson(stdout: string): Record<string, any>[] {
  return stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, any>);
}
