/**
 * The cluster side of a dispatcher, as the HTTP routes see it: its LocalNode (what peers ask of it), the
 * Orchestrator (what an operator asks of it), the rolling restarts, and the operations it runs. Built once
 * by the daemon (server/cluster/setup.ts).
 */
import { coordinatorsOf, type ClusterConnectionView, type Credential } from '../../api/rest.js';
import { DispatcherError } from '../../api/errors.js';
import type { LocalNode } from './node.js';
import type { Orchestrator, LaunchInput } from './orchestrator.js';
import type { FoundOperation, OperationStore } from './operations.js';
import type { ClusterStore } from './store.js';
import type { RestartService } from './restart.js';
import type { ScaleProgress, ScaleService } from './scale.js';
import type { ClusterClientTls } from '../engines/cluster-https.js';

export class ClusterService {
  constructor(
    readonly node: LocalNode,
    readonly orchestrator: Orchestrator,
    readonly operations: OperationStore,
    readonly store: ClusterStore,
    readonly restarts: RestartService,
    /**
     * This dispatcher's client certificate for the cluster's own services (etcd, Patroni REST), built once
     * in server/cluster/setup.ts; undefined before the cluster PKI is issued (docs/SECURITY.md, "Cluster-internal TLS").
     */
    readonly clientTls: () => ClusterClientTls | undefined,
    /** Scale changes of the running cluster (server/cluster/scale.ts). */
    readonly scales: ScaleService,
  ) {}

  async launch(input: LaunchInput) {
    this.orchestrator.precheckLaunch(input);
    return this.operations.start('launch', input.plan.name, (op) => this.orchestrator.launch(op, input), { lock: 'when-agency-up' });
  }

  private clusterName(): string {
    return this.store.get()?.plan.name ?? '(none)';
  }

  shutdown() {
    return this.operations.start('shutdown', this.clusterName(), (op) => this.orchestrator.shutdown(op));
  }

  relaunch(readyTimeoutMs: number) {
    return this.operations.start('relaunch', this.clusterName(), (op) => this.orchestrator.relaunch(op, readyTimeoutMs), { lock: 'when-agency-up' });
  }

  /** This dispatcher's operations and those recorded in the cluster's agency (GET /v1/operations). */
  listOperations() {
    return this.operations.listEverywhere();
  }

  /** One operation, from here or from the agency (GET /v1/operations/ID). */
  async getOperation(id: string) {
    return (await this.operations.find(id)).view;
  }

  /**
   * Resume, through this dispatcher, an operation whose runner died (POST /v1/operations/ID/resume). Each
   * resumable kind supplies its own continuation; the lock and the record are generic (operations.ts).
   */
  async resumeOperation(id: string) {
    const found = await this.operations.find(id);
    if (found.view.kind === 'restart') return this.restarts.resumeStale(id);
    if (found.view.kind === 'launch' || found.view.kind === 'relaunch') {
      // A launch continues as a relaunch of the stored plan: what runs is kept, the rest starts in order.
      const view = this.operations.adopt(this.staleOnly(found));
      return this.operations.start(view.kind, view.cluster, (op) => {
        op.event({ level: 'warn', step: 'resume', message: `resumed on ${this.node.id} (its dispatcher ${found.view.runner ?? '(unknown)'} is gone): starting what is not running yet, in launch order` });
        return this.orchestrator.relaunch(op, 120_000, true);
      }, { resumeOf: view, lock: 'required' });
    }
    throw new DispatcherError('bad_request', found.view.kind === 'scale' ? `operation ${id} is a scale; a scale does not resume: abort it (dispatch operations abort ${id}), then run dispatch scale with the plan you want` : `operation ${id} is a ${found.view.kind}; a ${found.view.kind} does not resume (run it again)`);
  }

  /** Abort a running operation, or clean up after one whose runner died (POST /v1/operations/ID/abort). */
  async abortOperation(id: string) {
    const found = await this.operations.find(id);
    if (found.view.kind === 'restart') return this.restarts.abort(id);
    if (found.view.kind === 'launch' || found.view.kind === 'relaunch') {
      const prev = this.operations.adopt(this.staleOnly(found));
      prev.state = 'failed';
      return this.operations.start('shutdown', prev.cluster, async (op) => {
        // Recorded first, while the agency that holds the record still runs (the stop ends with it).
        await this.operations.markAborted(prev, `aborted by ${op.id} on ${this.node.id}: every process of the plan stops, data stays; relaunch or clean up next`);
        return this.orchestrator.stopLaunch(op);
      }, { lock: 'if-agency' });
    }
    if (found.view.kind === 'scale') {
      // A scale change stores one plan version per step on every dispatcher (server/cluster/scale.ts), so
      // what its dead runner left is a true plan: the abort records where it stopped, under the lock (so
      // the record reaches the agency) and changes nothing else; a step in flight may be half done.
      const prev = this.operations.adopt(this.staleOnly(found));
      prev.state = 'failed'; // not `running` here: the abort is the operation that runs
      const p = prev.progress as Partial<ScaleProgress> | undefined;
      const inFlight = p?.steps && p.done !== undefined ? p.steps[p.done] : undefined;
      const where = `${p?.done ?? 0} of ${p?.steps?.length ?? '?'} step(s) done; every dispatcher stores plan version ${p?.version?.number ?? '?'}`;
      const next = inFlight ? `; step ${(p!.done ?? 0) + 1} (${inFlight.kind}) may be half done: check dispatch status, then run dispatch scale with the plan you want` : '';
      return this.operations.start('scale', prev.cluster, async (op) => {
        op.event({ level: 'warn', step: 'abort', message: `aborting scale ${prev.id} of dispatcher ${prev.runner ?? '(unknown)'}, which is gone: ${where}${next}` });
        await this.operations.markAborted(prev, `aborted by ${op.id} on ${this.node.id}: ${where}${next}`);
        return { abortOf: prev.id, planVersion: p?.version };
      }, { lock: 'required' });
    }
    throw new DispatcherError('bad_request', `operation ${id} is a ${found.view.kind}; a ${found.view.kind} cannot be aborted`);
  }

  /** Only an operation whose runner died may be taken over; a live one is a 409 naming where it runs. */
  private staleOnly(found: FoundOperation) {
    const { view } = found;
    if (view.state !== 'running') throw new DispatcherError('conflict', `operation ${view.id} is ${view.state}; nothing to resume or abort`);
    if (found.runnerAlive) throw new DispatcherError('conflict', `operation ${view.id} is still running on dispatcher ${found.local ? this.node.id : (view.runner ?? '(unknown)')}`, { details: { operation: view.id, runner: view.runner } });
    return view;
  }

  /** What a database client needs (docs/SECURITY.md, "Cluster-internal TLS"); pg-ha only. */
  connection(): ClusterConnectionView {
    const snap = this.store.get();
    if (!snap) throw new DispatcherError('not_found', 'this dispatcher has no cluster plan; launch one first');
    if (snap.plan.engine !== 'pg-ha') throw new DispatcherError('bad_request', `connection details are known for engine pg-ha only, not ${snap.plan.engine}`);
    if (!snap.tls?.ca) throw new DispatcherError('conflict', `cluster ${snap.plan.name} has no cluster CA on this dispatcher (launched before TLS?)`);
    const password = snap.secrets['superuser-password'];
    if (!password) throw new DispatcherError('state_damaged', 'the superuser password is missing from the cluster secrets');
    return { cluster: snap.plan.name, engine: snap.plan.engine, user: 'postgres', database: 'postgres', coordinators: coordinatorsOf(snap.plan), caCertificate: snap.tls.ca, password };
  }

  cleanup(confirmName: string) {
    // Refuse a missing or wrong name before an operation starts: the caller gets a 400 naming the cluster.
    const name = this.store.get()?.plan.name;
    if (name && confirmName !== name) {
      throw new DispatcherError('bad_request', `cleanup deletes every data dir of the cluster: repeat its name (${name}) to confirm`, {
        problems: [{ path: 'confirmName', message: `must be ${name}` }],
      });
    }
    return this.operations.start('cleanup', this.clusterName(), (op) => this.orchestrator.cleanup(op, confirmName));
  }
}
