/**
 * A peer dispatcher seen through its /v1/node routes: the same NodeApi as LocalNode, over pinned,
 * authenticated HTTPS. Errors keep the peer's code and gain the peer's id as `host`.
 */
import { DispatcherError, isDispatcherError } from '../../api/errors.js';
import type { FirewallPolicy, PlanDispatcher } from '../../api/plan.js';
import type { ClusterState, Credential, GuardStatusView, NodeAdoptPlan, NodeStatusView, PreflightProblem } from '../../api/rest.js';
import type { ProcessStatus } from '../supervisor/types.js';
import { DispatcherClient } from '../../client/dispatcher-client.js';
import type { NodeApi } from './node.js';

export class RemoteNode implements NodeApi {
  readonly id: string;
  private client: DispatcherClient;

  constructor(private readonly peer: PlanDispatcher, credential: Credential, timeoutMs = 30_000) {
    this.id = peer.id;
    this.client = new DispatcherClient({ endpoint: peer.endpoint, fingerprint: peer.fingerprint, credential, timeoutMs });
  }

  /** Switches to another credential (after the cluster credential is established). */
  useCredential(credential: Credential): void {
    this.client.close();
    this.client = new DispatcherClient({ endpoint: this.peer.endpoint, fingerprint: this.peer.fingerprint, credential });
  }

  close(): void {
    this.client.close();
  }

  private async call<T>(method: 'GET' | 'POST', path: string, body?: unknown, timeoutMs?: number): Promise<T> {
    try {
      return await this.client.request<T>(method, path, method === 'POST' ? body ?? {} : undefined, { timeoutMs });
    } catch (e) {
      if (!isDispatcherError(e)) throw e;
      throw new DispatcherError(e.code, `dispatcher ${this.id}: ${e.message}`, { problems: e.problems, details: { host: this.id, ...e.details }, cause: e });
    }
  }

  adoptPlan(payload: NodeAdoptPlan) {
    return this.call<void>('POST', '/v1/node/plan', payload);
  }
  async preflight(callerTime: number) {
    return (await this.call<{ problems: PreflightProblem[] }>('POST', '/v1/node/preflight', { callerTime })).problems;
  }
  guard() {
    return this.call<GuardStatusView>('POST', '/v1/node/guard');
  }
  verifyGuard() {
    return this.call<GuardStatusView>('POST', '/v1/node/guard/verify');
  }
  startProcess(processId: string, readyTimeoutMs: number) {
    return this.call<ProcessStatus>('POST', `/v1/node/processes/${encodeURIComponent(processId)}/start`, { readyTimeoutMs }, readyTimeoutMs + 15_000);
  }
  async stopProcess(processId: string) {
    await this.call('POST', `/v1/node/processes/${encodeURIComponent(processId)}/stop`, {}, 120_000);
  }
  async setClusterState(state: ClusterState) {
    await this.call('POST', '/v1/node/state', { state });
  }
  status() {
    return this.call<NodeStatusView>('GET', '/v1/node/status', undefined, 5_000);
  }
  async cleanup(confirmName: string) {
    await this.call('POST', '/v1/node/cleanup', { confirmName }, 300_000);
  }
  async logTail(processId: string, lines: number) {
    return (await this.call<{ lines: string[] }>('GET', `/v1/processes/${encodeURIComponent(processId)}/log?lines=${lines}`)).lines;
  }
  changeFirewall(firewall: FirewallPolicy, confirmWithinSeconds: number) {
    return this.call<GuardStatusView>('POST', '/v1/node/firewall', { firewall, confirmWithinSeconds });
  }
  confirmFirewall() {
    return this.call<GuardStatusView>('POST', '/v1/node/firewall/confirm');
  }
  async discardPlan(name: string) {
    await this.call('POST', '/v1/node/discard', { name });
  }
}
