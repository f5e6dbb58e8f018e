/**
 * The agency's membership (etcd 3.4+ through its gRPC gateway: /v3/cluster/member/*), the engine steps of
 * scale out, scale in and replace (docs/DESIGN.md, "Scaling"). Every call verifies etcd's certificate
 * against the cluster CA and presents this dispatcher's client certificate (cluster-https.ts).
 *
 * Each step is safe to repeat, because a scale operation resumes after a crash: adding a peer URL that is
 * already a member answers that member; removing a member that is gone is a no-op. etcd itself refuses a
 * change that would leave fewer started members than a quorum, and any add while a member is not connected
 * ("unhealthy cluster": one new member at a time, started before the next; --strict-reconfig-check, on by
 * default); that refusal comes back as a 409 naming it. Member ids are uint64: kept as decimal strings, never numbers.
 */
import { DispatcherError } from '../../../api/errors.js';
import type { Plan, PlanProcess } from '../../../api/plan.js';
import { pollUntil } from '../../../shared/poll.js';
import { clusterHttps, type ClusterClientTls } from '../cluster-https.js';
import { hostPort } from '../template.js';

export interface EtcdMember {
  /** uint64 member id as a decimal string. */
  id: string;
  /** Empty until the member has started (etcd learns the name from the member itself). */
  name: string;
  peerURLs: string[];
  clientURLs: string[];
  learner: boolean;
}

function portOf(p: PlanProcess, name: string): number {
  const x = p.ports.find((q) => q.name === name);
  if (!x) throw new DispatcherError('bad_request', `agent ${p.id} has no port "${name}"`);
  return x.port;
}

/** The peer URL an agent of the plan advertises (what `member add` registers). */
export function agentPeerUrl(p: PlanProcess): string {
  return `https://${hostPort(p.address, portOf(p, 'peer'))}`;
}

/** Client URLs of the plan's agents, except `exclude` (a member being removed, or a dead one). */
export function agencyEndpoints(plan: Plan, exclude: readonly string[] = []): string[] {
  return plan.processes.filter((p) => p.role === 'agent' && !exclude.includes(p.id)).map((p) => `https://${hostPort(p.address, portOf(p, 'client'))}`);
}

/** Pure: the members of a member list (or member add) answer. */
export function parseMembers(body: string): EtcdMember[] {
  let j: { members?: unknown };
  try {
    j = JSON.parse(body) as { members?: unknown };
  } catch {
    throw new DispatcherError('peer_invalid_answer', 'etcd answered a member list that is not JSON');
  }
  if (!Array.isArray(j.members)) throw new DispatcherError('peer_invalid_answer', 'etcd answered a member list without members');
  return j.members.map((m: Record<string, unknown>) => {
    const id = m.ID;
    if (!(typeof id === 'string' && /^\d{1,20}$/.test(id))) throw new DispatcherError('peer_invalid_answer', 'etcd answered a member without a numeric ID');
    const urls = (v: unknown) => (Array.isArray(v) ? v.filter((u): u is string => typeof u === 'string') : []);
    return { id, name: typeof m.name === 'string' ? m.name : '', peerURLs: urls(m.peerURLs), clientURLs: urls(m.clientURLs), learner: m.isLearner === true };
  });
}

/** Pure: etcd's answer to a refused change, as the project's error (quorum refusals are 409). */
export function membershipError(action: string, status: number, body: string): DispatcherError {
  let message = body.slice(0, 300);
  try {
    const j = JSON.parse(body) as { message?: string; error?: string };
    message = j.message ?? j.error ?? message;
  } catch {
    /* not JSON: keep the text */
  }
  const unhealthy = /unhealthy|quorum|not enough started members|too many learner/i.test(message);
  return new DispatcherError(unhealthy ? 'conflict' : 'operation_failed', `etcd refused to ${action}: ${message}`, { details: { status } });
}

async function call(endpoints: readonly string[], path: string, body: unknown, tls: ClusterClientTls, timeoutMs: number, action: string): Promise<string> {
  const failures: string[] = [];
  // Any member answers for the cluster; the first that answers decides (a refusal is final, not retried elsewhere).
  for (const endpoint of endpoints) {
    let r: { status: number; body: string };
    try {
      r = await clusterHttps(`${endpoint}${path}`, { method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json' } }, tls, timeoutMs);
    } catch (e) {
      failures.push(`${endpoint}: ${(e as Error).message}`);
      continue;
    }
    if (r.status === 200) return r.body;
    throw membershipError(action, r.status, r.body);
  }
  throw new DispatcherError('peer_unreachable', `no agent answered to ${action}: ${failures.join('; ')}`);
}

export interface MembershipOptions {
  tls: ClusterClientTls;
  /** Per request (ms), default 5000. */
  timeoutMs?: number;
}

export async function listMembers(endpoints: readonly string[], opts: MembershipOptions): Promise<EtcdMember[]> {
  return parseMembers(await call(endpoints, '/v3/cluster/member/list', {}, opts.tls, opts.timeoutMs ?? 5000, 'list its members'));
}

/** `etcd member add` of a peer URL; answers the member (the existing one when the URL is a member already). */
export async function addMember(endpoints: readonly string[], peerUrl: string, opts: MembershipOptions): Promise<EtcdMember> {
  const existing = (await listMembers(endpoints, opts)).find((m) => m.peerURLs.includes(peerUrl));
  if (existing) return existing;
  const body = await call(endpoints, '/v3/cluster/member/add', { peerURLs: [peerUrl] }, opts.tls, opts.timeoutMs ?? 5000, `add member ${peerUrl}`);
  const j = JSON.parse(body) as { member?: Record<string, unknown> };
  const [added] = parseMembers(JSON.stringify({ members: j.member ? [j.member] : [] }));
  if (!added) throw new DispatcherError('peer_invalid_answer', `etcd added ${peerUrl} but did not name the member`);
  return added;
}

/** `etcd member remove` of the member with this peer URL; false when no such member (already removed). */
export async function removeMember(endpoints: readonly string[], peerUrl: string, opts: MembershipOptions): Promise<boolean> {
  const member = (await listMembers(endpoints, opts)).find((m) => m.peerURLs.includes(peerUrl));
  if (!member) return false;
  await call(endpoints, '/v3/cluster/member/remove', { ID: member.id }, opts.tls, opts.timeoutMs ?? 5000, `remove member ${peerUrl}`);
  return true;
}

/** What one member says of itself and of the leader it follows ("0": none). */
interface MemberStatus {
  endpoint: string;
  memberId: string;
  leader: string;
}

async function statusOf(endpoint: string, opts: MembershipOptions): Promise<MemberStatus | undefined> {
  try {
    const r = await clusterHttps(`${endpoint}/v3/maintenance/status`, { method: 'POST', body: '{}', headers: { 'content-type': 'application/json' } }, opts.tls, opts.timeoutMs ?? 5000);
    if (r.status !== 200) return undefined;
    const j = JSON.parse(r.body) as { header?: { member_id?: string }; leader?: string };
    return j.header?.member_id ? { endpoint, memberId: j.header.member_id, leader: j.leader ?? '0' } : undefined;
  } catch {
    return undefined;
  }
}

/** The leader's member id as a majority of the answering members sees it, with the leader's own endpoint. */
async function leaderOf(endpoints: readonly string[], opts: MembershipOptions): Promise<{ id: string; endpoint?: string } | undefined> {
  const all = (await Promise.all(endpoints.map((e) => statusOf(e, opts)))).filter((s): s is MemberStatus => !!s);
  const votes = new Map<string, number>();
  for (const s of all) if (s.leader !== '0') votes.set(s.leader, (votes.get(s.leader) ?? 0) + 1);
  const [id] = [...votes].sort((a, b) => b[1] - a[1])[0] ?? [];
  return id ? { id, endpoint: all.find((s) => s.memberId === id)?.endpoint } : undefined;
}

/**
 * Before a member is removed or its host goes: if it leads the agency, hand leadership to a started member
 * at one of `toPeerUrls` (members that stay) — etcd's move-leader (POST /v3/maintenance/transfer-leadership,
 * answered only by the leader itself), then wait until the new leader is seen. Removing a leader works too,
 * but costs an election (writes stall for an election timeout); a transfer is one round trip. Returns the
 * new leader's member id, or undefined when nothing had to move (not the leader, or not a member any more).
 */
export async function moveLeaderAway(endpoints: readonly string[], fromPeerUrl: string, toPeerUrls: readonly string[], opts: MembershipOptions & { waitMs?: number }): Promise<string | undefined> {
  const members = await listMembers(endpoints, opts);
  const from = members.find((m) => m.peerURLs.includes(fromPeerUrl));
  if (!from) return undefined;
  const leader = await leaderOf(endpoints, opts);
  if (!leader) throw new DispatcherError('conflict', 'the agency has no leader now: nothing can be moved or removed until it elects one');
  if (leader.id !== from.id) return undefined;
  const target = members.find((m) => m.id !== from.id && m.name !== '' && !m.learner && m.peerURLs.some((u) => toPeerUrls.includes(u)));
  if (!target) throw new DispatcherError('conflict', `no started agency member that stays can take over the leadership from ${fromPeerUrl}`);
  if (!leader.endpoint) throw new DispatcherError('peer_unreachable', `the agency leader (${fromPeerUrl}) does not answer its client port: leadership cannot be handed over`);
  await call([leader.endpoint], '/v3/maintenance/transfer-leadership', { targetID: target.id }, opts.tls, opts.timeoutMs ?? 5000, `move its leadership to ${target.name}`);
  await pollUntil(() => leaderOf(endpoints, opts), (l) => l?.id === target.id, {
    timeoutMs: opts.waitMs ?? 10_000,
    intervalMs: 100,
    onTimeout: (l) => new DispatcherError('operation_failed', `etcd accepted moving its leadership to ${target.name}, but the leader is still ${l?.id ?? 'none'}`),
  });
  return target.id;
}
