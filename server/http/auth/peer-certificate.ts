/**
 * The client certificate a caller presented in the TLS handshake (mutual TLS between dispatchers). The
 * HTTPS server asks for one without requiring it (operators use passwords), and accepts any certificate at
 * the TLS layer: the handshake proves the caller holds the certificate's key, and the certificate's
 * SHA-256 fingerprint is then compared with the pins of the active plan (docs/SECURITY.md, "Identities").
 */
import type { Request } from 'express';
import type { TLSSocket } from 'node:tls';

/** A dispatcher a plan pins: its id and certificate fingerprint. */
export interface PeerPin {
  id: string;
  fingerprint: string;
}

export function normalizeFingerprint(fp: string): string {
  const hex = fp.replace(/^sha256:/i, '').replace(/[^0-9a-f]/gi, '').toUpperCase();
  return hex.match(/.{2}/g)?.join(':') ?? '';
}

/** Per connection: the certificate cannot change on a TLS connection, and decoding it costs ~40 µs. */
const byConnection = new WeakMap<object, string | null>();

/** The presented client certificate's SHA-256 fingerprint, or undefined (none, or not a TLS connection). */
export function presentedFingerprint(req: Request): string | undefined {
  const socket = req.socket as Partial<TLSSocket>;
  if (!socket.encrypted || typeof socket.getPeerCertificate !== 'function') return undefined;
  let fp = byConnection.get(socket);
  if (fp === undefined) {
    const cert = socket.getPeerCertificate(false);
    fp = cert && cert.raw && cert.fingerprint256 ? normalizeFingerprint(cert.fingerprint256) : null;
    byConnection.set(socket, fp);
  }
  return fp ?? undefined;
}

/** The pin matching a fingerprint, or undefined. */
export function matchPin(pins: PeerPin[], fingerprint: string | undefined): PeerPin | undefined {
  if (!fingerprint) return undefined;
  return pins.find((p) => normalizeFingerprint(p.fingerprint) === fingerprint);
}
