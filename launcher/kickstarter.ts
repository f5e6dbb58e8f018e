/**
 * The Kickstarter drives one dispatcher through a plan's life cycle, as ArangoDB 2.x's did — but over the
 * authenticated REST API: `const k = new Kickstarter(plan, client); await k.launch(); await k.isHealthy();
 * await k.shutdown(); await k.relaunch(); await k.cleanup()`. Every call waits for its operation to end and
 * throws a DispatcherError when it failed.
 */
import { DispatcherError } from '../api/errors.js';
import type { Plan } from '../api/plan.js';
import type { ClusterView, Credential, OperationEvent, OperationView, ReplaceRequest, RestartRequest, ScaleRequest } from '../api/rest.js';
import type { DispatcherClient } from '../client/dispatcher-client.js';

export interface KickstarterOptions {
  peerCredentials?: Record<string, Credential>;
  readyTimeoutMs?: number;
  /** Called with every progress event. */
  onEvent?: (e: OperationEvent) => void;
}

export class Kickstarter {
  constructor(
    readonly plan: Plan | undefined,
    readonly client: DispatcherClient,
    private readonly opts: KickstarterOptions = {},
  ) {}

  /** Follows an operation's events until it ends; throws if it failed. */
  async waitFor(operationId: string): Promise<OperationView> {
    await this.client.streamLines(`/v1/operations/${encodeURIComponent(operationId)}/events`, (line) => {
      if (line.type === 'event') this.opts.onEvent?.(line as OperationEvent);
    });
    const view = await this.client.get<OperationView>(`/v1/operations/${encodeURIComponent(operationId)}`);
    if (view.state !== 'succeeded') {
      const err = view.error;
      throw new DispatcherError('operation_failed', `${view.kind} of ${view.cluster} ${view.state}: ${err?.message ?? 'no reason given'}`, {
        details: { operation: view.id, ...(err?.host ? { host: err.host } : {}), ...(err?.process ? { process: err.process } : {}), ...(err?.logTail ? { logTail: err.logTail } : {}) },
      });
    }
    return view;
  }

  private async run(path: string, body: unknown): Promise<OperationView> {
    const { operation } = await this.client.post<{ operation: string }>(path, body);
    return this.waitFor(operation);
  }

  launch(): Promise<OperationView> {
    if (!this.plan) throw new DispatcherError('bad_request', 'this Kickstarter has no plan to launch');
    return this.run('/v1/cluster/launch', {
      plan: this.plan,
      peerCredentials: this.opts.peerCredentials ?? {},
      ...(this.opts.readyTimeoutMs ? { readyTimeoutMs: this.opts.readyTimeoutMs } : {}),
    });
  }

  shutdown(): Promise<OperationView> {
    return this.run('/v1/cluster/shutdown', {});
  }

  relaunch(): Promise<OperationView> {
    return this.run('/v1/cluster/relaunch', this.opts.readyTimeoutMs ? { readyTimeoutMs: this.opts.readyTimeoutMs } : {});
  }

  /** Deletes the cluster's data dirs; the plan's name is the confirmation. */
  async cleanup(confirmName?: string): Promise<OperationView> {
    const name = confirmName ?? this.plan?.name ?? (await this.status()).name;
    if (!name) throw new DispatcherError('bad_request', 'no cluster to clean up');
    return this.run('/v1/cluster/cleanup', { confirmName: name });
  }

  /** Moves the running cluster to `req.plan` by adding dispatchers and processes (POST /v1/cluster/scale). */
  scale(req: ScaleRequest): Promise<OperationView> {
    return this.run('/v1/cluster/scale', req);
  }

  /** Continues, through this dispatcher, an operation whose dispatcher died (POST /v1/operations/ID/resume). */
  resumeOperation(id: string): Promise<OperationView> {
    return this.run(`/v1/operations/${encodeURIComponent(id)}/resume`, {});
  }

  /**
   * Aborts an operation (POST /v1/operations/ID/abort): a running one stops at its next step; one that
   * failed or whose dispatcher died is cleaned up by a new operation, which this waits for.
   */
  abortOperation(id: string): Promise<OperationView> {
    return this.run(`/v1/operations/${encodeURIComponent(id)}/abort`, {});
  }

  rollingRestart(req: RestartRequest = {}): Promise<OperationView> {
    return this.run('/v1/cluster/restart', req);
  }

  /** Replaces a dead dispatcher with a new one (POST /v1/cluster/replace): a scale operation. */
  replace(req: ReplaceRequest): Promise<OperationView> {
    return this.run('/v1/cluster/replace', req);
  }

  /** New certificates for every process and dispatcher, then a rolling restart (POST /v1/cluster/rotate-certs). */
  async rotateCertificates(body: { ca?: boolean; readyTimeoutMs?: number } = {}): Promise<OperationView> {
    // A CA rotation is three phases, each its own rolling restart; the server says when it is done.
    for (let i = 0; i < 3; i++) {
      const r = await this.client.post<{ operation: string; phase?: string; more?: boolean }>('/v1/cluster/rotate-certs', body);
      const view = await this.waitFor(r.operation);
      if (view.state !== 'succeeded' || !r.more) return view;
    }
    throw new DispatcherError('operation_failed', 'the CA rotation did not finish in three phases');
  }

  status(): Promise<ClusterView> {
    return this.client.get<ClusterView>('/v1/cluster');
  }

  /** True when the cluster runs and every process is ready. */
  async isHealthy(): Promise<boolean> {
    const s = await this.status();
    return s.state === 'running' && s.dispatchers.every((d) => d.reachable) && s.processes.every((p) => p.state === 'ready');
  }
}
