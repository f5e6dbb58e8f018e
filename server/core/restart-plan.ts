/**
 * Pure planning of a rolling restart (and of an upgrade, which is a rolling restart onto new binaries):
 * which processes, in what order, with which gates. No I/O: the plan, the operator's selection, the
 * engine's declared steps (templates/<engine>/engine.yaml `rollingRestart`) and live facts such as the
 * current leaders come in as arguments; server/cluster/restart.ts executes the result.
 *
 * Order: agents (followers, then the leader), DB servers (replicas, then the leader — whose `before` steps
 * carry the switchover), coordinators one at a time. Processes already done (a retry or a resumed
 * operation) are left out.
 */
import { DispatcherError, type Problem } from '../../api/errors.js';
import { ROLE_ORDER, type Plan, type PlanProcess, type Role } from '../../api/plan.js';

/** One engine step (same shape as server/engines/types.ts RollingStep, repeated so the core imports no engine code). */
export interface PlanStep {
  action: string;
  description: string;
  onlyLeader?: boolean;
  timeoutMs?: number;
}

export interface RoleSteps {
  order: 'followers-then-leader' | 'one-at-a-time';
  /** The DB servers' automatic failover is held while this role's processes restart (server/engines/types.ts). */
  holdFailover?: { description: string; maxMs: number };
  beforeRole: PlanStep[];
  before: PlanStep[];
  after: PlanStep[];
  afterRole: PlanStep[];
}

export interface RestartSelection {
  roles?: Role[];
  hosts?: string[];
  ids?: string[];
}

/** Facts read from the running cluster just before planning (process ids). */
export interface RestartFacts {
  agencyLeader?: string;
  dbLeader?: string;
}

export interface RestartEntry {
  process: string;
  role: Role;
  host: string;
  /** Was the role's leader when planned (the executor re-checks before `onlyLeader` steps). */
  leader: boolean;
  /** Steps before stopping this process (`onlyLeader` steps kept only for the leader). */
  before: PlanStep[];
  /** Gates after it is started again, before the next process. */
  after: PlanStep[];
}

export interface RoleBatch {
  role: Role;
  order: RoleSteps['order'];
  holdFailover?: RoleSteps['holdFailover'];
  beforeRole: PlanStep[];
  processes: RestartEntry[];
  afterRole: PlanStep[];
}

/** Processes matching every given filter (roles AND hosts AND ids). Unknown names are problems, as is an empty result. */
export function selectProcesses(plan: Plan, sel: RestartSelection = {}): PlanProcess[] {
  const problems: Problem[] = [];
  const ids = new Set(plan.processes.map((p) => p.id));
  const hosts = new Set(plan.dispatchers.map((d) => d.id));
  for (const id of sel.ids ?? []) if (!ids.has(id)) problems.push({ path: 'processes.ids', message: `no process ${id} in cluster ${plan.name}` });
  for (const h of sel.hosts ?? []) if (!hosts.has(h)) problems.push({ path: 'processes.hosts', message: `no dispatcher ${h} in cluster ${plan.name}` });
  if (problems.length) throw new DispatcherError('validation_failed', `restart selection names unknown processes or dispatchers`, { problems });
  const chosen = plan.processes.filter(
    (p) =>
      (!sel.roles?.length || sel.roles.includes(p.role)) &&
      (!sel.hosts?.length || sel.hosts.includes(p.dispatcher)) &&
      (!sel.ids?.length || sel.ids.includes(p.id)),
  );
  if (chosen.length === 0) {
    throw new DispatcherError('validation_failed', 'the restart selection matches no process', { problems: [{ path: 'processes', message: 'matches no process' }] });
  }
  return chosen;
}

function leaderOf(role: Role, facts: RestartFacts): string | undefined {
  return role === 'agent' ? facts.agencyLeader : role === 'dbserver' ? facts.dbLeader : undefined;
}

/**
 * The rolling plan: role batches in ROLE_ORDER; inside a followers-then-leader role the leader goes last
 * (plan order otherwise). Done processes are skipped; a role with nothing left is left out.
 */
export function rollingRestartPlan(
  plan: Plan,
  selection: RestartSelection,
  steps: Record<Role, RoleSteps>,
  facts: RestartFacts = {},
  done: Iterable<string> = [],
): RoleBatch[] {
  const doneSet = new Set(done);
  const chosen = selectProcesses(plan, selection).filter((p) => !doneSet.has(p.id));
  const out: RoleBatch[] = [];
  for (const role of ROLE_ORDER) {
    const rs = steps[role];
    let procs = chosen.filter((p) => p.role === role);
    if (procs.length === 0) continue;
    const leader = leaderOf(role, facts);
    if (rs.order === 'followers-then-leader' && leader) {
      procs = [...procs.filter((p) => p.id !== leader), ...procs.filter((p) => p.id === leader)];
    }
    out.push({
      role,
      order: rs.order,
      ...(rs.holdFailover ? { holdFailover: rs.holdFailover } : {}),
      beforeRole: rs.beforeRole,
      afterRole: rs.afterRole,
      processes: procs.map((p) => {
        const isLeader = p.id === leader;
        return {
          process: p.id,
          role,
          host: p.dispatcher,
          leader: isLeader,
          // Without a known leader the onlyLeader steps stay: the executor checks leadership live before each.
          before: rs.before.filter((s) => !s.onlyLeader || isLeader || leader === undefined),
          after: rs.after,
        };
      }),
    });
  }
  return out;
}

/** all-at-once: stop every selected process in shutdown order, then start them in launch order with the role gates. */
export function allAtOncePlan(plan: Plan, selection: RestartSelection, done: Iterable<string> = []): { stop: PlanProcess[][]; start: PlanProcess[][] } {
  const doneSet = new Set(done);
  const chosen = selectProcesses(plan, selection).filter((p) => !doneSet.has(p.id));
  const start = ROLE_ORDER.map((r) => chosen.filter((p) => p.role === r)).filter((g) => g.length > 0);
  return { stop: [...start].reverse(), start };
}

/** The plan as a numbered list of lines: what the operation will do (the arangodb engine's "plan of the operation"). */
export function describeRestartPlan(batches: RoleBatch[]): string[] {
  const lines: string[] = [];
  const step = (s: PlanStep, who?: string) => `${s.action}${who ? ` ${who}` : ''}: ${s.description}`;
  for (const b of batches) {
    if (b.holdFailover) lines.push(`hold-failover (${b.role}s): ${b.holdFailover.description}`);
    for (const s of b.beforeRole) lines.push(step(s, `(${b.role}s)`));
    for (const e of b.processes) {
      for (const s of e.before) lines.push(step(s, e.process));
      lines.push(`restart ${e.process}: stop and start ${e.role} on ${e.host}${e.leader ? ' (leader, last)' : ''}`);
      for (const s of e.after) lines.push(step(s, e.process));
    }
    for (const s of b.afterRole) lines.push(step(s, `(${b.role}s)`));
    if (b.holdFailover) lines.push(`release-failover (${b.role}s): automatic failover again`);
  }
  return lines.map((l, i) => `${i + 1}. ${l}`);
}

/**
 * An upgrade request (program name or role → new path) as the plan's `binaries` (program → path). A role
 * name means that role's program; a program name must be one the engine runs or names. Which paths a
 * machine allows for the program is checked by every dispatcher when it renders (upgrade preflight).
 */
export function upgradeBinaries(programs: Record<Role, string>, current: Record<string, string>, upgrade: Record<string, string>, enginePrograms: readonly string[] = Object.values(programs)): Record<string, string> {
  const out: Record<string, string> = { ...current };
  const problems: Problem[] = [];
  for (const [key, path] of Object.entries(upgrade)) {
    if (!path.startsWith('/')) problems.push({ path: `upgrade.${key}`, message: 'must be an absolute path' });
    const program = (ROLE_ORDER as readonly string[]).includes(key) ? programs[key as Role] : enginePrograms.includes(key) ? key : undefined;
    if (program === undefined) {
      problems.push({ path: `upgrade.${key}`, message: `names neither a role nor a program of the engine (programs: ${[...new Set(enginePrograms)].join(', ')}; roles: ${ROLE_ORDER.join(', ')})` });
      continue;
    }
    out[program] = path;
  }
  if (problems.length) throw new DispatcherError('validation_failed', 'upgrade request is not valid', { problems });
  return out;
}

/** Two plans that differ only in `binaries` (an upgrade may change nothing else of a running cluster). */
export function sameExceptBinaries(a: Plan, b: Plan): boolean {
  const strip = (p: Plan) => JSON.stringify({ ...p, binaries: {} });
  return strip(a) === strip(b);
}
