/**
 * The cluster's agency as a fake for fast tests of the operation lock: an in-memory key-value store with
 * leases that behaves as etcd's transactions do for server/engines/agency-kv.ts (create if absent, put only
 * while a key is bound to a lease, keys deleted with their lease). `expire` is a runner's death as the
 * agency sees it. The real etcd runs in test/cluster/operation-lock.test.ts.
 */
import type { AgencyKv } from '../../server/engines/agency-kv.js';

export function fakeAgency() {
  const keys = new Map<string, { value: string; lease?: string }>();
  const leases = new Set<string>();
  let next = 1;
  const kv: AgencyKv & { expire(lease: string): void; leases: Set<string>; keys: typeof keys } = {
    leases,
    keys,
    expire(lease) {
      leases.delete(lease);
      for (const [k, v] of keys) if (v.lease === lease) keys.delete(k);
    },
    grantLease: async () => {
      const id = String(next++);
      leases.add(id);
      return id;
    },
    keepAlive: async (lease) => leases.has(lease),
    revoke: async (lease) => kv.expire(lease),
    createIfAbsent: async (key, value, lease) => {
      const cur = keys.get(key);
      if (cur) return { created: false, current: cur.value };
      if (!leases.has(lease)) throw new Error('lease not found');
      keys.set(key, { value, lease });
      return { created: true };
    },
    putIfLeased: async (guard, lease, key, value) => {
      if (keys.get(guard)?.lease !== lease) return false;
      keys.set(key, { value });
      return true;
    },
    get: async (key) => keys.get(key)?.value,
    remove: async (key) => keys.delete(key),
    list: async (prefix) => [...keys].filter(([k]) => k.startsWith(prefix)).map(([key, v]) => ({ key, value: v.value })),
  };
  return kv;
}

