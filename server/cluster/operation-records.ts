/**
 * How this dispatcher's operation records and those in the agency (operation-lock.ts) combine: a record
 * `running` whose runner no longer holds the cluster lock is `stale` (its dispatcher died: resume or abort
 * it); a record this dispatcher ended wins over an older copy in the agency. Pure: OperationStore passes
 * its own records and what the agency answered (docs/DESIGN.md, "Operation lifecycle").
 */
import { DispatcherError } from '../../api/errors.js';
import type { OperationView } from '../../api/rest.js';
import type { PublishedOperation } from './operation-lock.js';

/** An operation found here or in the agency. */
export interface FoundOperation {
  view: OperationView;
  /** Its runner still holds the cluster lock (here: it runs on this dispatcher). */
  runnerAlive: boolean;
  local: boolean;
}

function marked(p: PublishedOperation): OperationView {
  return p.view.state === 'running' && !p.runnerAlive ? { ...p.view, stale: true } : p.view;
}

/** Every record, local ones first, oldest first. */
export function mergeRecords(local: OperationView[], published: PublishedOperation[]): OperationView[] {
  const all = new Map(local.map((o) => [o.id, o] as const));
  for (const p of published) if (!all.has(p.view.id)) all.set(p.view.id, marked(p));
  return [...all.values()].sort((a, b) => a.startedAt.localeCompare(b.startedAt));
}

export function findRecord(id: string, local: OperationView | undefined, published: PublishedOperation[]): FoundOperation {
  if (local && local.state === 'running') return { view: local, runnerAlive: true, local: true };
  const pub = published.find((p) => p.view.id === id);
  if (pub) {
    // A record this dispatcher wrote and still has, ended here, wins over an older one in the agency.
    if (local && pub.view.state === 'running' && !pub.runnerAlive) return { view: local, runnerAlive: false, local: true };
    return { view: marked(pub), runnerAlive: pub.runnerAlive, local: false };
  }
  if (local) return { view: local, runnerAlive: false, local: true };
  throw new DispatcherError('not_found', `no operation ${id} on this dispatcher or in the cluster's agency`);
}

/**
 * Whether another dispatcher took over an operation that was running on `self` when its daemon died: a
 * sentence saying so, or undefined when it is still this dispatcher's to resume.
 */
export function takenOverBy(view: OperationView, self: string | undefined, published: PublishedOperation[]): string | undefined {
  const pub = published.find((p) => p.view.id === view.id);
  if (!pub) return undefined;
  if (pub.view.state !== 'running') return `while this dispatcher was down, the operation ended elsewhere: ${pub.view.state}`;
  if (pub.runnerAlive && pub.view.runner !== self) return `while this dispatcher was down, dispatcher ${pub.view.runner} took the operation over`;
  return undefined;
}
