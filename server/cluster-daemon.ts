/**
 * The cluster side of `dispatcherd start`: which route modules serve the cluster API, and the runtime
 * (server/cluster/setup.ts) that fills the AppContext's `cluster` at start. The HTTP layer sits on top of
 * the cluster service, never the other way round (docs/DESIGN.md, "Dependency rules").
 */
import type { AppContext, RouteModule } from './http/app.js';
import { clusterModule } from './http/routes/cluster.js';
import { plansModule } from './http/routes/plans.js';
import { restartModule } from './http/routes/restart.js';
import { createClusterRuntime, type ClusterRuntime } from './cluster/setup.js';

/** What startDaemon needs to serve the cluster API. */
export function clusterDaemonOptions(): { modules: RouteModule[]; extendContext: (ctx: AppContext) => Promise<void>; runtime: () => ClusterRuntime | undefined } {
  let runtime: ClusterRuntime | undefined;
  return {
    modules: [plansModule, clusterModule, restartModule],
    extendContext: async (ctx) => {
      runtime = await createClusterRuntime(ctx);
      ctx.cluster = runtime.service;
    },
    runtime: () => runtime,
  };
}
