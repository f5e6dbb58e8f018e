/**
 * The scale executor (docs/DESIGN.md, "Scaling"): POST /v1/cluster/scale as an operation of kind `scale`
 * under the cluster-wide lock. Before an operation exists it refuses a bad plan (400), a change computed
 * against another version (409) and a change the planner refuses with the health seen now (every problem
 * listed); under the lock it looks again, then runs the planner's steps in order through a StepRunners
 * table (scale-out-steps.ts, scale-in-steps.ts), one event per step with its duration. The plan moves
 * through one version per step that changes it (server/core/scale-progress.ts), stored on every
 * dispatcher, so a failure half-way leaves a plan that is true: the failed step's own actions are undone
 * in reverse order, completed steps stay, and the error names what is left. No data dir is deleted.
 */
import { DispatcherError, formatProblems, toDispatcherError } from '../../api/errors.js';
import type { Plan, PlanDispatcher } from '../../api/plan.js';
import type { PlanVersion, ScaleStep } from '../../api/plan-version.js';
import { ScaleRequestSchema, type ClusterView, type Credential, type OperationView, type ScaleRequest } from '../../api/rest.js';
import { assertBaseVersion, planHash } from '../core/plan-version.js';
import { planScale, scaleChangeProblems, scaleHealthOf } from '../core/scale-plan.js';
import { commitMoment, planAfterStep } from '../core/scale-progress.js';
import { assertValidPlan } from '../core/validate-plan.js';
import { defaultEngineCatalog } from '../engines/loader.js';
import type { ClusterClientTls } from '../engines/cluster-https.js';
import { systemClock, type Clock } from '../../shared/poll.js';
import type { ClusterHealth } from './cluster-health.js';
import { combined, settleAll, type Nodes } from './fan-out.js';
import type { NodeApi } from './node-api.js';
import type { OperationHandle, OperationStore } from './operations.js';
import type { ScaleContext, StepRunners } from './scale-steps.js';
import type { RestartActions } from '../core/restart-actions.js';
import type { Engine } from '../engines/types.js';
import type { ClusterStore } from './store.js';

export interface ScaleDeps {
  /** This dispatcher (LocalNode in production). */
  self: NodeApi;
  store: Pick<ClusterStore, 'get' | 'save' | 'version'>;
  operations: Pick<OperationStore, 'start'>;
  health: ClusterHealth;
  /** A peer over mutual TLS; `firstContact` is the operator credential a NEW dispatcher adopts the plan with. */
  peer(d: PlanDispatcher, firstContact?: Credential): NodeApi & { close?(): void };
  /** What answers now (GET /v1/cluster's view): the health the planner needs, and every dispatcher's version. */
  view(): Promise<Pick<ClusterView, 'dispatchers' | 'processes'>>;
  clusterTls(): ClusterClientTls | undefined;
  runners: StepRunners;
  actions: RestartActions;
  engine(name: string): Engine;
  clock?: Clock;
}

export interface ScaleInput extends ScaleRequest {
  /** The credential the operator used on this dispatcher: first contact with new dispatchers by default. */
  operatorCredential?: Credential;
}

/** What a scale operation persists (OperationView.progress): the steps and how far it got. */
export interface ScaleProgress {
  steps: ScaleStep[];
  /** Steps completed (a prefix of `steps`). */
  done: number;
  /** The plan version every dispatcher stores now. */
  version: PlanVersion;
  [k: string]: unknown;
}

export function describeStep(s: ScaleStep): string {
  switch (s.kind) {
    case 'widen-firewall':
    case 'shrink-firewall':
      return `${s.kind} on ${s.hosts.join(', ')} (${s.addresses.join(', ')})`;
    case 'reconfigure-coordinators':
      return `${s.kind} ${s.processes.join(', ')}`;
    case 'switchover-away':
      return `${s.kind} from ${s.from.join(', ')}`;
    case 'adopt-dispatcher':
    case 'release-dispatcher':
      return `${s.kind} ${s.host}`;
    default:
      return `${s.kind} ${s.process} on ${s.host}`;
  }
}

export class ScaleService {
  private readonly clock: Clock;

  constructor(private readonly deps: ScaleDeps) {
    this.clock = deps.clock ?? systemClock;
  }

  /**
   * Every refusal before anything changes: 400 for a plan that is not valid or not a scale change of the
   * running one, 409 for another base version, a dispatcher behind, or a change the planner refuses now.
   */
  async precheck(input: ScaleInput): Promise<{ running: Plan; proposed: Plan; steps: ScaleStep[]; request: ReturnType<typeof ScaleRequestSchema.parse>; downHosts: ReadonlySet<string> }> {
    const { operatorCredential, ...body } = input;
    const request = ScaleRequestSchema.parse(body);
    const snap = this.deps.store.get();
    if (!snap || snap.state === 'cleaned') throw new DispatcherError('not_found', `dispatcher ${this.deps.self.id} has no cluster plan; launch one first`);
    if (snap.state !== 'running') throw new DispatcherError('conflict', `cluster ${snap.plan.name} is ${snap.state}; a scale change needs a running cluster`);
    const running = snap.plan;
    const proposed = assertValidPlan(request.plan, defaultEngineCatalog());
    assertBaseVersion(this.deps.store.version(), request.baseVersion);
    const changeProblems = scaleChangeProblems(running, proposed);
    if (changeProblems.length) throw new DispatcherError('validation_failed', `the plan is not a scale change of the running plan:\n${formatProblems(changeProblems)}`, { problems: changeProblems });
    if (!proposed.dispatchers.some((d) => d.id === this.deps.self.id)) {
      throw new DispatcherError('bad_request', `the plan removes this dispatcher (${this.deps.self.id}); run the change through a dispatcher that stays`);
    }
    const known = new Set(running.dispatchers.map((d) => d.id));
    const missing = proposed.dispatchers.filter((d) => !known.has(d.id) && !request.peerCredentials[d.id] && !operatorCredential);
    if (missing.length) {
      throw new DispatcherError('bad_request', `no credentials for the new dispatchers ${missing.map((d) => d.id).join(', ')}: pass peerCredentials (first contact, as a launch)`, {
        problems: missing.map((d) => ({ path: `peerCredentials.${d.id}`, message: 'missing' })),
      });
    }
    if (!this.deps.clusterTls()) throw new DispatcherError('conflict', `dispatcher ${this.deps.self.id} has no cluster client certificate (launched before TLS?)`);
    const view = await this.deps.view();
    const version = this.deps.store.version();
    const behind = view.dispatchers.filter((d) => d.reachable && d.planVersion && (d.planVersion.number !== version.number || d.planVersion.hash !== version.hash));
    if (behind.length) {
      throw new DispatcherError('conflict', `dispatchers ${behind.map((d) => `${d.id} (version ${d.planVersion!.number})`).join(', ')} store another plan version than this one (${version.number}); run the change through one that is current`, {
        details: { behind: behind.map((d) => d.id) },
      });
    }
    const health = scaleHealthOf(view);
    const scale = planScale(running, proposed, health);
    if (scale.problems.length) throw new DispatcherError('conflict', `scale change refused:\n${formatProblems(scale.problems)}`, { problems: scale.problems });
    if (!scale.steps.length) throw new DispatcherError('bad_request', `the plan is the running plan (version ${version.number}): nothing to change`);
    return { running, proposed, steps: scale.steps, request, downHosts: health.downHosts ?? new Set() };
  }

  /** POST /v1/cluster/scale: 202 with the operation, after the precheck. */
  async start(input: ScaleInput): Promise<OperationView> {
    const { running } = await this.precheck(input);
    return this.deps.operations.start('scale', running.name, (op) => this.run(op, input), { lock: 'required' });
  }

  /** The operation's work: under the cluster-wide lock, check again with the health seen now, then every step. */
  async run(op: OperationHandle, input: ScaleInput): Promise<Record<string, unknown>> {
    const { running, proposed, steps, request, downHosts } = await this.precheck(input);
    const firstContact = (id: string) => request.peerCredentials[id] ?? input.operatorCredential;
    const known = new Set(running.dispatchers.map((d) => d.id));
    const nodes: Nodes = new Map();
    for (const d of [...running.dispatchers, ...proposed.dispatchers.filter((x) => !known.has(x.id))]) {
      nodes.set(d.id, d.id === this.deps.self.id ? this.deps.self : this.deps.peer(d, known.has(d.id) ? undefined : firstContact(d.id)));
    }
    const base = this.deps.store.version();
    // A dead host (replace) is asked nothing, not even to store a plan version: it is dropped from the plan.
    const versions = new Map<string, PlanVersion>(running.dispatchers.filter((d) => !downHosts.has(d.id)).map((d) => [d.id, base]));
    let current = running;
    let number = base.number;
    const commit = async (plan: Plan) => {
      const next = number + 1;
      const targets = new Map([...nodes].filter(([id]) => versions.has(id) && plan.dispatchers.some((d) => d.id === id)));
      const res = await settleAll(targets, (n) => n.updatePlan({ plan, base: versions.get(n.id)!, number: next }), () => this.clock.now());
      const version = { number: next, hash: planHash(plan) };
      for (const id of res.ok) versions.set(id, version);
      if (res.failed.length) throw combined('operation_failed', `plan version ${next} not stored everywhere`, res.failed);
      number = next;
      current = plan;
      op.event({ level: 'info', step: 'plan-version', message: `plan version ${next} (${version.hash}) stored on ${res.ok.join(', ')}` });
    };
    const tls = this.deps.clusterTls()!;
    op.event({ level: 'info', step: 'scale', message: `scale of ${running.name} from version ${base.number}: ${steps.length} step(s): ${steps.map(describeStep).join('; ')}` });
    const progress: ScaleProgress = { steps, done: 0, version: base };
    await op.setProgress(progress);
    try {
      for (const [i, step] of steps.entries()) {
        const t0 = this.clock.now();
        const undo: { what: string; fn: () => Promise<void> }[] = [];
        const ctx: ScaleContext = {
          op,
          running,
          proposed,
          nodes,
          secrets: this.deps.store.get()!.secrets,
          health: this.deps.health,
          clock: this.clock,
          readyTimeoutMs: request.readyTimeoutMs,
          clusterTls: tls,
          actions: this.deps.actions,
          engine: this.deps.engine(proposed.engine),
          self: this.deps.self.id,
          store: this.deps.store,
          firstContact,
          current: () => current,
          commit,
          versions,
          catchUp: async (host) => {
            const node = nodes.get(host)!;
            await node.updatePlan({ plan: current, base: versions.get(host)!, number });
            versions.set(host, { number, hash: planHash(current) });
          },
          onRollback: (what, fn) => undo.push({ what, fn }),
        };
        const before = current;
        const next = planAfterStep(current, running, proposed, step);
        const changes = planHash(next) !== planHash(current);
        op.event({ level: 'info', step: step.kind, ...stepWhere(step), message: `step ${i + 1}/${steps.length}: ${describeStep(step)}` });
        try {
          if (changes && commitMoment(step) === 'before') await commit(next);
          await this.deps.runners[step.kind](ctx, step as never);
          if (changes && commitMoment(step) === 'after') await commit(next);
        } catch (e) {
          const err = toDispatcherError(e);
          op.event({ level: 'error', step: step.kind, ...stepWhere(step), message: `step ${i + 1} failed: ${err.message}`, durationMs: Math.round(this.clock.now() - t0) });
          const left = await this.undoStep(op, undo, before, current, commit);
          const rest = steps.slice(i).map(describeStep);
          throw new DispatcherError(err.code === 'internal' ? 'operation_failed' : err.code, `scale step ${i + 1}/${steps.length} (${describeStep(step)}) failed: ${err.message}\n` +
            `the plan is version ${number} on every dispatcher that answered (${i} step(s) done, each a real state); not done: ${rest.join('; ')}` +
            (left.length ? `\nnot undone: ${left.join('; ')}` : ''), { problems: err.problems, details: { ...err.details, version: number, done: i } });
        }
        progress.done = i + 1;
        progress.version = { number, hash: planHash(current) };
        await op.setProgress(progress);
        op.event({ level: 'info', step: step.kind, ...stepWhere(step), message: `step ${i + 1}/${steps.length} done`, durationMs: Math.round(this.clock.now() - t0) });
      }
      // A dead host leaves the plan without a step of its own (it is asked nothing; with no address of its
      // own there is no shrink-firewall either): the last version is the proposed plan all the same.
      if (planHash(current) !== planHash(proposed)) await commit(proposed);
      return { cluster: proposed.name, version: { number, hash: planHash(current) }, steps: steps.length };
    } finally {
      for (const [id, n] of nodes) if (id !== this.deps.self.id) n.close?.();
    }
  }

  /**
   * Undoes what the failed step did, newest first (stop the process it started, remove the member it
   * added), then stores the plan before the step again if the step had stored its own. What could not be
   * undone is returned for the error (never a data dir: those stay).
   */
  private async undoStep(op: OperationHandle, undo: { what: string; fn: () => Promise<void> }[], before: Plan, current: Plan, commit: (p: Plan) => Promise<void>): Promise<string[]> {
    const left: string[] = [];
    for (const u of undo.reverse()) {
      try {
        await u.fn();
        op.event({ level: 'warn', step: 'rollback', message: `undone: ${u.what}` });
      } catch (e) {
        left.push(`${u.what}: ${(e as Error).message}`);
        op.event({ level: 'error', step: 'rollback', message: `could not undo ${u.what}: ${(e as Error).message}` });
      }
    }
    if (planHash(before) !== planHash(current)) {
      try {
        await commit(before);
        op.event({ level: 'warn', step: 'rollback', message: 'the plan before the failed step is stored again (as the next version)' });
      } catch (e) {
        left.push(`storing the plan before the step again: ${(e as Error).message}`);
      }
    }
    return left;
  }
}

function stepWhere(s: ScaleStep): { host?: string; process?: string } {
  return { ...('host' in s ? { host: s.host } : {}), ...('process' in s ? { process: s.process } : {}) };
}
