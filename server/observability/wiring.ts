/**
 * Wires observability into a daemon's context: the audit trail (fed by ctx.audit, which still writes its
 * log line too), the engine health probe and the metrics, all reading the interfaces the daemon already
 * has. ctx.cluster exists only on daemons that serve a cluster (server/cluster/setup.ts); without it the
 * cluster-side metrics are simply empty.
 */
import { join } from 'node:path';
import type { AppContext } from '../http/app.js';
import { authUser, sourceAddress } from '../http/auth.js';
import { AuditTrail, type AuditEntry } from './audit-trail.js';
import { cachedEngineHealth, type EngineHealthView } from './engine-health.js';
import { createMetrics, type Metrics } from './metrics.js';
import type { ClusterService } from '../cluster/service.js';

declare module '../http/app.js' {
  interface AppContext {
    metrics: Metrics;
    auditTrail: AuditTrail;
    engineHealth: () => Promise<EngineHealthView>;
  }
}

export async function addObservability(ctx: AppContext, cert: string): Promise<{ close(): Promise<void> }> {
  const cluster = () => (ctx as { cluster?: ClusterService }).cluster;
  const trail = await AuditTrail.open(join(ctx.config.dataDir, 'audit.json'), {
    onWriteError: (err) => ctx.logger.error('audit trail could not be written', { error: err.message }),
  });
  const logged = ctx.audit;
  ctx.audit = (req, action, outcome, extra = {}) => {
    logged(req, action, outcome, extra);
    const operation = typeof extra.operation === 'string' ? extra.operation : undefined;
    const status = typeof extra.status === 'number' ? extra.status : undefined;
    const entry: Omit<AuditEntry, 'seq' | 'at'> = {
      user: authUser(req)?.name ?? null,
      source: sourceAddress(req),
      action,
      path: req.originalUrl.split('?')[0],
      outcome,
      ...(status !== undefined ? { status } : {}),
      ...(operation ? { operation } : {}),
    };
    trail.record(entry);
  };
  ctx.auditTrail = trail;
  // Health probes present this dispatcher's cluster certificate (the one ClusterService holds): etcd and
  // Patroni answer no one else.
  ctx.engineHealth = cachedEngineHealth(() => cluster()?.store.get()?.plan, () => cluster()?.clientTls());
  ctx.metrics = createMetrics({
    dispatcher: ctx.config.id,
    processes: () => ctx.supervisor.list(),
    guard: async () => (await cluster()?.node.status())?.guard,
    operations: () => cluster()?.operations.list() ?? [],
    engineHealth: ctx.engineHealth,
    certificate: () => cert,
  });
  return { close: () => trail.flush() };
}
