/**
 * The scale-out steps (docs/DESIGN.md, "Scaling"), each run by the executor (scale.ts) after the plan
 * version it needs is stored (server/core/scale-progress.ts): a new dispatcher adopts the cluster like a
 * launch's first contact (preflight, certificates signed by the cluster CA here); every host's guard and
 * every DB server's pg_hba let the new hosts in before any of their processes starts; an agent joins by
 * `etcd member add` first, then starts with --initial-cluster-state=existing, healthy before the next; a
 * DB server starts as a Patroni replica (ready once streaming); a coordinator starts last.
 */
import { DispatcherError, isDispatcherError } from '../../api/errors.js';
import type { PlanProcess, Role } from '../../api/plan.js';
import { planHash } from '../core/plan-version.js';
import { agencyEndpoints, agentPeerUrl, addMember, listMembers, removeMember } from '../engines/pg-ha/etcd-members.js';
import { combined, describeGuard, settleAll, subset } from './fan-out.js';
import { certificatesAll, preflightAll, waitRoleHealthy } from './launch-steps.js';
import type { ScaleContext, StepRunners } from './scale-steps.js';
import { pausedCoordinators } from './paused-coordinators.js';

type ScaleOutKind = 'adopt-dispatcher' | 'widen-firewall' | 'add-agent' | 'add-dbserver' | 'add-coordinator' | 'reconfigure-coordinators';

function processOf(ctx: ScaleContext, id: string): PlanProcess {
  const p = ctx.current().processes.find((x) => x.id === id);
  if (!p) throw new DispatcherError('internal', `process ${id} is not in the current plan version`);
  return p;
}

/** The role's cluster-level health with the new process in the current plan (the launch's gate). */
async function waitHealthy(ctx: ScaleContext, role: Role) {
  const plan = ctx.current();
  await waitRoleHealthy(ctx.op, ctx, plan, role, plan.processes.filter((p) => p.role === role), ctx.secrets, ctx.readyTimeoutMs);
}

/**
 * etcd adds a member only when the leader has been connected to every member for its health interval
 * (5 s in etcd 3.4, --strict-reconfig-check): right after the previous member joined it answers
 * "unhealthy cluster" although every member is up (measured: test/net/scale-out.test.ts). That refusal is
 * retried for up to 30 s; any other refusal, or a member really down, fails the step.
 */
async function addWhenConnected<T>(ctx: ScaleContext, add: () => Promise<T>): Promise<T> {
  const deadline = ctx.clock.now() + 30_000;
  for (;;) {
    try {
      return await add();
    } catch (e) {
      if (!isDispatcherError(e) || e.code !== 'conflict' || !/unhealthy cluster/.test(e.message) || ctx.clock.now() > deadline) throw e;
      await ctx.clock.sleep(1000);
    }
  }
}

async function startNew(ctx: ScaleContext, p: PlanProcess, opts: { agencyState?: 'existing' } = {}) {
  const node = ctx.nodes.get(p.dispatcher)!;
  // Undo stops it (its data dir stays: docs/DESIGN.md, "Scaling").
  ctx.onRollback(`start of ${p.id} on ${p.dispatcher}`, () => node.stopProcess(p.id));
  const t0 = ctx.clock.now();
  const st = await node.startProcess(p.id, ctx.readyTimeoutMs, opts);
  ctx.op.event({ level: 'info', step: 'ready', host: p.dispatcher, process: p.id, message: `${p.id} ready (pid ${st.pid})`, durationMs: Math.round(ctx.clock.now() - t0) });
}

export const scaleOutRunners: Pick<StepRunners, ScaleOutKind> = {
  /**
   * First contact, as a launch (docs/SECURITY.md, "first contact"): the new dispatcher adopts the PROPOSED
   * plan with the operator credential (so its preflight and certificates cover every process it will
   * run), is preflighted, gets its certificates from the cluster CA on this dispatcher, then stores the
   * current version like everyone else (its guard goes up from it: no process of it runs yet).
   */
  async 'adopt-dispatcher'(ctx, step) {
    const node = ctx.nodes.get(step.host)!;
    await node.adoptPlan({ plan: ctx.proposed, secrets: ctx.secrets });
    ctx.onRollback(`adoption of the plan by ${step.host}`, () => node.discardPlan(ctx.proposed.name));
    await preflightAll(ctx.op, subset(ctx.nodes, [step.host]), ctx.clock);
    await certificatesAll(ctx.op, ctx.store, ctx.self, ctx.proposed, subset(ctx.nodes, [step.host]), ctx.clock, { create: false });
    ctx.versions.set(step.host, { number: 1, hash: planHash(ctx.proposed) });
    await ctx.catchUp(step.host);
    await node.setClusterState('running');
  },

  /**
   * The plan naming the new hosts is stored everywhere already (each guard re-rendered from it in one
   * transaction); here every guard is read back, and every DB server re-reads its pg_hba, before any
   * process of a new host starts.
   */
  async 'widen-firewall'(ctx, step) {
    const hosts = subset(ctx.nodes, step.hosts);
    const verified = await settleAll(hosts, (n) => n.verifyGuard(), () => ctx.clock.now());
    if (verified.failed.length) throw combined('operation_failed', 'guard verification failed', verified.failed);
    const bad = [...verified.values].filter(([, g]) => g.inSync === false);
    if (bad.length) throw new DispatcherError('operation_failed', `firewall guard not in sync on ${bad.map(([id]) => id).join(', ')}`, { details: { host: bad[0][0] } });
    for (const [id, g] of verified.values) ctx.op.event({ level: 'info', step: 'guard', host: id, message: `lets ${step.addresses.join(', ')} in: ${describeGuard(g)}`, durationMs: verified.ms.get(id) });
    const dbservers = ctx.current().processes.filter((p) => p.role === 'dbserver');
    for (const p of dbservers) {
      await ctx.nodes.get(p.dispatcher)!.refreshConfig(p.id);
      ctx.op.event({ level: 'info', step: 'pg_hba', host: p.dispatcher, process: p.id, message: `${p.id} re-read its configuration (pg_hba admits ${step.addresses.join(', ')})` });
    }
  },

  /** `etcd member add` (the plan's agents are then exactly the members), start with `existing`, healthy before the next. */
  async 'add-agent'(ctx, step) {
    const p = processOf(ctx, step.process);
    const plan = ctx.current();
    const opts = { tls: ctx.clusterTls };
    const endpoints = agencyEndpoints(plan, [p.id]);
    const peerUrl = agentPeerUrl(p);
    const members = await listMembers(endpoints, opts);
    const others = plan.processes.filter((x) => x.role === 'agent' && x.id !== p.id);
    // --initial-cluster is rendered from the plan's agents: it must name exactly the members etcd has.
    const unknown = members.filter((m) => !m.peerURLs.includes(peerUrl) && !others.some((o) => m.peerURLs.includes(agentPeerUrl(o))));
    const absent = others.filter((o) => !members.some((m) => m.peerURLs.includes(agentPeerUrl(o))));
    if (unknown.length || absent.length) {
      throw new DispatcherError('conflict', `the agency's members do not match the plan (${unknown.length ? `members not in the plan: ${unknown.map((m) => m.name || m.peerURLs.join(' ')).join(', ')}` : ''}${absent.length ? ` agents of the plan that are no members: ${absent.map((o) => o.id).join(', ')}` : ''}); refusing to add ${p.id}`);
    }
    const t0 = ctx.clock.now();
    const added = await addWhenConnected(ctx, () => addMember(endpoints, peerUrl, opts));
    ctx.onRollback(`etcd member add of ${p.id}`, async () => void (await removeMember(endpoints, peerUrl, opts)));
    ctx.op.event({ level: 'info', step: 'member-add', host: p.dispatcher, process: p.id, message: `etcd member ${added.id} added for ${peerUrl}`, durationMs: Math.round(ctx.clock.now() - t0) });
    await startNew(ctx, p, { agencyState: 'existing' });
    await waitHealthy(ctx, 'agent');
  },

  /** Patroni finds the initialized cluster in the agency and clones from the leader: ready once streaming. */
  async 'add-dbserver'(ctx, step) {
    const p = processOf(ctx, step.process);
    await startNew(ctx, p);
    await waitHealthy(ctx, 'dbserver');
  },

  async 'add-coordinator'(ctx, step) {
    const p = processOf(ctx, step.process);
    await startNew(ctx, p);
    await waitHealthy(ctx, 'coordinator');
  },

  /**
   * Coordinators that stay learn the new DB server list one at a time, the way a rolling restart restarts
   * a coordinator (docs/DESIGN.md, "Rolling restart without failed statements"): its pooler holds new
   * transactions, HAProxy restarts from the config rendered from the stored plan (PgBouncer and its client
   * sessions stay), routing is checked, the pooler resumes. HAProxy runs in the foreground under the
   * supervisor (-db), so this restart under the pause is its graceful reload.
   */
  async 'reconfigure-coordinators'(ctx, step) {
    const plan = ctx.current();
    for (const id of step.processes) {
      const p = processOf(ctx, id);
      const node = ctx.nodes.get(p.dispatcher)!;
      const maxMs = ctx.engine.manifest.roles[p.role].rollingRestart.pause?.maxMs ?? 10_000;
      const t0 = ctx.clock.now();
      await pausedCoordinators(ctx.actions, ctx.clock, ctx.op, plan, ctx.secrets, [id], maxMs, `reload of ${id}`, async () => {
        await node.stopProcess(id, { keepCompanion: true });
        // A failure from here leaves it stopped: undo starts it again (from the stored plan).
        ctx.onRollback(`reload of ${id} on ${p.dispatcher}`, async () => void (await node.startProcess(id, ctx.readyTimeoutMs)));
        await node.startProcess(id, ctx.readyTimeoutMs);
        await ctx.actions.waitCoordinatorsRouting?.(plan, [id], undefined, maxMs).catch((e: Error) => ctx.op.event({ level: 'warn', step: 'ready', process: id, message: e.message }));
      });
      ctx.op.event({ level: 'info', step: 'reload', host: p.dispatcher, process: id, message: `${id} routes over ${plan.processes.filter((x) => x.role === 'dbserver').length} DB servers`, durationMs: Math.round(ctx.clock.now() - t0) });
    }
    await waitHealthy(ctx, 'coordinator');
  },
};
