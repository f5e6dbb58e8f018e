/**
 * One dispatcher's share of the cluster PKI (docs/SECURITY.md, "Cluster-internal TLS"): it makes the keys
 * of its own processes and of itself on this machine, hands out certificate requests only, and installs
 * the certificates the contacted dispatcher's CA signed after checking each is issued by that CA for the
 * key it holds. Keys live in the cluster store (0600, root) and reach a process only as a 0600 file the
 * renderer lists in its process dir.
 */
import { DispatcherError } from '../../api/errors.js';
import type { CertificateView, NodeCertificateRequests, NodeInstallCertificates } from '../../api/rest.js';
import { certificateNamesOf } from '../core/cert-names.js';
import { certificateInfo, certifiesTrustedCa, checkIssuedBy, checkIssuedFor, createKeyAndRequest, splitPemBundle } from '../pki/certificates.js';
import type { ClusterStore, ClusterTls } from './store.js';

/** What the renderer needs to write a process's TLS files. */
export interface ProcessTls {
  ca: string;
  cert: string;
  key: string;
}

export class NodeCertificates {
  constructor(private readonly id: string, private readonly store: ClusterStore) {}

  private snapshot() {
    const snap = this.store.get();
    if (!snap) throw new DispatcherError('not_found', `dispatcher ${this.id} has no cluster plan`, { details: { host: this.id } });
    return snap;
  }

  /**
   * New keys for every process of this dispatcher and for itself (a fresh key on every call: rotation
   * renews keys too). The installed certificates keep working until the new ones are installed.
   */
  async requests(): Promise<NodeCertificateRequests> {
    const snap = this.snapshot();
    const names = Object.keys(certificateNamesOf(snap.plan, this.id));
    const made = await Promise.all(names.map(async (name) => ({ name, ...(await createKeyAndRequest(`${name}.${snap.plan.name}`)) })));
    const tls: ClusterTls = { ...(snap.tls ?? { keys: {}, certs: {} }), pending: Object.fromEntries(made.map((m) => [m.name, m.keyPem])) };
    await this.store.save({ ...snap, tls });
    return { requests: made.map((m) => ({ name: m.name, csr: m.csrPem })) };
  }

  /** Installs the CA and the signed certificates of the pending keys; all or nothing. */
  async install(payload: NodeInstallCertificates): Promise<void> {
    const snap = this.snapshot();
    const pending = snap.tls?.pending ?? {};
    const wanted = Object.keys(certificateNamesOf(snap.plan, this.id));
    const missing = wanted.filter((n) => !payload.certs[n]);
    if (missing.length) throw new DispatcherError('bad_request', `certificates missing for ${missing.join(', ')}`, { details: { host: this.id } });
    const unknown = Object.keys(payload.certs).filter((n) => !wanted.includes(n));
    if (unknown.length) throw new DispatcherError('bad_request', `certificates for names this dispatcher did not request: ${unknown.join(', ')}`, { details: { host: this.id } });
    for (const name of wanted) {
      const key = pending[name];
      if (!key) throw new DispatcherError('conflict', `no pending key for ${name} on ${this.id}: ask for certificate requests first`, { details: { host: this.id } });
      await checkIssuedFor(payload.ca, payload.certs[name], key);
    }
    // A chain may only re-certify the key of a CA this dispatcher is told to trust (its signer, the old CA,
    // is no longer trusted after a rotation: the chain only serves processes that still hold the old CA).
    const chain = payload.chain ? splitPemBundle(payload.chain) : [];
    if (payload.chain && chain.length === 0) throw new DispatcherError('bad_request', 'the certificate chain holds no certificate', { details: { host: this.id } });
    for (const c of chain) {
      if (!(await certifiesTrustedCa(payload.ca, c))) throw new DispatcherError('bad_request', 'the certificate chain certifies a key that is not a trusted CA', { details: { host: this.id } });
    }
    const keys = Object.fromEntries(wanted.map((n) => [n, pending[n]]));
    const { pending: _done, chain: _oldChain, ...rest } = snap.tls!;
    await this.store.save({ ...snap, tls: { ...rest, ca: payload.ca, keys, certs: { ...payload.certs }, ...(chain.length ? { chain: chain.join('') } : {}) } });
  }

  /**
   * Replaces the trusted CA (bundle) — a CA rotation: first new + old, later new only. Refused when an
   * installed certificate would no longer chain to it (processes would lock each other out).
   */
  async trust(caBundle: string): Promise<void> {
    const snap = this.snapshot();
    if (!snap.tls?.ca) throw new DispatcherError('conflict', `dispatcher ${this.id} has no cluster certificates to keep trusting`, { details: { host: this.id } });
    if (!splitPemBundle(caBundle).length) throw new DispatcherError('bad_request', 'the CA bundle holds no certificate');
    for (const cert of Object.values(snap.tls.certs)) await checkIssuedBy(caBundle, cert);
    await this.store.save({ ...snap, tls: { ...snap.tls, ca: caBundle } });
  }

  /** TLS material of one process, or of this dispatcher (name "@dispatcher"); undefined before launch installed it. */
  material(name: string): ProcessTls | undefined {
    const tls = this.store.get()?.tls;
    if (!tls?.ca || !tls.certs[name] || !tls.keys[name]) return undefined;
    // The chain (since a CA rotation) follows the leaf in every file that presents it.
    return { ca: tls.ca, cert: tls.chain ? `${tls.certs[name].trimEnd()}\n${tls.chain}` : tls.certs[name], key: tls.keys[name] };
  }

  /** Every installed certificate with its expiry (no keys). */
  views(): CertificateView[] {
    const tls = this.store.get()?.tls;
    if (!tls) return [];
    const out: CertificateView[] = [];
    const add = (name: string, pem: string) => {
      try {
        const i = certificateInfo(pem);
        out.push({ name, host: this.id, subject: i.subject, notAfter: i.notAfter, ips: i.ips });
      } catch {
        out.push({ name, host: this.id, subject: 'unreadable certificate', notAfter: '', ips: [] });
      }
    };
    for (const ca of splitPemBundle(tls.ca ?? '')) add('@ca', ca);
    for (const [name, pem] of Object.entries(tls.certs)) add(name, pem);
    return out;
  }
}
