/**
 * Certificate operations of a running cluster (docs/DESIGN.md, "Certificate renewal"): renew every
 * process's and dispatcher's certificate with the cluster CA on this dispatcher, make the processes re-read
 * them without a restart, and step a CA rotation (ca-rotation.ts).
 */
import type { OperationHandle } from './operations.js';
import type { ClusterStore } from './store.js';
import type { PlanNodes } from './plan-nodes.js';
import { clusterCa, issueCertificates } from './issue-certificates.js';
import { certificateInfo, splitPemBundle } from '../pki/certificates.js';
import { nextCaRotationPhase, type CaRotationPhase } from './ca-rotation.js';
import { engineReloadsCertificates, reloadCertificatesEverywhere } from './certificate-renewal.js';
import type { Clock } from '../../shared/poll.js';

export class ClusterCertificates {
  constructor(
    private readonly nodes: PlanNodes,
    private readonly store: Pick<ClusterStore, 'get' | 'save'>,
    private readonly clock: Clock,
  ) {}

  /**
   * New keys and certificates for every process and dispatcher, signed by the cluster CA on this dispatcher
   * (it must be the one that launched the cluster). Running processes keep theirs until they re-read them.
   */
  async renew(): Promise<{ host: string; names: string[] }[]> {
    return this.nodes.withStored(async ({ plan, nodes }) => {
      const ca = await clusterCa(this.store, { create: false });
      // The cross certificate of the last CA rotation stays in the chain while it is valid: a process that
      // loaded only the old CA at its start (etcd) keeps accepting the renewed leaves (server/cluster/ca-rotation.ts).
      const chain = this.store.get()?.tls?.chain;
      const live = chain && splitPemBundle(chain).every((c) => new Date(certificateInfo(c).notAfter).getTime() > this.clock.now());
      return issueCertificates(plan, nodes, ca, ca.certPem, live ? chain : undefined);
    });
  }

  /** Whether the running engine can re-read renewed certificates without a restart (server/cluster/certificate-renewal.ts). */
  reloadable(): boolean {
    const snap = this.store.get();
    return !!snap && engineReloadsCertificates(snap.plan);
  }

  /** Every dispatcher writes the installed certificates into its process dirs; the processes re-read them. */
  async reload(op: OperationHandle, opts: { caChanged: boolean }): Promise<Record<string, unknown>> {
    return this.nodes.withStored(({ plan, nodes }) => reloadCertificatesEverywhere(plan, nodes, op, opts));
  }

  /** The next phase of a CA rotation on every dispatcher (server/cluster/ca-rotation.ts); a rolling restart follows. */
  async caRotationPhase(succeeded: (operation: string) => boolean): Promise<CaRotationPhase> {
    return this.nodes.withStored(({ plan, nodes }) => nextCaRotationPhase(this.store, plan, nodes, succeeded, this.clock));
  }
}
