/**
 * The contacted dispatcher's side of the cluster PKI (docs/SECURITY.md, "Cluster-internal TLS"): it holds
 * the cluster CA, collects every dispatcher's certificate requests, signs each with the names the plan
 * gives that dispatcher (server/core/cert-names.ts) and hands back the certificates. Keys never travel.
 */
import { DispatcherError } from '../../api/errors.js';
import type { Plan } from '../../api/plan.js';
import { certificateNamesOf } from '../core/cert-names.js';
import { createCa, signRequest, type PemPair } from '../pki/certificates.js';
import type { ClusterStore } from './store.js';
import type { NodeApi } from './node-api.js';

/** The cluster CA of this dispatcher's store, made (and saved, key 0600) when `create` and there is none. */
export async function clusterCa(store: Pick<ClusterStore, 'get' | 'save'>, opts: { create: boolean; renew?: boolean }): Promise<PemPair> {
  const snap = store.get();
  if (!snap) throw new DispatcherError('not_found', 'this dispatcher has no cluster plan');
  const tls = snap.tls ?? { keys: {}, certs: {} };
  if (tls.caKey && tls.ca && !opts.renew) return { keyPem: tls.caKey, certPem: tls.ca };
  if (!opts.create && !opts.renew) {
    throw new DispatcherError('conflict', `the CA key of cluster ${snap.plan.name} is not on this dispatcher: run this on the dispatcher that launched the cluster`);
  }
  const ca = await createCa(snap.plan.name);
  await store.save({ ...snap, tls: { ...tls, caKey: ca.keyPem } });
  return ca;
}

/**
 * Every dispatcher: requests → signed → installed. Fails when any dispatcher fails (nothing starts then).
 * `trust` is the CA bundle the dispatchers trust from now on (the signer's certificate, or during a CA
 * rotation the new and the old CA).
 */
export async function issueCertificates(plan: Plan, nodes: Map<string, NodeApi>, ca: PemPair, trust = ca.certPem, chain?: string): Promise<{ host: string; names: string[] }[]> {
  // Every dispatcher's exchange settles before a failure is thrown: the caller's rollback (a launch forgets
  // the plan) must not race an install still writing on another dispatcher.
  const settled = await Promise.allSettled(
    [...nodes].map(async ([id, node]) => {
      const allowed = certificateNamesOf(plan, id);
      const { requests } = await node.certificateRequests();
      const certs: Record<string, string> = {};
      for (const r of requests) {
        const names = allowed[r.name];
        if (!names) throw new DispatcherError('forbidden', `dispatcher ${id} asked for a certificate for ${r.name}, which the plan does not give it`, { details: { host: id } });
        certs[r.name] = await signRequest(ca, r.csr, names);
      }
      await node.installCertificates({ ca: trust, certs, ...(chain ? { chain } : {}) });
      return { host: id, names: Object.keys(certs) };
    }),
  );
  const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
  return settled.map((r) => (r as PromiseFulfilledResult<{ host: string; names: string[] }>).value);
}
