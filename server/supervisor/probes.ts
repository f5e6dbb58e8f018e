/**
 * Readiness / liveness probes: TCP connect, HTTP(S) status (+ body regex), or a command with a timeout.
 * Every probe has a timeout and answers {ok, detail}; it never throws. The detail says why a probe failed
 * so that a timed-out waitReady can tell the operator more than "not ready".
 *
 * HTTPS with a pinned fingerprint: the peer's self-signed certificate has no CA to chain to, so the pin
 * takes the place of chain verification: the connection is accepted only when the leaf certificate's
 * SHA-256 fingerprint equals the pin (checked on the handshake, before the response is read). Without a
 * pin, normal CA verification stays on.
 */
import { connect as netConnect } from 'node:net';
import http from 'node:http';
import https from 'node:https';
import type { TLSSocket } from 'node:tls';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import type { ProbeSpec } from './types.js';

export interface ProbeResult {
  ok: boolean;
  detail: string;
}

export type ProbeFn = (probe: ProbeSpec, timeoutMs?: number) => Promise<ProbeResult>;

export const DEFAULT_PROBE_TIMEOUT_MS = 2_000;

/** "AB:CD:..." / "abcd..." / "sha256:ab cd" → "ABCD..." for comparison. */
export function normalizeFingerprint(fp: string): string {
  return fp.replace(/^sha256[:/=]?/i, '').replace(/[^0-9a-f]/gi, '').toUpperCase();
}

export function tcpProbe(host: string, port: number, timeoutMs = DEFAULT_PROBE_TIMEOUT_MS): Promise<ProbeResult> {
  return new Promise((resolve) => {
    const sock = netConnect({ host, port });
    const done = (r: ProbeResult) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(r);
    };
    const timer = setTimeout(() => done({ ok: false, detail: `tcp ${host}:${port}: no connection within ${timeoutMs} ms` }), timeoutMs);
    sock.once('connect', () => done({ ok: true, detail: `tcp ${host}:${port}: connected` }));
    sock.once('error', (e: NodeJS.ErrnoException) => done({ ok: false, detail: `tcp ${host}:${port}: ${e.code ?? e.message}` }));
  });
}

export function httpProbe(
  p: { url: string; expectStatus?: number[]; bodyMatch?: string; fingerprint?: string; tls?: { caFile: string; certFile: string; keyFile: string } },
  timeoutMs = DEFAULT_PROBE_TIMEOUT_MS,
): Promise<ProbeResult> {
  return new Promise((resolve) => {
    let url: URL;
    try {
      url = new URL(p.url);
    } catch {
      resolve({ ok: false, detail: `http: bad url ${p.url}` });
      return;
    }
    const expect = p.expectStatus?.length ? p.expectStatus : [200];
    const isHttps = url.protocol === 'https:';
    const pin = p.fingerprint ? normalizeFingerprint(p.fingerprint) : undefined;
    let settled = false;
    const done = (r: ProbeResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      req.destroy();
      resolve(r);
    };
    const opts: https.RequestOptions = { method: 'GET', agent: false, headers: { 'user-agent': 'dispatcherd-probe' } };
    if (isHttps && pin) opts.rejectUnauthorized = false; // the pin below replaces chain verification
    if (isHttps && p.tls) {
      // Cluster TLS: the server must chain to the cluster CA (and match the URL's address); we present the
      // process's own certificate, as etcd with --client-cert-auth demands.
      try {
        opts.ca = readFileSync(p.tls.caFile);
        opts.cert = readFileSync(p.tls.certFile);
        opts.key = readFileSync(p.tls.keyFile);
      } catch (e) {
        resolve({ ok: false, detail: `${p.url}: cannot read TLS files: ${(e as Error).message}` });
        return;
      }
    }
    const mod = isHttps ? https : http;
    const req = mod.request(url, opts, (res) => {
      if (isHttps && pin) {
        const got = normalizeFingerprint((res.socket as TLSSocket).getPeerCertificate().fingerprint256 ?? '');
        if (got !== pin) return done({ ok: false, detail: `${p.url}: certificate fingerprint does not match the pin` });
      }
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        // Only the first 64 KiB matter for a health answer.
        if (size < 65536) chunks.push(c);
        size += c.length;
      });
      res.on('end', () => {
        const status = res.statusCode ?? 0;
        if (!expect.includes(status)) return done({ ok: false, detail: `${p.url}: status ${status}, expected ${expect.join('|')}` });
        if (p.bodyMatch) {
          let re: RegExp;
          try {
            re = new RegExp(p.bodyMatch);
          } catch {
            return done({ ok: false, detail: `${p.url}: bad bodyMatch regex` });
          }
          if (!re.test(Buffer.concat(chunks).toString('utf8'))) return done({ ok: false, detail: `${p.url}: status ${status} but body does not match /${p.bodyMatch}/` });
        }
        done({ ok: true, detail: `${p.url}: status ${status}` });
      });
      res.on('error', (e) => done({ ok: false, detail: `${p.url}: ${e.message}` }));
    });
    if (isHttps && pin) {
      // Refuse to even send the request to a server whose certificate is not the pinned one.
      req.on('socket', (s) => {
        s.once('secureConnect', () => {
          const got = normalizeFingerprint((s as TLSSocket).getPeerCertificate().fingerprint256 ?? '');
          if (got !== pin) done({ ok: false, detail: `${p.url}: certificate fingerprint does not match the pin` });
        });
      });
    }
    req.on('error', (e: NodeJS.ErrnoException) => done({ ok: false, detail: `${p.url}: ${e.code ?? e.message}` }));
    const timer = setTimeout(() => done({ ok: false, detail: `${p.url}: no answer within ${timeoutMs} ms` }), timeoutMs);
    req.end();
  });
}

export function commandProbe(argv: string[], timeoutMs = DEFAULT_PROBE_TIMEOUT_MS, runAs?: { uid: number; gid: number }): Promise<ProbeResult> {
  return new Promise((resolve) => {
    if (argv.length === 0) return resolve({ ok: false, detail: 'command probe: empty argv' });
    execFile(argv[0], argv.slice(1), { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 256 * 1024, env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' }, ...(runAs ? { uid: runAs.uid, gid: runAs.gid, cwd: '/' } : {}) }, (err, _stdout, stderr) => {
      if (!err) return resolve({ ok: true, detail: `${argv[0]}: exit 0` });
      const e = err as NodeJS.ErrnoException & { killed?: boolean; code?: number | string; signal?: string };
      if (e.killed) return resolve({ ok: false, detail: `${argv[0]}: no result within ${timeoutMs} ms` });
      const last = String(stderr).trim().split('\n').pop() ?? '';
      const what = typeof e.code === 'number' ? `exit ${e.code}` : e.signal ? `signal ${e.signal}` : String(e.code ?? e.message);
      resolve({ ok: false, detail: `${argv[0]}: ${what}${last ? ` (${last.slice(0, 200)})` : ''}` });
    });
  });
}

/** Runs any probe. The default ProbeFn of the supervisor. */
export const runProbe: ProbeFn = (probe, timeoutMs) => {
  switch (probe.kind) {
    case 'tcp':
      return tcpProbe(probe.host, probe.port, timeoutMs);
    case 'http':
      return httpProbe(probe, timeoutMs);
    case 'command':
      return commandProbe(probe.argv, probe.timeoutMs ?? timeoutMs, probe.runAs);
  }
};
