/**
 * The rolling-restart (and upgrade) operation. server/core/restart-plan.ts decides which processes go in
 * which order with which gates; this module carries it out against every dispatcher of the plan through
 * NodeApi (stop, then start = re-render + wait ready), with the engine's actions (Patroni switchover) and
 * a cluster-health gate after every process. Progress is persisted after every process, so a failed
 * operation can be retried (a new operation that skips what is done), aborted (every process it stopped is
 * started again, or reported), and resumed after the dispatcher running it restarted.
 */
import { access, constants } from 'node:fs/promises';
import { execFile } from 'node:child_process';
import { DispatcherError, isDispatcherError } from '../../api/errors.js';
import { ROLE_ORDER, type Plan, type PlanDispatcher, type PlanProcess, type Role } from '../../api/plan.js';
import { RestartRequestSchema, type Credential, type OperationView, type PreflightProblem, type RestartRequest } from '../../api/rest.js';
import { DispatcherClient } from '../../launcher/client.js';
import {
  allAtOncePlan,
  describeRestartPlan,
  rollingRestartPlan,
  sameExceptBinaries,
  selectProcesses,
  upgradeBinaries,
  type PlanStep,
  type RestartEntry,
  type RoleSteps,
} from '../core/restart-plan.js';
import type { Engine } from '../engines/types.js';
import { agencyStatus, dbserverState } from '../engines/pg-ha-health.js';
import { hostPort } from '../engines/render.js';
import { assertValidPlan, validatePlan } from '../core/validate-plan.js';
import { enginePrograms } from '../engines/loader.js';
import type { ClusterStore } from './store.js';
import type { LocalNode, NodeApi, ProcessRenderer } from './node.js';
import type { OperationHandle, OperationStore } from './operations.js';
import type { ClusterHealth } from './orchestrator.js';

export type NormalizedRestartRequest = ReturnType<typeof RestartRequestSchema.parse>;

/** What a restart operation persists (OperationView.progress). */
export interface RestartProgress {
  request: NormalizedRestartRequest;
  /** Processes restarted and gated; skipped by a retry or a resume. */
  done: string[];
  /** Stopped by this operation and not yet ready again (abort starts them). */
  stopped: string[];
  /** The process being restarted right now (a resume finishes it first). */
  current?: string;
  /** The plan's binaries after an upgrade was adopted everywhere. */
  binaries?: Record<string, string>;
  retryOf?: string;
  abortOf?: string;
  [k: string]: unknown;
}

/** The upgrade side of a dispatcher: preflight a changed plan, and adopt it (binaries only). */
export interface UpgradeNode {
  preflightPlan(plan: Plan): Promise<PreflightProblem[]>;
  adoptPlan(plan: Plan): Promise<void>;
  close?(): void;
}

/** Engine-specific facts and actions a rolling restart needs (pg-ha's in production; fakes in tests). */
export interface RestartActions {
  agencyLeader(plan: Plan): Promise<string | undefined>;
  dbLeader(plan: Plan, secrets: Record<string, string>): Promise<string | undefined>;
  /** Moves DB leadership from `leader` to a healthy, caught-up replica (preferring `prefer`); returns the new leader. */
  switchover(plan: Plan, secrets: Record<string, string>, leader: string, prefer: string[], timeoutMs: number): Promise<string>;
  /** Actions this engine implements (others make the operation refuse before anything restarts). */
  supports(action: string): boolean;
}

export interface RestartDeps {
  self: LocalNode;
  store: ClusterStore;
  operations: OperationStore;
  health: ClusterHealth;
  engine(name: string): Engine;
  peer(d: PlanDispatcher, credential: Credential): NodeApi & { close?(): void };
  /** This dispatcher's upgrade side, and a peer's over HTTPS. */
  localUpgrade: UpgradeNode;
  peerUpgrade(d: PlanDispatcher, credential: Credential): UpgradeNode;
  actions: RestartActions;
  pollMs?: number;
}

type Nodes = Map<string, NodeApi & { close?(): void }>;

function stepsOf(engine: Engine): Record<Role, RoleSteps> {
  return Object.fromEntries(ROLE_ORDER.map((r) => [r, engine.manifest.roles[r].rollingRestart])) as Record<Role, RoleSteps>;
}

/** Actions that the executor itself fulfils for every engine (the gates). */
const GATE_ACTIONS = new Set(['wait-ready', 'wait-agency-leader', 'wait-replica-streaming', 'wait-routing']);

export class RestartService {
  private readonly aborts = new Map<string, AbortController>();

  constructor(private readonly deps: RestartDeps) {}

  /** This dispatcher's upgrade side (served to peers by routes/restart.ts). */
  get localUpgrade(): UpgradeNode {
    return this.deps.localUpgrade;
  }

  private snapshot() {
    const snap = this.deps.store.get();
    if (!snap) throw new DispatcherError('not_found', `dispatcher ${this.deps.self.id} has no cluster plan; launch one first`);
    if (snap.state !== 'running') throw new DispatcherError('conflict', `cluster ${snap.plan.name} is ${snap.state}; a rolling restart needs a running cluster`);
    return snap;
  }

  private nodes(plan: Plan, credential: Credential): Nodes {
    const nodes: Nodes = new Map();
    for (const d of plan.dispatchers) nodes.set(d.id, d.id === this.deps.self.id ? this.deps.self : this.deps.peer(d, credential));
    return nodes;
  }

  /** The engine's steps for the plan, the ordered batches and a printable list (pure parts from core/restart-plan). */
  describe(plan: Plan, req: NormalizedRestartRequest, facts: { agencyLeader?: string; dbLeader?: string }, done: string[] = [], first?: string) {
    const engine = this.deps.engine(plan.engine);
    const batches = rollingRestartPlan(plan, req.processes, stepsOf(engine), facts, done);
    if (first) {
      for (const b of batches) {
        const i = b.processes.findIndex((e) => e.process === first);
        if (i > 0) b.processes.unshift(...b.processes.splice(i, 1));
      }
    }
    return { batches, lines: describeRestartPlan(batches) };
  }

  /** Whole-cluster health: every role's check passes. */
  private async clusterHealth(plan: Plan, secrets: Record<string, string>): Promise<{ ok: boolean; detail: string }> {
    // The roles are checked concurrently: the gate after every process is on the operation's critical path.
    const res = await Promise.all(
      ROLE_ORDER.filter((role) => plan.processes.some((p) => p.role === role)).map(async (role) => {
        const procs = plan.processes.filter((p) => p.role === role);
        try {
          const r = await this.deps.health.check(plan, role, procs, secrets);
          return { ok: r.ok, detail: `${role}s: ${r.detail}` };
        } catch (e) {
          return { ok: false, detail: `${role}s: ${(e as Error).message}` };
        }
      }),
    );
    return { ok: res.every((r) => r.ok), detail: res.map((r) => r.detail).join(' | ') };
  }

  private async waitClusterHealthy(op: OperationHandle, plan: Plan, secrets: Record<string, string>, timeoutMs: number, after: string, signal?: AbortSignal) {
    const deadline = Date.now() + timeoutMs;
    let last = '';
    for (;;) {
      const r = await this.clusterHealth(plan, secrets);
      if (r.ok) return r.detail;
      if (r.detail !== last) op.event({ level: 'info', step: 'waiting', message: `after ${after}: ${r.detail}` });
      last = r.detail;
      if (Date.now() > deadline) {
        throw new DispatcherError('operation_failed', `cluster not healthy within ${Math.round(timeoutMs / 1000)} s after ${after}: ${r.detail}`, { details: { process: after } });
      }
      if (signal?.aborted) throw abortedError();
      await sleep(this.deps.pollMs ?? 100);
    }
  }

  /** Refuses a restart before an operation exists: bad selection or upgrade (400), unhealthy cluster (409) unless forced. */
  async precheck(input: RestartRequest): Promise<NormalizedRestartRequest> {
    const req = RestartRequestSchema.parse(input);
    const { plan, secrets } = this.snapshot();
    selectProcesses(plan, req.processes);
    if (req.upgrade) this.upgradedPlan(plan, req.upgrade);
    if (!req.force) {
      let r = await this.clusterHealth(plan, secrets);
      for (let i = 0; !r.ok && i < 10; i++) {
        await sleep(300);
        r = await this.clusterHealth(plan, secrets);
      }
      if (!r.ok) throw new DispatcherError('conflict', `cluster ${plan.name} is not healthy; refusing a restart (pass force to restart anyway): ${r.detail}`, { details: { health: r.detail } });
    }
    return req;
  }

  private upgradedPlan(plan: Plan, upgrade: Record<string, string>): Plan {
    const engine = this.deps.engine(plan.engine);
    const programs = Object.fromEntries(ROLE_ORDER.map((r) => [r, engine.manifest.roles[r].program])) as Record<Role, string>;
    return { ...plan, binaries: upgradeBinaries(programs, plan.binaries, upgrade, enginePrograms(engine)) };
  }

  /** POST /v1/cluster/restart. */
  async start(input: RestartRequest): Promise<OperationView> {
    const req = await this.precheck(input);
    const { plan } = this.snapshot();
    return this.deps.operations.start('restart', plan.name, (op) => this.run(op, { request: req, done: [], stopped: [] }));
  }

  /** A new operation continuing a failed or aborted restart from its persisted progress. */
  async retry(id: string): Promise<OperationView> {
    const prev = this.deps.operations.get(id);
    const p = prev.progress as RestartProgress | undefined;
    if (prev.kind !== 'restart' || !p?.request) throw new DispatcherError('bad_request', `operation ${id} is not a rolling restart`);
    if (p.abortOf) throw new DispatcherError('bad_request', `operation ${id} is an abort; retry the restart it aborted (${p.abortOf})`);
    if (prev.state === 'running' || prev.state === 'succeeded') throw new DispatcherError('conflict', `operation ${id} is ${prev.state}; only a failed or aborted restart can be retried`);
    const { plan } = this.snapshot();
    return this.deps.operations.start('restart', plan.name, (op) => this.run(op, { request: p.request, done: [...p.done], stopped: [...p.stopped], ...(p.current ? { current: p.current } : {}), ...(p.binaries ? { binaries: p.binaries } : {}), retryOf: id }));
  }

  /**
   * Abort: a running restart stops at the next step boundary; a failed one is cleaned up by a new operation
   * that starts every process it stopped again (or reports it). Either way the restart ends `aborted`.
   */
  async abort(id: string): Promise<OperationView> {
    const prev = this.deps.operations.get(id);
    const p = prev.progress as RestartProgress | undefined;
    if (prev.kind !== 'restart' || !p?.request || p.abortOf) throw new DispatcherError('bad_request', `operation ${id} is not a rolling restart`);
    if (prev.state === 'succeeded' || prev.state === 'aborted') throw new DispatcherError('conflict', `operation ${id} is ${prev.state}; nothing to abort`);
    if (prev.state === 'running') {
      const ctl = this.aborts.get(id);
      if (!ctl) throw new DispatcherError('conflict', `operation ${id} runs on another dispatcher or is not abortable here`);
      ctl.abort();
      void this.deps.operations.wait(id).then((v) => this.markAborted(v, 'aborted by the operator while running'));
      return prev;
    }
    const { plan } = this.snapshot();
    return this.deps.operations.start('restart', plan.name, async (op) => {
      await op.setProgress({ request: p.request, done: [], stopped: [], abortOf: id });
      const snap = this.snapshot();
      const nodes = this.nodes(snap.plan, snap.clusterCredential);
      try {
        const toStart = [...new Set([...p.stopped, ...(p.current ? [p.current] : [])])];
        const byId = new Map(snap.plan.processes.map((x) => [x.id, x]));
        const reported: string[] = [];
        // Launch order, so an agent comes back before the DB servers that need it.
        toStart.sort((a, b) => ROLE_ORDER.indexOf(byId.get(a)!.role) - ROLE_ORDER.indexOf(byId.get(b)!.role));
        op.event({ level: 'warn', step: 'abort', message: `aborting ${id}: ${toStart.length ? `starting again what it stopped: ${toStart.join(', ')}` : 'it left no process stopped'}` });
        for (const pid of toStart) {
          const proc = byId.get(pid)!;
          try {
            const st = await nodes.get(proc.dispatcher)!.startProcess(pid, p.request.readyTimeoutMs);
            op.event({ level: 'info', step: 'ready', host: proc.dispatcher, process: pid, message: `${pid} ready again (pid ${st.pid})` });
          } catch (e) {
            reported.push(`${pid} on ${proc.dispatcher}: ${(e as Error).message}`);
            op.event({ level: 'error', step: 'abort', host: proc.dispatcher, process: pid, message: `could not start ${pid} again: ${(e as Error).message}` });
          }
        }
        await this.markAborted(prev, reported.length ? `aborted; not running again: ${reported.join('; ')}` : 'aborted; every process it stopped runs again');
        if (reported.length) throw new DispatcherError('operation_failed', `abort of ${id} left processes not running:\n  ${reported.join('\n  ')}`);
        return { abortOf: id, started: toStart };
      } finally {
        for (const n of nodes.values()) n.close?.();
      }
    });
  }

  /** Called at daemon start for a restart that was running when the daemon died: continue it. */
  async resume(view: OperationView): Promise<void> {
    const p = view.progress as RestartProgress | undefined;
    if (!p?.request || p.abortOf) {
      await this.deps.operations.markInterrupted(view, 'the dispatcher restarted while this operation ran; it cannot resume (retry it)');
      return;
    }
    await this.deps.operations.start('restart', view.cluster, (op) => {
      op.event({ level: 'warn', step: 'resume', message: `the dispatcher restarted; resuming after ${p.done.length} process(es) done${p.current ? `, finishing ${p.current} first` : ''}` });
      return this.run(op, { ...p, done: [...p.done], stopped: [...p.stopped] });
    }, { resumeOf: view });
  }

  private markAborted(view: OperationView, message: string) {
    return this.deps.operations.markAborted(view, message);
  }

  /** The operation's work: upgrade (preflight + adopt everywhere), then rolling or all-at-once. */
  private async run(op: OperationHandle, progress: RestartProgress): Promise<Record<string, unknown>> {
    const ctl = new AbortController();
    this.aborts.set(op.id, ctl);
    const save = () => op.setProgress({ ...progress });
    await save();
    const snap = this.snapshot();
    const nodes = this.nodes(snap.plan, snap.clusterCredential);
    const started = Date.now();
    try {
      let plan = snap.plan;
      const req = progress.request;
      if (req.upgrade) {
        const target = this.upgradedPlan(plan, req.upgrade);
        if (JSON.stringify(target.binaries) !== JSON.stringify(plan.binaries)) {
          await this.adoptUpgrade(op, target);
          plan = target;
        }
        progress.binaries = target.binaries;
        await save();
      }
      const secrets = snap.secrets;
      const timeout = req.readyTimeoutMs;

      const programOf = (role: Role) => this.deps.engine(plan.engine).manifest.roles[role].program;
      const restartOne = async (p: PlanProcess) => {
        const node = nodes.get(p.dispatcher)!;
        progress.current = p.id;
        await save();
        op.event({ level: 'info', step: 'stop', host: p.dispatcher, process: p.id, message: `stopping ${p.role} ${p.id}` });
        await node.stopProcess(p.id);
        if (!progress.stopped.includes(p.id)) progress.stopped.push(p.id);
        await save();
        op.event({ level: 'info', step: 'start', host: p.dispatcher, process: p.id, message: `starting ${p.id}${Object.hasOwn(plan.binaries, programOf(p.role)) ? ` on ${plan.binaries[programOf(p.role)]}` : ''}` });
        const st = await node.startProcess(p.id, timeout);
        progress.stopped = progress.stopped.filter((x) => x !== p.id);
        await save();
        op.event({ level: 'info', step: 'ready', host: p.dispatcher, process: p.id, message: `${p.id} ready (pid ${st.pid})` });
      };

      if (req.mode === 'all-at-once') {
        const { stop, start } = allAtOncePlan(plan, req.processes, progress.done);
        op.event({ level: 'warn', step: 'plan', message: `all at once: stopping ${stop.flat().length} process(es), then starting them in launch order (the cluster is down meanwhile)` });
        for (const group of stop) {
          await Promise.all(
            group.map(async (p) => {
              op.event({ level: 'info', step: 'stop', host: p.dispatcher, process: p.id, message: `stopping ${p.id}` });
              await nodes.get(p.dispatcher)!.stopProcess(p.id);
              if (!progress.stopped.includes(p.id)) progress.stopped.push(p.id);
            }),
          );
          await save();
        }
        for (const group of start) {
          await Promise.all(
            group.map(async (p) => {
              const st = await nodes.get(p.dispatcher)!.startProcess(p.id, timeout);
              progress.stopped = progress.stopped.filter((x) => x !== p.id);
              op.event({ level: 'info', step: 'ready', host: p.dispatcher, process: p.id, message: `${p.id} ready (pid ${st.pid})` });
            }),
          );
          const role = group[0].role;
          const r = await this.waitRole(op, plan, role, secrets, timeout);
          op.event({ level: 'info', step: 'healthy', message: `${role}s healthy: ${r}` });
          progress.done.push(...group.map((p) => p.id));
          await save();
        }
      } else {
        const facts = {
          agencyLeader: await this.deps.actions.agencyLeader(plan).catch(() => undefined),
          dbLeader: await this.deps.actions.dbLeader(plan, secrets).catch(() => undefined),
        };
        const { batches, lines } = this.describe(plan, req, facts, progress.done, progress.current);
        const unsupported = [...new Set(batches.flatMap((b) => [...b.beforeRole, ...b.afterRole, ...b.processes.flatMap((e) => [...e.before, ...e.after])]).map((s) => s.action))].filter(
          (a) => !GATE_ACTIONS.has(a) && !this.deps.actions.supports(a),
        );
        op.event({ level: 'info', step: 'plan', message: `rolling restart of ${batches.reduce((n, b) => n + b.processes.length, 0)} process(es); agency leader ${facts.agencyLeader ?? 'unknown'}, DB leader ${facts.dbLeader ?? 'unknown'}:\n${lines.join('\n')}` });
        if (unsupported.length) {
          throw new DispatcherError('operation_failed', `engine ${plan.engine}: this dispatcher cannot carry out ${unsupported.join(', ')}; nothing was restarted. The plan was:\n${lines.join('\n')}`, { details: { steps: lines } });
        }
        for (const batch of batches) {
          for (const s of batch.beforeRole) await this.action(op, plan, secrets, s, undefined, progress);
          for (const entry of batch.processes) {
            if (ctl.signal.aborted) throw abortedError();
            const p = plan.processes.find((x) => x.id === entry.process)!;
            for (const s of entry.before) await this.action(op, plan, secrets, s, entry, progress);
            await restartOne(p);
            for (const s of entry.after) if (s.action !== 'wait-ready' && !GATE_ACTIONS.has(s.action)) await this.action(op, plan, secrets, s, entry, progress);
            const detail = await this.waitClusterHealthy(op, plan, secrets, timeout, p.id, ctl.signal);
            op.event({ level: 'info', step: 'healthy', process: p.id, message: `cluster healthy after ${p.id}: ${detail}` });
            progress.done.push(p.id);
            delete progress.current;
            await save();
          }
          for (const s of batch.afterRole) await this.action(op, plan, secrets, s, undefined, progress);
        }
      }
      delete progress.current;
      await save();
      return { cluster: plan.name, restarted: progress.done, durationMs: Date.now() - started, ...(progress.binaries ? { binaries: progress.binaries } : {}) };
    } catch (e) {
      if (progress.stopped.length) op.event({ level: 'error', step: 'stopped', message: `not running after this failure: ${progress.stopped.join(', ')} (retry continues; abort starts them again)` });
      throw e;
    } finally {
      this.aborts.delete(op.id);
      for (const n of nodes.values()) n.close?.();
    }
  }

  private async waitRole(op: OperationHandle, plan: Plan, role: Role, secrets: Record<string, string>, timeoutMs: number): Promise<string> {
    const procs = plan.processes.filter((p) => p.role === role);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const r = await this.deps.health.check(plan, role, procs, secrets).catch((e) => ({ ok: false, detail: (e as Error).message }));
      if (r.ok) return r.detail;
      if (Date.now() > deadline) throw new DispatcherError('operation_failed', `${role}s not healthy within ${Math.round(timeoutMs / 1000)} s: ${r.detail}`);
      await sleep(this.deps.pollMs ?? 200);
    }
  }

  /** An engine action (not a gate). */
  private async action(op: OperationHandle, plan: Plan, secrets: Record<string, string>, s: PlanStep, entry: RestartEntry | undefined, progress: RestartProgress) {
    if (s.action === 'switchover') {
      if (!entry) return;
      const leader = await this.deps.actions.dbLeader(plan, secrets);
      if (leader !== entry.process) {
        if (entry.leader) op.event({ level: 'info', step: 'switchover', process: entry.process, message: `${entry.process} no longer leads (leader: ${leader ?? 'none'}); no switchover needed` });
        return;
      }
      op.event({ level: 'info', step: 'switchover', process: entry.process, message: `moving leadership away from ${entry.process} (Patroni switchover)` });
      const t0 = Date.now();
      const to = await this.deps.actions.switchover(plan, secrets, entry.process, progress.done, s.timeoutMs ?? 30_000);
      op.event({ level: 'info', step: 'switchover', process: entry.process, message: `${to} leads now (${Date.now() - t0} ms); ${entry.process} is a replica` });
      return;
    }
    if (this.deps.actions.supports(s.action)) return; // declared, implemented elsewhere (none besides switchover today)
    throw new DispatcherError('operation_failed', `engine ${plan.engine}: action ${s.action} is not implemented by this dispatcher`);
  }

  private async adoptUpgrade(op: OperationHandle, target: Plan) {
    const snap = this.deps.store.get()!;
    const ups = new Map<string, UpgradeNode>(
      target.dispatchers.map((d) => [d.id, d.id === this.deps.self.id ? this.deps.localUpgrade : this.deps.peerUpgrade(d, snap.clusterCredential)]),
    );
    try {
      op.event({ level: 'info', step: 'preflight', message: `upgrade: checking the new binaries on every dispatcher before anything restarts: ${JSON.stringify(target.binaries)}` });
      const res = await Promise.allSettled([...ups].map(async ([id, u]) => [id, await u.preflightPlan(target)] as const));
      const problems: { path: string; message: string }[] = [];
      res.forEach((r, i) => {
        const id = [...ups.keys()][i];
        if (r.status === 'rejected') problems.push({ path: id, message: (r.reason as Error).message });
        else for (const p of r.value[1]) problems.push({ path: id, message: `${p.check}: ${p.message}` });
      });
      for (const p of problems) op.event({ level: 'error', step: 'preflight', host: p.path, message: p.message });
      if (problems.length) {
        throw new DispatcherError('preflight_failed', `upgrade preflight failed; nothing was restarted:\n${problems.map((p) => `  ${p.path}: ${p.message}`).join('\n')}`, { problems });
      }
      const adopted = await Promise.allSettled([...ups.values()].map((u) => u.adoptPlan(target)));
      const failed = adopted.flatMap((r, i) => (r.status === 'rejected' ? [`${[...ups.keys()][i]}: ${(r.reason as Error).message}`] : []));
      if (failed.length) throw new DispatcherError('operation_failed', `upgrade: the new plan could not be stored everywhere:\n  ${failed.join('\n  ')}`);
      op.event({ level: 'info', step: 'upgrade', message: 'every dispatcher stored the upgraded plan; processes move to it as they restart' });
    } finally {
      for (const u of ups.values()) u.close?.();
    }
  }
}

function abortedError() {
  return new DispatcherError('operation_failed', 'aborted by the operator');
}

function sleep(ms: number) {
  return new Promise((r) => setTimeout(r, ms));
}

// ------------------------------------------------------------------ this dispatcher's upgrade side

/** Preflight and adoption of an upgraded plan on this dispatcher (served to peers by routes/restart.ts). */
export function localUpgradeNode(deps: { id: string; dataDir: string; store: ClusterStore; renderer: ProcessRenderer; runAs?: { uid: number; gid: number; user?: string } }): UpgradeNode {
  return {
    async preflightPlan(plan) {
      const snap = deps.store.get();
      const problems: PreflightProblem[] = [];
      const add = (check: string, message: string) => problems.push({ host: deps.id, check, message });
      if (!snap) return [{ host: deps.id, check: 'plan', message: 'no cluster plan on this dispatcher' }];
      for (const p of validatePlan(plan)) add('plan', `${p.path}: ${p.message}`);
      if (problems.length) return problems;
      if (snap.plan.name !== plan.name || !sameExceptBinaries(snap.plan, plan)) add('plan', 'an upgrade may change only the plan\'s binaries');
      for (const p of plan.processes.filter((x) => x.dispatcher === deps.id)) {
        try {
          const { spec } = deps.renderer.render(plan, p.id, { dispatcherDataDir: deps.dataDir, secrets: snap.secrets, runAs: deps.runAs });
          try {
            await access(spec.argv[0], constants.X_OK);
          } catch {
            add('binary', `${p.id}: ${spec.argv[0]} is missing or not executable`);
          }
        } catch (e) {
          add('binary', `${p.id}: ${(e as Error).message}`);
        }
      }
      return problems;
    },
    async adoptPlan(plan) {
      const snap = deps.store.get();
      if (!snap) throw new DispatcherError('not_found', `dispatcher ${deps.id} has no cluster plan`);
      assertValidPlan(plan);
      if (snap.plan.name !== plan.name || !sameExceptBinaries(snap.plan, plan)) {
        throw new DispatcherError('conflict', `dispatcher ${deps.id}: an upgrade may change only the binaries of cluster ${snap.plan.name}`);
      }
      await deps.store.save({ ...snap, plan });
    },
  };
}

/** A peer's upgrade side over pinned HTTPS (routes/restart.ts serves /v1/node/restart/*). */
export function remoteUpgradeNode(d: PlanDispatcher, credential: Credential): UpgradeNode {
  const client = new DispatcherClient({ endpoint: d.endpoint, fingerprint: d.fingerprint, credential, timeoutMs: 30_000 });
  const wrap = async <T>(f: () => Promise<T>) => {
    try {
      return await f();
    } catch (e) {
      if (!isDispatcherError(e)) throw e;
      throw new DispatcherError(e.code, `dispatcher ${d.id}: ${e.message}`, { problems: e.problems, details: { host: d.id, ...e.details } });
    }
  };
  return {
    preflightPlan: (plan) => wrap(async () => (await client.post<{ problems: PreflightProblem[] }>('/v1/node/restart/preflight', { plan })).problems),
    adoptPlan: (plan) => wrap(async () => void (await client.post('/v1/node/restart/plan', { plan }))),
    close: () => client.close(),
  };
}

// ------------------------------------------------------------------ pg-ha facts and actions

function port(p: PlanProcess, name: string): number {
  const x = p.ports.find((q) => q.name === name);
  if (!x) throw new DispatcherError('bad_request', `process ${p.id} has no port "${name}"`);
  return x.port;
}

/** Runs one SQL statement as the superuser on a DB server (password in the child's environment only). */
function psqlRun(psql: string, p: PlanProcess, password: string, sql: string, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(psql, [`host=${p.address} port=${port(p, 'postgres')} user=postgres dbname=postgres connect_timeout=2`, '-XtAq', '-c', sql], { env: { PGPASSWORD: password, PATH: '/usr/bin:/bin' }, timeout: timeoutMs }, (err, _o, stderr) =>
      err ? reject(new Error(String(stderr).trim() || err.message)) : resolve(),
    );
  });
}

/**
 * pg-ha: the agency leader from etcd, the DB leader from Patroni, and Patroni 3.0.2's switchover
 * (POST /switchover {"leader", "candidate"}), preceded by a CHECKPOINT on the leader so its shutdown
 * checkpoint — part of the write gap — is short.
 */
export function pgHaActions(opts: { psql?: string }): RestartActions {
  return {
    async agencyLeader(plan) {
      return plan.engine === 'pg-ha' ? (await agencyStatus(plan)).leaderId : undefined;
    },
    async dbLeader(plan, secrets) {
      if (plan.engine !== 'pg-ha') return undefined;
      const states = await Promise.all(plan.processes.filter((p) => p.role === 'dbserver').map((p) => dbserverState(plan, p.id)));
      const leaders = states.filter((s) => s.role === 'leader' && s.running);
      return leaders.length === 1 ? leaders[0].id : undefined;
      void secrets;
    },
    async switchover(plan, secrets, leader, prefer, timeoutMs) {
      const dbs = plan.processes.filter((p) => p.role === 'dbserver');
      const states = await Promise.all(dbs.map((p) => dbserverState(plan, p.id, { psql: opts.psql, superuserPassword: secrets['superuser-password'] })));
      const healthy = states.filter((s) => s.id !== leader && s.role === 'replica' && s.running && s.streaming !== false).map((s) => s.id);
      if (!healthy.length) throw new DispatcherError('operation_failed', `no healthy streaming replica to take over from ${leader}; the leader was not restarted`, { details: { process: leader } });
      const candidate = healthy.find((id) => prefer.includes(id)) ?? healthy[0];
      const lp = dbs.find((p) => p.id === leader)!;
      if (opts.psql && secrets['superuser-password']) await psqlRun(opts.psql, lp, secrets['superuser-password'], 'CHECKPOINT', 20_000).catch(() => {});
      const res = await fetch(`http://${hostPort(lp.address, port(lp, 'rest'))}/switchover`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ leader, candidate }),
        signal: AbortSignal.timeout(timeoutMs),
      }).catch((e) => {
        throw new DispatcherError('operation_failed', `switchover ${leader} → ${candidate}: ${(e as Error).message}`, { details: { process: leader } });
      });
      const text = await res.text();
      if (res.status !== 200) throw new DispatcherError('operation_failed', `switchover ${leader} → ${candidate} refused by Patroni (${res.status}): ${text.trim()}`, { details: { process: leader } });
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const st = await dbserverState(plan, candidate);
        if (st.role === 'leader' && st.running) return candidate;
        if (Date.now() > deadline) throw new DispatcherError('operation_failed', `switchover: ${candidate} did not become leader within ${Math.round(timeoutMs / 1000)} s`, { details: { process: leader } });
        await sleep(100);
      }
    },
    supports: (action) => action === 'switchover',
  };
}

// ------------------------------------------------------------------ one service per OperationStore

const services = new WeakMap<OperationStore, RestartService>();

/** Registers the daemon's RestartService (setup.ts) so the routes find the same instance (aborts are in memory). */
export function registerRestartService(operations: OperationStore, service: RestartService): void {
  services.set(operations, service);
}

export function restartServiceOf(operations: OperationStore): RestartService {
  const s = services.get(operations);
  if (!s) throw new DispatcherError('internal', 'rolling restarts are not wired on this dispatcher (createClusterRuntime registers them)');
  return s;
}
