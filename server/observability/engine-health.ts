/**
 * The agency and DB health a dispatcher can see, as data for GET /v1/cluster/health, the web console and
 * the Prometheus gauges (docs/OBSERVABILITY.md): which agent leads etcd and which answer, which DB
 * server Patroni made leader, each replica's replication lag. One probe round serves every caller for a
 * few seconds, so a scrape every 15 s and a console refreshing every 2 s cost one round, not one each.
 * I/O: HTTP to etcd and Patroni on cluster addresses (never a shell); the Patroni answer is parsed by a
 * pure exported function so it is unit-tested without a cluster.
 */
import type { Plan } from '../../api/plan.js';
import { systemClock, type Clock } from '../../shared/poll.js';
import { agencyStatus } from '../engines/pg-ha-health.js';
import { hostPort } from '../engines/template.js';
import { clusterHttps, type ClusterClientTls } from '../engines/cluster-https.js';

export interface DbMemberHealth {
  id: string;
  role: 'leader' | 'replica' | 'unknown';
  /** Patroni's view of the member's PostgreSQL (running, streaming, stopped, ...). */
  state: string;
  /** Bytes a replica's replay is behind the leader; 0 for the leader; null when Patroni does not know. */
  lagBytes: number | null;
  timeline?: number;
}

export interface EngineHealthView {
  cluster: string | null;
  engine?: string;
  checkedAt: string;
  /** False when this engine has no health probes here (arangodb is rendered only) or no cluster runs. */
  checked: boolean;
  agency: { leader: string | null; members: { id: string; reachable: boolean }[] };
  dbservers: { leader: string | null; members: DbMemberHealth[]; answeredBy: string | null };
}

/** Pure: Patroni's GET /cluster answer (`{members:[{name, role, state, lag, timeline}]}`). */
export function parsePatroniCluster(body: string): DbMemberHealth[] {
  let j: { members?: { name?: unknown; role?: unknown; state?: unknown; lag?: unknown; timeline?: unknown }[] };
  try {
    j = JSON.parse(body);
  } catch {
    return [];
  }
  if (!Array.isArray(j.members)) return [];
  return j.members
    .filter((m) => typeof m.name === 'string')
    .map((m) => {
      const role = m.role === 'leader' || m.role === 'master' || m.role === 'primary' ? 'leader' : m.role === 'replica' || m.role === 'sync_standby' ? 'replica' : 'unknown';
      const lag = role === 'leader' ? 0 : typeof m.lag === 'number' && Number.isFinite(m.lag) ? m.lag : null;
      return { id: m.name as string, role, state: typeof m.state === 'string' ? m.state : 'unknown', lagBytes: lag, ...(typeof m.timeline === 'number' ? { timeline: m.timeline } : {}) };
    });
}

async function patroniCluster(plan: Plan, timeoutMs: number, tls: ClusterClientTls | undefined): Promise<{ members: DbMemberHealth[]; answeredBy: string | null }> {
  // Patroni's REST API asks every caller for a certificate of the cluster CA (docs/SECURITY.md).
  if (!tls) return { members: [], answeredBy: null };
  // Any Patroni answers for the whole cluster (it reads the DCS); ask them in turn until one answers.
  for (const p of plan.processes.filter((x) => x.role === 'dbserver')) {
    const rest = p.ports.find((x) => x.name === 'rest');
    if (!rest) continue;
    try {
      const res = await clusterHttps(`https://${hostPort(p.address, rest.port)}/cluster`, { method: 'GET' }, tls, timeoutMs);
      if (res.status !== 200) continue;
      const members = parsePatroniCluster(res.body);
      if (members.length) return { members, answeredBy: p.id };
    } catch {
      /* try the next one */
    }
  }
  return { members: [], answeredBy: null };
}

export async function probeEngineHealth(plan: Plan | undefined, tls?: ClusterClientTls, timeoutMs = 1000, clock: Clock = systemClock): Promise<EngineHealthView> {
  const base = { cluster: plan?.name ?? null, checkedAt: new Date(clock.now()).toISOString() };
  const none = { agency: { leader: null, members: [] }, dbservers: { leader: null, members: [], answeredBy: null } };
  if (!plan || plan.engine !== 'pg-ha') return { ...base, ...(plan ? { engine: plan.engine } : {}), checked: false, ...none };
  const [agency, db] = await Promise.all([agencyStatus(plan, { timeoutMs, tls }), patroniCluster(plan, timeoutMs, tls)]);
  return {
    ...base,
    engine: plan.engine,
    checked: true,
    agency: { leader: agency.leaderId ?? null, members: agency.members.map((m) => ({ id: m.id, reachable: m.reachable })) },
    dbservers: { leader: db.members.find((m) => m.role === 'leader')?.id ?? null, members: db.members, answeredBy: db.answeredBy },
  };
}

/** One probe round at a time, its answer kept for `maxAgeMs` (a plan change is a new key). */
export function cachedEngineHealth(planOf: () => Plan | undefined, tlsOf: () => ClusterClientTls | undefined = () => undefined, maxAgeMs = 3000, probe = probeEngineHealth, clock: Clock = systemClock): () => Promise<EngineHealthView> {
  let last: { at: number; key: string; view: Promise<EngineHealthView> } | undefined;
  return () => {
    const plan = planOf();
    const key = plan ? `${plan.name}/${plan.processes.length}` : '';
    const now = clock.now();
    if (!last || last.key !== key || now - last.at > maxAgeMs) last = { at: now, key, view: probe(plan, tlsOf()) };
    return last.view;
  };
}
