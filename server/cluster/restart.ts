/**
 * Rolling restarts and upgrades as operations (POST /v1/cluster/restart and the retry/abort of one):
 * refuses a bad request or an unhealthy cluster before an operation exists, starts the operation, retries a
 * failed one from its persisted progress, aborts (stop a running one; start again what a failed one
 * stopped), and resumes one that was running when the dispatcher restarted. The work of one operation is
 * in restart-executor.ts; the upgrade side of a dispatcher in restart-upgrade.ts.
 */
import { DispatcherError } from '../../api/errors.js';
import { ROLE_ORDER } from '../../api/plan.js';
import { RestartRequestSchema, type OperationView, type RestartRequest } from '../../api/rest.js';
import { selectProcesses } from '../core/restart-plan.js';
import { assertBaseVersion } from '../core/plan-version.js';
import { pollUntil } from '../../shared/poll.js';
import { RestartExecutor } from './restart-executor.js';
import { restartNodes, runningSnapshot, type NormalizedRestartRequest, type RestartDeps, type RestartProgress, type UpgradeNode } from './restart-context.js';
import { resumeEveryCoordinator } from './paused-coordinators.js';
import { releaseLeftoverHold } from './held-failover.js';

export type { NormalizedRestartRequest, RestartActions, RestartDeps, RestartProgress, UpgradeNode } from './restart-context.js';

export class RestartService {
  private readonly aborts = new Map<string, AbortController>();
  private readonly executor: RestartExecutor;

  constructor(private readonly deps: RestartDeps) {
    this.executor = new RestartExecutor(deps, this.aborts);
  }

  /** This dispatcher's upgrade side (served to peers by server/http/routes/restart.ts). */
  get localUpgrade(): UpgradeNode {
    return this.deps.localUpgrade;
  }

  /** Refuses a restart before an operation exists: bad selection or upgrade (400), unhealthy cluster (409) unless forced. */
  async precheck(input: RestartRequest): Promise<NormalizedRestartRequest> {
    const req = RestartRequestSchema.parse(input);
    const { plan, secrets } = runningSnapshot(this.deps);
    selectProcesses(plan, req.processes);
    if (req.upgrade) this.executor.upgradedPlan(plan, req.upgrade);
    if (!req.force) {
      // A moment of ill health (a probe in flight) should not refuse the restart: look again for ~3 s.
      await pollUntil(() => this.executor.clusterHealth(plan, secrets), (h) => h.ok, {
        timeoutMs: 3000,
        intervalMs: 300,
        clock: this.deps.clock,
        onTimeout: (h) => new DispatcherError('conflict', `cluster ${plan.name} is not healthy; refusing a restart (pass force to restart anyway): ${h.detail}`, { details: { health: h.detail } }),
      });
    }
    return req;
  }

  /** POST /v1/cluster/restart. */
  async start(input: RestartRequest): Promise<OperationView> {
    const req = await this.precheck(input);
    const { plan } = runningSnapshot(this.deps);
    // An upgrade computed against a plan version: compared under the cluster-wide lock, once no other
    // operation can change the plan any more (docs/DESIGN.md, "Plan versions").
    const base = req.baseVersion;
    const precondition = base ? () => assertBaseVersion(this.deps.store.version(), base) : undefined;
    return this.deps.operations.start('restart', plan.name, (op) => this.executor.run(op, { request: req, done: [], stopped: [] }), { lock: 'required', ...(precondition ? { precondition } : {}) });
  }

  /** A new operation continuing a failed or aborted restart from its persisted progress. */
  async retry(id: string): Promise<OperationView> {
    const prev = this.deps.operations.get(id);
    const p = prev.progress as RestartProgress | undefined;
    if (prev.kind !== 'restart' || !p?.request) throw new DispatcherError('bad_request', `operation ${id} is not a rolling restart`);
    if (p.abortOf) throw new DispatcherError('bad_request', `operation ${id} is an abort; retry the restart it aborted (${p.abortOf})`);
    if (prev.state === 'running' || prev.state === 'succeeded') throw new DispatcherError('conflict', `operation ${id} is ${prev.state}; only a failed or aborted restart can be retried`);
    const { plan } = runningSnapshot(this.deps);
    return this.deps.operations.start('restart', plan.name, (op) => this.executor.run(op, { request: p.request, done: [...p.done], stopped: [...p.stopped], ...(p.current ? { current: p.current } : {}), ...(p.binaries ? { binaries: p.binaries } : {}), retryOf: id }), { lock: 'required' });
  }

  /**
   * Resume through this dispatcher a restart whose runner died (its agency lease expired): it continues
   * from the step its record stores, under the same id (docs/DESIGN.md, "Operation lifecycle").
   */
  async resumeStale(id: string): Promise<OperationView> {
    const found = await this.deps.operations.find(id);
    const p = found.view.progress as RestartProgress | undefined;
    if (found.view.kind !== 'restart' || !p?.request || p.abortOf) throw new DispatcherError('bad_request', `operation ${id} is not a rolling restart`);
    if (found.view.state !== 'running') throw new DispatcherError('conflict', `operation ${id} is ${found.view.state}; only one whose dispatcher died can be resumed${found.view.state === 'failed' ? ' (retry a failed one)' : ''}`);
    if (found.runnerAlive) throw new DispatcherError('conflict', `operation ${id} is still running on dispatcher ${found.local ? this.deps.self.id : (found.view.runner ?? '(unknown)')}`, { details: { operation: id, runner: found.local ? this.deps.self.id : found.view.runner } });
    const view = this.deps.operations.adopt(found.view);
    return this.deps.operations.start('restart', view.cluster, (op) => {
      op.event({ level: 'warn', step: 'resume', message: `resumed on ${this.deps.self.id} (its dispatcher ${found.view.runner ?? '(unknown)'} is gone) after ${p.done.length} process(es) done${p.current ? `, finishing ${p.current} first` : ''}` });
      return this.executor.run(op, { ...p, done: [...p.done], stopped: [...p.stopped] });
    }, { resumeOf: view, lock: 'required' });
  }

  /**
   * Abort: a running restart stops at the next step boundary; a failed one is cleaned up by a new operation
   * that starts every process it stopped again (or reports it). Either way the restart ends `aborted`.
   */
  async abort(id: string): Promise<OperationView> {
    const found = await this.deps.operations.find(id);
    if (found.view.state === 'running' && found.runnerAlive && !found.local) {
      throw new DispatcherError('conflict', `operation ${id} runs on dispatcher ${found.view.runner ?? '(unknown)'}; abort it there (or here once that dispatcher is gone)`, { details: { operation: id, runner: found.view.runner } });
    }
    // A restart whose dispatcher died (stale) is aborted like a failed one: what it stopped starts again.
    const prev = found.local ? found.view : this.deps.operations.adopt(found.view);
    if (prev.state === 'running' && !found.runnerAlive) {
      // Its runner died: from here it is a failed restart whose stopped processes the abort starts again.
      prev.state = 'failed';
      prev.error = { code: 'operation_failed', message: `its dispatcher ${prev.runner ?? '(unknown)'} died while it ran` };
    }
    const p = prev.progress as RestartProgress | undefined;
    if (prev.kind !== 'restart' || !p?.request || p.abortOf) throw new DispatcherError('bad_request', `operation ${id} is not a rolling restart`);
    if (prev.state === 'succeeded' || prev.state === 'aborted') throw new DispatcherError('conflict', `operation ${id} is ${prev.state}; nothing to abort`);
    if (prev.state === 'running' && found.runnerAlive) {
      const ctl = this.aborts.get(id);
      if (!ctl) throw new DispatcherError('conflict', `operation ${id} runs on another dispatcher or is not abortable here`);
      ctl.abort();
      void this.deps.operations.wait(id).then((v) => this.markAborted(v, 'aborted by the operator while running'));
      return prev;
    }
    const { plan } = runningSnapshot(this.deps);
    return this.deps.operations.start('restart', plan.name, async (op) => {
      await op.setProgress({ request: p.request, done: [], stopped: [], abortOf: id });
      const snap = runningSnapshot(this.deps);
      // The aborted restart may have died with the poolers paused (mid-switchover): resume them first.
      await resumeEveryCoordinator(this.deps.actions, op, snap.plan, snap.secrets);
      const nodes = restartNodes(this.deps, snap.plan);
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
        // It may have died holding the DB servers' failover (mid-agency restart): released once its agents run again.
        await releaseLeftoverHold(this.deps.actions, op, snap.plan, snap.secrets);
        await this.markAborted(prev, reported.length ? `aborted; not running again: ${reported.join('; ')}` : 'aborted; every process it stopped runs again');
        if (reported.length) throw new DispatcherError('operation_failed', `abort of ${id} left processes not running:\n  ${reported.join('\n  ')}`);
        return { abortOf: id, started: toStart };
      } finally {
        for (const n of nodes.values()) n.close?.();
      }
    }, { lock: 'required' });
  }

  /** Called at daemon start for a restart that was running when the daemon died: continue it. */
  async resume(view: OperationView): Promise<void> {
    const p = view.progress as RestartProgress | undefined;
    if (!p?.request || p.abortOf) {
      await this.deps.operations.markInterrupted(view, 'the dispatcher restarted while this operation ran; it cannot resume (retry it)');
      return;
    }
    // Another dispatcher may have resumed or aborted it meanwhile: the agency's record says so.
    const takenOver = await this.deps.operations.takenOver(view);
    if (takenOver) {
      await this.deps.operations.markInterrupted(view, takenOver);
      return;
    }
    await this.deps.operations.start('restart', view.cluster, (op) => {
      op.event({ level: 'warn', step: 'resume', message: `the dispatcher restarted; resuming after ${p.done.length} process(es) done${p.current ? `, finishing ${p.current} first` : ''}` });
      return this.executor.run(op, { ...p, done: [...p.done], stopped: [...p.stopped] });
    }, { resumeOf: view, lock: 'required' });
  }

  private markAborted(view: OperationView, message: string) {
    return this.deps.operations.markAborted(view, message);
  }
}
