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
