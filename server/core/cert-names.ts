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
  const d = plan.dispatchers.find((x) => x.id === dispatcher);
  return (d?.addresses ?? []).filter((a) => isIP(a) !== 0);
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
export function processCertificateNames(plan: Plan, processId: string): CertificateNames {
  const p = plan.processes.find((x) => x.id === processId);
  if (!p) throw new DispatcherError('not_found', `process ${processId} is not in plan ${plan.name}`);
  const ips = [...hostAddresses(plan, p.dispatcher), ...(isIP(p.address) ? [p.address] : [])];
  if (p.role === 'dbserver') for (const c of plan.processes.filter((x) => x.role === 'coordinator')) if (isIP(c.address)) ips.push(c.address);
  return { commonName: `${p.id}.${plan.name}`, ips: withLoopbackSource([...new Set(ips)]), dns: [] };
}

/** The client certificate a dispatcher uses for etcd, Patroni and PostgreSQL health checks and actions. */
export function dispatcherCertificateNames(plan: Plan, dispatcher: string): CertificateNames {
  return { commonName: `dispatcher-${dispatcher}.${plan.name}`, ips: withLoopbackSource(hostAddresses(plan, dispatcher)), dns: [] };
}

/** The certificate names a dispatcher may ask for: its processes and itself. */
export function certificateNamesOf(plan: Plan, dispatcher: string): Record<string, CertificateNames> {
  const out: Record<string, CertificateNames> = { [DISPATCHER_CERT]: dispatcherCertificateNames(plan, dispatcher) };
  for (const p of plan.processes.filter((x) => x.dispatcher === dispatcher)) out[p.id] = processCertificateNames(plan, p.id);
  return out;
}
