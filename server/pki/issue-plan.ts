/**
 * Every certificate of a plan issued in one process: for tests and benchmarks that run a cluster's
 * programs without dispatchers (test/process, bench/). The daemon never uses this: there each dispatcher
 * makes its own keys (server/cluster/node-certificates.ts) and only requests travel.
 */
import type { Plan } from '../../api/plan.js';
import { dispatcherCertificateNames, processCertificateNames } from '../core/cert-names.js';
import { createCa, createKeyAndRequest, signRequest, type PemPair } from './certificates.js';

export interface PlanPki {
  ca: PemPair;
  /** process id → its TLS material (renderer ctx.tls). */
  processes: Record<string, { ca: string; cert: string; key: string }>;
  /** A dispatcher's client certificate (health checks, switchover). */
  client: { ca: string; cert: string; key: string };
}

export async function issuePlanPki(plan: Plan, clientDispatcher = plan.dispatchers[0].id): Promise<PlanPki> {
  const ca = await createCa(plan.name);
  const issue = async (names: ReturnType<typeof processCertificateNames>) => {
    const { keyPem, csrPem } = await createKeyAndRequest(names.commonName);
    return { ca: ca.certPem, cert: await signRequest(ca, csrPem, names), key: keyPem };
  };
  const processes = Object.fromEntries(await Promise.all(plan.processes.map(async (p) => [p.id, await issue(processCertificateNames(plan, p.id))] as const)));
  return { ca, processes, client: await issue(dispatcherCertificateNames(plan, clientDispatcher)) };
}
