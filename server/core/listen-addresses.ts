/**
 * Every address a process listens on (IPv6 parity, docs/FIREWALL.md "Both address families"): its own
 * plan address first (what peers dial and probes use), then every other plan address of its dispatcher, so
 * clients and peers reach it over IPv4 and IPv6 alike. A loopback process stays on loopback and a
 * non-loopback one never adds loopback (a local cluster's dispatchers share 127.0.0.1 with other ports).
 * Templates get it as `hostAddresses`; the preflight checks each of these addresses' ports.
 */
import { isIP } from 'node:net';
import type { Plan, PlanProcess } from '../../api/plan.js';

const isLoopback = (a: string): boolean => a.startsWith('127.') || a === '::1';

export function hostAddresses(plan: Plan, proc: PlanProcess): string[] {
  const d = plan.dispatchers.find((x) => x.id === proc.dispatcher);
  const others = (d?.addresses ?? []).filter((a) => a !== proc.address && isIP(a) !== 0 && isLoopback(a) === isLoopback(proc.address));
  return [proc.address, ...new Set(others)];
}

/**
 * The one address for a program that binds a single socket (Patroni 3.0.2's `restapi.listen` takes one
 * host: `addr1,addr2:port` fails to resolve). A host with one plan address gets exactly that address; a
 * host with several (IPv4 and IPv6) gets `::`, one dual-stack socket (net.ipv6.bindv6only=0, the kernel's
 * default), so peers reach it on every plan address. That wildcard also covers the host's other addresses:
 * docs/FIREWALL.md "Both address families" says why the guard makes that no exposure. Loopback stays
 * exact: a local cluster must never bind beyond loopback.
 */
export function singleSocketAddress(addresses: string[]): string {
  const [own] = addresses;
  return addresses.length > 1 && !isLoopback(own) ? '::' : own;
}
