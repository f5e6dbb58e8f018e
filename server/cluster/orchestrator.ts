/**
 * Cluster-wide operations driven by whichever dispatcher was contacted: launch, shutdown, relaunch,
 * cleanup and status. It talks to every dispatcher of the plan through NodeApi (itself directly, peers
 * over pinned HTTPS), fans out concurrently, reports every step as an operation event, and on a failure
 * after preflight stops what it started in reverse order, keeping every data dir.
 */
import { randomBytes } from 'node:crypto';
import { DispatcherError, formatProblems, isDispatcherError, type Problem } from '../../api/errors.js';
import type { FirewallPolicy, Plan, PlanDispatcher, PlanProcess, Role } from '../../api/plan.js';
import { coordinatorsOf, type ClusterView, type Credential, type GuardStatusView, type NodeAdoptPlan } from '../../api/rest.js';
import { launchGroups, shutdownGroups } from '../core/order.js';
import type { ClusterStore } from './store.js';
import type { LocalNode, NodeApi, ProcessRenderer } from './node.js';
import type { OperationHandle } from './operations.js';

/** Cluster-level health of a role (beyond each process's own readiness probe). */
export interface ClusterHealth {
  check(plan: Plan, role: Role, processes: PlanProcess[], secrets: Record<string, string>): Promise<{ ok: boolean; detail: string }>;
  /** The agency's current leader (process id), so that it can be stopped last. */
  agencyLeader?(plan: Plan): Promise<string | undefined>;
}

export interface OrchestratorDeps {
  self: LocalNode;
  store: ClusterStore;
  renderer: ProcessRenderer;
  health: ClusterHealth;
  /** A client for a peer with the given credential (RemoteNode in production). */
  peer(d: PlanDispatcher, credential: Credential): NodeApi & { close?(): void; useCredential?(c: Credential): void };
  validate(plan: Plan): Problem[];
  /** How often cluster health gates poll (ms). */
  pollMs?: number;
}

export interface LaunchInput {
  plan: Plan;
  peerCredentials: Record<string, Credential>;
  readyTimeoutMs: number;
  /** The credential the operator used on the contacted dispatcher; the default for peers. */
  operatorCredential?: Credential;
}

type Nodes = Map<string, NodeApi & { close?(): void; useCredential?(c: Credential): void }>;

export class Orchestrator {
  constructor(private readonly deps: OrchestratorDeps) {}

  private nodesWith(plan: Plan, credentialFor: (d: PlanDispatcher) => Credential): Nodes {
    const nodes: Nodes = new Map();
    for (const d of plan.dispatchers) nodes.set(d.id, d.id === this.deps.self.id ? this.deps.self : this.deps.peer(d, credentialFor(d)));
    return nodes;
  }

  /** Nodes of the persisted plan, peers reached with the cluster credential. */
  private clusterNodes(): { plan: Plan; nodes: Nodes; secrets: Record<string, string> } {
    const snap = this.deps.store.get();
    if (!snap) throw new DispatcherError('not_found', `dispatcher ${this.deps.self.id} has no cluster plan; launch one first`);
    return { plan: snap.plan, secrets: snap.secrets, nodes: this.nodesWith(snap.plan, () => snap.clusterCredential) };
  }

  private close(nodes: Nodes) {
    for (const n of nodes.values()) n.close?.();
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
    const clusterCredential: Credential = { user: `cluster-${plan.name}`, password: randomBytes(32).toString('base64url') };
    const secrets = this.deps.renderer.generateSecrets(plan.engine);
    const nodes = this.nodesWith(plan, (d) => input.peerCredentials[d.id] ?? input.operatorCredential!);
    try {
      // 1. Propagate: every dispatcher stores the plan and learns the cluster credential.
      op.event({ level: 'info', step: 'propagate', message: `handing plan ${plan.name} to ${nodes.size} dispatcher(s)` });
      const payload: NodeAdoptPlan = { plan, secrets, clusterCredential };
      const adopted = await settleAll(nodes, (n) => n.adoptPlan(payload));
      if (adopted.failed.length) {
        await settleAll(subset(nodes, adopted.ok), (n) => n.discardPlan(plan.name));
        throw combined('peer_unreachable', 'propagation failed', adopted.failed);
      }
      // This launch keeps calling peers with the credentials that just worked. Switching to the new cluster
      // credential here raced the peers' users-file reload (fileUserDirectory re-stats at most every 250 ms):
      // the first preflight call got 401 "wrong user name or password". Later operations (clusterNodes) use
      // the cluster credential, long after every peer has reloaded its users.
      for (const id of nodes.keys()) op.event({ level: 'info', step: 'propagate', host: id, message: 'plan accepted' });

      // 2. Preflight everywhere; any problem and nothing starts.
      await this.preflightAll(op, plan, nodes, true);

      // 3-5. Guard, ordered start with health gates, verify.
      return await this.bringUp(op, plan, nodes, secrets, input.readyTimeoutMs);
    } finally {
      this.close(nodes);
    }
  }

  private async preflightAll(op: OperationHandle, plan: Plan, nodes: Nodes, discardOnFailure: boolean) {
    op.event({ level: 'info', step: 'preflight', message: 'checking binaries, ports, data dirs, clocks and firewall on every dispatcher' });
    const now = Date.now();
    const res = await settleAll(nodes, (n) => n.preflight(now));
    const problems: Problem[] = [];
    for (const [id, list] of res.values) for (const p of list) problems.push({ path: id, message: `${p.check}: ${p.message}` });
    for (const f of res.failed) problems.push({ path: f.host, message: f.error.message });
    for (const p of problems) op.event({ level: 'error', step: 'preflight', host: p.path, message: p.message });
    if (problems.length) {
      if (discardOnFailure) await settleAll(nodes, (n) => n.discardPlan(plan.name));
      throw new DispatcherError('preflight_failed', `preflight failed on ${new Set(problems.map((p) => p.path)).size} dispatcher(s); nothing was started:\n${problems.map((p) => `  ${p.path}: ${p.message}`).join('\n')}`, { problems });
    }
    for (const id of nodes.keys()) op.event({ level: 'info', step: 'preflight', host: id, message: 'ok' });
  }

  /** Guard → agency → DB servers → coordinators (each gated on cluster health) → verify. Rolls back on failure. */
  private async bringUp(op: OperationHandle, plan: Plan, nodes: Nodes, secrets: Record<string, string>, readyTimeoutMs: number, alreadyRunning = new Set<string>()) {
    // Rollback stops only what this operation started, never a process that was serving before it.
    const started: PlanProcess[] = [];
    try {
      op.event({ level: 'info', step: 'guard', message: 'installing firewall guard on every dispatcher before any process starts' });
      const guards = await settleAll(nodes, (n) => n.guard());
      if (guards.failed.length) throw combined('operation_failed', 'firewall guard failed', guards.failed);
      for (const [id, g] of guards.values) op.event({ level: 'info', step: 'guard', host: id, message: describeGuard(g) });

      for (const group of launchGroups(plan)) {
        op.event({ level: 'info', step: 'start', message: `starting ${group.processes.length} ${group.role}(s)` });
        const results = await Promise.allSettled(
          group.processes.map(async (p) => {
            op.event({ level: 'info', step: 'start', host: p.dispatcher, process: p.id, message: `starting ${p.role} ${p.id}` });
            if (!alreadyRunning.has(p.id)) started.push(p);
            const st = await nodes.get(p.dispatcher)!.startProcess(p.id, readyTimeoutMs);
            op.event({ level: 'info', step: 'ready', host: p.dispatcher, process: p.id, message: `${p.id} ready (pid ${st.pid})` });
          }),
        );
        const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
        if (failed) throw failed.reason;
        await this.waitHealthy(op, plan, group.role, group.processes, secrets, readyTimeoutMs);
      }

      op.event({ level: 'info', step: 'verify', message: 'reading the firewall guard back on every dispatcher' });
      const verified = await settleAll(nodes, (n) => n.verifyGuard());
      if (verified.failed.length) throw combined('operation_failed', 'guard verification failed', verified.failed);
      const bad = [...verified.values].filter(([, g]) => g.inSync === false);
      if (bad.length) throw new DispatcherError('operation_failed', `firewall guard not in place on ${bad.map(([id]) => id).join(', ')}`, { details: { host: bad[0][0] } });
      await settleAll(nodes, (n) => n.setClusterState('running'));
      const coordinators = coordinatorsOf(plan);
      op.event({ level: 'info', step: 'ready', message: `cluster ${plan.name} ready; coordinators: ${coordinators.map((c) => `${c.host}:${c.port}`).join(', ') || 'none'}` });
      return { cluster: plan.name, coordinators, guards: Object.fromEntries(verified.values) };
    } catch (e) {
      await this.rollback(op, plan, nodes, started);
      throw e;
    }
  }

  private async waitHealthy(op: OperationHandle, plan: Plan, role: Role, processes: PlanProcess[], secrets: Record<string, string>, timeoutMs: number) {
    const deadline = Date.now() + timeoutMs;
    let last = '';
    for (;;) {
      let res: { ok: boolean; detail: string };
      try {
        res = await this.deps.health.check(plan, role, processes, secrets);
      } catch (e) {
        res = { ok: false, detail: (e as Error).message };
      }
      if (res.ok) {
        op.event({ level: 'info', step: 'healthy', message: `${role}s healthy: ${res.detail}` });
        return;
      }
      if (res.detail !== last) op.event({ level: 'info', step: 'waiting', message: `waiting for ${role}s: ${res.detail}` });
      last = res.detail;
      if (Date.now() > deadline) {
        throw new DispatcherError('operation_failed', `${role}s not healthy within ${Math.round(timeoutMs / 1000)} s: ${res.detail}`, {
          details: { process: processes.map((p) => p.id).join(','), host: [...new Set(processes.map((p) => p.dispatcher))].join(',') },
        });
      }
      await sleep(this.deps.pollMs ?? 500);
    }
  }

  private async rollback(op: OperationHandle, plan: Plan, nodes: Nodes, started: PlanProcess[]) {
    if (started.length) op.event({ level: 'warn', step: 'rollback', message: `stopping the ${started.length} process(es) this launch started, in reverse order; data dirs are kept` });
    const startedIds = new Set(started.map((p) => p.id));
    await this.stopInOrder(op, plan, nodes, (p) => startedIds.has(p.id), 'rollback');
    await settleAll(nodes, (n) => n.setClusterState('failed'));
  }

  /**
   * Stops processes in shutdown order (coordinators, DB servers, agency), each role's processes together —
   * except the agency: followers first, the leader last (stopping every etcd member at once makes the last
   * one wait ~7 s for its peers; DESIGN §8). Returns what could not be stopped.
   */
  private async stopInOrder(op: OperationHandle, plan: Plan, nodes: Nodes, include: (p: PlanProcess) => boolean, step: string): Promise<string[]> {
    const failures: string[] = [];
    for (const group of shutdownGroups(plan)) {
      const procs = group.processes.filter(include);
      if (!procs.length) continue;
      op.event({ level: 'info', step, message: `stopping ${procs.length} ${group.role}(s)` });
      const leader = group.role === 'agent' ? await this.deps.health.agencyLeader?.(plan).catch(() => undefined) : undefined;
      const waves = leader ? [procs.filter((p) => p.id !== leader), procs.filter((p) => p.id === leader)] : [procs];
      for (const wave of waves) {
        await Promise.all(
          wave.map(async (p) => {
            try {
              await nodes.get(p.dispatcher)!.stopProcess(p.id);
              op.event({ level: 'info', step, host: p.dispatcher, process: p.id, message: `${p.id} stopped` });
            } catch (e) {
              failures.push(`${p.id} on ${p.dispatcher}: ${(e as Error).message}`);
              op.event({ level: 'error', step, host: p.dispatcher, process: p.id, message: `could not stop ${p.id}: ${(e as Error).message}` });
            }
          }),
        );
      }
    }
    return failures;
  }

  async shutdown(op: OperationHandle): Promise<Record<string, unknown>> {
    const { plan, nodes } = this.clusterNodes();
    try {
      const failures = await this.stopInOrder(op, plan, nodes, () => true, 'stop');
      const states = await settleAll(nodes, (n) => n.setClusterState('shutdown'));
      for (const f of states.failed) failures.push(`${f.host}: ${f.error.message}`);
      if (failures.length) throw new DispatcherError('operation_failed', `shutdown incomplete:\n  ${failures.join('\n  ')}`);
      return { cluster: plan.name, state: 'shutdown' };
    } finally {
      this.close(nodes);
    }
  }

  async relaunch(op: OperationHandle, readyTimeoutMs: number): Promise<Record<string, unknown>> {
    const { plan, nodes, secrets } = this.clusterNodes();
    try {
      const snap = this.deps.store.get()!;
      const invalid = this.deps.validate(plan);
      if (invalid.length) {
        throw new DispatcherError('validation_failed', `the stored plan of cluster ${plan.name} is not valid any more; nothing was started:\n${formatProblems(invalid)}`, { problems: invalid });
      }
      // A running cluster may be relaunched too: processes still running are kept (starting the same spec
      // is a no-op), those that are gone (e.g. after a reboot with relaunchOnBoot off) are started again.
      if (snap.state === 'launching') throw new DispatcherError('conflict', `cluster ${plan.name} is still launching`);
      const statuses = await settleAll(nodes, (n) => n.status());
      const running = new Set([...statuses.values.values()].flatMap((s) => s.processes.filter((p) => p.state === 'ready' || p.state === 'running').map((p) => p.id)));
      await settleAll(nodes, (n) => n.setClusterState('launching'));
      await this.preflightAll(op, plan, nodes, false);
      return await this.bringUp(op, plan, nodes, secrets, readyTimeoutMs, running);
    } finally {
      this.close(nodes);
    }
  }

  async cleanup(op: OperationHandle, confirmName: string): Promise<Record<string, unknown>> {
    const { plan, nodes } = this.clusterNodes();
    try {
      if (confirmName !== plan.name) throw new DispatcherError('bad_request', `cleanup deletes every data dir of the cluster: repeat its name (${plan.name}) to confirm`);
      const snap = this.deps.store.get()!;
      if (snap.state === 'running' || snap.state === 'launching') throw new DispatcherError('conflict', `cluster ${plan.name} is ${snap.state}; shut it down before cleanup`);
      op.event({ level: 'warn', step: 'cleanup', message: `removing data dirs and firewall rules of ${plan.name} on every dispatcher` });
      const res = await settleAll(nodes, (n) => n.cleanup(confirmName));
      for (const id of res.ok) op.event({ level: 'info', step: 'cleanup', host: id, message: 'data dirs removed' });
      if (res.failed.length) throw combined('operation_failed', 'cleanup incomplete', res.failed);
      return { cluster: plan.name, state: 'cleaned' };
    } finally {
      this.close(nodes);
    }
  }

  /**
   * Commit-confirmed firewall change on every dispatcher: the new rules go in at once and roll back by
   * themselves unless confirmFirewall() comes in time — an operator who cut themselves off cannot confirm,
   * so they get their access back.
   */
  async changeFirewall(firewall: FirewallPolicy, confirmWithinSeconds: number): Promise<Record<string, unknown>> {
    const { plan, nodes } = this.clusterNodes();
    try {
      if (firewall.backend !== plan.firewall.backend) {
        throw new DispatcherError('bad_request', `a firewall change cannot switch the backend (${plan.firewall.backend} → ${firewall.backend}); shut down, clean up and launch again for that`);
      }
      const problems = this.deps.validate({ ...plan, firewall });
      if (problems.length) throw new DispatcherError('validation_failed', 'the new firewall policy is not valid', { problems });
      const res = await settleAll(nodes, (n) => n.changeFirewall(firewall, confirmWithinSeconds));
      if (res.failed.length) throw combined('operation_failed', 'firewall change failed (hosts that took it roll back by themselves)', res.failed);
      const confirmBy = [...res.values.values()].map((g) => g.pendingConfirmUntil).filter(Boolean).sort()[0];
      return { cluster: plan.name, confirmBy, guards: Object.fromEntries(res.values) };
    } finally {
      this.close(nodes);
    }
  }

  async confirmFirewall(): Promise<Record<string, unknown>> {
    const { plan, nodes } = this.clusterNodes();
    try {
      const res = await settleAll(nodes, (n) => n.confirmFirewall());
      if (res.failed.length) throw combined('operation_failed', 'firewall change not confirmed everywhere', res.failed);
      return { cluster: plan.name, confirmed: true, guards: Object.fromEntries(res.values) };
    } finally {
      this.close(nodes);
    }
  }

  /** A process's log from whichever dispatcher runs it. */
  async processLog(processId: string, lines: number): Promise<{ id: string; host: string; lines: string[] }> {
    const { plan, nodes } = this.clusterNodes();
    try {
      const p = plan.processes.find((x) => x.id === processId);
      if (!p) throw new DispatcherError('not_found', `cluster ${plan.name} has no process ${processId} (it has ${plan.processes.map((x) => x.id).join(', ')})`);
      return { id: p.id, host: p.dispatcher, lines: await nodes.get(p.dispatcher)!.logTail(p.id, lines) };
    } finally {
      this.close(nodes);
    }
  }

  async status(): Promise<ClusterView> {
    const snap = this.deps.store.get();
    if (!snap) return { name: null, state: 'none', dispatchers: [], processes: [], coordinators: [] };
    const { plan, nodes } = this.clusterNodes();
    try {
      const res = await settleAll(nodes, (n) => n.status());
      const byId = new Map([...res.values].flatMap(([, s]) => s.processes.map((p) => [p.id, p] as const)));
      return {
        name: plan.name,
        engine: plan.engine,
        state: snap.state,
        dispatchers: plan.dispatchers.map((d) => {
          const st = res.values.get(d.id);
          const f = res.failed.find((x) => x.host === d.id);
          return { id: d.id, endpoint: d.endpoint, reachable: !!st, ...(f ? { error: f.error.message } : {}), ...(st?.guard ? { guard: st.guard } : {}) };
        }),
        processes: plan.processes.map((p) => {
          const s = byId.get(p.id);
          const reachable = res.values.has(p.dispatcher);
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
          };
        }),
        coordinators: coordinatorsOf(plan),
      };
    } finally {
      this.close(nodes);
    }
  }
}

function describeGuard(g: GuardStatusView): string {
  return `${g.backend}${g.inSync === false ? ' (NOT in sync)' : ''}${g.note ? ` — ${g.note}` : ''}${g.warnings.length ? ` — warnings: ${g.warnings.join('; ')}` : ''}`;
}

interface Settled<T> {
  values: Map<string, T>;
  ok: string[];
  failed: { host: string; error: DispatcherError }[];
}

/** Runs fn on every node concurrently and collects results and failures by dispatcher id. */
async function settleAll<T>(nodes: Nodes, fn: (n: NodeApi) => Promise<T>): Promise<Settled<T>> {
  const entries = [...nodes.entries()];
  const results = await Promise.allSettled(entries.map(([, n]) => fn(n)));
  const out: Settled<T> = { values: new Map(), ok: [], failed: [] };
  results.forEach((r, i) => {
    const id = entries[i][0];
    if (r.status === 'fulfilled') {
      out.values.set(id, r.value);
      out.ok.push(id);
    } else {
      const e = r.reason;
      out.failed.push({ host: id, error: isDispatcherError(e) ? e : new DispatcherError('internal', (e as Error)?.message ?? String(e)) });
    }
  });
  return out;
}

function subset(nodes: Nodes, ids: string[]): Nodes {
  return new Map([...nodes].filter(([id]) => ids.includes(id)));
}

function combined(code: 'peer_unreachable' | 'operation_failed', what: string, failed: { host: string; error: DispatcherError }[]): DispatcherError {
  // Keep the most specific code of the first failure (e.g. peer_untrusted, conflict).
  const first = failed[0].error;
  return new DispatcherError(first.code === 'internal' ? code : first.code, `${what}:\n${failed.map((f) => `  ${f.host}: ${f.error.message}`).join('\n')}`, {
    problems: failed.map((f) => ({ path: f.host, message: f.error.message })),
    details: { host: failed[0].host, ...first.details },
  });
}

function sleep(ms: number) {
  return new Promise((r) => setTimeout(r, ms));
}
