/**
 * Patroni membership for scale in and replace (docs/DESIGN.md, "Scaling"): Patroni 3.0.2's switchover
 * (POST /switchover {"leader", "candidate"}, shared with the rolling restart), moving the leader off DB
 * servers that go, and removing a stopped member's key from the DCS.
 *
 * Why the etcd key and not Patroni: Patroni's REST API has no "remove member" call, and `patronictl remove`
 * wipes the WHOLE cluster's DCS state (leader, config, history), not one member. A member's state is one
 * key, `<namespace>/<scope>/members/<name>` (templates/pg-ha/patroni.yml.hbs: namespace /cluster-dispatcher/,
 * scope = cluster name), bound to a lease of the DCS ttl; once it is gone the leader drops the member's
 * replication slot and HAProxy's checks stop listing it. Deleting it at once, instead of waiting for the
 * lease to run out, makes the removal visible right after the step. It is deleted through the agency
 * (agency-kv.ts: the cluster CA, this dispatcher's client certificate), never by a program with a shell.
 */
import { DispatcherError } from '../../../api/errors.js';
import type { Plan, PlanProcess } from '../../../api/plan.js';
import { pollUntil, systemClock, type Clock } from '../../../shared/poll.js';
import { dbserverState } from '../pg-ha-health.js';
import type { RestartActions } from '../../core/restart-actions.js';
import { clusterHttps, type ClusterClientTls } from '../cluster-https.js';
import type { AgencyKv } from '../agency-kv.js';
import { hostPort } from '../template.js';

function restPort(p: PlanProcess): number {
  const x = p.ports.find((q) => q.name === 'rest');
  if (!x) throw new DispatcherError('bad_request', `process ${p.id} has no port "rest"`);
  return x.port;
}

/** Patroni's switchover from `leader` to `candidate`, then waits until the candidate leads. */
export async function patroniSwitchover(plan: Plan, secrets: Record<string, string>, leader: string, candidate: string, tls: ClusterClientTls | undefined, timeoutMs: number): Promise<void> {
  const lp = plan.processes.find((p) => p.id === leader && p.role === 'dbserver');
  if (!lp) throw new DispatcherError('bad_request', `no DB server ${leader} in cluster ${plan.name}`);
  if (!tls) throw new DispatcherError('conflict', 'this dispatcher has no cluster certificate: Patroni accepts a switchover only from certificate holders', { details: { process: leader } });
  // Patroni wants a client certificate of the cluster CA and, for unsafe methods, the REST password.
  const auth = `Basic ${Buffer.from(`patroni:${secrets['rest-password'] ?? ''}`).toString('base64')}`;
  const res = await clusterHttps(
    `https://${hostPort(lp.address, restPort(lp))}/switchover`,
    { method: 'POST', headers: { 'content-type': 'application/json', authorization: auth }, body: JSON.stringify({ leader, candidate }) },
    tls,
    timeoutMs,
  ).catch((e) => {
    throw new DispatcherError('operation_failed', `switchover ${leader} → ${candidate}: ${(e as Error).message}`, { details: { process: leader } });
  });
  if (res.status !== 200) throw new DispatcherError('operation_failed', `switchover ${leader} → ${candidate} refused by Patroni (${res.status}): ${res.body.trim()}`, { details: { process: leader } });
  await pollUntil(() => dbserverState(plan, candidate, { tls }), (st) => st.role === 'leader' && st.running, {
    timeoutMs,
    intervalMs: 100,
    onTimeout: () => new DispatcherError('operation_failed', `switchover: ${candidate} did not become leader within ${Math.round(timeoutMs / 1000)} s`, { details: { process: leader } }),
  });
}

/** Pure: the plan a switchover sees when `going` DB servers leave — the leader and the DB servers that stay. */
export function switchoverScope(plan: Plan, leader: string, going: readonly string[]): Plan {
  return { ...plan, processes: plan.processes.filter((p) => p.role !== 'dbserver' || p.id === leader || !going.includes(p.id)) };
}

/**
 * If the Patroni leader is one of `going`, switches over to a DB server that stays, never to one that goes
 * too: the rolling restart's switchover (restart-actions.ts: a CHECKPOINT first, then only a replica whose
 * WAL receiver streams — one that still catches up after an earlier switchover would come up without the
 * last acknowledged writes) over `switchoverScope`. Answers the new leader, or undefined when the leader
 * stays already (safe to repeat after a crash).
 */
export async function switchoverAway(actions: Pick<RestartActions, 'dbLeader' | 'prepareSwitchover' | 'switchover'>, plan: Plan, secrets: Record<string, string>, going: readonly string[], timeoutMs: number, clock: Clock = systemClock): Promise<string | undefined> {
  const leader = await actions.dbLeader(plan, secrets);
  if (!leader) throw new DispatcherError('conflict', 'the DB servers have no single running leader now: wait for Patroni to settle before moving the leader');
  if (!going.includes(leader)) return undefined;
  const scope = switchoverScope(plan, leader, going);
  if (!scope.processes.some((p) => p.role === 'dbserver' && p.id !== leader)) {
    throw new DispatcherError('conflict', `no DB server that stays can take over from ${leader}: refused, the data would have no leader`, { details: { process: leader } });
  }
  await actions.prepareSwitchover?.(scope, secrets, leader);
  // Right after another leader change the replicas reconnect to the new timeline for a moment: no candidate
  // streams yet, and the switchover refuses. Tried again until one does, within the same time budget.
  let last: unknown;
  const done = await pollUntil(
    async () => {
      try {
        return await actions.switchover(scope, secrets, leader, [], timeoutMs);
      } catch (e) {
        last = e;
        return undefined;
      }
    },
    (to) => to !== undefined,
    { timeoutMs, intervalMs: 500, clock, onTimeout: () => (last instanceof Error ? last : new DispatcherError('operation_failed', `no switchover from ${leader} within ${Math.round(timeoutMs / 1000)} s`)) },
  );
  return done;
}

/** The DCS key of a Patroni member (namespace and scope as templates/pg-ha/patroni.yml.hbs sets them). */
export function patroniMemberKey(cluster: string, member: string): string {
  return `/cluster-dispatcher/${cluster}/members/${member}`;
}

/**
 * Removes a STOPPED DB server's member key from the DCS (a running Patroni writes it again within one
 * loop, so a member that still answers is refused with 409). False when the key was gone already.
 */
export async function removePatroniMember(plan: Plan, processId: string, kv: AgencyKv, opts: { tls: ClusterClientTls | undefined; timeoutMs?: number }): Promise<boolean> {
  const p = plan.processes.find((x) => x.id === processId);
  if (!p || p.role !== 'dbserver') throw new DispatcherError('bad_request', `${processId} is not a DB server of cluster ${plan.name}`);
  const st = await dbserverState(plan, processId, { tls: opts.tls, timeoutMs: opts.timeoutMs ?? 2000 });
  if (st.reachable) throw new DispatcherError('conflict', `DB server ${processId} still answers (Patroni ${st.patroniState ?? 'running'}): stop it before removing its member`, { details: { process: processId } });
  return kv.remove(patroniMemberKey(plan.name, processId));
}
