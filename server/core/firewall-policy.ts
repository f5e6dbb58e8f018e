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
import { isIP } from 'node:net';
import { DispatcherError, type Problem } from '../../api/errors.js';
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

/** Parses an IPv4/IPv6 address or CIDR into its canonical network form; null when it is not one. */
export function canonicalCidr(input: string): { family: 4 | 6; cidr: string; prefix: number } | null {
  const s = input.trim();
  const slash = s.indexOf('/');
  const addr = slash < 0 ? s : s.slice(0, slash);
  const fam = isIP(addr);
  if (fam === 0) return null;
  const max = fam === 4 ? 32 : 128;
  let prefix = max;
  if (slash >= 0) {
    const p = s.slice(slash + 1);
    if (!/^\d{1,3}$/.test(p)) return null;
    prefix = Number(p);
    if (prefix > max) return null;
  }
  if (fam === 4) {
    const n = addr.split('.').reduce((acc, o) => (acc << 8n) | BigInt(Number(o)), 0n);
    const net = maskBig(n, prefix, 32);
    const text = [24n, 16n, 8n, 0n].map((sh) => String((net >> sh) & 255n)).join('.');
    return { family: 4, prefix, cidr: prefix === 32 ? text : `${text}/${prefix}` };
  }
  const net = maskBig(parseV6(addr), prefix, 128);
  const text = formatV6(net);
  return { family: 6, prefix, cidr: prefix === 128 ? text : `${text}/${prefix}` };
}

function maskBig(n: bigint, prefix: number, bits: number): bigint {
  if (prefix === 0) return 0n;
  const all = (1n << BigInt(bits)) - 1n;
  const mask = (all >> BigInt(bits - prefix)) << BigInt(bits - prefix);
  return n & mask;
}

function parseV6(addr: string): bigint {
  let a = addr.toLowerCase();
  // An embedded IPv4 tail (::ffff:1.2.3.4) becomes two hex groups.
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(a);
  if (v4) {
    const [, o1, o2, o3, o4] = v4.map(Number);
    a = a.slice(0, v4.index) + ((o1 << 8) | o2).toString(16) + ':' + ((o3 << 8) | o4).toString(16);
  }
  const [head, tail] = a.includes('::') ? a.split('::') : [a, undefined];
  const h = head ? head.split(':') : [];
  const t = tail !== undefined && tail !== '' ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array(8 - h.length - t.length).fill('0'), ...t];
  return groups.reduce((acc, g) => (acc << 16n) | BigInt(parseInt(g, 16)), 0n);
}

/** RFC 5952 text: lower case, longest run (>= 2) of zero groups compressed. */
function formatV6(n: bigint): string {
  const g: number[] = [];
  for (let i = 7; i >= 0; i--) g.push(Number((n >> BigInt(i * 16)) & 0xffffn));
  let best = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) { best = i; bestLen = j - i; }
    i = j;
  }
  const hex = g.map((x) => x.toString(16));
  if (best < 0) return hex.join(':');
  return `${hex.slice(0, best).join(':')}::${hex.slice(best + bestLen).join(':')}`;
}

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

function compareCidr(a: string, b: string): number {
  const pa = canonicalKey(a);
  const pb = canonicalKey(b);
  return pa < pb ? -1 : pa > pb ? 1 : 0;
}

function canonicalKey(c: string): string {
  const [addr, prefix = ''] = c.split('/');
  const n = isIP(addr) === 4 ? addr.split('.').reduce((acc, o) => (acc << 8n) | BigInt(Number(o)), 0n) : parseV6(addr);
  return `${n.toString(16).padStart(32, '0')}/${prefix.padStart(3, '0')}`;
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

function v4Big(a: string): bigint {
  return a.split('.').reduce((acc, o) => (acc << 8n) | BigInt(Number(o)), 0n);
}
