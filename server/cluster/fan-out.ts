/**
 * Fanning a call out to every dispatcher of a plan at once and collecting what each answered, by
 * dispatcher id: the Orchestrator's way of talking to many nodes (a failure of one never hides another's).
 */
import { DispatcherError, toDispatcherError } from '../../api/errors.js';
import type { GuardStatusView } from '../../api/rest.js';
import type { Credential } from '../../api/rest.js';
import type { NodeApi } from './node-api.js';

/** The nodes of one operation, by dispatcher id (this dispatcher itself, peers over HTTPS). */
export type Nodes = Map<string, NodeApi & { close?(): void; useCredential?(c: Credential): void }>;

export function describeGuard(g: GuardStatusView): string {
  return `${g.backend}${g.inSync === false ? ' (NOT in sync)' : ''}${g.note ? ` — ${g.note}` : ''}${g.warnings.length ? ` — warnings: ${g.warnings.join('; ')}` : ''}`;
}

export interface Settled<T> {
  values: Map<string, T>;
  ok: string[];
  failed: { host: string; error: DispatcherError }[];
  /** How long each dispatcher took to answer (ms), for the events' step durations. */
  ms: Map<string, number>;
}

/**
 * Runs fn on every node concurrently and collects results, failures and answer times by dispatcher id.
 * `now` is the operation's clock (docs/DESIGN.md, "Time and waiting"); by default a monotonic one.
 */
export async function settleAll<T>(nodes: Nodes, fn: (n: NodeApi) => Promise<T>, now: () => number = () => performance.now()): Promise<Settled<T>> {
  const entries = [...nodes.entries()];
  const ms = new Map<string, number>();
  const t0 = now();
  const results = await Promise.allSettled(
    entries.map(([id, n]) =>
      fn(n).finally(() => {
        ms.set(id, Math.round(now() - t0));
      }),
    ),
  );
  const out: Settled<T> = { values: new Map(), ok: [], failed: [], ms };
  results.forEach((r, i) => {
    const id = entries[i][0];
    if (r.status === 'fulfilled') {
      out.values.set(id, r.value);
      out.ok.push(id);
    } else {
      const e = r.reason;
      out.failed.push({ host: id, error: toDispatcherError(e) });
    }
  });
  return out;
}

export function subset(nodes: Nodes, ids: string[]): Nodes {
  return new Map([...nodes].filter(([id]) => ids.includes(id)));
}

export function combined(code: 'peer_unreachable' | 'operation_failed', what: string, failed: { host: string; error: DispatcherError }[]): DispatcherError {
  // Keep the most specific code of the first failure (e.g. peer_untrusted, conflict).
  const first = failed[0].error;
  return new DispatcherError(first.code === 'internal' ? code : first.code, `${what}:\n${failed.map((f) => `  ${f.host}: ${f.error.message}`).join('\n')}`, {
    problems: failed.map((f) => ({ path: f.host, message: f.error.message })),
    details: { host: failed[0].host, ...first.details },
  });
}
