/**
 * Renewing the cluster CA without a moment in which two processes distrust each other and without a
 * restart (docs/SECURITY.md, "Cluster-internal TLS"; docs/DESIGN.md, "Certificate renewal"). Three phases,
 * each ending with every process re-reading its files (server/cluster/certificate-renewal.ts):
 * (1) trust — every dispatcher trusts the new CA and the old one, certificates unchanged; the old CA
 * certifies the new CA's key (a cross certificate);
 * (2) leaves — new keys and certificates from the new CA, each file carrying the cross certificate after
 * the leaf, so a process that still holds only the old CA in memory (etcd loads its CA file at start)
 * accepts them;
 * (3) finish — only the new CA is trusted, and new leaves again, so that programs which rebuild their TLS
 * context only when their certificate changes (Patroni's REST API) drop the old CA too.
 * A phase advances only when the pick-up operation of the previous one succeeded; otherwise it is redone.
 * The state lives with the CA key on the dispatcher that launched the cluster.
 */
import { DispatcherError } from '../../api/errors.js';
import type { Plan } from '../../api/plan.js';
import { canCrossCertify, createCa, crossCertify, pemBundle, splitPemBundle } from '../pki/certificates.js';
import { issueCertificates } from './issue-certificates.js';
import type { ClusterStore } from './store.js';
import type { NodeApi } from './node-api.js';
import { systemClock, type Clock } from '../../shared/poll.js';

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

/** Carries out the next phase on every dispatcher (not the pick-up that follows) and returns which it was. */
export async function nextCaRotationPhase(store: Pick<ClusterStore, 'get' | 'save'>, plan: Plan, nodes: Map<string, NodeApi>, succeeded: (operation: string) => boolean, clock: Clock = systemClock): Promise<CaRotationPhase> {
  const { tls } = tlsOf(store);
  const r = tls.rotation;
  const done = !!r?.operation && succeeded(r.operation);
  if (!r || (r.phase === 'trust' && !done)) {
    let rotation = r ? { ...r, phase: 'trust' as const, operation: undefined } : undefined;
    if (!rotation) {
      const oldCa = splitPemBundle(tls.ca!)[0];
      const fresh = await createCa(plan.name, undefined, new Date(clock.now()).toISOString().replace(/\.\d+Z$/, 'Z'));
      // A CA made before path length 1 cannot certify the new one: its rotation picks up by rolling restart.
      const cross = canCrossCertify(oldCa) ? await crossCertify({ keyPem: tls.caKey!, certPem: oldCa }, fresh.certPem) : undefined;
      rotation = { caKey: fresh.keyPem, ca: fresh.certPem, oldCa, ...(cross ? { cross } : {}), phase: 'trust' as const, operation: undefined };
    }
    // The new CA key is saved before anything trusts the new CA: a crash cannot leave a CA nobody can sign with.
    const s0 = tlsOf(store);
    await store.save({ ...s0.snap, tls: { ...s0.tls, rotation } });
    await trustEverywhere(nodes, pemBundle(rotation.ca, rotation.oldCa));
    return 'trust';
  }
  if (r.phase === 'trust' || !done) {
    await issueCertificates(plan, nodes, { keyPem: r.caKey, certPem: r.ca }, pemBundle(r.ca, r.oldCa), r.cross);
    const s1 = tlsOf(store);
    await store.save({ ...s1.snap, tls: { ...s1.tls, caKey: r.caKey, rotation: { ...r, phase: 'leaves', operation: undefined } } });
    return 'leaves';
  }
  await issueCertificates(plan, nodes, { keyPem: r.caKey, certPem: r.ca }, r.ca, r.cross);
  const s2 = tlsOf(store);
  const { rotation: _finished, ...rest } = s2.tls;
  await store.save({ ...s2.snap, tls: rest });
  return 'finish';
}

/**
 * Whether the phases of the running CA rotation can be picked up without restarts: only with a cross
 * certificate (else a process that loaded only the old CA, etcd, would refuse the new leaves).
 */
export function caRotationReloads(store: Pick<ClusterStore, 'get'>): boolean {
  return !!store.get()?.tls?.rotation?.cross;
}

/** Remembers the pick-up operation that follows a phase (the next phase waits for it to succeed). */
export async function recordCaRotationOperation(store: Pick<ClusterStore, 'get' | 'save'>, operation: string): Promise<void> {
  const { snap, tls } = tlsOf(store);
  if (tls.rotation) await store.save({ ...snap, tls: { ...tls, rotation: { ...tls.rotation, operation } } });
}
