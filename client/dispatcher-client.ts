/**
 * The typed HTTPS client for a dispatcher's REST API. Used by the CLI, the shell and the Kickstarter, and
 * by dispatchers themselves to call their peers.
 *
 * Certificates are verified, never skipped. Dispatchers use self-signed certificates, so trust comes from
 * a SHA-256 fingerprint pin: the first connection fetches the peer's certificate, compares its SHA-256
 * fingerprint with the pin and only then uses that certificate as the sole trusted CA for real requests
 * (normal TLS verification on, plus the fingerprint checked again on every connection). No request byte
 * is sent to a server whose certificate does not match. Alternatively a CA file can be given.
 */
import https from 'node:https';
import http from 'node:http';
import tls from 'node:tls';
import { isIP } from 'node:net';
import { X509Certificate } from 'node:crypto';
import { DispatcherError, ERROR_STATUS, type ErrorCode, type Problem } from '../api/errors.js';
import type { Credential } from '../api/rest.js';

export interface ClientOptions {
  /** https://host:port */
  endpoint: string;
  /** SHA-256 fingerprint to pin (AA:BB:...). */
  fingerprint?: string;
  /** PEM of a CA (or the server certificate itself) to trust instead of a pin. */
  ca?: string;
  credential?: Credential;
  /**
   * A client certificate and key to present (mutual TLS): dispatchers prove themselves to their peers
   * with their own certificate, which the peer finds pinned in the active plan.
   */
  clientCertificate?: { cert: string; key: string };
  /** Talk to the local control socket instead (no password; root only). */
  socketPath?: string;
  /** Per request (ms). */
  timeoutMs?: number;
}

export function normalizeFingerprint(fp: string): string {
  const hex = fp.replace(/^sha256:/i, '').replace(/[^0-9a-f]/gi, '').toUpperCase();
  return hex.match(/.{2}/g)?.join(':') ?? '';
}

/** Fetches the certificate a TLS server presents, checking it against the pin before anything else is sent. */
async function fetchPinnedCertificate(endpoint: URL, fingerprint: string, timeoutMs: number): Promise<string> {
  const want = normalizeFingerprint(fingerprint);
  return new Promise((resolve, reject) => {
    // Verification is deferred to the pin check below; this connection sends no application data.
    const socket = tls.connect({
      host: endpoint.hostname.replace(/^\[|\]$/g, ''),
      port: Number(endpoint.port || 443),
      servername: isIP(endpoint.hostname.replace(/^\[|\]$/g, '')) ? undefined : endpoint.hostname,
      rejectUnauthorized: false,
      minVersion: 'TLSv1.2',
    });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new DispatcherError('peer_unreachable', `${endpoint.host}: no TLS answer within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      const peer = socket.getPeerCertificate(false);
      socket.end();
      if (!peer?.raw) return reject(new DispatcherError('peer_untrusted', `${endpoint.host}: presented no certificate`));
      const x509 = new X509Certificate(peer.raw);
      if (normalizeFingerprint(x509.fingerprint256) !== want) {
        return reject(
          new DispatcherError('peer_untrusted', `${endpoint.host}: certificate fingerprint ${x509.fingerprint256} is not the pinned ${want}`, {
            details: { endpoint: endpoint.origin, presented: x509.fingerprint256, pinned: want },
          }),
        );
      }
      resolve(x509.toString());
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(new DispatcherError('peer_unreachable', `${endpoint.host}: ${err.message}`, { cause: err }));
    });
  });
}

const KNOWN_CODES = new Set(Object.keys(ERROR_STATUS));

export class DispatcherClient {
  readonly endpoint: URL;
  private readonly opts: ClientOptions;
  private agent?: https.Agent | http.Agent;
  private agentReady?: Promise<https.Agent | http.Agent>;

  constructor(opts: ClientOptions) {
    this.opts = opts;
    this.endpoint = new URL(opts.socketPath ? 'http://localhost' : opts.endpoint);
    if (!opts.socketPath && this.endpoint.protocol !== 'https:') {
      throw new DispatcherError('bad_request', `endpoint ${opts.endpoint} must be https:// (dispatchers speak HTTPS only)`);
    }
    if (!opts.socketPath && !opts.fingerprint && !opts.ca) {
      throw new DispatcherError('bad_request', `no way to verify ${opts.endpoint}: give its certificate fingerprint or a CA file`);
    }
  }

  private getAgent(): Promise<https.Agent | http.Agent> {
    if (this.agent) return Promise.resolve(this.agent);
    this.agentReady ??= (async () => {
      if (this.opts.socketPath) return (this.agent = new http.Agent({ keepAlive: true }));
      const ca = this.opts.ca ?? (await fetchPinnedCertificate(this.endpoint, this.opts.fingerprint!, this.opts.timeoutMs ?? 10_000));
      const pin = this.opts.fingerprint ? normalizeFingerprint(this.opts.fingerprint) : undefined;
      this.agent = new https.Agent({
        keepAlive: true,
        ca,
        ...(this.opts.clientCertificate ? { cert: this.opts.clientCertificate.cert, key: this.opts.clientCertificate.key } : {}),
        minVersion: 'TLSv1.2',
        checkServerIdentity: (host, cert) => {
          // The pin is the identity; the host name check still runs for CA-file mode.
          if (pin) {
            return normalizeFingerprint(cert.fingerprint256) === pin ? undefined : new Error(`certificate fingerprint ${cert.fingerprint256} is not the pinned ${pin}`);
          }
          return tls.checkServerIdentity(host, cert);
        },
      });
      return this.agent;
    })().catch((e) => {
      this.agentReady = undefined;
      throw e;
    });
    return this.agentReady;
  }

  close(): void {
    this.agent?.destroy();
  }

  /**
   * The agent, within a call's own timeout: the first call also fetches the pinned certificate, which must
   * not take the client's longer default (a dead host would hold a 5 s status call for 30 s).
   */
  private async agentWithin(timeoutMs: number | undefined): Promise<https.Agent | http.Agent> {
    const ready = this.getAgent();
    if (timeoutMs === undefined || this.agent) return ready;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new DispatcherError('peer_unreachable', `${this.endpoint.host}: no TLS answer within ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      return await Promise.race([ready, late]);
    } finally {
      clearTimeout(timer);
    }
  }

  private async raw(method: string, path: string, body?: unknown, opts: { timeoutMs?: number; headers?: Record<string, string> } = {}) {
    const agent = await this.agentWithin(opts.timeoutMs);
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const headers: Record<string, string> = { accept: 'application/json', ...opts.headers };
    if (payload) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = String(payload.length);
    }
    if (this.opts.credential && !this.opts.socketPath) {
      headers.authorization = 'Basic ' + Buffer.from(`${this.opts.credential.user}:${this.opts.credential.password}`).toString('base64');
    }
    const mod = this.opts.socketPath ? http : https;
    const where = this.opts.socketPath ?? this.endpoint.host;
    return new Promise<http.IncomingMessage>((resolve, reject) => {
      const req = mod.request(
        {
          method,
          agent,
          ...(this.opts.socketPath
            ? { socketPath: this.opts.socketPath }
            : { host: this.endpoint.hostname.replace(/^\[|\]$/g, ''), port: this.endpoint.port || 443 }),
          path,
          headers,
          timeout: opts.timeoutMs ?? this.opts.timeoutMs ?? 30_000,
        },
        resolve,
      );
      req.on('timeout', () => req.destroy(new Error(`no answer within ${opts.timeoutMs ?? this.opts.timeoutMs ?? 30_000} ms`)));
      req.on('error', (err: NodeJS.ErrnoException) => {
        const untrusted = /certificate|fingerprint|self.signed|CERT/i.test(err.message) || (err.code ?? '').includes('CERT');
        reject(new DispatcherError(untrusted ? 'peer_untrusted' : 'peer_unreachable', `${where}: ${err.message}`, { cause: err }));
      });
      if (payload) req.write(payload);
      req.end();
    });
  }

  /** A JSON request; a non-2xx answer becomes the DispatcherError the server described. */
  async request<T>(method: string, path: string, body?: unknown, opts: { timeoutMs?: number; headers?: Record<string, string> } = {}): Promise<T> {
    const res = await this.raw(method, path, body, opts);
    const text = await readAll(res);
    const status = res.statusCode ?? 0;
    const where = this.opts.socketPath ? 'local dispatcher' : this.endpoint.host;
    let json: any;
    let notJson: unknown;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch (e) {
      notJson = e;
    }
    if (status >= 200 && status < 300) {
      // A success whose body cannot be read is a broken answer, not an empty one (and not "unreachable").
      if (notJson) throw new DispatcherError('internal', `${where}: answered ${status} with a body that is not JSON`, { cause: notJson, details: { status } });
      return json as T;
    }
    const code: ErrorCode = json && KNOWN_CODES.has(json.code) ? json.code : status === 401 ? 'unauthorized' : status === 404 ? 'not_found' : 'internal';
    const problems: Problem[] = Array.isArray(json?.problems) ? json.problems : [];
    const message = json?.detail ?? json?.title ?? `HTTP ${status}`;
    throw new DispatcherError(code, `${where}: ${message}`, {
      problems,
      details: { status, ...(json?.details ?? {}) },
    });
  }

  get<T>(path: string, opts?: { timeoutMs?: number }) {
    return this.request<T>('GET', path, undefined, opts);
  }
  post<T>(path: string, body?: unknown, opts?: { timeoutMs?: number }) {
    return this.request<T>('POST', path, body ?? {}, opts);
  }

  /** Reads an NDJSON stream line by line until the server ends it. */
  async streamLines(path: string, onLine: (obj: any) => void, opts: { timeoutMs?: number } = {}): Promise<void> {
    const res = await this.raw('GET', path, undefined, { timeoutMs: opts.timeoutMs ?? 3_600_000, headers: { accept: 'application/x-ndjson' } });
    if ((res.statusCode ?? 0) >= 300) {
      const text = await readAll(res);
      throw new DispatcherError('internal', `${this.endpoint.host}: stream ${path} answered ${res.statusCode}: ${text.slice(0, 200)}`);
    }
    let buf = '';
    res.setEncoding('utf8');
    for await (const chunk of res) {
      buf += chunk;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (!line) continue;
        let event: unknown;
        try {
          event = JSON.parse(line);
        } catch (e) {
          throw new DispatcherError('internal', `${this.endpoint.host}: stream ${path} sent a line that is not JSON`, { cause: e });
        }
        onLine(event);
      }
    }
  }
}

function readAll(res: http.IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    res.on('data', (c) => chunks.push(c));
    res.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    res.on('error', reject);
  });
}
