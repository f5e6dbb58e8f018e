/**
 * The cluster's agency (etcd v3) as a small key-value store with leases, for the cluster-wide operation
 * lock (server/cluster/operation-lock.ts; docs/DESIGN.md, "Operation lifecycle"). It speaks etcd's own
 * JSON gateway (/v3/kv/*, /v3/lease/*) over mutual TLS with this dispatcher's client certificate and the
 * cluster CA as the only trust anchor (cluster-https.ts) — the same path the health checks take. Keys and
 * values are base64 on the wire, as the gateway wants. Consensus is etcd's; nothing here decides anything.
 */
import { DispatcherError } from '../../api/errors.js';
import type { Plan } from '../../api/plan.js';
import { hostPort } from './template.js';
import { clusterHttps, type ClusterClientTls } from './cluster-https.js';

/** What the operation lock needs of the agency; fakes of it drive test/unit/operation-lock.test.ts. */
export interface AgencyKv {
  /** A new lease of `ttlSeconds`; its id (decimal string). */
  grantLease(ttlSeconds: number): Promise<string>;
  /** Refreshes a lease; false when it has expired (or was revoked). */
  keepAlive(lease: string): Promise<boolean>;
  revoke(lease: string): Promise<void>;
  /** Puts `key` bound to `lease` only if the key does not exist; otherwise returns its current value. */
  createIfAbsent(key: string, value: string, lease: string): Promise<{ created: true } | { created: false; current: string }>;
  /** Puts `key` only while `guardKey` is bound to `lease` (only the lock holder writes); false if not. */
  putIfLeased(guardKey: string, lease: string, key: string, value: string): Promise<boolean>;
  get(key: string): Promise<string | undefined>;
  /** Every key under `prefix`, with its value. */
  list(prefix: string): Promise<{ key: string; value: string }[]>;
  /** Deletes one key; false when it did not exist. */
  remove(key: string): Promise<boolean>;
}

const b64 = (s: string) => Buffer.from(s, 'utf8').toString('base64');
const unb64 = (s: string | undefined) => Buffer.from(s ?? '', 'base64').toString('utf8');

/** The key right after every key that starts with `prefix` (etcd's range_end for a prefix). */
function prefixEnd(prefix: string): string {
  const b = Buffer.from(prefix, 'utf8');
  for (let i = b.length - 1; i >= 0; i--) {
    if (b[i] < 0xff) {
      b[i]++;
      return b.subarray(0, i + 1).toString('base64');
    }
  }
  return b64('\0');
}

/**
 * etcd through the plan's agents: each request goes to the first agent that answers (a member that is not
 * the leader forwards writes itself). `tls` is read at every call: the certificate may be renewed.
 */
export function etcdAgency(plan: Plan, tls: () => ClusterClientTls | undefined, timeoutMs = 2000): AgencyKv {
  const endpoints = plan.processes
    .filter((p) => p.role === 'agent')
    .map((p) => `https://${hostPort(p.address, p.ports.find((x) => x.name === 'client')?.port ?? 0)}`);

  async function call<T>(path: string, body: unknown): Promise<T> {
    const t = tls();
    if (!t) throw new DispatcherError('conflict', 'this dispatcher has no cluster certificate (yet): the agency accepts only certificate holders');
    let last = 'no agent in the plan';
    for (const base of endpoints) {
      try {
        const r = await clusterHttps(`${base}${path}`, { method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json' } }, t, timeoutMs);
        if (r.status === 200) {
          // A streaming endpoint (lease keepalive) wraps its answer in {"result": …}.
          const j = JSON.parse(r.body) as T & { result?: T };
          return (j.result ?? j) as T;
        }
        last = `${base}${path}: HTTP ${r.status} ${r.body.slice(0, 200)}`;
      } catch (e) {
        last = `${base}${path}: ${(e as Error).message}`;
      }
    }
    throw new DispatcherError('peer_unreachable', `the agency did not answer: ${last}`);
  }

  return {
    async grantLease(ttlSeconds) {
      const r = await call<{ ID?: string; error?: string }>('/v3/lease/grant', { TTL: ttlSeconds });
      if (!r.ID) throw new DispatcherError('operation_failed', `the agency granted no lease: ${r.error ?? 'no id'}`);
      return r.ID;
    },
    async keepAlive(lease) {
      const r = await call<{ TTL?: string }>('/v3/lease/keepalive', { ID: lease });
      return Number(r.TTL ?? 0) > 0;
    },
    async revoke(lease) {
      await call('/v3/lease/revoke', { ID: lease }).catch((e: DispatcherError) => {
        // An expired lease is gone already: that is what revoking wanted.
        if (!/not found/i.test(e.message)) throw e;
      });
    },
    async createIfAbsent(key, value, lease) {
      const r = await call<{ succeeded?: boolean; responses?: { response_range?: { kvs?: { value?: string }[] } }[] }>('/v3/kv/txn', {
        compare: [{ key: b64(key), target: 'CREATE', result: 'EQUAL', create_revision: '0' }],
        success: [{ request_put: { key: b64(key), value: b64(value), lease } }],
        failure: [{ request_range: { key: b64(key) } }],
      });
      if (r.succeeded) return { created: true };
      return { created: false, current: unb64(r.responses?.[0]?.response_range?.kvs?.[0]?.value) };
    },
    async putIfLeased(guardKey, lease, key, value) {
      const r = await call<{ succeeded?: boolean }>('/v3/kv/txn', {
        compare: [{ key: b64(guardKey), target: 'LEASE', result: 'EQUAL', lease }],
        success: [{ request_put: { key: b64(key), value: b64(value) } }],
      });
      return r.succeeded === true;
    },
    async get(key) {
      const r = await call<{ kvs?: { value?: string }[] }>('/v3/kv/range', { key: b64(key) });
      return r.kvs?.length ? unb64(r.kvs[0].value) : undefined;
    },
    async list(prefix) {
      const r = await call<{ kvs?: { key?: string; value?: string }[] }>('/v3/kv/range', { key: b64(prefix), range_end: prefixEnd(prefix) });
      return (r.kvs ?? []).map((kv) => ({ key: unb64(kv.key), value: unb64(kv.value) }));
    },
    async remove(key) {
      const r = await call<{ deleted?: string }>('/v3/kv/deleterange', { key: b64(key) });
      return Number(r.deleted ?? 0) > 0;
    },
  };
}
