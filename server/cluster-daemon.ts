/**
 * The cluster side of `dispatcherd start`, behind one lazy boundary (docs/DESIGN.md, "The lazy cluster
 * side"): which route modules serve the cluster API, the guard that goes in before any process is adopted,
 * and the runtime (server/cluster/setup.ts) that fills the AppContext's `cluster`.
 *
 * A dispatcher that stores a cluster plan (any state) or operation records loads the runtime at start, as
 * supervision, the guard's drift repair, relaunch on boot, resuming a restart and the launch watchdog must
 * run without any request. One that stores neither — a fresh machine waiting to be part of a cluster — loads
 * it on the first request to a cluster route (~80 of our modules and ~3 MiB of an idle daemon's RSS,
 * docs/BENCHMARKS.md): each cluster route's handlers are wrapped so that they wait for that one load, and
 * concurrent first requests share its promise. Only this file imports server/cluster/setup.ts, and only by
 * `import()`. The HTTP layer sits on top of the cluster service, never the other way round.
 */
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import type express from 'express';
import type { RequestHandler } from 'express';
import { DispatcherError } from '../api/errors.js';
import type { AppContext, FirstContactRouter, RouteModule } from './http/app.js';
import type { DispatcherConfig } from './config.js';
import type { Logger } from './log.js';
import { clusterModule } from './http/routes/cluster.js';
import { plansModule } from './http/routes/plans.js';
import { planVersionsModule } from './http/routes/plan-versions.js';
import { restartModule } from './http/routes/restart.js';
import { scaleModule } from './http/routes/scale.js';
import { replaceModule } from './http/routes/replace.js';
import type { NodeGuard } from './cluster/node-api.js';
import type { ClusterRuntime } from './cluster/setup.js';
import { refuseUnsafeClusterStart } from './cluster/start-checks.js';
import { resolveUser } from './cluster/run-as-user.js';

/** True when the data dir holds a cluster plan or operation records: then the cluster side loads at start. */
export function storesClusterState(dataDir: string): boolean {
  if (existsSync(join(dataDir, 'cluster', 'cluster.json'))) return true;
  const ops = join(dataDir, 'operations');
  return existsSync(ops) && readdirSync(ops).length > 0;
}

const ROUTE_METHODS = new Set(['get', 'post', 'put', 'patch', 'delete', 'all']);

/**
 * `module` as registered, but every handler first waits for `ready()` (a no-op once the cluster side is
 * loaded). The routes themselves are registered at start, so routing, the audiences' gates and the OpenAPI
 * document are the same whether or not the cluster side is loaded yet.
 */
export function deferUntilLoaded(module: RouteModule, ready: () => Promise<void> | undefined): RouteModule {
  const gate = (h: unknown): unknown => {
    if (typeof h !== 'function') return h;
    const handler = h as RequestHandler;
    return ((req, res, next) => {
      const loading = ready();
      return loading ? loading.then(() => handler(req, res, next)) : handler(req, res, next);
    }) as RequestHandler;
  };
  const gated = (router: express.Router): express.Router =>
    new Proxy(router, {
      get(target, prop, receiver) {
        const value = Reflect.get(target, prop, receiver) as unknown;
        if (typeof prop !== 'string' || !ROUTE_METHODS.has(prop) || typeof value !== 'function') return value;
        return (path: unknown, ...handlers: unknown[]) => (value as (...a: unknown[]) => unknown).call(target, path, ...handlers.map(gate));
      },
    });
  return {
    name: module.name,
    openapi: module.openapi,
    register: (router, ctx) => module.register(gated(router), ctx),
    ...(module.registerPeer ? { registerPeer: (router: express.Router, ctx: AppContext) => module.registerPeer!(gated(router), ctx) } : {}),
    ...(module.registerPublic ? { registerPublic: (router: express.Router, ctx: AppContext) => module.registerPublic!(gated(router), ctx) } : {}),
    ...(module.registerFirstContact
      ? { registerFirstContact: (router: FirstContactRouter, ctx: AppContext) => module.registerFirstContact!({ post: (path, pins, handler) => router.post(path, pins, gate(handler) as RequestHandler) }, ctx) }
      : {}),
  };
}

/** What startDaemon needs to serve the cluster API. */
export function clusterDaemonOptions(): {
  modules: RouteModule[];
  beforeProcesses: (config: DispatcherConfig, logger: Logger) => Promise<{ restartGone: boolean }>;
  extendContext: (ctx: AppContext) => Promise<void>;
  runtime: () => ClusterRuntime | undefined;
  /** True once the cluster side (server/cluster/setup.ts and what it imports) is loaded. */
  loaded: () => boolean;
} {
  let runtime: ClusterRuntime | undefined;
  let guard: (NodeGuard & { close(): void }) | undefined;
  let appCtx: AppContext | undefined;
  let loading: Promise<void> | undefined;

  const load = async (ctx: AppContext): Promise<void> => {
    const setup = await import('./cluster/setup.js');
    guard ??= setup.nodeGuard(ctx.config.id, ctx.config, ctx.logger);
    runtime = await setup.createClusterRuntime(ctx, guard);
    ctx.cluster = runtime.service;
  };
  /** Undefined once loaded (the hot path adds no promise); otherwise the one shared load. */
  const ready = (): Promise<void> | undefined => {
    if (runtime) return undefined;
    if (!appCtx) return Promise.reject(new DispatcherError('internal', 'the cluster side was asked for before the daemon was started'));
    const ctx = appCtx;
    loading ??= load(ctx).catch((e: unknown) => {
      loading = undefined; // a later request tries again (e.g. after the operator fixed the data dir)
      ctx.logger.error('could not load the cluster side of this dispatcher', { error: (e as Error).message });
      throw e instanceof DispatcherError ? e : new DispatcherError('internal', `the cluster side of this dispatcher could not be loaded: ${(e as Error).message}`, { cause: e });
    });
    return loading;
  };

  return {
    modules: [plansModule, planVersionsModule, clusterModule, restartModule, scaleModule, replaceModule].map((m) => deferUntilLoaded(m, ready)),
    beforeProcesses: async (config, logger) => {
      if (!storesClusterState(config.dataDir)) {
        // Nothing to guard yet; the start still refuses what the runtime would refuse (server/cluster/start-checks.ts).
        refuseUnsafeClusterStart(config);
        if (config.runAs) await resolveUser(config.runAs);
        return { restartGone: true };
      }
      const setup = await import('./cluster/setup.js');
      guard = setup.nodeGuard(config.id, config, logger);
      return { restartGone: await setup.guardBeforeProcesses(guard, config, logger) };
    },
    extendContext: async (ctx) => {
      appCtx = ctx;
      // Who may call the node routes: the dispatchers the active plan pins, never this one, and nobody
      // without a plan (not loaded yet, discarded, cleaned) or once it is replaced (a new launch).
      ctx.peerTrust = {
        activePins: () => {
          const snap = runtime?.service.store.get();
          if (!snap || snap.state === 'cleaned') return [];
          return snap.plan.dispatchers.filter((d) => d.id !== ctx.config.id).map((d) => ({ id: d.id, fingerprint: d.fingerprint }));
        },
      };
      // A stored plan is supervised from the start; without one, the first cluster request loads the side.
      if (guard || storesClusterState(ctx.config.dataDir)) await ready();
    },
    runtime: () => runtime,
    loaded: () => runtime !== undefined,
  };
}
