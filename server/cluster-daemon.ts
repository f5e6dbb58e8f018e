/**
 * The cluster side of `dispatcherd start`: which route modules serve the cluster API, the guard that goes
 * in before any process is adopted, and the runtime (server/cluster/setup.ts) that fills the AppContext's
 * `cluster` at start. The HTTP layer sits on top of the cluster service, never the other way round
 * (docs/DESIGN.md, "Dependency rules").
 */
import type { AppContext, RouteModule } from './http/app.js';
import type { DispatcherConfig } from './config.js';
import type { Logger } from './log.js';
import { clusterModule } from './http/routes/cluster.js';
import { plansModule } from './http/routes/plans.js';
import { planVersionsModule } from './http/routes/plan-versions.js';
import { restartModule } from './http/routes/restart.js';
import { scaleModule } from './http/routes/scale.js';
import { replaceModule } from './http/routes/replace.js';
import type { NodeGuard } from './cluster/node-api.js';
import { createClusterRuntime, guardBeforeProcesses, nodeGuard, type ClusterRuntime } from './cluster/setup.js';

/** What startDaemon needs to serve the cluster API. */
export function clusterDaemonOptions(): {
  modules: RouteModule[];
  beforeProcesses: (config: DispatcherConfig, logger: Logger) => Promise<{ restartGone: boolean }>;
  extendContext: (ctx: AppContext) => Promise<void>;
  runtime: () => ClusterRuntime | undefined;
} {
  let runtime: ClusterRuntime | undefined;
  let guard: (NodeGuard & { close(): void }) | undefined;
  return {
    modules: [plansModule, planVersionsModule, clusterModule, restartModule, scaleModule, replaceModule],
    beforeProcesses: async (config, logger) => {
      guard = nodeGuard(config.id, config, logger);
      return { restartGone: await guardBeforeProcesses(guard, config, logger) };
    },
    extendContext: async (ctx) => {
      runtime = await createClusterRuntime(ctx, guard);
      ctx.cluster = runtime.service;
      const store = runtime.service.store;
      // Who may call the node routes: the dispatchers the active plan pins, never this one, and nobody
      // once the plan is gone (discard, cleanup) or replaced (a new launch).
      ctx.peerTrust = {
        activePins: () => {
          const snap = store.get();
          if (!snap || snap.state === 'cleaned') return [];
          return snap.plan.dispatchers.filter((d) => d.id !== ctx.config.id).map((d) => ({ id: d.id, fingerprint: d.fingerprint }));
        },
      };
    },
    runtime: () => runtime,
  };
}
