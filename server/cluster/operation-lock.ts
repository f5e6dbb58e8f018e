/**
 * One cluster operation at a time, across every dispatcher (docs/DESIGN.md, "Operation lifecycle"): the
 * lock is a key in the cluster's agency bound to a lease of the runner; the lease is kept alive while the
 * operation runs and expires when its runner dies, which frees the lock without anyone deciding so. The
 * record of an operation (its events and the progress a resume needs) is written next to it, only while
 * the writer holds the lock (an etcd transaction compares the lock key's lease), so a dispatcher that
 * lost the lock can never overwrite what the one that took over writes. Consensus is etcd's.
 */
import { DispatcherError } from '../../api/errors.js';
import type { OperationView } from '../../api/rest.js';
import type { AgencyKv } from '../engines/agency-kv.js';
import { systemClock, type Clock } from '../../shared/poll.js';

/** Who holds the lock (the lock key's value). */
export interface LockHolder {
  operation: string;
  kind: string;
  cluster: string;
  /** The dispatcher running it. */
  dispatcher: string;
  since: string;
}

/** A lock this dispatcher holds for one operation. */
export interface HeldLock {
  readonly holder: LockHolder;
  /** Aborts when the agency says the lease expired (another dispatcher may have taken over). */
  readonly lost: AbortSignal;
  /** Writes an operation record while the lock is held (best effort while the agency is down). */
  publish(view: OperationView): Promise<void>;
  /** Stops the keep-alive and revokes the lease: the lock is free at once. */
  release(): Promise<void>;
}

/** What OperationStore needs: take the lock for an operation, and read what the agency knows. */
export interface ClusterLock {
  /**
   * The lock for `view` (its id, kind and cluster). Undefined when the cluster has no agency to lock in
   * (none yet, or an engine without one) and `required` is false; a 409 naming the running operation and
   * its dispatcher when another holds it.
   */
  acquire(view: LockRequest, opts: AcquireOptions): Promise<HeldLock | undefined>;
  /** Every operation record the agency holds, each with whether its runner still holds the lock. */
  published(): Promise<PublishedOperation[]>;
}

/** What the lock is taken for: an operation, or a short change that is not one (OperationStore.exclusive). */
export type LockRequest = Pick<OperationView, 'id' | 'cluster'> & { kind: string };

export interface AcquireOptions {
  required: boolean;
  /**
   * Wait (one lease time at most) for a lock held by another operation to expire: a launch whose agency
   * just came up finds the lease of the operation that stopped it (etcd renews leases when it restarts).
   */
  waitForStale?: boolean;
}

export interface PublishedOperation {
  view: OperationView;
  /** The lock is held for this operation by a live lease. */
  runnerAlive: boolean;
}

/** Events kept in an agency record: enough to follow and resume, bounded so a record stays small. */
export const PUBLISHED_EVENTS = 300;

export interface AgencyLockDeps {
  /** The agency of the current cluster and that cluster's name; undefined when there is none to lock in. */
  agency(): { kv: AgencyKv; cluster: string } | undefined;
  self: string;
  /** Lease time to live: how long a dead runner blocks the cluster. */
  ttlSeconds: number;
  clock?: Clock;
  /** Called when a keep-alive fails for a reason other than expiry (agency down): logged, not fatal. */
  onWarning?(message: string): void;
}

const lockKey = (cluster: string) => `/cluster-dispatcher/${cluster}/operation-lock`;
const recordPrefix = (cluster: string) => `/cluster-dispatcher/${cluster}/operations/`;

export function conflictWith(h: LockHolder): DispatcherError {
  return new DispatcherError('conflict', `operation ${h.operation} (${h.kind} of ${h.cluster}) is running on dispatcher ${h.dispatcher} since ${h.since}; wait for it, or resume/abort it once its dispatcher is gone`, {
    details: { operation: h.operation, kind: h.kind, cluster: h.cluster, runner: h.dispatcher },
  });
}

export class AgencyOperationLock implements ClusterLock {
  private readonly clock: Clock;

  constructor(private readonly deps: AgencyLockDeps) {
    this.clock = deps.clock ?? systemClock;
  }

  async acquire(view: LockRequest, opts: AcquireOptions): Promise<HeldLock | undefined> {
    const agency = this.deps.agency();
    if (!agency) {
      if (opts.required) throw new DispatcherError('conflict', `cluster ${view.cluster} has no agency to lock a ${view.kind} in`);
      return undefined;
    }
    const { kv, cluster } = agency;
    let lease: string;
    try {
      lease = await kv.grantLease(this.deps.ttlSeconds);
    } catch (e) {
      if (opts.required) throw e;
      return undefined; // the agency is down: the local lock is all there is (shutdown of a broken cluster)
    }
    const holder: LockHolder = { operation: view.id, kind: view.kind, cluster, dispatcher: this.deps.self, since: new Date(this.clock.now()).toISOString() };
    // The same operation taken over (resume) waits for its dead runner's lease to run out, no longer.
    const deadline = this.clock.now() + this.deps.ttlSeconds * 1000 + 3000;
    try {
      for (;;) {
        const r = await kv.createIfAbsent(lockKey(cluster), JSON.stringify(holder), lease);
        if (r.created) break;
        const current = parseHolder(r.current);
        if ((current?.operation !== view.id && !opts.waitForStale) || this.clock.now() > deadline) throw conflictWith(current ?? { ...holder, operation: '(unreadable)', dispatcher: '(unknown)' });
        await this.clock.sleep(500);
        // Our own lease must not run out while we wait for the old one (the wait can be longer than its TTL).
        if (!(await kv.keepAlive(lease))) lease = await kv.grantLease(this.deps.ttlSeconds);
      }
    } catch (e) {
      await kv.revoke(lease).catch(() => {});
      throw e;
    }
    return this.held(kv, cluster, lease, holder);
  }

  private held(kv: AgencyKv, cluster: string, lease: string, holder: LockHolder): HeldLock {
    const lost = new AbortController();
    let released = false;
    const timer = setInterval(() => {
      kv.keepAlive(lease).then(
        (alive) => {
          if (!alive && !released) lost.abort(new DispatcherError('conflict', `the agency lease of operation ${holder.operation} expired`));
        },
        (e: Error) => this.deps.onWarning?.(`keep-alive of the operation lock failed: ${e.message}`),
      );
    }, Math.max(200, (this.deps.ttlSeconds * 1000) / 3));
    timer.unref();
    let writes: Promise<void> = Promise.resolve();
    return {
      holder,
      lost: lost.signal,
      publish: (view) => {
        const record = JSON.stringify({ ...view, runner: holder.dispatcher, events: view.events.slice(-PUBLISHED_EVENTS) });
        writes = writes
          .then(() => kv.putIfLeased(lockKey(cluster), lease, recordPrefix(cluster) + view.id, record))
          .then(
            () => undefined,
            (e: Error) => this.deps.onWarning?.(`could not publish operation ${view.id} to the agency: ${e.message}`),
          );
        return writes;
      },
      release: async () => {
        released = true;
        clearInterval(timer);
        await writes;
        await kv.revoke(lease).catch((e: Error) => this.deps.onWarning?.(`could not release the operation lock: ${e.message} (it expires by itself)`));
      },
    };
  }

  async published(): Promise<PublishedOperation[]> {
    const agency = this.deps.agency();
    if (!agency) return [];
    const [records, lock] = await Promise.all([agency.kv.list(recordPrefix(agency.cluster)), agency.kv.get(lockKey(agency.cluster))]);
    const holder = lock ? parseHolder(lock) : undefined;
    const out: PublishedOperation[] = [];
    for (const r of records) {
      try {
        const view = JSON.parse(r.value) as OperationView;
        out.push({ view, runnerAlive: holder?.operation === view.id });
      } catch {
        // A damaged record is history only.
      }
    }
    return out;
  }
}

function parseHolder(s: string): LockHolder | undefined {
  try {
    const h = JSON.parse(s) as LockHolder;
    return typeof h.operation === 'string' && typeof h.dispatcher === 'string' ? h : undefined;
  } catch {
    return undefined;
  }
}
