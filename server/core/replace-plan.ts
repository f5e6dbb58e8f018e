/**
 * Replace a dead machine (docs/DESIGN.md, "Scaling"), as a plan change: the dead dispatcher leaves the plan
 * and a new one takes its place, with the dead host's processes re-created on it. A moved process is a
 * NEW process (new id, new data dir): the scale planner only adds and removes (server/core/scale-plan.ts),
 * so the dead agent's etcd member is removed before the new one is added (remove-dead-agent), its DB
 * server's member is dropped and the new one clones from the leader as a replica, and every host's
 * firewall and the coordinators follow. Pure: the caller validates the result and runs planScale on it.
 */
import { DispatcherError } from '../../api/errors.js';
import type { Plan, PlanDispatcher, PlanProcess } from '../../api/plan.js';

/** The id for a process that replaces `old`: same stem (`agent-3` → `agent-`), the next number free in the plan. */
export function successorId(plan: Plan, old: string, taken: ReadonlySet<string> = new Set()): string {
  const stem = /\d$/.test(old) ? old.replace(/\d+$/, '') : `${old}-`;
  const used = new Set([...plan.processes.map((p) => p.id), ...taken]);
  let n = 1;
  for (const id of used) if (id.startsWith(stem) && /^\d+$/.test(id.slice(stem.length))) n = Math.max(n, Number(id.slice(stem.length)) + 1);
  return `${stem}${n}`;
}

/** The data dir of the successor: the old one with its last segment (the old id) renamed. */
function successorDataDir(old: PlanProcess, id: string): string {
  const parts = old.dataDir.split('/');
  if (parts.at(-1) === old.id) parts[parts.length - 1] = id;
  else parts.push(id);
  return parts.join('/');
}

/**
 * The plan with `deadHost` replaced by `replacement`: same place in the dispatcher list, each of the dead
 * host's processes re-created on the new host (same role, ports and arguments; its first address; a new
 * id and data dir) in the dead process's place. Refused (400) when the dead host is not in the plan, the
 * new one is (by id or endpoint), or the new host offers no address.
 */
export function replacePlan(running: Plan, deadHost: string, replacement: PlanDispatcher): Plan {
  const problems: { path: string; message: string }[] = [];
  if (!running.dispatchers.some((d) => d.id === deadHost)) problems.push({ path: 'dead', message: `dispatcher ${deadHost} is not in the running plan of ${running.name} (${running.dispatchers.map((d) => d.id).join(', ')})` });
  if (running.dispatchers.some((d) => d.id === replacement.id)) problems.push({ path: 'with.id', message: `dispatcher ${replacement.id} is in the plan already: the replacement needs a new id (a new machine, a new certificate)` });
  if (running.dispatchers.some((d) => d.endpoint === replacement.endpoint)) problems.push({ path: 'with.endpoint', message: `endpoint ${replacement.endpoint} belongs to a dispatcher of the plan already` });
  if (!replacement.addresses.length) problems.push({ path: 'with.addresses', message: 'the replacement needs at least one address' });
  if (problems.length) throw new DispatcherError('bad_request', `cannot replace ${deadHost} with ${replacement.id}`, { problems });

  const taken = new Set<string>();
  const processes = running.processes.map((p) => {
    if (p.dispatcher !== deadHost) return p;
    const id = successorId(running, p.id, taken);
    taken.add(id);
    return { ...p, id, dispatcher: replacement.id, address: replacement.addresses[0], ports: p.ports.map((x) => ({ ...x })), args: [...p.args], dataDir: successorDataDir(p, id) };
  });
  const dispatchers = running.dispatchers.map((d) => (d.id === deadHost ? { ...replacement, addresses: [...replacement.addresses] } : d));
  return { ...running, dispatchers, processes };
}
