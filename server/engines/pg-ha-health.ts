/**
 * Cluster-level health checks of the pg-ha engine, for launch and rolling-restart orchestration. I/O lives
 * here (HTTP to etcd, Patroni and HAProxy on cluster addresses; psql for the WAL receiver); the parsing of
 * each answer is a pure exported function so it can be unit-tested without a cluster. Never a shell.
 */
import { execFile } from 'node:child_process';
import { DispatcherError } from '../../api/errors.js';
import type { Plan, PlanProcess } from '../../api/plan.js';
import { hostPort } from './template.js';
import { clusterHttps, psqlTlsEnv, type ClusterClientTls } from './cluster-https.js';

export interface HealthOptions {
  /** Per request (ms), default 2000. */
  timeoutMs?: number;
  /** The cluster CA and this dispatcher's client certificate: etcd and Patroni accept nothing less. */
  tls?: ClusterClientTls;
}

function proc(plan: Plan, id: string, role?: string): PlanProcess {
  const p = plan.processes.find((x) => x.id === id);
  if (!p) throw new DispatcherError('not_found', `process ${id} is not in plan ${plan.name}`);
  if (role && p.role !== role) throw new DispatcherError('bad_request', `process ${id} is a ${p.role}, not a ${role}`);
  return p;
}

function port(p: PlanProcess, name: string): number {
  const x = p.ports.find((q) => q.name === name);
  if (!x) throw new DispatcherError('bad_request', `process ${p.id} has no port "${name}"`);
  return x.port;
}

async function http(url: string, init: RequestInit, timeoutMs: number): Promise<{ status: number; body: string }> {
  const res = await fetch(url, { ...init, signal: AbortSignal.timeout(timeoutMs) });
  return { status: res.status, body: await res.text() };
}

function needTls(opts: HealthOptions): ClusterClientTls {
  if (!opts.tls) throw new DispatcherError('conflict', 'this dispatcher has no cluster certificate (yet): the cluster\'s services accept only certificate holders');
  return opts.tls;
}

// ---------------------------------------------------------------- agency (etcd 3.4)

export interface AgencyMember {
  id: string;
  reachable: boolean;
  /** etcd member id (decimal string) of this member and of the leader it sees ("0" = none). */
  memberId?: string;
  leader?: string;
  raftTerm?: string;
}

export interface AgencyStatus {
  hasLeader: boolean;
  /** Process id of the leader, when a majority of the plan's agents agree on one that is a plan agent. */
  leaderId?: string;
  members: AgencyMember[];
}

/** Pure: a quorum of plan agents sees the same leader, and that leader is one of them. */
export function agencyVerdict(members: AgencyMember[]): AgencyStatus {
  const votes = new Map<string, number>();
  for (const m of members) if (m.reachable && m.leader && m.leader !== '0') votes.set(m.leader, (votes.get(m.leader) ?? 0) + 1);
  const quorum = Math.floor(members.length / 2) + 1;
  for (const [leader, n] of votes) {
    const who = members.find((m) => m.memberId === leader);
    if (n >= quorum && who) return { hasLeader: true, leaderId: who.id, members };
  }
  return { hasLeader: false, members };
}

/** Asks every agent for its status (etcd's gRPC gateway: POST /v3/maintenance/status). */
export async function agencyStatus(plan: Plan, opts: HealthOptions = {}): Promise<AgencyStatus> {
  const agents = plan.processes.filter((p) => p.role === 'agent');
  const members = await Promise.all(
    agents.map(async (a): Promise<AgencyMember> => {
      try {
        const r = await clusterHttps(`https://${hostPort(a.address, port(a, 'client'))}/v3/maintenance/status`, { method: 'POST', body: '{}' }, needTls(opts), opts.timeoutMs ?? 2000);
        if (r.status !== 200) return { id: a.id, reachable: false };
        const j = JSON.parse(r.body) as { header?: { member_id?: string; raft_term?: string }; leader?: string };
        return { id: a.id, reachable: true, memberId: j.header?.member_id, leader: j.leader ?? '0', raftTerm: j.header?.raft_term };
      } catch {
        return { id: a.id, reachable: false };
      }
    }),
  );
  return agencyVerdict(members);
}

export async function agencyHasLeader(plan: Plan, opts: HealthOptions = {}): Promise<boolean> {
  return (await agencyStatus(plan, opts)).hasLeader;
}

// ---------------------------------------------------------------- DB servers (Patroni + PostgreSQL)

export interface DbserverState {
  id: string;
  reachable: boolean;
  /** Patroni's role: 'master'/'primary' → leader. */
  role: 'leader' | 'replica' | 'standby_leader' | 'unknown';
  /** Patroni's PostgreSQL state is "running". */
  running: boolean;
  /** Replica's own WAL receiver streams (pg_stat_wal_receiver); null when not checked (no psql/password). */
  streaming: boolean | null;
  patroniState?: string;
  timeline?: number;
}

/** Pure: interprets Patroni's GET /patroni answer. */
export function parsePatroniStatus(id: string, status: number, body: string): DbserverState {
  let j: { state?: string; role?: string; timeline?: number } = {};
  try {
    j = JSON.parse(body);
  } catch {
    return { id, reachable: false, role: 'unknown', running: false, streaming: null };
  }
  const role = j.role === 'master' || j.role === 'primary' ? 'leader' : j.role === 'replica' ? 'replica' : j.role === 'standby_leader' ? 'standby_leader' : 'unknown';
  return { id, reachable: status > 0, role, running: j.state === 'running', streaming: null, patroniState: j.state, ...(j.timeline ? { timeline: j.timeline } : {}) };
}

function psqlStreaming(psql: string, p: PlanProcess, password: string, timeoutMs: number, tls?: ClusterClientTls): Promise<boolean> {
  return new Promise((resolve) => {
    execFile(
      psql,
      [
        `host=${p.address} port=${port(p, 'postgres')} user=postgres dbname=postgres connect_timeout=2`,
        '-XtAq',
        '-c',
        "SELECT count(*) FROM pg_stat_wal_receiver WHERE status = 'streaming'",
      ],
      // The password goes through the environment of the child only, never argv (visible in ps).
      { env: { PGPASSWORD: password, PATH: '/usr/bin:/bin', ...psqlTlsEnv(tls) }, timeout: timeoutMs },
      (err, stdout) => resolve(!err && stdout.trim() === '1'),
    );
  });
}

/**
 * A DB server's state from Patroni's REST API, plus — with `psql` and the superuser password — whether its
 * own WAL receiver streams (a replica is ready only then; docs/DESIGN.md, "Processes").
 */
export async function dbserverState(
  plan: Plan,
  processId: string,
  opts: HealthOptions & { psql?: string; superuserPassword?: string } = {},
): Promise<DbserverState> {
  const p = proc(plan, processId, 'dbserver');
  const timeout = opts.timeoutMs ?? 2000;
  let st: DbserverState;
  try {
    const r = await clusterHttps(`https://${hostPort(p.address, port(p, 'rest'))}/patroni`, { method: 'GET' }, needTls(opts), timeout);
    st = parsePatroniStatus(p.id, r.status, r.body);
  } catch {
    return { id: p.id, reachable: false, role: 'unknown', running: false, streaming: null };
  }
  if (opts.psql && opts.superuserPassword !== undefined) {
    st.streaming = st.role === 'replica' && st.running ? await psqlStreaming(opts.psql, p, opts.superuserPassword, timeout, opts.tls) : false;
  }
  return st;
}

// ---------------------------------------------------------------- coordinators (HAProxy)

export interface RoutingState {
  id: string;
  reachable: boolean;
  /** HAProxy has run a check on every server of the primary listener (no INI / no check yet). */
  checked: boolean;
  /** Servers of the primary listener that are UP. */
  primariesUp: string[];
  /** Servers of the replicas listener that are UP. */
  replicasUp: string[];
  /** checked and exactly one primary up. */
  ok: boolean;
}

/** Pure: parses HAProxy's stats CSV (`/;csv`). */
export function parseHaproxyCsv(id: string, csv: string): RoutingState {
  const lines = csv.split('\n').filter((l) => l.trim() !== '');
  const header = (lines[0] ?? '').replace(/^#\s*/, '').split(',');
  const col = (n: string) => header.indexOf(n);
  const [px, sv, status, check] = [col('pxname'), col('svname'), col('status'), col('check_status')];
  const primariesUp: string[] = [];
  const replicasUp: string[] = [];
  let checked = px >= 0 && sv >= 0 && status >= 0 && check >= 0;
  let servers = 0;
  for (const line of lines.slice(1)) {
    const f = line.split(',');
    if (f[sv] === 'FRONTEND' || f[sv] === 'BACKEND') continue;
    if (f[px] !== 'primary' && f[px] !== 'replicas') continue;
    if (f[px] === 'primary') {
      servers++;
      // Before its first check a server shows check_status INI (or nothing) although its status says UP.
      if (!f[check] || /INI/.test(f[check])) checked = false;
    }
    if (f[status] === 'UP') (f[px] === 'primary' ? primariesUp : replicasUp).push(f[sv]);
  }
  if (servers === 0) checked = false;
  return { id, reachable: true, checked, primariesUp, replicasUp, ok: checked && primariesUp.length === 1 };
}

/** Reads a coordinator's stats page: ready when its checks have run and exactly one primary is up. */
export async function coordinatorRouting(plan: Plan, processId: string, opts: HealthOptions = {}): Promise<RoutingState> {
  const p = proc(plan, processId, 'coordinator');
  try {
    const r = await http(`http://${hostPort(p.address, port(p, 'stats'))}/;csv`, { method: 'GET' }, opts.timeoutMs ?? 2000);
    if (r.status !== 200) throw new DispatcherError('operation_failed', `status ${r.status}`);
    return parseHaproxyCsv(p.id, r.body);
  } catch {
    return { id: p.id, reachable: false, checked: false, primariesUp: [], replicasUp: [], ok: false };
  }
}
