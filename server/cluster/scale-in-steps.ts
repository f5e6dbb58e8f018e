/**
 * The removal steps of a scale operation (docs/DESIGN.md, "Scaling"), run by the executor (scale.ts) in
 * the planner's order; the plan version without a removed process is stored AFTER its step ran
 * (server/core/scale-progress.ts), so while a step runs its process is still planned and can be stopped.
 *
 * - switchover-away: the Patroni leader moves to a DB server that stays (never one that goes too);
 * - remove-coordinator: stop (PgBouncer first, its clients' transactions finish);
 * - remove-dbserver: stop, then its member key leaves the DCS (patroni-members.ts says why not patronictl);
 * - remove-agent: etcd leadership handed to a member that stays, `member remove` (quorum kept: checked by
 *   the planner and by etcd), then stop — a removed member exits by itself, and its supervisor would start
 *   it again, so the stop follows at once;
 * - remove-dead-agent: `member remove` of a member that does not answer (stopped first if its host does);
 * - shrink-firewall: the plan without the gone hosts is stored on every remaining dispatcher (each guard
 *   re-renders from it in one transaction, each DB server's pg_hba too), then read back — only after
 *   their processes are gone;
 * - release-dispatcher: the gone dispatcher stops whatever is left, removes its guard and forgets the plan
 *   (data dirs kept); the remaining plans no longer pin it (docs/SECURITY.md, "Scale in and replace").
 *
 * A dead host is never called: its processes count as down, its DB server's member is removed from here.
 */
import { DispatcherError, isDispatcherError } from '../../api/errors.js';
import type { Plan, PlanProcess } from '../../api/plan.js';
import { pollUntil, settledCheck } from '../../shared/poll.js';
import { etcdAgency } from '../engines/agency-kv.js';
import { agencyEndpoints, agentPeerUrl, moveLeaderAway, removeMember } from '../engines/pg-ha/etcd-members.js';
import { removePatroniMember, switchoverAway } from '../engines/pg-ha/patroni-members.js';
import { combined, describeGuard, settleAll, subset } from './fan-out.js';
import { HEALTH_GATE_POLL_MS } from './launch-steps.js';
import type { ScaleContext, StepRunners } from './scale-steps.js';

type ScaleInKind = 'remove-dead-agent' | 'switchover-away' | 'remove-coordinator' | 'remove-dbserver' | 'remove-agent' | 'shrink-firewall' | 'release-dispatcher';

/** The membership steps speak etcd and Patroni: the pg-ha engine's (another engine refuses before anything changes). */
function pgHaPlan(ctx: ScaleContext): Plan {
  const plan = ctx.current();
  if (plan.engine !== 'pg-ha') throw new DispatcherError('bad_request', `removing processes is implemented for the pg-ha engine only, not ${plan.engine}`);
  return plan;
}

function processOf(plan: Plan, id: string): PlanProcess {
  const p = plan.processes.find((x) => x.id === id);
  if (!p) throw new DispatcherError('internal', `process ${id} is not in the current plan version`);
  return p;
}

/** A call to a host that does not answer: the process there counts as down (a dead machine). */
function unreachable(e: unknown): boolean {
  return isDispatcherError(e) && e.code === 'peer_unreachable';
}

/** Stops a process on its host; false when the host does not answer (it is dead: nothing runs there to stop). */
async function stopOnHost(ctx: ScaleContext, p: PlanProcess): Promise<boolean> {
  // A host that was down when the operation started holds no plan version of it: it is never called.
  if (!ctx.versions.has(p.dispatcher)) {
    ctx.op.event({ level: 'info', step: 'stop', host: p.dispatcher, process: p.id, message: `${p.dispatcher} is down: ${p.id} is not running` });
    return false;
  }
  const t0 = ctx.clock.now();
  try {
    await ctx.nodes.get(p.dispatcher)!.stopProcess(p.id);
  } catch (e) {
    if (!unreachable(e)) throw e;
    ctx.op.event({ level: 'warn', step: 'stop', host: p.dispatcher, process: p.id, message: `${p.dispatcher} does not answer: ${p.id} counts as down (${(e as Error).message})` });
    return false;
  }
  ctx.op.event({ level: 'info', step: 'stop', host: p.dispatcher, process: p.id, message: `${p.id} stopped`, durationMs: Math.round(ctx.clock.now() - t0) });
  return true;
}

/** The role's cluster-level health in `plan` (the plan without what was just removed). */
async function waitHealthy(ctx: ScaleContext, plan: Plan, role: PlanProcess['role'], what: string): Promise<void> {
  const processes = plan.processes.filter((p) => p.role === role);
  const t0 = ctx.clock.now();
  const res = await pollUntil(() => settledCheck(() => ctx.health.check(plan, role, processes, ctx.secrets)), (r) => r.ok, {
    timeoutMs: ctx.readyTimeoutMs,
    intervalMs: HEALTH_GATE_POLL_MS,
    clock: ctx.clock,
    onTimeout: (r) => new DispatcherError('operation_failed', `${role}s not healthy within ${Math.round(ctx.readyTimeoutMs / 1000)} s after ${what}: ${r.detail}`),
  });
  ctx.op.event({ level: 'info', step: 'healthy', message: `${role}s healthy without it: ${res.detail}`, durationMs: Math.round(ctx.clock.now() - t0) });
}

const without = (plan: Plan, id: string): Plan => ({ ...plan, processes: plan.processes.filter((p) => p.id !== id) });

export const scaleInRunners: Pick<StepRunners, ScaleInKind> = {
  async 'switchover-away'(ctx, step) {
    const plan = pgHaPlan(ctx);
    const t0 = ctx.clock.now();
    const leader = await switchoverAway(ctx.actions, plan, ctx.secrets, step.from, ctx.readyTimeoutMs, ctx.clock);
    ctx.op.event({ level: 'info', step: 'switchover', message: leader ? `the DB leader moved to ${leader}, which stays` : `the DB leader is not on ${step.from.join(', ')}: nothing to move`, durationMs: Math.round(ctx.clock.now() - t0) });
  },

  async 'remove-coordinator'(ctx, step) {
    const p = processOf(ctx.current(), step.process);
    if (await stopOnHost(ctx, p)) ctx.onRollback(`stop of ${p.id}`, async () => void (await ctx.nodes.get(p.dispatcher)!.startProcess(p.id, ctx.readyTimeoutMs)));
  },

  async 'remove-dbserver'(ctx, step) {
    const plan = pgHaPlan(ctx);
    const p = processOf(plan, step.process);
    if (await stopOnHost(ctx, p)) ctx.onRollback(`stop of ${p.id}`, async () => void (await ctx.nodes.get(p.dispatcher)!.startProcess(p.id, ctx.readyTimeoutMs)));
    const removed = await removePatroniMember(plan, p.id, etcdAgency(plan, () => ctx.clusterTls), { tls: ctx.clusterTls });
    ctx.op.event({ level: 'info', step: 'member-remove', host: p.dispatcher, process: p.id, message: removed ? `Patroni member ${p.id} removed from the DCS` : `Patroni member ${p.id} was gone from the DCS already` });
    await waitHealthy(ctx, without(plan, p.id), 'dbserver', `removing ${p.id}`);
  },

  async 'remove-agent'(ctx, step) {
    const plan = pgHaPlan(ctx);
    const p = processOf(plan, step.process);
    const opts = { tls: ctx.clusterTls };
    const stay = plan.processes.filter((x) => x.role === 'agent' && x.id !== p.id);
    const peerUrl = agentPeerUrl(p);
    const t0 = ctx.clock.now();
    const leader = await moveLeaderAway(agencyEndpoints(plan), peerUrl, stay.map(agentPeerUrl), opts);
    if (leader) ctx.op.event({ level: 'info', step: 'move-leader', host: p.dispatcher, process: p.id, message: `etcd leadership moved from ${p.id} to member ${leader}`, durationMs: Math.round(ctx.clock.now() - t0) });
    // Asked of the members that stay: the removed one stops answering once it learns of its removal.
    const removed = await removeMember(agencyEndpoints(plan, [p.id]), peerUrl, opts);
    ctx.op.event({ level: 'info', step: 'member-remove', host: p.dispatcher, process: p.id, message: removed ? `etcd member ${peerUrl} removed` : `${peerUrl} was no etcd member any more` });
    await stopOnHost(ctx, p);
    await waitHealthy(ctx, without(plan, p.id), 'agent', `removing ${p.id}`);
  },

  async 'remove-dead-agent'(ctx, step) {
    const plan = pgHaPlan(ctx);
    const p = processOf(plan, step.process);
    // A crashed agent on a live host: stopped first, so its supervisor does not start it into a membership it lost.
    await stopOnHost(ctx, p);
    const removed = await removeMember(agencyEndpoints(plan, [p.id]), agentPeerUrl(p), { tls: ctx.clusterTls });
    ctx.op.event({ level: 'info', step: 'member-remove', host: p.dispatcher, process: p.id, message: removed ? `dead etcd member ${agentPeerUrl(p)} removed` : `${agentPeerUrl(p)} was no etcd member any more` });
    await waitHealthy(ctx, without(plan, p.id), 'agent', `removing ${p.id}`);
  },

  async 'shrink-firewall'(ctx, step) {
    const current = ctx.current();
    const staying = new Set(ctx.proposed.dispatchers.map((d) => d.id));
    const gone = current.dispatchers.filter((d) => !staying.has(d.id)).map((d) => d.id);
    const left = current.processes.filter((p) => gone.includes(p.dispatcher));
    // The class "rules close while a process still runs there" cannot happen: refused, not committed.
    if (left.length) throw new DispatcherError('internal', `shrink-firewall with processes still planned on ${gone.join(', ')}: ${left.map((p) => p.id).join(', ')}`);
    if (gone.length) await ctx.commit({ ...current, dispatchers: current.dispatchers.filter((d) => staying.has(d.id)) });
    const hosts = subset(ctx.nodes, step.hosts);
    const verified = await settleAll(hosts, (n) => n.verifyGuard(), () => ctx.clock.now());
    if (verified.failed.length) throw combined('operation_failed', 'guard verification failed', verified.failed);
    const bad = [...verified.values].filter(([, g]) => g.inSync === false);
    if (bad.length) throw new DispatcherError('operation_failed', `firewall guard not in sync on ${bad.map(([id]) => id).join(', ')}`, { details: { host: bad[0][0] } });
    for (const [id, g] of verified.values) ctx.op.event({ level: 'info', step: 'guard', host: id, message: `no longer lets ${step.addresses.join(', ')} in: ${describeGuard(g)}`, durationMs: verified.ms.get(id) });
    for (const p of ctx.current().processes.filter((x) => x.role === 'dbserver')) {
      await ctx.nodes.get(p.dispatcher)!.refreshConfig(p.id);
      ctx.op.event({ level: 'info', step: 'pg_hba', host: p.dispatcher, process: p.id, message: `${p.id} re-read its configuration (pg_hba no longer admits ${step.addresses.join(', ')})` });
    }
  },

  async 'release-dispatcher'(ctx, step) {
    const t0 = ctx.clock.now();
    const { keptDataDirs } = await ctx.nodes.get(step.host)!.releasePlan(ctx.running.name);
    ctx.op.event({
      level: 'info',
      step: 'release',
      host: step.host,
      message: `${step.host} left cluster ${ctx.running.name}: processes stopped, guard removed, plan forgotten; data kept${keptDataDirs.length ? ` in ${keptDataDirs.join(', ')}` : ''}`,
      durationMs: Math.round(ctx.clock.now() - t0),
    });
  },
};
