/**
 * The `none` backend: no host firewall at all. Chosen only explicitly, and only accepted when every port
 * of the host binds a loopback address (then nothing is reachable from outside anyway).
 */
import { DispatcherError } from '../../api/errors.js';
import type { GuardPolicy } from '../core/firewall-policy.js';
import type { FirewallBackend } from './backend.js';

export class NoneBackend implements FirewallBackend {
  readonly name = 'none' as const;

  async available(): Promise<{ ok: boolean; reason?: string }> {
    return { ok: true };
  }

  async apply(policy: GuardPolicy): Promise<void> {
    if (!policy.loopbackOnly) {
      throw new DispatcherError('preflight_failed', 'firewall backend "none" is only allowed when every process and the dispatcher bind a loopback address', {
        details: { host: policy.host },
      });
    }
  }

  async read(): Promise<string | null> {
    return null;
  }

  async inSync(policy: GuardPolicy): Promise<boolean> {
    return policy.loopbackOnly;
  }

  async remove(): Promise<void> {}
}
