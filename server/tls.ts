/**
 * TLS material: a self-signed EC P-256 / sha256 certificate made once per data dir, its SHA-256
 * fingerprint (what peers and clients pin), and the server's TLS options.
 */
import { X509Certificate, createPrivateKey, createPublicKey } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { dirname } from 'node:path';
import { isIP } from 'node:net';
import type { SecureContextOptions, TlsOptions } from 'node:tls';
import { DispatcherError } from '../api/errors.js';
import { writeFileAtomic } from '../shared/atomic-file.js';
import { systemClock, type Clock } from '../shared/poll.js';

/**
 * TLS 1.2 suites: forward-secret AEAD only. The Crossbar seed lists ECDHE-RSA/DHE-RSA GCM suites; our
 * certificate is ECDSA, so the ECDHE-ECDSA equivalents come first (RSA ones stay for a user-supplied RSA
 * certificate), CBC and DHE suites are dropped. TLS 1.3 suites are Node's defaults (all AEAD).
 */
export const CIPHERS = [
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-RSA-CHACHA20-POLY1305',
].join(':');

export function tlsServerOptions(cert: string, key: string): TlsOptions & SecureContextOptions {
  return { cert, key, minVersion: 'TLSv1.2', ciphers: CIPHERS, honorCipherOrder: true, ecdhCurve: 'X25519:P-256:P-384' };
}

/** SHA-256 fingerprint as upper-case hex pairs separated by colons (the form FingerprintSchema expects). */
export function fingerprint256(certPem: string): string {
  return new X509Certificate(certPem).fingerprint256;
}

/** Every SAN: the given addresses, the host name, loopback addresses and localhost, without duplicates. */
export function subjectAltNames(addresses: string[], host = hostname()): { type: 2 | 7; value?: string; ip?: string }[] {
  const names = [...new Set([...addresses, host, 'localhost', '127.0.0.1', '::1'].filter(Boolean))];
  return names.map((n) => (isIP(n) ? { type: 7 as const, ip: n } : { type: 2 as const, value: n }));
}

export interface EnsureCertificateOptions {
  certFile: string;
  keyFile: string;
  addresses?: string[];
  commonName?: string;
  /** Validity in days (default 3650: the fingerprint is pinned, so renewal means re-pinning). */
  days?: number;
  /** The validity starts from its now (default systemClock). */
  clock?: Clock;
}

/**
 * Makes the key and certificate unless they exist. Never overwrites a key: if only the key exists, a new
 * certificate is made for it (the fingerprint changes, the key does not). Returns the fingerprint.
 */
export async function ensureCertificate(opts: EnsureCertificateOptions): Promise<{ created: boolean; fingerprint: string; cert: string }> {
  const haveKey = existsSync(opts.keyFile);
  const haveCert = existsSync(opts.certFile);
  if (haveKey && haveCert) {
    const cert = readFileSync(opts.certFile, 'utf8');
    return { created: false, fingerprint: fingerprint256(cert), cert };
  }
  if (haveCert && !haveKey) {
    throw new DispatcherError('config_invalid', `certificate ${opts.certFile} exists but its key ${opts.keyFile} does not; refusing to replace the certificate`);
  }
  let keyPair: { privateKey: string; publicKey: string } | undefined;
  if (haveKey) {
    const priv = createPrivateKey(readFileSync(opts.keyFile, 'utf8'));
    if (priv.asymmetricKeyType !== 'ec') throw new DispatcherError('config_invalid', `existing key ${opts.keyFile} is not an EC key`);
    keyPair = {
      privateKey: priv.export({ type: 'pkcs8', format: 'pem' }).toString(),
      publicKey: createPublicKey(priv).export({ type: 'spki', format: 'pem' }).toString(),
    };
  }
  const now = new Date((opts.clock ?? systemClock).now());
  const notBeforeDate = new Date(now.getTime() - 5 * 60_000); // tolerate small clock skew between peers
  const notAfterDate = new Date(now.getTime() + (opts.days ?? 3650) * 86_400_000);
  // Loaded only here: a certificate is made once per data dir (init), never by a running daemon that has one.
  const { generate } = await import('selfsigned');
  const pems = await generate([{ name: 'commonName', value: opts.commonName ?? hostname() }], {
    keyType: 'ec',
    curve: 'P-256',
    algorithm: 'sha256', // selfsigned 5 defaults to sha1
    notBeforeDate,
    notAfterDate,
    keyPair,
    extensions: [
      { name: 'basicConstraints', cA: false, critical: true },
      { name: 'keyUsage', digitalSignature: true, critical: true },
      { name: 'extKeyUsage', serverAuth: true, clientAuth: true },
      { name: 'subjectAltName', altNames: subjectAltNames(opts.addresses ?? []) },
    ],
  });
  mkdirSync(dirname(opts.keyFile), { recursive: true, mode: 0o700 });
  mkdirSync(dirname(opts.certFile), { recursive: true, mode: 0o700 });
  if (!haveKey) await writeFileAtomic(opts.keyFile, pems.private, 0o600);
  await writeFileAtomic(opts.certFile, pems.cert, 0o644);
  return { created: true, fingerprint: fingerprint256(pems.cert), cert: pems.cert };
}
