/**
 * Renewing the cluster CA without a moment in which two processes distrust each other (docs/SECURITY.md,
 * "Cluster-internal TLS"). Three phases, each followed by a rolling restart so every process re-reads its
 * files: (1) trust — every dispatcher trusts the new CA and the old one, certificates unchanged; (2) leaves
 * — new keys and certificates from the new CA, both still trusted; (3) finish — only the new CA is trusted.
 * A phase advances only when the rolling restart of the previous one succeeded; otherwise it is redone.
 * The state lives with the CA key on the dispatcher that launched the cluster.
 */
import { DispatcherError } from '../../api/errors.js';
import type { Plan } from '../../api/plan.js';
import { createCa, pemBundle, splitPemBundle } from '../pki/certificates.js';
import { issueCertificates } from './issue-certificates.js';
import type { ClusterStore } from './store.js';
import type { NodeApi } from './node-api.js';

export type CaRotationPhase = 'trust' | 'leaves' | 'finish';

async function trustEverywhere(nodes: Map<string, NodeApi>, bundle: string): Promise<void> {
  const res = await Promise.allSettled([...nodes.values()].map((n) => n.trustCa(bundle)));
  const failed = res.flatMap((r, i) => (r.status === 'rejected' ? [`${[...nodes.keys()][i]}: ${(r.reason as Error).message}`] : []));
  if (failed.length) throw new DispatcherError('operation_failed', `CA rotation: not every dispatcher took the CA bundle:\n  ${failed.join('\n  ')}`);
}

function tlsOf(store: Pick<ClusterStore, 'get' | 'save'>) {
  const snap = store.get();
  if (!snap?.tls?.caKey || !snap.tls.ca) throw new DispatcherError('conflict', 'the CA key of this cluster is not on this dispatcher: run the CA rotation on the dispatcher that launched the cluster');
  return { snap, tls: snap.tls };
}

/** Carries out the next phase on every dispatcher (not the rolling restart) and returns which it was. */
export async function nextCaRotationPhase(store: Pick<ClusterStore, 'get' | 'save'>, plan: Plan, nodes: Map<string, NodeApi>, succeeded: (operation: string) => boolean): Promise<CaRotationPhase> {
  const { tls } = tlsOf(store);
  const r = tls.rotation;
  const done = !!r?.operation && succeeded(r.operation);
  if (!r || (r.phase === 'trust' && !done)) {
    const fresh = r ?? { ...(await createCa(plan.name)), oldCa: splitPemBundle(tls.ca!)[0] };
    const rotation = 'keyPem' in fresh ? { caKey: fresh.keyPem, ca: fresh.certPem, oldCa: fresh.oldCa, phase: 'trust' as const } : { ...fresh, phase: 'trust' as const, operation: undefined };
    // The new CA key is saved before anything trusts the new CA: a crash cannot leave a CA nobody can sign with.
    const s0 = tlsOf(store);
    await store.save({ ...s0.snap, tls: { ...s0.tls, rotation } });
    await trustEverywhere(nodes, pemBundle(rotation.ca, rotation.oldCa));
    return 'trust';
  }
  if (r.phase === 'trust' || !done) {
    await issueCertificates(plan, nodes, { keyPem: r.caKey, certPem: r.ca }, pemBundle(r.ca, r.oldCa));
    const s1 = tlsOf(store);
    await store.save({ ...s1.snap, tls: { ...s1.tls, caKey: r.caKey, rotation: { ...r, phase: 'leaves', operation: undefined } } });
    return 'leaves';
  }
  await trustEverywhere(nodes, r.ca);
  const s2 = tlsOf(store);
  const { rotation: _finished, ...rest } = s2.tls;
  await store.save({ ...s2.snap, tls: rest });
  return 'finish';
}

/** Remembers the rolling restart that follows a phase (the next phase waits for it to succeed). */
export async function recordCaRotationOperation(store: Pick<ClusterStore, 'get' | 'save'>, operation: string): Promise<void> {
  const { snap, tls } = tlsOf(store);
  if (tls.rotation) await store.save({ ...snap, tls: { ...tls, rotation: { ...tls.rotation, operation } } });
}
