/**
 * Health check of a freshly deployed dispatcher from the deploying machine: GET /v1/health over HTTPS.
 * The certificate is self-signed and not yet known to us, so chain verification is off for this one
 * request and the presented certificate's SHA-256 fingerprint is returned instead; the caller compares it
 * with what `dispatcherd fingerprint` reads on the host over the already-authenticated SSH channel. A
 * mismatch means someone else answered on that address.
 */
import https from 'node:https';
import type { TLSSocket } from 'node:tls';
import { DispatcherError } from '../api/errors.js';
import { pollUntil, systemClock, type Clock } from '../shared/poll.js';

export interface HealthAnswer {
  status: number;
  fingerprint: string;
}

export type HealthChecker = (endpoint: string, timeoutMs: number) => Promise<HealthAnswer>;

export const httpsHealth: HealthChecker = (endpoint, timeoutMs) =>
  new Promise((resolve, reject) => {
    const req = https.get(
      new URL('/v1/health', endpoint),
      { rejectUnauthorized: false, timeout: timeoutMs, agent: false },
      (res) => {
        const cert = (res.socket as TLSSocket).getPeerCertificate();
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode ?? 0, fingerprint: cert?.fingerprint256 ?? '' }));
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
  });

/** Polls until a 200 or the deadline; returns the answer, or throws naming the last failure. */
export async function waitHealthy(check: HealthChecker, endpoint: string, deadlineMs: number, intervalMs = 300, clock: Clock = systemClock): Promise<HealthAnswer> {
  const end = clock.now() + deadlineMs;
  type Attempt = { answer?: HealthAnswer; last: string };
  const attempt = async (): Promise<Attempt> => {
    try {
      const a = await check(endpoint, Math.max(1000, Math.min(5000, end - clock.now())));
      return a.status === 200 ? { answer: a, last: '' } : { last: `HTTP ${a.status}` };
    } catch (e) {
      return { last: (e as Error).message };
    }
  };
  const r = await pollUntil(attempt, (a) => a.answer !== undefined, {
    timeoutMs: deadlineMs,
    intervalMs,
    clock,
    onTimeout: (a) => new DispatcherError('peer_unreachable', `${endpoint}/v1/health did not answer 200 within ${Math.round(deadlineMs / 1000)} s (last: ${a.last})`),
  });
  return r.answer!;
}
