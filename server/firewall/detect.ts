/**
 * Picks the firewall backend: the plan's choice when it names one (and it must work), otherwise nftables,
 * then iptables. The error says what was tried and why each failed.
 */
import { DispatcherError } from '../../api/errors.js';
import type { FirewallBackendName } from '../../api/plan.js';
import type { BackendOptions, FirewallBackend } from './backend.js';
import { IptablesBackend } from './iptables.js';
import { NftablesBackend } from './nftables.js';
import { NoneBackend } from './none.js';

export function createBackend(name: Exclude<FirewallBackendName, 'auto'>, opts: BackendOptions = {}): FirewallBackend {
  if (name === 'nftables') return new NftablesBackend(opts);
  if (name === 'iptables') return new IptablesBackend(opts);
  return new NoneBackend();
}

export async function detectBackend(pref: FirewallBackendName = 'auto', opts: BackendOptions = {}): Promise<FirewallBackend> {
  if (pref !== 'auto') {
    const b = createBackend(pref, opts);
    const a = await b.available();
    if (!a.ok) {
      throw new DispatcherError('preflight_failed', `firewall backend "${pref}" was asked for but is not usable here: ${a.reason}`, {
        details: { backend: pref, reason: a.reason },
      });
    }
    return b;
  }
  const reasons: string[] = [];
  for (const name of ['nftables', 'iptables'] as const) {
    const b = createBackend(name, opts);
    const a = await b.available();
    if (a.ok) return b;
    reasons.push(`${name}: ${a.reason}`);
  }
  throw new DispatcherError(
    'preflight_failed',
    `no usable firewall backend (tried ${reasons.join('; ')}). Install nftables (or iptables + ipset), run the dispatcher with CAP_NET_ADMIN, or set firewall.backend to "none" for a loopback-only cluster`,
    { details: { tried: reasons } },
  );
}
