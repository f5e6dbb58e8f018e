/**
 * The plan that is true after each step of a scale operation (docs/DESIGN.md, "Scaling"). Pure. A scale
 * change moves the running plan to the proposed one through intermediate versions, so that a failure
 * half-way leaves every dispatcher at a plan that describes what runs: a step that adds something is
 * committed BEFORE it runs (a dispatcher starts only processes its stored plan names, and its guard opens
 * their ports from that plan), a step that removes something AFTER it ran (the guard closes only what is
 * gone). Entries keep the proposed plan's order, then the running-only ones in the running plan's order,
 * so the last version is the proposed plan itself (same hash).
 */
import type { Plan } from '../../api/plan.js';
import type { ScaleStep } from '../../api/plan-version.js';

/** When the executor stores the plan a step leads to: before the step runs, after it, or never (no change). */
export type CommitMoment = 'before' | 'after' | 'none';

export function commitMoment(step: ScaleStep): CommitMoment {
  switch (step.kind) {
    case 'adopt-dispatcher':
    case 'add-agent':
    case 'add-dbserver':
    case 'add-coordinator':
      return 'before';
    case 'remove-dead-agent':
    case 'remove-agent':
    case 'remove-dbserver':
    case 'remove-coordinator':
    case 'release-dispatcher':
      return 'after';
    default:
      return 'none';
  }
}

function ordered<T extends { id: string }>(keep: ReadonlySet<string>, proposed: readonly T[], running: readonly T[]): T[] {
  const inProposed = new Set(proposed.map((x) => x.id));
  return [...proposed.filter((x) => keep.has(x.id)), ...running.filter((x) => keep.has(x.id) && !inProposed.has(x.id))];
}

/**
 * The plan after `step`, from the plan `current` that was true before it. Everything but dispatchers and
 * processes is the proposed plan's (a scale change changes nothing else: server/core/scale-plan.ts).
 */
export function planAfterStep(current: Plan, running: Plan, proposed: Plan, step: ScaleStep): Plan {
  const hosts = new Set(current.dispatchers.map((d) => d.id));
  const procs = new Set(current.processes.map((p) => p.id));
  switch (step.kind) {
    // A new dispatcher joins the plan first: every dispatcher pins it and its guard lets its addresses in.
    case 'adopt-dispatcher':
      hosts.add(step.host);
      break;
    case 'add-agent':
    case 'add-dbserver':
    case 'add-coordinator':
      procs.add(step.process);
      break;
    case 'remove-dead-agent':
    case 'remove-agent':
    case 'remove-dbserver':
    case 'remove-coordinator':
      procs.delete(step.process);
      break;
    case 'release-dispatcher':
      hosts.delete(step.host);
      break;
    default:
      return current;
  }
  return {
    ...proposed,
    dispatchers: ordered(hosts, proposed.dispatchers, running.dispatchers),
    processes: ordered(procs, proposed.processes, running.processes),
  };
}
