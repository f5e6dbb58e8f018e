/**
 * Pure: which names the cluster CA writes into each certificate (docs/SECURITY.md, "Cluster-internal TLS").
 * The signer takes names only from here, never from a certificate request, so a dispatcher can get
 * certificates only for the addresses the plan gives its own host.
 */
import { isIP } from 'node:net';
import type { Plan } from '../../api/plan.js';
import { DispatcherError } from '../../api/errors.js';

export interface CertificateNames {
  commonName: string;
  ips: string[];
  dns: string[];
}

/** The name under which a dispatcher asks for its own client certificate (process ids cannot contain '@'). */
export const DISPATCHER_CERT = '@dispatcher';

function hostAddresses(plan: Plan, dispatcher: string): string[] {
  return indexOf(plan).hostIps.get(dispatcher) ?? [];
}

/**
 * On loopback the kernel picks 127.0.0.1 (::1) as the source whatever 127.x address was dialled; etcd checks
 * a client certificate's IP SANs against the connection's source, so loopback hosts carry that address too.
 */
function withLoopbackSource(ips: string[]): string[] {
  const out = [...ips];
  if (ips.some((a) => a.startsWith('127.'))) out.push('127.0.0.1');
  if (ips.some((a) => a === '::1')) out.push('::1');
  return [...new Set(out)];
}

/**
 * Names of a process's certificate: every plan address of its host (IPv4 and IPv6) plus its own bind
 * address. A DB server's certificate also carries every coordinator's address: HAProxy passes TCP through,
 * so a client dialling a coordinator with sslmode=verify-full checks the DB server's certificate against
 * the coordinator's address.
 */
/**
 * What naming needs of a plan, indexed once per plan object: the contacted dispatcher names the
 * certificates of every process of every dispatcher, and scanning the plan for each of them made that
 * quadratic in the number of dispatchers (docs/BENCHMARKS.md, "Propagation").
 */
interface PlanIndex {
  processes: Map<string, Plan['processes'][number]>;
  coordinatorIps: string[];
  byDispatcher: Map<string, Plan['processes'][number][]>;
  hostIps: Map<string, string[]>;
}
const indexes = new WeakMap<Plan, PlanIndex>();

function indexOf(plan: Plan): PlanIndex {
  let ix = indexes.get(plan);
  if (!ix) {
    ix = { processes: new Map(), coordinatorIps: [], byDispatcher: new Map(), hostIps: new Map() };
    for (const d of plan.dispatchers) ix.hostIps.set(d.id, (d.addresses ?? []).filter((a) => isIP(a) !== 0));
    for (const p of plan.processes) {
      ix.processes.set(p.id, p);
      if (p.role === 'coordinator' && isIP(p.address)) ix.coordinatorIps.push(p.address);
      const list = ix.byDispatcher.get(p.dispatcher) ?? [];
      list.push(p);
      ix.byDispatcher.set(p.dispatcher, list);
    }
    indexes.set(plan, ix);
  }
  return ix;
}

export function processCertificateNames(plan: Plan, processId: string): CertificateNames {
  const ix = indexOf(plan);
  const p = ix.processes.get(processId);
  if (!p) throw new DispatcherError('not_found', `process ${processId} is not in plan ${plan.name}`);
  const ips = [...hostAddresses(plan, p.dispatcher), ...(isIP(p.address) ? [p.address] : [])];
  if (p.role === 'dbserver') ips.push(...ix.coordinatorIps);
  return { commonName: `${p.id}.${plan.name}`, ips: withLoopbackSource([...new Set(ips)]), dns: [] };
}

/** The client certificate a dispatcher uses for etcd, Patroni and PostgreSQL health checks and actions. */
export function dispatcherCertificateNames(plan: Plan, dispatcher: string): CertificateNames {
  return { commonName: `dispatcher-${dispatcher}.${plan.name}`, ips: withLoopbackSource(hostAddresses(plan, dispatcher)), dns: [] };
}

/** The certificate names a dispatcher may ask for: its processes and itself. */
export function certificateNamesOf(plan: Plan, dispatcher: string): Record<string, CertificateNames> {
  const out: Record<string, CertificateNames> = { [DISPATCHER_CERT]: dispatcherCertificateNames(plan, dispatcher) };
  for (const p of indexOf(plan).byDispatcher.get(dispatcher) ?? []) out[p.id] = processCertificateNames(plan, p.id);
  return out;
}
