/**
 * The guard policy: what one dispatcher's host firewall must let in, derived from the plan alone.
 * Pure (no I/O): the renderers (firewall-render.ts) and the backends (server/firewall/) consume it.
 *
 * Exposure semantics (docs/FIREWALL.md):
 *   public   — client sources + the cluster's own hosts
 *   operator — operator sources + the cluster's own hosts (the dispatchers' own port)
 *   cluster  — only the cluster's own hosts (agency, DB servers, internal APIs)
 * Loopback is always allowed; SSH is never closed by us.
 */
import { createHash } from 'node:crypto';
import { DispatcherError, type Problem } from '../../api/errors.js';
import { canonicalCidr, compareCidr, maskBig, parseV6, v4Big } from './cidr.js';
import type { Exposure, Plan } from '../../api/plan.js';

/** Addresses of one kind, split by family. `any4`/`any6` stand for 0.0.0.0/0 and ::/0 (no source match). */
export interface AddressSet {
  v4: string[];
  v6: string[];
  any4: boolean;
  any6: boolean;
}

export interface GuardPort {
  port: number;
  exposure: Exposure;
  /** What listens there, for comments: e.g. ["agent-1/client"]. */
  names: string[];
}

export interface GuardPolicy {
  /** Plan (cluster) name. */
  cluster: string;
  /** Dispatcher id this policy is for, or '*' for the plan-wide union (cloud firewalls). */
  host: string;
  mode: 'guard' | 'deny';
  /** Sorted by port, one entry per port. */
  ports: GuardPort[];
  sources: { cluster: AddressSet; operator: AddressSet; client: AddressSet };
  sshPort: number;
  /** deny mode only: restrict outbound traffic to the allowlist (Cumulocity seed). */
  outboundAllow: boolean;
  /** Every process (and the dispatcher) of this host binds a loopback address: the only case `none` accepts. */
  loopbackOnly: boolean;
}

export interface GuardPolicyOptions {
  /** Also guard the dispatcher's own port (exposure operator). Default true. */
  includeDispatcherPort?: boolean;
}

const EXPOSURE_RANK: Record<Exposure, number> = { cluster: 0, operator: 1, public: 2 };

/**
 * Splits a list of addresses/CIDRs by family, canonical and de-duplicated. Hostnames are refused: nft would
 * resolve them once at load time and the rule would silently go stale.
 */
export function addressSet(list: readonly string[], path: string, problems: Problem[]): AddressSet {
  const out: AddressSet = { v4: [], v6: [], any4: false, any6: false };
  list.forEach((raw, i) => {
    const c = canonicalCidr(raw);
    if (!c) {
      problems.push({ path: `${path}[${i}]`, message: `"${raw}" is not an IPv4/IPv6 address or CIDR (firewall rules need addresses, not names)` });
      return;
    }
    if (c.prefix === 0) {
      if (c.family === 4) out.any4 = true;
      else out.any6 = true;
      return;
    }
    const arr = c.family === 4 ? out.v4 : out.v6;
    if (!arr.includes(c.cidr)) arr.push(c.cidr);
  });
  out.v4.sort(compareCidr);
  out.v6.sort(compareCidr);
  if (out.any4) out.v4 = [];
  if (out.any6) out.v6 = [];
  return out;
}

function dispatcherPort(endpoint: string): number | null {
  try {
    const u = new URL(endpoint);
    if (u.port) return Number(u.port);
    return u.protocol === 'https:' ? 443 : u.protocol === 'http:' ? 80 : null;
  } catch {
    return null;
  }
}

function endpointHost(endpoint: string): string {
  try {
    return new URL(endpoint).hostname.replace(/^\[|\]$/g, '');
  } catch {
    return '';
  }
}

/** 127.0.0.0/8, ::1 or localhost. */
export function isLoopback(address: string): boolean {
  if (address === 'localhost') return true;
  const c = canonicalCidr(address);
  if (!c) return false;
  return c.family === 4 ? c.cidr.startsWith('127.') : c.cidr === '::1';
}

function clusterSources(plan: Plan, problems: Problem[]): AddressSet {
  const all: string[] = [];
  const paths: string[] = [];
  plan.dispatchers.forEach((d, di) => d.addresses.forEach((a, ai) => { all.push(a); paths.push(`dispatchers[${di}].addresses[${ai}]`); }));
  const set: AddressSet = { v4: [], v6: [], any4: false, any6: false };
  all.forEach((a, i) => {
    const local: Problem[] = [];
    const one = addressSet([a], 'x', local);
    if (local.length) {
      problems.push({ path: paths[i], message: local[0].message });
      return;
    }
    // A cluster host address is a host, never a whole network: refuse /0 (it would open cluster ports to all).
    if (one.any4 || one.any6) {
      problems.push({ path: paths[i], message: 'a dispatcher address cannot be a /0 network' });
      return;
    }
    for (const v of one.v4) if (!set.v4.includes(v)) set.v4.push(v);
    for (const v of one.v6) if (!set.v6.includes(v)) set.v6.push(v);
  });
  set.v4.sort(compareCidr);
  set.v6.sort(compareCidr);
  return set;
}

function buildPolicy(plan: Plan, host: string, dispatcherIds: readonly string[], opts: GuardPolicyOptions, problems: Problem[]): GuardPolicy {
  const byPort = new Map<number, GuardPort>();
  const add = (port: number, exposure: Exposure, name: string): void => {
    const cur = byPort.get(port);
    if (!cur) {
      byPort.set(port, { port, exposure, names: [name] });
      return;
    }
    // The same port twice (plan-wide union, or an invalid plan): the most restrictive exposure wins.
    if (EXPOSURE_RANK[exposure] < EXPOSURE_RANK[cur.exposure]) cur.exposure = exposure;
    if (!cur.names.includes(name)) cur.names.push(name);
  };
  if (opts.includeDispatcherPort ?? true) {
    plan.dispatchers.forEach((d, i) => {
      if (!dispatcherIds.includes(d.id)) return;
      const p = dispatcherPort(d.endpoint);
      if (p === null) problems.push({ path: `dispatchers[${i}].endpoint`, message: 'has no usable port' });
      else add(p, 'operator', 'dispatcher');
    });
  }
  for (const proc of plan.processes) {
    if (!dispatcherIds.includes(proc.dispatcher)) continue;
    for (const pp of proc.ports) add(pp.port, proc.role === 'agent' && pp.exposure === 'public' ? 'cluster' : pp.exposure, `${proc.id}/${pp.name}`);
  }
  const ports = [...byPort.values()].sort((a, b) => a.port - b.port);
  const binds: string[] = [];
  for (const d of plan.dispatchers) if (dispatcherIds.includes(d.id)) binds.push(endpointHost(d.endpoint));
  for (const proc of plan.processes) if (dispatcherIds.includes(proc.dispatcher)) binds.push(proc.address);
  for (const p of ports) p.names.sort();
  return {
    cluster: plan.name,
    host,
    mode: plan.firewall.mode,
    ports,
    sources: {
      cluster: clusterSources(plan, problems),
      operator: addressSet(plan.firewall.operatorSources, 'firewall.operatorSources', problems),
      client: addressSet(plan.firewall.clientSources, 'firewall.clientSources', problems),
    },
    sshPort: plan.firewall.sshPort,
    outboundAllow: plan.firewall.mode === 'deny' && plan.firewall.outboundAllow,
    loopbackOnly: binds.every(isLoopback),
  };
}

function fail(problems: Problem[]): never {
  throw new DispatcherError('validation_failed', 'the plan cannot be turned into firewall rules', { problems });
}

/**
 * The guard policy of one dispatcher: the ports of every process on it plus its own port, each with its
 * exposure; sources from the whole plan. Agency ports are never public: an agent port marked public is
 * treated as cluster (defence in depth; validation refuses such plans too).
 */
export function guardPolicyFromPlan(plan: Plan, dispatcherId: string, opts: GuardPolicyOptions = {}): GuardPolicy {
  const problems: Problem[] = [];
  if (!plan.dispatchers.some((d) => d.id === dispatcherId)) problems.push({ path: 'dispatchers', message: `no dispatcher "${dispatcherId}" in the plan` });
  const p = buildPolicy(plan, dispatcherId, [dispatcherId], opts, problems);
  if (problems.length) fail(problems);
  return p;
}

/** One policy per dispatcher, in plan order (for per-host exports). */
export function guardPoliciesFromPlan(plan: Plan, opts: GuardPolicyOptions = {}): GuardPolicy[] {
  return plan.dispatchers.map((d) => guardPolicyFromPlan(plan, d.id, opts));
}

/** The union of every host's ports (host '*'): for cloud firewalls that apply one rule set to all nodes. */
export function planWidePolicy(plan: Plan, opts: GuardPolicyOptions = {}): GuardPolicy {
  const problems: Problem[] = [];
  const p = buildPolicy(plan, '*', plan.dispatchers.map((d) => d.id), opts, problems);
  if (problems.length) fail(problems);
  return p;
}

/** Sources allowed to reach a port of the given exposure (cluster hosts can always reach every port). */
export function allowedSources(policy: GuardPolicy, exposure: Exposure): { cluster: true; extra: AddressSet | null } {
  if (exposure === 'public') return { cluster: true, extra: policy.sources.client };
  if (exposure === 'operator') return { cluster: true, extra: policy.sources.operator };
  return { cluster: true, extra: null };
}

/** Stable short hash of a policy: carried in the rules' comment so a reader can tell which policy is loaded. */
export function policyHash(policy: GuardPolicy): string {
  return createHash('sha256').update(JSON.stringify(policy)).digest('hex').slice(0, 16);
}

/** Ports grouped by exposure, sorted. */
export function portsBy(policy: GuardPolicy, exposure: Exposure): number[] {
  return policy.ports.filter((p) => p.exposure === exposure).map((p) => p.port);
}

/**
 * Whether a connection from an address to a port of this host should get through (for verify and tests).
 * Ports not in the policy are 'unguarded' (guard mode) or blocked (deny mode, except SSH).
 */
export function shouldReach(policy: GuardPolicy, source: string, port: number): boolean {
  const gp = policy.ports.find((p) => p.port === port);
  if (!gp) return policy.mode === 'guard' || port === policy.sshPort || inSet(policy.sources.cluster, source);
  if (inSet(policy.sources.cluster, source)) return true;
  if (gp.exposure === 'cluster') return false;
  return inSet(gp.exposure === 'public' ? policy.sources.client : policy.sources.operator, source);
}

/** Whether an address lies in an address set. */
export function inSet(set: AddressSet, address: string): boolean {
  const c = canonicalCidr(address);
  if (!c) return false;
  if (c.family === 4 ? set.any4 : set.any6) return true;
  const n = c.family === 4 ? BigInt(0) + v4Big(c.cidr.split('/')[0]) : parseV6(c.cidr.split('/')[0]);
  const bits = c.family === 4 ? 32 : 128;
  for (const entry of c.family === 4 ? set.v4 : set.v6) {
    const [a, pfx] = entry.split('/');
    const prefix = pfx === undefined ? bits : Number(pfx);
    const base = c.family === 4 ? v4Big(a) : parseV6(a);
    if (maskBig(n, prefix, bits) === base) return true;
  }
  return false;
}
