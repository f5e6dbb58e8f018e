/**
 * Carries out one rolling-restart (or upgrade) operation: server/core/restart-plan.ts decides which
 * processes go in which order with which gates; this executor runs that against every dispatcher through
 * NodeApi (stop, then start = re-render + wait ready), with the engine's actions (RestartActions, e.g.
 * Patroni switchover) and a cluster-health gate after every process. Progress is saved after every
 * process so a retry or a resume skips what is done (docs/DESIGN.md, "Operations").
 */
import { DispatcherError } from '../../api/errors.js';
import { ROLE_ORDER, type Plan, type PlanProcess, type Role } from '../../api/plan.js';
import { allAtOncePlan, describeRestartPlan, rollingRestartPlan, upgradeBinaries, type PlanStep, type RestartEntry, type RoleBatch } from '../core/restart-plan.js';
import { pollUntil, settledCheck, systemClock, type Clock } from '../../shared/poll.js';
import type { OperationHandle } from './operations.js';
import { pausedCoordinators, resumeEveryCoordinator } from './paused-coordinators.js';
import { releaseLeftoverHold, withFailoverHeld } from './held-failover.js';
import { enginePrograms } from '../engines/loader.js';
import {
  GATE_ACTIONS,
  abortedError,
  restartNodes,
  runningSnapshot,
  stepsOf,
  type NormalizedRestartRequest,
  type RestartDeps,
  type RestartProgress,
  type UpgradeNode,
} from './restart-context.js';

export class RestartExecutor {
  private readonly clock: Clock;

  /** `aborts` is shared with the service: abort() signals a running operation through it. */
  constructor(
    private readonly deps: RestartDeps,
    private readonly aborts: Map<string, AbortController>,
  ) {
    this.clock = deps.clock ?? systemClock;
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
  async clusterHealth(plan: Plan, secrets: Record<string, string>): Promise<{ ok: boolean; detail: string }> {
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
    let last = '';
    const r = await pollUntil(() => this.clusterHealth(plan, secrets), (h) => h.ok, {
      timeoutMs,
      intervalMs: this.deps.pollMs ?? 100,
      clock: this.clock,
      signal,
      onPending: (h) => {
        if (h.detail !== last) op.event({ level: 'info', step: 'waiting', message: `after ${after}: ${h.detail}` });
        last = h.detail;
      },
      onTimeout: (h) => new DispatcherError('operation_failed', `cluster not healthy within ${Math.round(timeoutMs / 1000)} s after ${after}: ${h.detail}`, { details: { process: after } }),
    }).catch((e) => {
      throw signal?.aborted ? abortedError() : e;
    });
    return r.detail;
  }

  upgradedPlan(plan: Plan, upgrade: Record<string, string>): Plan {
    const engine = this.deps.engine(plan.engine);
    const programs = Object.fromEntries(ROLE_ORDER.map((r) => [r, engine.manifest.roles[r].program])) as Record<Role, string>;
    return { ...plan, binaries: upgradeBinaries(programs, plan.binaries, upgrade, enginePrograms(engine)) };
  }

  /** The operation's work: upgrade (preflight + adopt everywhere), then rolling or all-at-once. */
  async run(op: OperationHandle, progress: RestartProgress): Promise<Record<string, unknown>> {
    const ctl = new AbortController();
    this.aborts.set(op.id, ctl);
    // Lost the cluster lock (lease expired): another dispatcher may take over; stop at the next step.
    op.lockLost.addEventListener('abort', () => ctl.abort(), { once: true });
    const save = () => op.setProgress({ ...progress });
    await save();
    const snap = runningSnapshot(this.deps);
    const nodes = restartNodes(this.deps, snap.plan);
    const started = this.clock.now();
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
      await resumeEveryCoordinator(this.deps.actions, op, plan, secrets);
      await releaseLeftoverHold(this.deps.actions, op, plan, secrets);

      const programOf = (role: Role) => this.deps.engine(plan.engine).manifest.roles[role].program;
      const restartOne = async (p: PlanProcess) => {
        const node = nodes.get(p.dispatcher)!;
        progress.current = p.id;
        await save();
        op.event({ level: 'info', step: 'stop', host: p.dispatcher, process: p.id, message: `stopping ${p.role} ${p.id}` });
        // A rolling restart restarts the main program; its companion (PgBouncer) keeps its clients.
        await node.stopProcess(p.id, { keepCompanion: true });
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
          const r = await this.waitRole(plan, role, secrets, timeout);
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
          const hold = batch.holdFailover;
          const runBatch = () => this.runBatch(op, plan, secrets, batch, progress, ctl.signal, restartOne, timeout);
          if (hold) await withFailoverHeld(this.deps.actions, this.clock, op, plan, secrets, hold.maxMs, `restart of the ${batch.role}s`, runBatch);
          else await runBatch();
        }
      }
      delete progress.current;
      await save();
      return { cluster: plan.name, restarted: progress.done, durationMs: this.clock.now() - started, ...(progress.binaries ? { binaries: progress.binaries } : {}) };
    } catch (e) {
      if (progress.stopped.length) op.event({ level: 'error', step: 'stopped', message: `not running after this failure: ${progress.stopped.join(', ')} (retry continues; abort starts them again)` });
      throw e;
    } finally {
      this.aborts.delete(op.id);
      for (const n of nodes.values()) n.close?.();
    }
  }

  /** One role's batch of a rolling restart: its steps, and each process with its gates. */
  private async runBatch(op: OperationHandle, plan: Plan, secrets: Record<string, string>, batch: RoleBatch, progress: RestartProgress, signal: AbortSignal, restartOne: (p: PlanProcess) => Promise<void>, timeout: number) {
    const save = () => op.setProgress({ ...progress });
    for (const s of batch.beforeRole) await this.action(op, plan, secrets, s, undefined, progress);
    for (const entry of batch.processes) {
      if (signal.aborted) throw abortedError();
      const p = plan.processes.find((x) => x.id === entry.process)!;
      for (const s of entry.before) await this.action(op, plan, secrets, s, entry, progress);
      const pause = this.deps.engine(plan.engine).manifest.roles[p.role].rollingRestart.pause;
      if (pause?.scope === 'self' || pause?.scope === 'all-coordinators-restart') {
        const ids = pause.scope === 'self' ? [p.id] : plan.processes.filter((c) => c.role === 'coordinator').map((c) => c.id);
        await pausedCoordinators(this.deps.actions, this.clock, op, plan, secrets, ids, pause.maxMs, `restart of ${p.id}`, async () => {
          await restartOne(p);
          // Resume only once every paused coordinator routes to a primary again: a route that went down
          // meanwhile would cut the sessions RESUME hands transactions to.
          await this.deps.actions.waitCoordinatorsRouting?.(plan, ids, undefined, pause.maxMs).catch((e: Error) => op.event({ level: 'warn', step: 'ready', process: p.id, message: e.message }));
        });
      } else await restartOne(p);
      for (const s of entry.after) if (s.action !== 'wait-ready' && !GATE_ACTIONS.has(s.action)) await this.action(op, plan, secrets, s, entry, progress);
      const detail = await this.waitClusterHealthy(op, plan, secrets, timeout, p.id, signal);
      op.event({ level: 'info', step: 'healthy', process: p.id, message: `cluster healthy after ${p.id}: ${detail}` });
      progress.done.push(p.id);
      delete progress.current;
      await save();
    }
    for (const s of batch.afterRole) await this.action(op, plan, secrets, s, undefined, progress);
  }

  private async waitRole(plan: Plan, role: Role, secrets: Record<string, string>, timeoutMs: number): Promise<string> {
    const procs = plan.processes.filter((p) => p.role === role);
    const r = await pollUntil(() => settledCheck(() => this.deps.health.check(plan, role, procs, secrets)), (h) => h.ok, {
      timeoutMs,
      intervalMs: this.deps.pollMs ?? 200,
      clock: this.clock,
      onTimeout: (h) => new DispatcherError('operation_failed', `${role}s not healthy within ${Math.round(timeoutMs / 1000)} s: ${h.detail}`),
    });
    return r.detail;
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
      await this.deps.actions.prepareSwitchover?.(plan, secrets, entry.process);
      const t0 = this.clock.now();
      const pause = this.deps.engine(plan.engine).manifest.roles[entry.role].rollingRestart.pause;
      const coordinators = pause?.scope === 'all-coordinators' ? plan.processes.filter((p) => p.role === 'coordinator').map((p) => p.id) : [];
      const to = await pausedCoordinators(this.deps.actions, this.clock, op, plan, secrets, coordinators, pause?.maxMs ?? 10_000, `switchover from ${entry.process}`, async () => {
        const leader = await this.deps.actions.switchover(plan, secrets, entry.process, progress.done, s.timeoutMs ?? 30_000);
        // Resume only once every coordinator's HAProxy routes to the new leader alone: a stale route to the
        // demoted one would turn held writes into read-only errors.
        // Not fatal past the bound: the pause ends anyway, and the cluster-health gate waits for routing.
        await this.deps.actions.waitCoordinatorsRouting?.(plan, coordinators, leader, pause?.maxMs ?? 10_000).catch((e: Error) => op.event({ level: 'warn', step: 'switchover', process: entry.process, message: e.message }));
        return leader;
      });
      op.event({ level: 'info', step: 'switchover', process: entry.process, message: `${to} leads now (${this.clock.now() - t0} ms); ${entry.process} is a replica` });
      return;
    }
    if (this.deps.actions.supports(s.action)) return; // declared, implemented elsewhere (none besides switchover today)
    throw new DispatcherError('operation_failed', `engine ${plan.engine}: action ${s.action} is not implemented by this dispatcher`);
  }

  private async adoptUpgrade(op: OperationHandle, target: Plan) {
    const snap = this.deps.store.get()!;
    const ups = new Map<string, UpgradeNode>(
      target.dispatchers.map((d) => [d.id, d.id === this.deps.self.id ? this.deps.localUpgrade : this.deps.peerUpgrade(d)]),
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
