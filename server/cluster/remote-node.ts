/**
 * A peer dispatcher seen through its /v1/node routes: the same NodeApi as LocalNode, over PeerClient
 * (pinned HTTPS, mutual TLS, answers validated). Only the first call of a launch — adopting the plan —
 * carries an operator credential; the peer trusts every later call by this dispatcher's certificate.
 */
import { DispatcherError } from '../../api/errors.js';
import type { FirewallPolicy, PlanDispatcher } from '../../api/plan.js';
import {
  GuardStatusViewSchema,
  LogLinesAnswerSchema,
  NoContentSchema,
  NodeCertificateReloadSchema,
  NodeCertificateRequestsSchema,
  NodeReleaseAnswerSchema,
  NodeStatusViewSchema,
  PreflightAnswerSchema,
  ProcessStatusSchema,
  type ClusterState,
  type Credential,
  type NodeAdoptPlan,
  type NodeInstallCertificates,
  type NodeUpdatePlan,
} from '../../api/rest.js';
import type { ProcessStatus } from '../supervisor/types.js';
import { PeerClient, type PeerIdentity } from './peer-client.js';
import type { NodeApi, StartOptions } from './node-api.js';

export class RemoteNode implements NodeApi {
  readonly id: string;
  private readonly client: PeerClient;

  /** `firstContact`: the operator credential for adoptPlan (launch only). */
  constructor(
    peer: PlanDispatcher,
    identity: PeerIdentity,
    private readonly firstContact?: Credential,
    timeoutMs = 30_000,
  ) {
    this.id = peer.id;
    this.client = new PeerClient(peer, identity, timeoutMs);
  }

  close(): void {
    this.client.close();
  }

  async adoptPlan(payload: NodeAdoptPlan) {
    if (!this.firstContact) throw new DispatcherError('bad_request', `no operator credential for first contact with dispatcher ${this.id}`, { details: { host: this.id } });
    await this.client.call('POST', '/v1/node/plan', NoContentSchema, { body: payload, operator: this.firstContact });
  }
  async refreshConfig(processId: string) {
    await this.client.call('POST', `/v1/node/processes/${encodeURIComponent(processId)}/refresh-config`, NoContentSchema, { timeoutMs: 30_000 });
  }
  async updatePlan(payload: NodeUpdatePlan) {
    await this.client.call('POST', '/v1/node/plan/update', NoContentSchema, { body: payload, timeoutMs: 60_000 });
  }
  certificateRequests() {
    return this.client.call('POST', '/v1/node/tls/requests', NodeCertificateRequestsSchema);
  }
  async installCertificates(payload: NodeInstallCertificates) {
    await this.client.call('POST', '/v1/node/tls/certificates', NoContentSchema, { body: payload });
  }
  reloadCertificates(opts: { caChanged: boolean }) {
    return this.client.call('POST', '/v1/node/tls/reload', NodeCertificateReloadSchema, { body: opts, timeoutMs: 120_000 });
  }
  async trustCa(caBundle: string) {
    await this.client.call('POST', '/v1/node/tls/trust', NoContentSchema, { body: { ca: caBundle } });
  }
  async preflight(callerTime: number) {
    return (await this.client.call('POST', '/v1/node/preflight', PreflightAnswerSchema, { body: { callerTime } })).problems;
  }
  guard() {
    return this.client.call('POST', '/v1/node/guard', GuardStatusViewSchema);
  }
  verifyGuard() {
    return this.client.call('POST', '/v1/node/guard/verify', GuardStatusViewSchema);
  }
  async startProcess(processId: string, readyTimeoutMs: number, opts: StartOptions = {}) {
    return (await this.client.call('POST', `/v1/node/processes/${encodeURIComponent(processId)}/start`, ProcessStatusSchema, { body: { readyTimeoutMs, ...opts }, timeoutMs: readyTimeoutMs + 15_000 })) as ProcessStatus;
  }
  async stopProcess(processId: string, opts: { keepCompanion?: boolean } = {}) {
    await this.client.call('POST', `/v1/node/processes/${encodeURIComponent(processId)}/stop`, NoContentSchema, { ...(opts.keepCompanion ? { body: { keepCompanion: true } } : {}), timeoutMs: 120_000 });
  }
  async setClusterState(state: ClusterState) {
    await this.client.call('POST', '/v1/node/state', NoContentSchema, { body: { state } });
  }
  async status() {
    return (await this.client.call('GET', '/v1/node/status', NodeStatusViewSchema, { timeoutMs: 5_000 })) as Awaited<ReturnType<NodeApi['status']>>;
  }
  async cleanup(confirmName: string) {
    await this.client.call('POST', '/v1/node/cleanup', NoContentSchema, { body: { confirmName }, timeoutMs: 300_000 });
  }
  async logTail(processId: string, lines: number) {
    return (await this.client.call('GET', `/v1/node/processes/${encodeURIComponent(processId)}/log?lines=${lines}`, LogLinesAnswerSchema)).lines;
  }
  changeFirewall(firewall: FirewallPolicy, confirmWithinSeconds: number, token: string) {
    return this.client.call('POST', '/v1/node/firewall', GuardStatusViewSchema, { body: { firewall, confirmWithinSeconds, token } });
  }
  confirmFirewall(token: string) {
    return this.client.call('POST', '/v1/node/firewall/confirm', GuardStatusViewSchema, { body: { token } });
  }
  extendFirewall(token: string, confirmWithinSeconds: number) {
    return this.client.call('POST', '/v1/node/firewall/extend', GuardStatusViewSchema, { body: { token, confirmWithinSeconds } });
  }
  cancelFirewall(token: string) {
    return this.client.call('POST', '/v1/node/firewall/cancel', GuardStatusViewSchema, { body: { token } });
  }
  async discardPlan(name: string) {
    await this.client.call('POST', '/v1/node/discard', NoContentSchema, { body: { name } });
  }
  releasePlan(name: string) {
    return this.client.call('POST', '/v1/node/release', NodeReleaseAnswerSchema, { body: { name }, timeoutMs: 300_000 });
  }
}

