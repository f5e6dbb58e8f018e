/**
 * The set-up and tear-down the network-tier tests share (test/net/*.test.ts), so each file states only
 * what it proves: the programs a test needs, three namespace hosts plus an outside operator host running
 * real dispatchers (nftables), the standard firewall of such a plan (clients from anywhere, the operator
 * from the outside host), the test engine guard-listen next to the real templates, and a bounded stop of a
 * cluster through the product (shutdown, optionally cleanup) before the hard cleanup by pid.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { SpecInput } from '../../api/plan.js';
import type { ClusterView, OperationView } from '../../api/rest.js';
import type { DispatcherClient } from '../../client/dispatcher-client.js';
import { REPO_ROOT } from './daemon.js';
import { createTestNet, type TestNet } from './netns.js';
import { createNsCluster, socketClient, type NsCluster, type NsClusterOptions, type NsDispatcher } from './ns-cluster.js';

/** Fails the test at once (not with a confusing error later) when a program it needs is missing. */
export function requireExecutables(paths: Record<string, string>, hint = 'deploy/install-deps.sh'): void {
  for (const [name, path] of Object.entries(paths)) {
    try {
      execFileSync('test', ['-x', path]);
    } catch {
      throw new Error(`this test needs ${name} at ${path} (${hint})`);
    }
  }
}

export interface TestEngineTemplates {
  /** The templates dir: the real engines plus test/engines/guard-listen. */
  dir: string;
  /** What a dispatcher's environment needs to find it. */
  env: NodeJS.ProcessEnv;
  /** Removes the dir and gives DISPATCHER_TEMPLATES_DIR its old value back. */
  remove(): void;
}

/**
 * The cheap test engine guard-listen (python listeners on the plan's ports) next to the real engines:
 * the dispatchers and the Planner in this process find it through DISPATCHER_TEMPLATES_DIR.
 */
export function guardListenTemplates(prefix: string): TestEngineTemplates {
  const saved = process.env.DISPATCHER_TEMPLATES_DIR;
  const dir = mkdtempSync(join(tmpdir(), `${prefix}-templates-`));
  for (const e of readdirSync(join(REPO_ROOT, 'templates'))) symlinkSync(join(REPO_ROOT, 'templates', e), join(dir, e));
  symlinkSync(join(REPO_ROOT, 'test', 'engines', 'guard-listen'), join(dir, 'guard-listen'));
  process.env.DISPATCHER_TEMPLATES_DIR = dir;
  return {
    dir,
    env: { DISPATCHER_TEMPLATES_DIR: dir },
    remove() {
      rmSync(dir, { recursive: true, force: true });
      if (saved === undefined) delete process.env.DISPATCHER_TEMPLATES_DIR;
      else process.env.DISPATCHER_TEMPLATES_DIR = saved;
    },
  };
}

/**
 * Three (or `opts.hosts`) namespace hosts and an outside host, each cluster host running a started dispatcher with an
 * nftables guard (drift check every second unless `opts` says otherwise). When the dispatchers cannot be
 * set up, the namespaces are removed before the error is thrown (the caller has nothing to tear down).
 */
export async function startNsHosts(prefix: string, opts: NsClusterOptions & { hosts?: number } = {}): Promise<{ net: TestNet; cluster: NsCluster }> {
  const { hosts = 3, ...clusterOpts } = opts;
  const net = await createTestNet({ hosts, outside: true, prefix });
  let cluster: NsCluster | undefined;
  try {
    cluster = await createNsCluster(net, { driftIntervalMs: 1000, backend: 'nftables', ...clusterOpts });
    await cluster.startAll();
    return { net, cluster };
  } catch (e) {
    await cluster?.teardown().catch(() => undefined);
    await net.destroy().catch(() => undefined);
    throw e;
  }
}

/** The firewall of these tests' plans: clients from anywhere, the operator from the outside host (both families). */
export function operatorOutsideFirewall(net: TestNet): NonNullable<SpecInput['firewall']> {
  return { backend: 'nftables', clientSources: ['0.0.0.0/0', '::/0'], operatorSources: [net.outside!.ipv4, net.outside!.ipv6] };
}

/** Waits (bounded: 60 s) until the operation is no longer running. */
async function settled(c: DispatcherClient, operation: string): Promise<void> {
  for (let i = 0; i < 120; i++) {
    if ((await c.get<OperationView>(`/v1/operations/${operation}`)).state !== 'running') return;
    await new Promise((r) => setTimeout(r, 500));
  }
}

/**
 * Best effort, bounded: stops a running (or failed) cluster through the product so postgres shuts down
 * cleanly, then, with `cleanupName`, cleans it up. Errors are the caller's to ignore: the hard cleanup by
 * pid (ns-cluster teardown, the net's destroy) comes after it either way.
 */
export async function stopThroughProduct(c: DispatcherClient, opts: { cleanupName?: string } = {}): Promise<void> {
  const st = await c.get<ClusterView>('/v1/cluster');
  if (st.state === 'running' || st.state === 'failed') {
    const { operation } = await c.post<{ operation: string }>('/v1/cluster/shutdown', {});
    await settled(c, operation);
  }
  if (opts.cleanupName !== undefined) {
    const { operation } = await c.post<{ operation: string }>('/v1/cluster/cleanup', { confirmName: opts.cleanupName });
    await settled(c, operation);
  }
}

/**
 * The whole tear-down of a namespace cluster test: when `launched`, a bounded stop (and, with
 * `cleanupName`, cleanup) through `dispatcher` first, so postgres shuts down cleanly; then, whatever that
 * did, the hard cleanup by pid (ns-cluster stops the dispatchers, the net's destroy kills the rest).
 */
export async function tearDownNsTest(t: { launched: boolean; cluster?: NsCluster; net?: TestNet; dispatcher?: () => NsDispatcher; cleanupName?: string }): Promise<void> {
  try {
    if (t.launched && t.cluster && t.dispatcher) {
      const c = socketClient(t.dispatcher(), 60_000);
      try {
        await stopThroughProduct(c, { cleanupName: t.cleanupName });
      } finally {
        c.close();
      }
    }
  } catch {
    /* the hard cleanup below */
  }
  await t.cluster?.teardown();
  await t.net?.destroy();
}
