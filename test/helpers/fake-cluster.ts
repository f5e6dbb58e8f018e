/**
 * Fakes for the fast orchestration tests (test/unit/orchestrator.test.ts, rolling-restart.test.ts): a
 * NodeApi per dispatcher that records every call in one shared journal and fails where a test says, a
 * scripted ClusterHealth and RestartActions, and a clock that moves time at once. Only pure orchestration
 * logic runs against these; the real-cluster tests (test/cluster/) run the same code against real nodes.
 */
import { DispatcherError } from '../../api/errors.js';
import type { Plan, PlanProcess, Role } from '../../api/plan.js';
import type { ClusterState, GuardStatusView, NodeAdoptPlan, NodeUpdatePlan, NodeStatusView, PreflightProblem } from '../../api/rest.js';
import type { ProcessStatus } from '../../api/process-status.js';
import type { NodeApi } from '../../server/cluster/node-api.js';
import type { ClusterHealth } from '../../server/cluster/orchestrator.js';
import type { RestartActions } from '../../server/core/restart-actions.js';
import type { Clock } from '../../shared/poll.js';
import { planFromSpec } from '../../launcher/planner.js';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { OperationStore } from '../../server/cluster/operations.js';
import type { ClusterLock } from '../../server/cluster/operation-lock.js';
import type { PlanVersion } from '../../api/plan-version.js';
import { planHash } from '../../server/core/plan-version.js';
import { RestartService, type UpgradeNode } from '../../server/cluster/restart.js';
import { loadEngine } from '../../server/engines/loader.js';

const FP = Array(32).fill('AB').join(':');

/** Three dispatchers, three agents, `dbservers` Patroni members and one coordinator (pg-ha). */
export function threeHostPlan(dbservers = 3): Plan {
  return planFromSpec({
    name: 'fake',
    engine: 'pg-ha',
    dispatchers: [1, 2, 3].map((i) => ({ id: `d${i}`, endpoint: `https://10.0.0.${i}:8528`, fingerprint: FP, addresses: [`10.0.0.${i}`] })),
    agents: 3,
    dbservers,
    coordinators: 1,
  });
}

/** A clock whose sleep moves time forward at once: timeouts of minutes take microseconds. */
export function fakeClock(start = 1_700_000_000_000): Clock & { slept: number } {
  let now = start;
  const clock = {
    slept: 0,
    now: () => now,
    sleep: async (ms: number) => {
      now += ms;
      clock.slept += ms;
    },
  };
  return clock;
}

/** Where a fake node fails: a method, optionally only for one process, optionally only the first `times` calls. */
export interface Failure {
  method: keyof NodeApi;
  process?: string;
  times?: number;
  error?: DispatcherError;
  /** For preflight: problems to report instead of throwing. */
  problems?: PreflightProblem[];
}

const GUARD: GuardStatusView = { backend: 'none', inSync: true, driftRepairs: 0, warnings: [] };

export class FakeNode implements NodeApi {
  readonly running = new Set<string>();
  failures: Failure[] = [];

  constructor(
    readonly id: string,
    private readonly journal: string[],
  ) {}

  private record(method: keyof NodeApi, process?: string): void {
    this.journal.push(`${this.id}:${method}${process ? `:${process}` : ''}`);
    const f = this.failures.find((x) => x.method === method && (x.process === undefined || x.process === process) && (x.times === undefined || x.times > 0));
    if (!f || f.problems) return;
    if (f.times !== undefined) f.times -= 1;
    throw f.error ?? new DispatcherError('operation_failed', `${this.id}: ${method}${process ? ` ${process}` : ''} failed (fake)`);
  }

  async adoptPlan(_payload: NodeAdoptPlan) {
    this.record('adoptPlan');
  }
  async preflight(_callerTime: number) {
    this.record('preflight');
    return this.failures.find((f) => f.method === 'preflight' && f.problems)?.problems ?? [];
  }
  async guard() {
    this.record('guard');
    return GUARD;
  }
  async verifyGuard() {
    this.record('verifyGuard');
    return GUARD;
  }
  async startProcess(processId: string, _readyTimeoutMs: number): Promise<ProcessStatus> {
    this.record('startProcess', processId);
    this.running.add(processId);
    return { id: processId, role: 'x', state: 'ready', pid: 4242, restarts: 0, command: [] };
  }
  async stopProcess(processId: string) {
    this.record('stopProcess', processId);
    this.running.delete(processId);
  }
  async setClusterState(state: ClusterState) {
    this.journal.push(`${this.id}:setClusterState:${state}`);
  }
  async status(): Promise<NodeStatusView> {
    this.record('status');
    return { dispatcher: this.id, processes: [...this.running].map((id): ProcessStatus => ({ id, role: 'x', state: 'ready', restarts: 0, command: [] })), guard: GUARD };
  }
  async cleanup(_confirmName: string) {
    this.record('cleanup');
  }
  async releasePlan(_name: string) {
    this.record('releasePlan');
    return { keptDataDirs: [] };
  }
  async refreshConfig(processId: string) {
    this.record('refreshConfig', processId);
  }
  async updatePlan(_payload: NodeUpdatePlan) {
    this.record('updatePlan');
  }
  async discardPlan(_name: string) {
    this.record('discardPlan');
  }
  async logTail(processId: string, _lines: number) {
    this.record('logTail', processId);
    return [];
  }
  async changeFirewall() {
    this.record('changeFirewall');
    return GUARD;
  }
  async confirmFirewall() {
    this.record('confirmFirewall');
    return GUARD;
  }
  async extendFirewall() {
    this.record('extendFirewall');
    return GUARD;
  }
  async cancelFirewall() {
    this.record('cancelFirewall');
    return GUARD;
  }
  // The cluster PKI steps are not part of the journal: these tests are about ordering and rollback.
  async certificateRequests() {
    return { requests: [] };
  }
  async installCertificates() {}
  async trustCa() {}
  async reloadCertificates() {
    return { processes: [] };
  }
}

/** One fake node per dispatcher of the plan, sharing one journal. */
export function fakeNodes(plan: Plan): { journal: string[]; nodes: Map<string, FakeNode> } {
  const journal: string[] = [];
  return { journal, nodes: new Map(plan.dispatchers.map((d) => [d.id, new FakeNode(d.id, journal)])) };
}

/** Cluster health answering from a script: `answer(role, call)` per check (default: healthy). */
export function scriptedHealth(answer: (role: Role, call: number) => boolean = () => true, agencyLeader?: string): ClusterHealth & { calls: Role[] } {
  const calls: Role[] = [];
  return {
    calls,
    async check(_plan: Plan, role: Role, processes: PlanProcess[]) {
      calls.push(role);
      const ok = answer(role, calls.filter((r) => r === role).length);
      return { ok, detail: `${processes.length} ${role}(s) ${ok ? 'fine' : 'not yet'}` };
    },
    agencyLeader: async () => agencyLeader,
  };
}

/** pg-ha's restart actions as a fake: fixed leaders; a switchover moves DB leadership and is journaled. */
export function fakeActions(journal: string[], leaders: { agency?: string; db?: string }): RestartActions {
  let dbLeader = leaders.db;
  return {
    agencyLeader: async () => leaders.agency,
    dbLeader: async () => dbLeader,
    async switchover(plan, _secrets, leader, prefer) {
      const replicas = plan.processes.filter((p) => p.role === 'dbserver' && p.id !== leader).map((p) => p.id);
      const candidate = replicas.find((id) => prefer.includes(id)) ?? replicas[0];
      journal.push(`switchover:${leader}->${candidate}`);
      dbLeader = candidate;
      return candidate;
    },
    async resumeCoordinators(_plan, _secrets, ids) {
      journal.push(`resume-poolers:${ids.join(',')}`);
    },
    async holdFailover() {
      journal.push('hold-failover');
    },
    async releaseFailover() {
      journal.push('release-failover');
    },
    supports: (action) => action === 'switchover',
  };
}

const noUpgrade: UpgradeNode = { preflightPlan: async () => [], adoptPlan: async () => {} };

/**
 * A RestartService over fake nodes, health, actions and clock, with its operations in a new temp dir (pushed
 * on `dirs` for the caller's cleanup): the harness of the rolling-restart unit tests.
 */
export async function restartHarness(dirs: string[], opts: { health?: ClusterHealth; clusterLock?: ClusterLock } = {}) {
  const plan = threeHostPlan();
  const { journal, nodes } = fakeNodes(plan);
  const dir = mkdtempSync(join(tmpdir(), 'cd-restart-'));
  dirs.push(dir);
  const clock = fakeClock();
  const operations = new OperationStore(dir, undefined, clock);
  await operations.load();
  if (opts.clusterLock) operations.useClusterLock(opts.clusterLock, 'd1');
  /** The running plan's version as the store answers it; a test moves it (another dispatcher's change). */
  const version: { current: PlanVersion } = { current: { number: 1, hash: planHash(plan) } };
  const service = new RestartService({
    self: nodes.get('d1')!,
    store: { get: () => ({ plan, state: 'running', secrets: {} }), version: () => version.current },
    operations,
    health: opts.health ?? scriptedHealth(),
    engine: (name) => loadEngine(name),
    peer: (d) => nodes.get(d.id)!,
    localUpgrade: noUpgrade,
    peerUpgrade: () => noUpgrade,
    actions: fakeActions(journal, { agency: 'agent-1', db: 'dbserver-1' }),
    pollMs: 100,
    clock,
  });
  const node = (process: string) => nodes.get(plan.processes.find((p) => p.id === process)!.dispatcher) as FakeNode;
  /** Process ids in the order they were stopped, and switchovers, from the journal. */
  const restarted = () => journal.filter((e) => e.includes(':stopProcess:') || e.startsWith('switchover')).map((e) => (e.startsWith('switchover') ? e : e.split(':')[2]));
  return { plan, journal, nodes, operations, service, clock, node, restarted, version };
}
