/**
 * Scale out, scale in and replace as ONE pure planning step (docs/DESIGN.md, "Scaling"): from the running
 * plan, the proposed plan and which processes are down now, the ordered steps that get from one to the
 * other without losing the agency's quorum — or every reason to refuse. The rules:
 * - a scale change adds or removes dispatchers and processes; anything that stays must stay the same
 *   (ports, addresses, binaries and policy have their own operations: restart --upgrade, firewall apply);
 * - firewall sets widen before a new host's processes start, and shrink only after the old ones are gone
 *   (by the addresses no remaining host shares);
 * - etcd membership changes one member at a time, dead members leave first, and no change may leave the
 *   agency without a majority of live voting members (etcd's runtime-reconfiguration rule);
 * - the Patroni leader is moved off a DB server before that server goes; at least one DB server stays.
 */
import type { Plan, PlanProcess } from '../../api/plan.js';
import type { ScalePlan, ScaleStep } from '../../api/plan-version.js';
import type { Problem } from '../../api/errors.js';
import type { ClusterView } from '../../api/rest.js';
import { canonicalJson } from './plan-version.js';

const same = (a: unknown, b: unknown) => canonicalJson(a) === canonicalJson(b);

/** Majority of n voting members. */
export function quorum(n: number): number {
  return Math.floor(n / 2) + 1;
}

/** Why `proposed` is not a scale change of `running` (it changes something that stays); empty when it is one. */
export function scaleChangeProblems(running: Plan, proposed: Plan): Problem[] {
  const problems: Problem[] = [];
  for (const key of ['name', 'engine', 'dataRoot', 'binaries', 'firewall'] as const) {
    if (!same(running[key], proposed[key])) {
      const how = key === 'binaries' ? ' (an upgrade: dispatch restart --upgrade)' : key === 'firewall' ? ' (dispatch firewall apply)' : '';
      problems.push({ path: key, message: `a scale change cannot change ${key}${how}` });
    }
  }
  const next = new Map(proposed.dispatchers.map((d) => [d.id, d]));
  running.dispatchers.forEach((d, i) => {
    const n = next.get(d.id);
    if (n && !same(d, n)) problems.push({ path: `dispatchers[${i}]`, message: `dispatcher ${d.id} stays but changes; a scale change only adds or removes dispatchers` });
  });
  const procs = new Map(proposed.processes.map((p) => [p.id, p]));
  running.processes.forEach((p, i) => {
    const n = procs.get(p.id);
    if (n && !same(p, n)) problems.push({ path: `processes[${i}]`, message: `process ${p.id} stays but changes; a scale change only adds or removes processes (a moved process is a new id)` });
  });
  return problems;
}

/** Addresses of `hosts` that no other host of `plan` has (hosts may share one, e.g. loopback). */
function ownAddresses(plan: Plan, hosts: readonly string[]): string[] {
  const others = new Set(plan.dispatchers.filter((d) => !hosts.includes(d.id)).flatMap((d) => d.addresses));
  return [...new Set(plan.dispatchers.filter((d) => hosts.includes(d.id)).flatMap((d) => d.addresses))].filter((a) => !others.has(a));
}

/**
 * The agency's membership changes in order, each checked: dead members leave first, then new members join
 * one at a time, then live members leave one at a time. `live` counts voting members that answer.
 */
function agencySteps(removed: PlanProcess[], added: PlanProcess[], members: number, down: ReadonlySet<string>, problems: Problem[]) {
  const deadGoing = removed.filter((p) => down.has(p.id));
  const liveGoing = removed.filter((p) => !down.has(p.id));
  let n = members;
  let live = members - [...down].length;
  const steps: ScaleStep[] = [];
  const check = (what: string, nAfter: number, liveDuring: number) => {
    if (liveDuring < quorum(nAfter)) {
      problems.push({ path: 'processes', message: `${what} would leave the agency with ${liveDuring} live of ${nAfter} members (a majority needs ${quorum(nAfter)}): refused, it would lose quorum` });
      return false;
    }
    return true;
  };
  for (const p of deadGoing) {
    if (!check(`removing dead agent ${p.id}`, n - 1, live)) return steps;
    steps.push({ kind: 'remove-dead-agent', process: p.id, host: p.dispatcher });
    n -= 1;
  }
  for (const p of added) {
    // etcd adds a voting member only while every member is connected (measured: "unhealthy cluster"
    // otherwise), so a member that is down and stays blocks every add — dead members leave first.
    if (live < n) {
      problems.push({ path: 'processes', message: `adding agent ${p.id} needs every agency member up (${live} live of ${n}); etcd refuses to add a member while one is down: remove the dead member in the same change` });
      return steps;
    }
    // Between `member add` and the new member's start, it votes but does not answer yet.
    if (!check(`adding agent ${p.id}`, n + 1, live)) return steps;
    steps.push({ kind: 'add-agent', process: p.id, host: p.dispatcher });
    n += 1;
    live += 1;
  }
  for (const p of liveGoing) {
    if (!check(`removing agent ${p.id}`, n - 1, live - 1)) return steps;
    steps.push({ kind: 'remove-agent', process: p.id, host: p.dispatcher });
    n -= 1;
    live -= 1;
  }
  return steps;
}

/** What does not answer now: dispatchers (a dead machine) and processes (a dead machine's, or crashed ones). */
export interface ScaleHealth {
  downHosts?: ReadonlySet<string>;
  downProcesses?: ReadonlySet<string>;
}

/**
 * The steps from `running` to `proposed` (both valid plans of the same cluster). Processes that are down
 * (their own or their host's) are removed without a graceful stop and count against quorum; a dead host is
 * dropped from the plan without being asked to release anything.
 */
export function planScale(running: Plan, proposed: Plan, health: ScaleHealth = {}): ScalePlan {
  const downHosts = health.downHosts ?? new Set<string>();
  const down = new Set([...(health.downProcesses ?? []), ...running.processes.filter((p) => downHosts.has(p.dispatcher)).map((p) => p.id)]);
  const problems = scaleChangeProblems(running, proposed);
  const keptIds = new Set(proposed.processes.map((p) => p.id));
  const runningIds = new Set(running.processes.map((p) => p.id));
  const added = proposed.processes.filter((p) => !runningIds.has(p.id));
  const removed = running.processes.filter((p) => !keptIds.has(p.id));
  const runningHosts = new Set(running.dispatchers.map((d) => d.id));
  const proposedHosts = new Set(proposed.dispatchers.map((d) => d.id));
  const newHosts = proposed.dispatchers.filter((d) => !runningHosts.has(d.id)).map((d) => d.id);
  const goneHosts = running.dispatchers.filter((d) => !proposedHosts.has(d.id)).map((d) => d.id);
  const byRole = (list: PlanProcess[], role: PlanProcess['role']) => list.filter((p) => p.role === role);

  const dbLeft = proposed.processes.filter((p) => p.role === 'dbserver' && !down.has(p.id));
  if (byRole(removed, 'dbserver').length && dbLeft.length === 0) problems.push({ path: 'processes', message: 'no live DB server would be left to take over the data: refused' });
  const members = byRole(running.processes, 'agent').length;
  const downAgents = new Set(byRole(running.processes, 'agent').filter((p) => down.has(p.id)).map((p) => p.id));
  // Every membership change (even removing a dead member) is itself an etcd write: it needs a majority now.
  if (members - downAgents.size < quorum(members)) {
    problems.push({ path: 'processes', message: `the agency has lost quorum (${members - downAgents.size} live of ${members} members, a majority needs ${quorum(members)}): no scale change can run; bring members back first` });
  }
  const agency = problems.length ? [] : agencySteps(byRole(removed, 'agent'), byRole(added, 'agent'), members, downAgents, problems);
  if (problems.length) return { steps: [], problems };
  if (!added.length && !removed.length && !newHosts.length && !goneHosts.length) return { steps: [], problems: [] };

  const steps: ScaleStep[] = [];
  const keptCoordinators = proposed.processes.filter((p) => p.role === 'coordinator' && runningIds.has(p.id)).map((p) => p.id);
  const dbGoing = byRole(removed, 'dbserver');
  const deadDbGoing = dbGoing.filter((p) => down.has(p.id));
  const liveDbGoing = dbGoing.filter((p) => !down.has(p.id));
  // What is down and goes leaves the plan first (a dead machine's processes): nothing that follows waits
  // for it to become healthy, and no step calls a host that cannot answer.
  steps.push(...agency.filter((s) => s.kind === 'remove-dead-agent'));
  for (const p of deadDbGoing) steps.push({ kind: 'remove-dbserver', process: p.id, host: p.dispatcher });
  for (const p of byRole(removed, 'coordinator').filter((x) => down.has(x.id))) steps.push({ kind: 'remove-coordinator', process: p.id, host: p.dispatcher });
  for (const host of newHosts) steps.push({ kind: 'adopt-dispatcher', host });
  const stay = proposed.dispatchers.map((d) => d.id);
  const widen = ownAddresses(proposed, newHosts);
  if (widen.length) steps.push({ kind: 'widen-firewall', hosts: stay, addresses: widen });
  steps.push(...agency.filter((s) => s.kind === 'add-agent'));
  for (const p of byRole(added, 'dbserver')) steps.push({ kind: 'add-dbserver', process: p.id, host: p.dispatcher });
  for (const p of byRole(added, 'coordinator')) steps.push({ kind: 'add-coordinator', process: p.id, host: p.dispatcher });
  // New coordinators render the new DB server list at start; the ones that stay learn it by a reload —
  // once for the DB servers added and the dead ones removed.
  if ((byRole(added, 'dbserver').length || deadDbGoing.length) && keptCoordinators.length) steps.push({ kind: 'reconfigure-coordinators', processes: keptCoordinators });
  for (const p of byRole(removed, 'coordinator').filter((x) => !down.has(x.id))) steps.push({ kind: 'remove-coordinator', process: p.id, host: p.dispatcher });
  if (liveDbGoing.length) steps.push({ kind: 'switchover-away', from: liveDbGoing.map((p) => p.id) });
  for (const p of liveDbGoing) steps.push({ kind: 'remove-dbserver', process: p.id, host: p.dispatcher });
  // Coordinators stop routing to removed DB servers once those are gone (Patroni no longer lists them).
  if (liveDbGoing.length && keptCoordinators.length) steps.push({ kind: 'reconfigure-coordinators', processes: keptCoordinators });
  steps.push(...agency.filter((s) => s.kind === 'remove-agent'));
  const shrink = ownAddresses(running, goneHosts);
  if (shrink.length) steps.push({ kind: 'shrink-firewall', hosts: stay, addresses: shrink });
  for (const host of goneHosts.filter((h) => !downHosts.has(h))) steps.push({ kind: 'release-dispatcher', host });
  return { steps, problems: [] };
}

/** Health from the cluster view: unreachable dispatchers are down hosts; a process counts as up only when ready. */
export function scaleHealthOf(view: Pick<ClusterView, 'dispatchers' | 'processes'>): ScaleHealth {
  return {
    downHosts: new Set(view.dispatchers.filter((d) => !d.reachable).map((d) => d.id)),
    downProcesses: new Set(view.processes.filter((p) => p.state !== 'ready').map((p) => p.id)),
  };
}
