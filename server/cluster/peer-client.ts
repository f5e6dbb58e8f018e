/**
 * Calls one peer dispatcher's node routes: pinned HTTPS with this dispatcher's own certificate as the
 * client certificate (mutual TLS; docs/SECURITY.md, "Identities"), every answer checked against its REST schema.
 * A failure or a malformed answer becomes a DispatcherError naming the peer (`details.host`), so the
 * operation that made the call fails cleanly and rolls back instead of tripping over bad data later.
 */
import type { ZodType } from 'zod';
import { DispatcherError, isDispatcherError } from '../../api/errors.js';
import { zodProblems } from '../../api/plan.js';
import type { PlanDispatcher } from '../../api/plan.js';
import type { Credential } from '../../api/rest.js';
import { DispatcherClient } from '../../client/dispatcher-client.js';

/** This dispatcher's own key and certificate (the ones its HTTPS server uses). */
export interface PeerIdentity {
  cert: string;
  key: string;
}

export class PeerClient {
  private readonly client: DispatcherClient;
  readonly id: string;

  constructor(peer: PlanDispatcher, identity: PeerIdentity, timeoutMs = 30_000) {
    this.id = peer.id;
    this.client = new DispatcherClient({ endpoint: peer.endpoint, fingerprint: peer.fingerprint, clientCertificate: identity, timeoutMs });
  }

  close(): void {
    this.client.close();
  }

  /**
   * One call; the answer must match `schema`. `operator` adds an operator's Basic credential — only
   * first contact (adopting a plan) carries one.
   */
  async call<T>(method: 'GET' | 'POST', path: string, schema: ZodType<T>, opts: { body?: unknown; timeoutMs?: number; operator?: Credential } = {}): Promise<T> {
    let answer: unknown;
    try {
      const headers = opts.operator ? { authorization: 'Basic ' + Buffer.from(`${opts.operator.user}:${opts.operator.password}`).toString('base64') } : undefined;
      answer = await this.client.request<unknown>(method, path, method === 'POST' ? opts.body ?? {} : undefined, { timeoutMs: opts.timeoutMs, headers });
    } catch (e) {
      if (!isDispatcherError(e)) throw e;
      const status = e.details.status;
      if (typeof status === 'number' && status >= 200 && status < 300) {
        // A success answer that is not even JSON is an invalid answer, like one of the wrong shape.
        throw new DispatcherError('peer_invalid_answer', `dispatcher ${this.id} gave an invalid answer to ${method} ${path.split('?')[0]}: not JSON`, { details: { host: this.id }, cause: e });
      }
      throw new DispatcherError(e.code, `dispatcher ${this.id}: ${e.message}`, { problems: e.problems, details: { ...e.details, host: this.id }, cause: e });
    }
    const parsed = schema.safeParse(answer);
    if (!parsed.success) {
      const problems = zodProblems(parsed.error);
      throw new DispatcherError('peer_invalid_answer', `dispatcher ${this.id} gave an invalid answer to ${method} ${path.split('?')[0]}: ${problems.slice(0, 3).map((p) => `${p.path || '(answer)'}: ${p.message}`).join('; ')}`, {
        problems,
        details: { host: this.id },
      });
    }
    return parsed.data;
  }
}
