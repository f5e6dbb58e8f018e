/**
 * Cluster-wide operations driven by whichever dispatcher was contacted: launch, shutdown, relaunch,
 * cleanup and status. It talks to every dispatcher of the plan through NodeApi (itself directly, peers
 * over pinned HTTPS), fans out concurrently, reports every step as an operation event, and on a failure
 * after preflight stops what it started in reverse order, keeping every data dir.
 *
 * The plan's nodes (plan-nodes.ts) are shared with its two siblings, reached through it: the firewall
 * change (cluster-firewall.ts) and the certificate operations (cluster-certificates.ts). The parts that need
 * no node state live in their own files: fan-out.ts, launch-steps.ts (preflight, certificates and health
 * gates, shared with the scale-out steps), issue-certificates.ts, ca-rotation.ts, cluster-view.ts, stop-order.ts.
 */
import { DispatcherError, formatProblems, type Problem } from '../../api/errors.js';
import type { Plan, PlanDispatcher, PlanProcess } from '../../api/plan.js';
import { coordinatorsOf, type ClusterView, type Credential, type NodeAdoptPlan } from '../../api/rest.js';
import { launchGroups } from '../core/order.js';
import { stopInOrder } from './stop-order.js';
import type { ClusterHealth } from './cluster-health.js';
import type { ClusterStore } from './store.js';
import type { NodeApi, ProcessRenderer } from './node-api.js';
import type { OperationHandle } from './operations.js';
import { clusterViewOf } from './cluster-view.js';
import { PlanNodes } from './plan-nodes.js';
import { ClusterFirewall } from './cluster-firewall.js';
import { ClusterCertificates } from './cluster-certificates.js';
import { combined, describeGuard, settleAll, subset, type Nodes } from './fan-out.js';
import { certificatesAll, preflightAll, waitRoleHealthy } from './launch-steps.js';
import { STORED_PLAN, type ValidateOptions } from '../core/validate-plan.js';
import { systemClock, type Clock } from '../../shared/poll.js';

export type { ClusterHealth } from './cluster-health.js';

/** What the Orchestrator needs, narrowed to what it uses (fakes of these drive test/unit/orchestrator.test.ts). */
export interface OrchestratorDeps {
  /** This dispatcher (LocalNode in production). */
  self: NodeApi;
  store: Pick<ClusterStore, 'get' | 'save'>;
  renderer: Pick<ProcessRenderer, 'generateSecrets'>;
  health: ClusterHealth;
  /**
   * A client for a peer (RemoteNode in production: mutual TLS with this dispatcher's certificate).
   * `firstContact` is the operator credential for adopting a plan; only launch passes one.
   */
  peer(d: PlanDispatcher, firstContact?: Credential): NodeApi & { close?(): void };
  /** `opts` STORED_PLAN for the stored plan (an intermediate scale version may have an even agency). */
  validate(plan: Plan, opts?: ValidateOptions): Problem[];
  /** How often cluster health gates poll (ms). */
  pollMs?: number;
  /** Time for health gates and preflight (default: the system clock). */
  clock?: Clock;
}

export interface LaunchInput {
  plan: Plan;
  peerCredentials: Record<string, Credential>;
  readyTimeoutMs: number;
  /** The credential the operator used on the contacted dispatcher; the default for first contact with peers. */
  operatorCredential?: Credential;
}


export class Orchestrator {
  private readonly clock: Clock;
  /** The clock as a function, for settleAll's answer times. */
  private readonly now: () => number;

  /** Milliseconds since `t0` on the operation's clock (the events' step durations). */
  private since(t0: number): number {
    return Math.round(this.clock.now() - t0);
  }

  /** The plan's dispatchers as nodes, opened and closed per operation (plan-nodes.ts). */
  private readonly planNodes: PlanNodes;
  /** Commit-confirmed firewall changes of the running cluster (cluster-firewall.ts). */
  readonly firewall: ClusterFirewall;
  /** Certificate renewal, reload and CA rotation of the running cluster (cluster-certificates.ts). */
  readonly certificates: ClusterCertificates;

  constructor(private readonly deps: OrchestratorDeps) {
    this.clock = deps.clock ?? systemClock;
    this.now = () => this.clock.now();
    this.planNodes = new PlanNodes(deps);
    this.firewall = new ClusterFirewall(this.planNodes, deps.validate);
    this.certificates = new ClusterCertificates(this.planNodes, deps.store, this.clock);
  }

  /** Checks a plan for a launch before an operation is created (so a bad plan is a 400, not a failed operation). */
  precheckLaunch(input: LaunchInput): void {
    const problems = this.deps.validate(input.plan);
    if (problems.length) throw new DispatcherError('validation_failed', `plan ${input.plan.name} is not valid`, { problems });
    if (!input.plan.dispatchers.some((d) => d.id === this.deps.self.id)) {
      throw new DispatcherError('bad_request', `the plan does not name this dispatcher (${this.deps.self.id}); contact one of its dispatchers`);
    }
    const missing = input.plan.dispatchers.filter((d) => d.id !== this.deps.self.id && !input.peerCredentials[d.id] && !input.operatorCredential);
    if (missing.length) {
      throw new DispatcherError('bad_request', `no credentials for peers ${missing.map((d) => d.id).join(', ')}: pass peerCredentials (the local socket carries no password to forward)`);
    }
    const snap = this.deps.store.get();
    if (snap && snap.state !== 'cleaned' && (snap.plan.name !== input.plan.name || snap.state === 'running' || snap.state === 'launching')) {
      throw new DispatcherError('conflict', `cluster ${snap.plan.name} is ${snap.state} on this dispatcher; shut it down and clean it up first`, {
        details: { activePlan: snap.plan.name, state: snap.state },
      });
    }
  }

  async launch(op: OperationHandle, input: LaunchInput): Promise<Record<string, unknown>> {
    const { plan } = input;
    this.precheckLaunch(input);
    const secrets = this.deps.renderer.generateSecrets(plan.engine);
    // The operator credential goes to each peer once, to adopt the plan; every later call is trusted by
    // this dispatcher's certificate, which the adopted plan pins (docs/SECURITY.md, "Identities").
    const nodes = this.planNodes.of(plan, (d) => input.peerCredentials[d.id] ?? input.operatorCredential);
    let bringingUp = false;
    let adoptedBy: string[] = [];
    const launchedAt = this.clock.now();
    try {
      // 1. Propagate: every dispatcher stores the plan (its pins are who may call its node routes).
      op.event({ level: 'info', step: 'propagate', message: `handing plan ${plan.name} to ${nodes.size} dispatcher(s)` });
      const payload: NodeAdoptPlan = { plan, secrets };
      const adopted = await settleAll(nodes, (n) => n.adoptPlan(payload), this.now);
      adoptedBy = adopted.ok;
      if (adopted.failed.length) throw combined('peer_unreachable', 'propagation failed', adopted.failed);
      for (const id of nodes.keys()) op.event({ level: 'info', step: 'propagate', host: id, message: 'plan accepted', durationMs: adopted.ms.get(id) });

      // 2-3. Preflight everywhere, and meanwhile the cluster CA signs every dispatcher's process
      // certificates (keys stay where they were made): both only read the adopted plan, and certificates
      // live in the plan's store, which the abandon below forgets. Both settle before either's failure is
      // thrown, so nothing is still running when the plan is abandoned; a preflight problem is reported
      // first (docs/BENCHMARKS.md, "Launch overhead").
      const [checked, certified] = await Promise.allSettled([preflightAll(op, nodes, this.clock), certificatesAll(op, this.deps.store, this.deps.self.id, plan, nodes, this.clock, { create: true })]);
      if (checked.status === 'rejected') throw checked.reason;
      if (certified.status === 'rejected') throw certified.reason;

      // 4-6. Guard, ordered start with health gates, verify (bringUp rolls back by itself).
      bringingUp = true;
      return await this.bringUp(op, plan, nodes, secrets, input.readyTimeoutMs, new Set(), launchedAt);
    } catch (e) {
      // Whatever failed before anything started — a peer's error, a malformed answer, a bug — no
      // dispatcher may stay `launching`: forget the plan everywhere it was adopted.
      if (!bringingUp) await this.abandon(op, plan, subset(nodes, adoptedBy));
      throw e;
    } finally {
      this.planNodes.close(nodes);
    }
  }

  /** Forgets a plan that never started on the dispatchers that adopted it (best effort per peer; always locally). */
  private async abandon(op: OperationHandle, plan: Plan, nodes: Nodes) {
    const res = await settleAll(nodes, (n) => n.discardPlan(plan.name));
    for (const f of res.failed) op.event({ level: 'warn', step: 'rollback', host: f.host, message: `could not discard the plan: ${f.error.message}` });
    const snap = this.deps.store.get();
    if (snap && snap.plan.name === plan.name && snap.state === 'launching') await this.deps.self.discardPlan(plan.name);
  }

  /** Guard → agency → DB servers → coordinators (each gated on cluster health) → verify. Rolls back on failure. */
  private async bringUp(
    op: OperationHandle,
    plan: Plan,
    nodes: Nodes,
    secrets: Record<string, string>,
    readyTimeoutMs: number,
    alreadyRunning = new Set<string>(),
    startedAt = this.clock.now(),
  ) {
    // Rollback stops only what this operation started, never a process that was serving before it.
    const started: PlanProcess[] = [];
    try {
      op.event({ level: 'info', step: 'guard', message: 'installing firewall guard on every dispatcher before any process starts' });
      const guards = await settleAll(nodes, (n) => n.guard(), this.now);
      if (guards.failed.length) throw combined('operation_failed', 'firewall guard failed', guards.failed);
      for (const [id, g] of guards.values) op.event({ level: 'info', step: 'guard', host: id, message: describeGuard(g), durationMs: guards.ms.get(id) });

      for (const group of launchGroups(plan)) {
        op.event({ level: 'info', step: 'start', message: `starting ${group.processes.length} ${group.role}(s)` });
        const groupAt = this.clock.now();
        const results = await Promise.allSettled(
          group.processes.map(async (p) => {
            op.event({ level: 'info', step: 'start', host: p.dispatcher, process: p.id, message: `starting ${p.role} ${p.id}` });
            if (!alreadyRunning.has(p.id)) started.push(p);
            const t0 = this.clock.now();
            const st = await nodes.get(p.dispatcher)!.startProcess(p.id, readyTimeoutMs);
            op.event({ level: 'info', step: 'ready', host: p.dispatcher, process: p.id, message: `${p.id} ready (pid ${st.pid})`, durationMs: this.since(t0) });
          }),
        );
        const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
        if (failed) throw failed.reason;
        await waitRoleHealthy(op, { health: this.deps.health, clock: this.clock, pollMs: this.deps.pollMs }, plan, group.role, group.processes, secrets, readyTimeoutMs, groupAt);
        // From here the launch is an operation like the others: locked and recorded in the agency.
        if (group.role === 'agent') await op.lockCluster();
      }

      op.event({ level: 'info', step: 'verify', message: 'reading the firewall guard back on every dispatcher' });
      const verified = await settleAll(nodes, (n) => n.verifyGuard(), this.now);
      if (verified.failed.length) throw combined('operation_failed', 'guard verification failed', verified.failed);
      const bad = [...verified.values].filter(([, g]) => g.inSync === false);
      if (bad.length) throw new DispatcherError('operation_failed', `firewall guard not in place on ${bad.map(([id]) => id).join(', ')}`, { details: { host: bad[0][0] } });
      await settleAll(nodes, (n) => n.setClusterState('running'));
      const coordinators = coordinatorsOf(plan);
      op.event({
        level: 'info',
        step: 'ready',
        message: `cluster ${plan.name} ready; coordinators: ${coordinators.map((c) => `${c.host}:${c.port}`).join(', ') || 'none'}`,
        durationMs: this.since(startedAt),
      });
      return { cluster: plan.name, coordinators, guards: Object.fromEntries(verified.values) };
    } catch (e) {
      await this.rollback(op, plan, nodes, started);
      throw e;
    }
  }

  private async rollback(op: OperationHandle, plan: Plan, nodes: Nodes, started: PlanProcess[]) {
    if (started.length) op.event({ level: 'warn', step: 'rollback', message: `stopping the ${started.length} process(es) this launch started, in reverse order; data dirs are kept` });
    const startedIds = new Set(started.map((p) => p.id));
    await stopInOrder(this.deps.health, op, plan, nodes, (p) => startedIds.has(p.id), 'rollback');
    await settleAll(nodes, (n) => n.setClusterState('failed'));
  }

  async shutdown(op: OperationHandle): Promise<Record<string, unknown>> {
    return this.planNodes.withStored(async ({ plan, nodes }) => {
      const failures = await stopInOrder(this.deps.health, op, plan, nodes, () => true, 'stop');
      const states = await settleAll(nodes, (n) => n.setClusterState('shutdown'));
      for (const f of states.failed) failures.push(`${f.host}: ${f.error.message}`);
      if (failures.length) throw new DispatcherError('operation_failed', `shutdown incomplete:\n  ${failures.join('\n  ')}`);
      return { cluster: plan.name, state: 'shutdown' };
    });
  }

  /** `takeOver`: resuming a launch whose runner died, so `launching` is expected (docs/DESIGN.md, "Operation lifecycle"). */
  async relaunch(op: OperationHandle, readyTimeoutMs: number, takeOver = false): Promise<Record<string, unknown>> {
    return this.planNodes.withStored(async ({ plan, nodes, secrets }) => {
      const snap = this.deps.store.get()!;
      const invalid = this.deps.validate(plan, STORED_PLAN);
      if (invalid.length) {
        throw new DispatcherError('validation_failed', `the stored plan of cluster ${plan.name} is not valid any more; nothing was started:\n${formatProblems(invalid)}`, { problems: invalid });
      }
      // A running cluster may be relaunched too: processes still running are kept (starting the same spec
      // is a no-op), those that are gone (e.g. after a reboot with relaunchOnBoot off) are started again.
      if (snap.state === 'launching' && !takeOver) throw new DispatcherError('conflict', `cluster ${plan.name} is still launching; if its launch's dispatcher died, this dispatcher rolls its part back by itself after operations.launchStaleSeconds (or shut the cluster down now)`);
      const statuses = await settleAll(nodes, (n) => n.status());
      const running = new Set([...statuses.values.values()].flatMap((s) => s.processes.filter((p) => p.state === 'ready' || p.state === 'running').map((p) => p.id)));
      await settleAll(nodes, (n) => n.setClusterState('launching'));
      try {
        await preflightAll(op, nodes, this.clock);
      } catch (e) {
        // Nothing was started: every dispatcher goes back to the state it had, none stays `launching`.
        const previous = snap.state;
        await settleAll(nodes, (n) => n.setClusterState(previous === 'none' || previous === 'cleaned' ? 'failed' : previous));
        throw e;
      }
      return await this.bringUp(op, plan, nodes, secrets, readyTimeoutMs, running);
    });
  }

  /** Abort of a launch whose runner died: every process of the plan stops (shutdown order, data kept); the cluster is `failed`. */
  async stopLaunch(op: OperationHandle): Promise<Record<string, unknown>> {
    return this.planNodes.withStored(async ({ plan, nodes }) => {
      const failures = await stopInOrder(this.deps.health, op, plan, nodes, () => true, 'abort');
      const states = await settleAll(nodes, (n) => n.setClusterState('failed'));
      for (const f of states.failed) failures.push(`${f.host}: ${f.error.message}`);
      if (failures.length) throw new DispatcherError('operation_failed', `abort of the launch incomplete:\n  ${failures.join('\n  ')}`);
      return { cluster: plan.name, state: 'failed' };
    });
  }

  async cleanup(op: OperationHandle, confirmName: string): Promise<Record<string, unknown>> {
    return this.planNodes.withStored(async ({ plan, nodes }) => {
      if (confirmName !== plan.name) throw new DispatcherError('bad_request', `cleanup deletes every data dir of the cluster: repeat its name (${plan.name}) to confirm`);
      const snap = this.deps.store.get()!;
      if (snap.state === 'running' || snap.state === 'launching') throw new DispatcherError('conflict', `cluster ${plan.name} is ${snap.state}; shut it down before cleanup`);
      op.event({ level: 'warn', step: 'cleanup', message: `removing data dirs and firewall rules of ${plan.name} on every dispatcher` });
      const res = await settleAll(nodes, (n) => n.cleanup(confirmName));
      for (const id of res.ok) op.event({ level: 'info', step: 'cleanup', host: id, message: 'data dirs removed' });
      if (res.failed.length) throw combined('operation_failed', 'cleanup incomplete', res.failed);
      return { cluster: plan.name, state: 'cleaned' };
    });
  }

  /** A process's log from whichever dispatcher runs it. */
  async processLog(processId: string, lines: number): Promise<{ id: string; host: string; lines: string[] }> {
    return this.planNodes.withStored(async ({ plan, nodes }) => {
      const p = plan.processes.find((x) => x.id === processId);
      if (!p) throw new DispatcherError('not_found', `cluster ${plan.name} has no process ${processId} (it has ${plan.processes.map((x) => x.id).join(', ')})`);
      return { id: p.id, host: p.dispatcher, lines: await nodes.get(p.dispatcher)!.logTail(p.id, lines) };
    });
  }

  async status(): Promise<ClusterView> {
    const snap = this.deps.store.get();
    if (!snap) return { name: null, state: 'none', dispatchers: [], processes: [], coordinators: [] };
    return this.planNodes.withStored(async ({ plan, nodes }) => {
      const res = await settleAll(nodes, (n) => n.status());
      return clusterViewOf(plan, snap.state, res);
    });
  }
}
