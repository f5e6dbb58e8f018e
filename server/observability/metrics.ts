/**
 * GET /metrics: the Prometheus metrics of one dispatcher (docs/OBSERVABILITY.md). Every metric is
 * read from the existing interfaces when Prometheus scrapes (prom-client `collect` callbacks), so no module
 * is threaded with counters: the supervisor's process list, the firewall guard's status, the operation
 * store, the engine health probe and the certificate on disk. Only HTTP traffic is counted as it happens,
 * by one middleware in front of every route. Every name starts with `cluster_dispatcher_`; the Grafana
 * dashboard in docs/ queries exactly these names (a test checks them against a running cluster).
 *
 * Label values are bounded: route is the express route pattern (or "unmatched"), never the raw URL.
 */
import { X509Certificate } from 'node:crypto';
import type { RequestHandler } from 'express';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { GuardStatusView, OperationKind, OperationView } from '../../api/rest.js';
import type { ProcessState, ProcessStatus } from '../supervisor/types.js';
import type { EngineHealthView } from './engine-health.js';
import { HttpTraffic } from './http-traffic.js';
import { systemClock, type Clock } from '../../shared/poll.js';

export const METRIC_PREFIX = 'cluster_dispatcher_';

/** What the collectors read at scrape time. Small and injected, so a unit test can feed plain data. */
export interface MetricSources {
  dispatcher: string;
  processes(): ProcessStatus[];
  guard(): Promise<GuardStatusView | undefined>;
  operations(): OperationView[];
  engineHealth(): Promise<EngineHealthView>;
  /** PEM of the certificate this dispatcher serves, or undefined. */
  certificate(): string | undefined;
}

export interface Metrics {
  registry: Registry;
  /** Counts every HTTP request by route, method and status (mount before authentication). */
  middleware: RequestHandler;
  /** The exposition text and its content type. */
  scrape(): Promise<{ contentType: string; body: string }>;
}

const OPERATION_KINDS: OperationKind[] = ['launch', 'shutdown', 'relaunch', 'cleanup', 'restart', 'rotate-certs'];
const PROCESS_STATES: ProcessState[] = ['starting', 'running', 'ready', 'backoff', 'stopping', 'stopped', 'failed'];
const seconds = (iso: string | undefined | null) => (iso ? Date.parse(iso) / 1000 : 0);

/**
 * The dispatcher's own memory and CPU, read when scraped. Not prom-client's collectDefaultMetrics: that
 * one keeps an event-loop delay monitor and a GC observer running between scrapes, which an idle daemon
 * should not pay for (docs/BENCHMARKS.md, metrics and console).
 */
function addSelfMetrics(registry: Registry, clock: Clock): void {
  const registers = [registry];
  const n = (s: string) => METRIC_PREFIX + s;
  new Gauge({
    name: n('process_resident_memory_bytes'),
    help: 'Resident memory of the dispatcher process',
    registers,
    collect() {
      this.set(process.memoryUsage.rss());
    },
  });
  new Gauge({
    name: n('process_heap_used_bytes'),
    help: 'V8 heap in use by the dispatcher process',
    registers,
    collect() {
      this.set(process.memoryUsage().heapUsed);
    },
  });
  new Counter({
    name: n('process_cpu_seconds_total'),
    help: 'CPU time (user + system) of the dispatcher process',
    registers,
    collect() {
      const u = process.cpuUsage();
      this.reset();
      this.inc((u.user + u.system) / 1e6);
    },
  });
  const started = clock.now() / 1000 - process.uptime();
  new Gauge({ name: n('process_start_time_seconds'), help: 'Unix time the dispatcher process started', registers }).set(started);
}

export function createMetrics(src: MetricSources, opts: { selfMetrics?: boolean; clock?: Clock } = {}): Metrics {
  const clock = opts.clock ?? systemClock;
  const registry = new Registry();
  registry.setDefaultLabels({ dispatcher: src.dispatcher });
  if (opts.selfMetrics !== false) addSelfMetrics(registry, clock);
  const n = (s: string) => METRIC_PREFIX + s;
  const registers = [registry];

  // ------------------------------------------------------------ processes (supervisor)
  new Gauge({
    name: n('process_state'),
    help: 'Supervised process state: 1 for the state the process is in, 0 for the others',
    labelNames: ['process', 'role', 'state'],
    registers,
    collect() {
      this.reset();
      for (const p of src.processes()) for (const s of PROCESS_STATES) this.set({ process: p.id, role: p.role, state: s }, p.state === s ? 1 : 0);
    },
  });
  new Counter({
    name: n('process_restarts_total'),
    help: 'Restarts of a supervised process since it was first started (kept across dispatcher restarts)',
    labelNames: ['process', 'role'],
    registers,
    collect() {
      // Mirrors the supervisor's own counter: reset, then set to its value.
      this.reset();
      for (const p of src.processes()) this.inc({ process: p.id, role: p.role }, p.restarts);
    },
  });
  new Gauge({
    name: n('process_ready_since_seconds'),
    help: 'Unix time a process was last seen becoming ready (0 when not ready)',
    labelNames: ['process', 'role'],
    registers,
    collect() {
      this.reset();
      for (const p of src.processes()) this.set({ process: p.id, role: p.role }, p.state === 'ready' ? seconds(p.readySince) : 0);
    },
  });
  new Gauge({
    name: n('process_last_exit_code'),
    help: 'Exit code of the last exit of a process (-1: killed by a signal; absent: never exited)',
    labelNames: ['process', 'role'],
    registers,
    collect() {
      this.reset();
      for (const p of src.processes()) if (p.lastExit) this.set({ process: p.id, role: p.role }, p.lastExit.code ?? -1);
    },
  });

  // ------------------------------------------------------------ firewall guard
  const guardGauge = (name: string, help: string, value: (g: GuardStatusView) => number) =>
    new Gauge({
      name: n(name),
      help,
      labelNames: ['backend'],
      registers,
      async collect() {
        this.reset();
        const g = await src.guard();
        if (g) this.set({ backend: g.backend }, value(g));
      },
    });
  guardGauge('guard_in_sync', 'Whether the firewall guard found its rules in place at the last check (1) or not (0)', (g) => (g.inSync ? 1 : 0));
  guardGauge('guard_last_apply_duration_seconds', 'How long the last successful apply of the firewall rules took', (g) => (g.lastApplyMs ?? 0) / 1000);
  guardGauge('guard_last_applied_timestamp_seconds', 'Unix time of the last successful apply (including drift repairs)', (g) => seconds(g.lastAppliedAt));
  guardGauge('guard_pending_confirm_deadline_seconds', 'Unix time a commit-confirmed firewall change rolls back unless confirmed (0: nothing pending)', (g) => seconds(g.pendingConfirmUntil));
  new Counter({
    name: n('guard_drift_repairs_total'),
    help: 'Times the guard found its rules changed or flushed by something else and re-applied them',
    labelNames: ['backend'],
    registers,
    async collect() {
      this.reset();
      const g = await src.guard();
      if (g) this.inc({ backend: g.backend }, g.driftRepairs);
    },
  });

  // ------------------------------------------------------------ operations
  // Operations are persisted, so their history survives a restart; each ended one is counted once, by
  // whichever of the two collectors below runs first in a scrape.
  const counted = new Set<string>();
  let opsTotal: Counter<string> | undefined;
  let opsDuration: Histogram<string> | undefined;
  const countEnded = () => {
    for (const op of src.operations()) {
      if (op.state === 'running' || counted.has(op.id)) continue;
      counted.add(op.id);
      opsTotal!.inc({ kind: op.kind, outcome: op.state });
      if (op.endedAt) opsDuration!.observe({ kind: op.kind, outcome: op.state }, Math.max(0, (Date.parse(op.endedAt) - Date.parse(op.startedAt)) / 1000));
    }
  };
  opsTotal = new Counter({ name: n('operations_total'), help: 'Ended operations by kind and outcome', labelNames: ['kind', 'outcome'], registers, collect: countEnded });
  opsDuration = new Histogram({
    name: n('operation_duration_seconds'),
    help: 'Duration of ended operations',
    labelNames: ['kind', 'outcome'],
    buckets: [1, 5, 15, 30, 60, 120, 300, 600, 1800],
    registers,
    collect: countEnded,
  });
  new Gauge({
    name: n('operations_running'),
    help: 'Operations running now, by kind',
    labelNames: ['kind'],
    registers,
    collect() {
      this.reset();
      for (const kind of OPERATION_KINDS) this.set({ kind }, 0);
      for (const op of src.operations()) if (op.state === 'running') this.inc({ kind: op.kind });
    },
  });

  // ------------------------------------------------------------ HTTP
  const traffic = new HttpTraffic(registry, n, clock);

  // ------------------------------------------------------------ certificate
  let certCache: { pem: string; notAfter: number } | undefined;
  new Gauge({
    name: n('certificate_expiry_timestamp_seconds'),
    help: 'Unix time the HTTPS certificate of this dispatcher expires',
    registers,
    collect() {
      this.reset();
      const pem = src.certificate();
      if (!pem) return;
      if (certCache?.pem !== pem) certCache = { pem, notAfter: Date.parse(new X509Certificate(pem).validTo) / 1000 };
      this.set(certCache.notAfter);
    },
  });

  // ------------------------------------------------------------ agency and DB health (engine)
  // src.engineHealth is cached (engine-health.ts), so the gauges below share one probe round.
  const healthGauge = (name: string, help: string, labels: string[], fill: (g: Gauge<string>, h: EngineHealthView) => void) =>
    new Gauge({
      name: n(name),
      help,
      labelNames: labels,
      registers,
      async collect() {
        this.reset();
        const h = await src.engineHealth().catch(() => undefined);
        if (h?.checked) fill(this, h);
      },
    });
  healthGauge('agency_has_leader', 'Whether a quorum of agents agrees on an etcd leader that is a plan agent', [], (g, h) => g.set(h.agency.leader ? 1 : 0));
  healthGauge('agency_member_up', 'Whether an agent (etcd member) answers', ['member'], (g, h) => h.agency.members.forEach((m) => g.set({ member: m.id }, m.reachable ? 1 : 0)));
  healthGauge('agency_leader', '1 for the agent that leads etcd', ['member'], (g, h) => h.agency.members.forEach((m) => g.set({ member: m.id }, m.id === h.agency.leader ? 1 : 0)));
  healthGauge('db_members', 'DB servers Patroni knows of, by role', ['role'], (g, h) => {
    for (const role of ['leader', 'replica', 'unknown']) g.set({ role }, h.dbservers.members.filter((m) => m.role === role).length);
  });
  healthGauge('db_leader', '1 for the DB server Patroni made leader (primary)', ['member'], (g, h) => h.dbservers.members.forEach((m) => g.set({ member: m.id }, m.role === 'leader' ? 1 : 0)));
  healthGauge('db_replication_lag_bytes', 'Bytes a replica is behind the leader (Patroni); absent when unknown', ['member'], (g, h) => {
    for (const m of h.dbservers.members) if (m.lagBytes !== null) g.set({ member: m.id }, m.lagBytes);
  });

  return {
    registry,
    middleware: traffic.middleware,
    async scrape() {
      return { contentType: registry.contentType, body: await registry.metrics() };
    },
  };
}
