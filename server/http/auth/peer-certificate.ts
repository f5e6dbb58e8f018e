/**
 * The client certificate a caller presented in the TLS handshake (mutual TLS between dispatchers). The
 * HTTPS server asks for one without requiring it (operators use passwords), and accepts any certificate at
 * the TLS layer: the handshake proves the caller holds the certificate's key, and the certificate's
 * SHA-256 fingerprint is then compared with the pins of the active plan (docs/SECURITY.identity.md).
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

/** The presented client certificate's SHA-256 fingerprint, or undefined (none, or not a TLS connection). */
export function presentedFingerprint(req: Request): string | undefined {
  const socket = req.socket as Partial<TLSSocket>;
  if (!socket.encrypted || typeof socket.getPeerCertificate !== 'function') return undefined;
  const cert = socket.getPeerCertificate(false);
  return cert && cert.raw && cert.fingerprint256 ? normalizeFingerprint(cert.fingerprint256) : undefined;
}

/** The pin matching a fingerprint, or undefined. */
export function matchPin(pins: PeerPin[], fingerprint: string | undefined): PeerPin | undefined {
  if (!fingerprint) return undefined;
  return pins.find((p) => normalizeFingerprint(p.fingerprint) === fingerprint);
}
