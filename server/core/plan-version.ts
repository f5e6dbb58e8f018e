/**
 * Plan versions (docs/DESIGN.md, "Plan versions"). Pure: the cluster store (server/cluster/store.ts) keeps
 * the history these functions compute. A version is a number and a content hash: the number tells an
 * operator which change came after which, the hash makes "the same number on two dispatchers" mean the
 * same plan, so a base version is checked by both.
 */
import { createHash } from 'node:crypto';
import { DispatcherError } from '../../api/errors.js';
import type { Plan } from '../../api/plan.js';
import type { PlanVersion, PlanVersionEntry } from '../../api/plan-version.js';

/** Versions kept per cluster store: enough to explain recent refusals, bounded so the record stays small. */
export const PLAN_HISTORY_LIMIT = 50;

/** JSON with object keys sorted at every level, so equal plans hash equally whatever their key order. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

export function planHash(plan: Plan): string {
  return createHash('sha256').update(canonicalJson(plan)).digest('hex').slice(0, 16);
}

/** The history as it stands, or — for a plan stored before versions existed — version 1 of that plan. */
export function historyOf(plan: Plan, history: readonly PlanVersionEntry[] | undefined, at: string): PlanVersionEntry[] {
  const last = history?.at(-1);
  if (last && last.hash === planHash(plan)) return [...history!];
  // A record whose plan no longer matches its last entry was changed by a version that kept no history.
  if (last) return [...history!, { number: last.number + 1, hash: planHash(plan), at }].slice(-PLAN_HISTORY_LIMIT);
  return [{ number: 1, hash: planHash(plan), at }];
}

/**
 * The history after storing `next`. A new cluster (none before, another name, or the old one cleaned up)
 * starts at version 1; the same content keeps its version; any other change is the next number.
 */
export function nextHistory(
  current: { plan: Plan; history: readonly PlanVersionEntry[]; cleaned: boolean } | undefined,
  next: Plan,
  at: string,
  /**
   * The number the cluster gives this version (a scale operation numbers its steps' versions the same on
   * every dispatcher, including one that joined with a version of its own); at least the next number.
   */
  number?: number,
): PlanVersionEntry[] {
  const hash = planHash(next);
  if (!current || current.cleaned || current.plan.name !== next.name || current.history.length === 0) return [{ number: 1, hash, at }];
  const last = current.history[current.history.length - 1];
  if (last.hash === hash) return [...current.history];
  if (number !== undefined && number <= last.number) throw new DispatcherError('conflict', `plan version ${number} is not after the stored version ${last.number}`);
  return [...current.history, { number: number ?? last.number + 1, hash, at }].slice(-PLAN_HISTORY_LIMIT);
}

export function currentVersion(history: readonly PlanVersionEntry[]): PlanVersion {
  const last = history[history.length - 1];
  if (!last) throw new DispatcherError('state_damaged', 'the plan history is empty');
  return { number: last.number, hash: last.hash };
}

/**
 * Refuses a change computed against another version than the running one (409 naming both), as
 * `nomad job run -check-index`: someone changed the plan since the operator looked at the diff.
 */
export function assertBaseVersion(running: PlanVersion, base: PlanVersion | undefined): void {
  if (!base) return;
  if (base.number === running.number && base.hash === running.hash) return;
  throw new DispatcherError(
    'conflict',
    `this change was computed against plan version ${base.number} (${base.hash}), but the running plan is version ${running.number} (${running.hash}): ` +
      'look at the change again (`dispatch plan --diff`) and apply it against the running version',
    { details: { baseVersion: base, runningVersion: running } },
  );
}
