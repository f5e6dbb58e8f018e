/**
 * HTTPS to the cluster's own services (etcd, Patroni REST) with the cluster CA as the only trust anchor and
 * the dispatcher's client certificate (docs/SECURITY.md, "Cluster-internal TLS"). The server certificate
 * must chain to the cluster CA and carry the dialled address; nothing else is accepted.
 */
import https from 'node:https';

/** PEM texts of the cluster CA and of this dispatcher's client certificate and key. */
export interface ClusterClientTls {
  ca: string;
  cert: string;
  key: string;
  /** The CA as a file, for programs that need a path (psql's sslrootcert). */
  caFile?: string;
}

export function clusterHttps(
  url: string,
  init: { method: string; body?: string; headers?: Record<string, string> },
  tls: ClusterClientTls,
  timeoutMs: number,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    if (u.protocol !== 'https:') return reject(new Error(`${url}: cluster services speak https only`));
    const req = https.request(
      u,
      { method: init.method, headers: { ...(init.headers ?? {}), ...(init.body !== undefined ? { 'content-length': Buffer.byteLength(init.body) } : {}) }, ca: tls.ca, cert: tls.cert, key: tls.key, agent: false, minVersion: 'TLSv1.2' },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          clearTimeout(timer);
          resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') });
        });
        res.on('error', reject);
      },
    );
    const timer = setTimeout(() => req.destroy(new Error(`${url}: no answer within ${timeoutMs} ms`)), timeoutMs);
    req.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    req.end(init.body);
  });
}

/** Environment for psql: verify the server against the cluster CA and its address. */
export function psqlTlsEnv(tls: ClusterClientTls | undefined): Record<string, string> {
  return tls?.caFile ? { PGSSLMODE: 'verify-full', PGSSLROOTCERT: tls.caFile } : { PGSSLMODE: 'verify-full' };
}
