/**
 * The cluster view (GET /v1/cluster) from the plan, its state and what every dispatcher answered: a
 * dispatcher that did not answer shows as unreachable, its processes as unknown; a process's companion
 * programs (pg-ha: a coordinator's PgBouncer) show under it with their own state. Pure.
 */
import type { Plan } from '../../api/plan.js';
import { coordinatorsOf, type ClusterView, type CompanionView, type NodeStatusView } from '../../api/rest.js';
import type { Settled } from './fan-out.js';

export function clusterViewOf(plan: Plan, state: ClusterView['state'], res: Settled<NodeStatusView>): ClusterView {
  const byId = new Map([...res.values].flatMap(([, s]) => s.processes.map((p) => [p.id, p] as const)));
  // Companions (pg-ha: a coordinator's PgBouncer) come from the dispatcher that runs their plan process.
  const companionsOf = (p: Plan['processes'][number]): CompanionView[] =>
    (res.values.get(p.dispatcher)?.companions ?? [])
      .filter((c) => c.id.startsWith(`${p.id}.`))
      .map((c) => ({ id: c.id, name: c.id.slice(p.id.length + 1), state: c.state, ...(c.pid ? { pid: c.pid } : {}), ...(c.readySince ? { readySince: c.readySince } : {}), restarts: c.restarts }));
  return {
    name: plan.name,
    engine: plan.engine,
    state,
    dispatchers: plan.dispatchers.map((d) => {
      const st = res.values.get(d.id);
      const f = res.failed.find((x) => x.host === d.id);
      return { id: d.id, endpoint: d.endpoint, reachable: !!st, ...(f ? { error: f.error.message } : {}), ...(st?.guard ? { guard: st.guard } : {}), ...(st?.planVersion ? { planVersion: st.planVersion } : {}) };
    }),
    processes: plan.processes.map((p) => {
      const s = byId.get(p.id);
      const reachable = res.values.has(p.dispatcher);
      const companions = companionsOf(p);
      return {
        id: p.id,
        role: p.role,
        host: p.dispatcher,
        address: p.address,
        ports: p.ports,
        state: s?.state ?? (reachable ? 'not started' : 'unknown (dispatcher unreachable)'),
        ...(s?.pid ? { pid: s.pid } : {}),
        ...(s?.readySince ? { readySince: s.readySince } : {}),
        restarts: s?.restarts ?? 0,
        ...(companions.length ? { companions } : {}),
      };
    }),
    coordinators: coordinatorsOf(plan),
    certificates: [...res.values.values()].flatMap((st) => st.certificates ?? []),
  };
}
