/**
 * The cluster's own PKI (docs/SECURITY.md, "Cluster-internal TLS"): a CA per cluster, EC P-256 keys made
 * on the machine that uses them, certificate requests (PKCS#10, proof of key possession) and leaf
 * certificates signed by the CA. Built on @peculiar/x509 over Node's WebCrypto: a maintained library (the
 * one `selfsigned` already uses), no child process, no temp files, runs on Node 20.
 *
 * The signer never takes names from a request: the SANs come from the plan (server/core/cert-names.ts),
 * so a dispatcher cannot obtain a certificate for another host's address.
 */
import { webcrypto } from 'node:crypto';
import { createRequire } from 'node:module';
import type * as X509 from '@peculiar/x509';
import { DispatcherError } from '../../api/errors.js';
import { systemClock, type Clock } from '../../shared/poll.js';
import type { CertificateNames } from '../core/cert-names.js';

const crypto = webcrypto as unknown as Crypto;
const requireCjs = createRequire(import.meta.url);
let loaded: typeof X509 | undefined;

/**
 * The library, loaded on first use: a daemon that issues no certificate right now (every dispatcher at
 * idle) does not carry its ~9 MiB of code and ASN.1 schemas (docs/BENCHMARKS.md, "Daemon memory"). It is
 * a CommonJS package, so a synchronous require keeps every caller as it was.
 */
function x509lib(): typeof X509 {
  if (!loaded) {
    loaded = requireCjs('@peculiar/x509') as typeof X509;
    loaded.cryptoProvider.set(crypto);
  }
  return loaded;
}

/** Loads the library now (a dispatcher that adopted a plan is about to make keys and certificates). */
export function loadCertificateLibrary(): void {
  x509lib();
}

const EC = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const SIGN = { name: 'ECDSA', hash: 'SHA-256' } as const;
/** Leaves live a year (rotation renews them); the CA ten. Both start 5 min early for clock skew. */
export const LEAF_DAYS = 365;
export const CA_DAYS = 3650;
const SKEW_MS = 5 * 60_000;

export interface PemPair {
  keyPem: string;
  certPem: string;
}

function pem(label: string, der: ArrayBuffer): string {
  const b64 = Buffer.from(der).toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '');
  return `-----BEGIN ${label}-----\n${b64}\n-----END ${label}-----\n`;
}

/** PEM text ends with a newline, so that PEM files and bundles concatenate into valid PEM. */
function pemText(p: string): string {
  return p.trimEnd() + '\n';
}

/** A CA bundle (a CA file with several certificates), each on its own lines. */
export function pemBundle(...pems: string[]): string {
  return pems.map(pemText).join('');
}

function derOf(pemText: string): Uint8Array<ArrayBuffer> {
  return new Uint8Array(Buffer.from(pemText.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64'));
}

async function newKeys(): Promise<CryptoKeyPair> {
  return (await crypto.subtle.generateKey(EC, true, ['sign', 'verify'])) as CryptoKeyPair;
}

async function importSigningKey(keyPem: string): Promise<CryptoKey> {
  return crypto.subtle.importKey('pkcs8', derOf(keyPem), EC, false, ['sign']);
}

function validity(days: number, clock: Clock): { notBefore: Date; notAfter: Date } {
  const now = clock.now();
  return { notBefore: new Date(now - SKEW_MS), notAfter: new Date(now + days * 86_400_000) };
}

/** Distinguished-name values are ours (cluster and process ids), but quote-proof them anyway. */
function cn(value: string): string {
  return `CN=${value.replace(/[\\,+="<>;#]/g, '_')}`;
}

/** A new cluster CA: its own key (never leaves the contacted dispatcher) and a self-signed certificate. */
export async function createCa(clusterName: string, days = CA_DAYS, generation?: string, clock: Clock = systemClock): Promise<PemPair> {
  const x509 = x509lib();
  const keys = await newKeys();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    // A renewed CA gets its own name (generation): verifiers tell it from the old one by name, not only by key.
    name: `${cn(`cluster-dispatcher CA ${clusterName}${generation ? ` ${generation}` : ''}`)}`,
    keys,
    signingAlgorithm: SIGN,
    ...validity(days, clock),
    extensions: [
      // Path length 1: room for exactly one CA below, the cross certificate of the NEXT CA at a rotation
      // (crossCertify); the CA signs nothing else but leaves.
      new x509.BasicConstraintsExtension(true, 1, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { keyPem: pem('PRIVATE KEY', await crypto.subtle.exportKey('pkcs8', keys.privateKey)), certPem: pemText(cert.toString('pem')) };
}

/**
 * The new CA's key certified by the old CA (a cross certificate) for a CA rotation without restarts
 * (docs/SECURITY.md, "Cluster-internal TLS"): sent after a leaf as its chain, it lets a verifier that
 * still holds only the old CA in memory (etcd 3.4 reads its trusted CA file only at start) accept leaves
 * of the new CA. Valid no longer than the old CA itself.
 */
export async function crossCertify(oldCa: PemPair, newCaCertPem: string): Promise<string> {
  const x509 = x509lib();
  const oldCert = new x509.X509Certificate(oldCa.certPem);
  const newCert = new x509.X509Certificate(newCaCertPem);
  const notAfter = newCert.notAfter < oldCert.notAfter ? newCert.notAfter : oldCert.notAfter;
  const cross = await x509.X509CertificateGenerator.create({
    subject: newCert.subject,
    issuer: oldCert.subject,
    publicKey: newCert.publicKey,
    signingKey: await importSigningKey(oldCa.keyPem),
    signingAlgorithm: SIGN,
    notBefore: newCert.notBefore,
    notAfter,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(newCert.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(oldCert),
    ],
  });
  return pemText(cross.toString('pem'));
}

/** Whether a CA may certify another CA below it (made before path length 1: no, its rotation restarts). */
export function canCrossCertify(caPem: string): boolean {
  const x509 = x509lib();
  const bc = new x509.X509Certificate(caPem).getExtension(x509.BasicConstraintsExtension);
  return !!bc?.ca && (bc.pathLength === undefined || bc.pathLength >= 1);
}

/** True when `certPem` certifies the key of a CA in the bundle (a cross certificate of a trusted CA). */
export async function certifiesTrustedCa(caBundle: string, certPem: string): Promise<boolean> {
  const x509 = x509lib();
  const key = Buffer.from(new x509.X509Certificate(certPem).publicKey.rawData);
  return splitPemBundle(caBundle).some((ca) => Buffer.from(new x509.X509Certificate(ca).publicKey.rawData).equals(key));
}

/** A new key and a request for it (made on the machine that will use the key). */
export async function createKeyAndRequest(name: string): Promise<{ keyPem: string; csrPem: string }> {
  const x509 = x509lib();
  const keys = await newKeys();
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({ name: cn(name), keys, signingAlgorithm: SIGN });
  return { keyPem: pem('PRIVATE KEY', await crypto.subtle.exportKey('pkcs8', keys.privateKey)), csrPem: pemText(csr.toString('pem')) };
}

/**
 * Signs the public key of a request whose self-signature verifies, with the names the plan gives (never
 * the request's). Leaves serve and authenticate as clients (etcd peers, Patroni members and HAProxy
 * checks present the same certificate both ways).
 */
export async function signRequest(ca: PemPair, csrPem: string, names: CertificateNames, days = LEAF_DAYS, clock: Clock = systemClock): Promise<string> {
  const x509 = x509lib();
  let csr: X509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(csrPem);
  } catch (e) {
    throw new DispatcherError('bad_request', `certificate request for ${names.commonName} is not a PKCS#10 request: ${(e as Error).message}`);
  }
  if (!(await csr.verify())) throw new DispatcherError('bad_request', `certificate request for ${names.commonName} has a bad signature`);
  const caCert = new x509.X509Certificate(ca.certPem);
  const leaf = await x509.X509CertificateGenerator.create({
    subject: cn(names.commonName),
    issuer: caCert.subject,
    publicKey: csr.publicKey,
    signingKey: await importSigningKey(ca.keyPem),
    signingAlgorithm: SIGN,
    ...validity(days, clock),
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyAgreement, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
      new x509.SubjectAlternativeNameExtension([...names.ips.map((ip) => ({ type: 'ip' as const, value: ip })), ...names.dns.map((d) => ({ type: 'dns' as const, value: d }))]),
      await x509.AuthorityKeyIdentifierExtension.create(caCert),
    ],
  });
  return pemText(leaf.toString('pem'));
}

/** What `dispatch status` and the API show of a certificate. */
export interface CertificateInfo {
  subject: string;
  notAfter: string;
  ips: string[];
  serial: string;
}

export function certificateInfo(certPem: string): CertificateInfo {
  const x509 = x509lib();
  const c = new x509.X509Certificate(certPem);
  const san = c.getExtension(x509.SubjectAlternativeNameExtension);
  const ips = san ? san.names.items.filter((n) => n.type === 'ip').map((n) => n.value) : [];
  return { subject: c.subject, notAfter: c.notAfter.toISOString(), ips, serial: c.serialNumber };
}

/** The certificates of a PEM bundle (a CA file may hold the new and the old CA during a CA rotation). */
export function splitPemBundle(bundle: string): string[] {
  return bundle.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n?/g) ?? [];
}

/** Checks that a certificate was issued by a CA of the bundle (signature only). */
export async function checkIssuedBy(caBundle: string, certPem: string): Promise<void> {
  const x509 = x509lib();
  const cert = new x509.X509Certificate(certPem);
  for (const caPem of splitPemBundle(caBundle)) {
    if (await cert.verify({ publicKey: new x509.X509Certificate(caPem).publicKey, signatureOnly: true })) return;
  }
  throw new DispatcherError('bad_request', `certificate ${cert.subject} is not signed by the cluster CA`);
}

/** Checks that a certificate was issued by the CA (bundle) and carries the public key of `keyPem` (before installing it). */
export async function checkIssuedFor(caPem: string, certPem: string, keyPem: string): Promise<void> {
  const x509 = x509lib();
  const cert = new x509.X509Certificate(certPem);
  await checkIssuedBy(caPem, certPem);
  const priv = await crypto.subtle.importKey('pkcs8', derOf(keyPem), EC, true, ['sign']);
  const jwk = await crypto.subtle.exportKey('jwk', priv);
  const pub = await crypto.subtle.importKey('jwk', { kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y }, EC, true, ['verify']);
  const mine = Buffer.from(await crypto.subtle.exportKey('spki', pub));
  if (!mine.equals(Buffer.from(cert.publicKey.rawData))) {
    throw new DispatcherError('bad_request', `certificate ${cert.subject} does not carry this dispatcher's key`);
  }
}
