/**
 * Long-running cluster operations (launch, shutdown, relaunch, cleanup, restart): an id, a state and a
 * stream of progress events. Each operation is persisted in <dataDir>/operations/<id>.json after every
 * event, so its outcome (and a rolling restart's progress) survives a dispatcher restart. Finished records
 * are bounded by age and count (config `operations`), in memory and on disk; a running one is never dropped.
 * With a ClusterLock (operation-lock.ts) an operation also holds the cluster-wide lock in the agency and
 * its record is published there, where every dispatcher reads it (docs/DESIGN.md, "Operation lifecycle").
 */
import { EventEmitter } from 'node:events';
import { mkdir, readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { DispatcherError, isDispatcherError, toDispatcherError } from '../../api/errors.js';
import type { OperationEvent, OperationKind, OperationView } from '../../api/rest.js';
import { writeFileAtomic } from '../../shared/atomic-file.js';
import { systemClock, type Clock } from '../../shared/poll.js';
import type { ClusterLock, HeldLock } from './operation-lock.js';
import { findRecord, mergeRecords, takenOverBy, type FoundOperation } from './operation-records.js';

export interface OperationHandle {
  readonly id: string;
  readonly view: OperationView;
  event(e: Omit<OperationEvent, 'seq' | 'at'>): void;
  setProgress(progress: Record<string, unknown>): Promise<void>;
  /**
   * Takes the cluster-wide lock now (an operation started with `lock: 'when-agency-up'`, i.e. a launch,
   * calls it once its agency answers); a 409 when another operation holds it. A no-op when held already.
   */
  lockCluster(): Promise<void>;
  /** Aborts when this operation's agency lease expired: another dispatcher may take it over. */
  readonly lockLost: AbortSignal;
  /**
   * Publishes the record and frees the cluster-wide lock before the operation ends — a shutdown, just
   * before it stops the agency that holds the lock (else the lease would outlive the agency's restart).
   */
  unlockCluster(): Promise<void>;
}

/** When an operation takes the cluster-wide lock. */
export type LockMode = 'required' | 'if-agency' | 'when-agency-up';

export type { FoundOperation } from './operation-records.js';

export class OperationStore {
  private readonly dir: string;
  private readonly ops = new Map<string, OperationView>();
  private readonly emitter = new EventEmitter();
  /** Persist writes per operation are serialized so an older view never lands after a newer one. */
  private readonly writes = new Map<string, Promise<void>>();
  private clusterLock: ClusterLock | undefined;
  /** Operations whose outcome is set but whose last write (and lock release) is still under way. */
  private readonly finishing = new Set<string>();
  /** The kind of the exclusive() change running now (not an operation: no record). */
  private exclusiveRunning: string | undefined;
  /** The cluster-wide lock the running operation holds (one at a time per dispatcher). */
  private held: HeldLock | undefined;

  /** `clock` stamps operations and events (the system clock by default; docs/DESIGN.md, "Time and waiting"). */
  constructor(
    dataDir: string,
    private readonly retention: { maxAgeMs: number; maxCount: number } = { maxAgeMs: 30 * 86_400_000, maxCount: 200 },
    private readonly clock: Clock = systemClock,
  ) {
    this.dir = join(dataDir, 'operations');
    this.emitter.setMaxListeners(0);
  }

  private pruning: Promise<unknown> = Promise.resolve();

  /** Operations from now on take the cluster-wide lock in the agency and publish their records there. */
  useClusterLock(lock: ClusterLock, self: string): void {
    this.clusterLock = lock;
    this.self = self;
  }

  /** This dispatcher's id (recorded as an operation's runner). */
  private self: string | undefined;

  /** Drops finished records older than maxAgeMs, then the oldest beyond maxCount (memory and files). */
  prune(now = this.clock.now()): Promise<string[]> {
    const next = this.pruning.catch(() => {}).then(() => this.pruneNow(now));
    this.pruning = next;
    return next;
  }

  private async pruneNow(now: number): Promise<string[]> {
    const finished = this.list().filter((o) => o.state !== 'running');
    const tooOld = finished.filter((o) => now - Date.parse(o.endedAt ?? o.startedAt) > this.retention.maxAgeMs);
    const rest = finished.filter((o) => !tooOld.includes(o));
    const drop = [...tooOld, ...rest.slice(0, Math.max(0, rest.length - this.retention.maxCount))];
    for (const o of drop) {
      this.ops.delete(o.id);
      await this.writes.get(o.id)?.catch(() => {});
      this.writes.delete(o.id);
      await rm(join(this.dir, `${o.id}.json`), { force: true });
    }
    return drop.map((o) => o.id);
  }

  /** Reads persisted operations; one that was running when the daemon died is returned for the caller to resume or fail. */
  async load(): Promise<OperationView[]> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const interrupted: OperationView[] = [];
    for (const f of (await readdir(this.dir)).filter((f) => f.endsWith('.json'))) {
      try {
        const view = JSON.parse(await readFile(join(this.dir, f), 'utf8')) as OperationView;
        this.ops.set(view.id, view);
        if (view.state === 'running') interrupted.push(view);
      } catch {
        // A damaged operation record is history only; it must not stop the daemon. It stays on disk.
      }
    }
    await this.prune();
    return interrupted;
  }

  private isoNow(): string {
    return new Date(this.clock.now()).toISOString();
  }

  list(): OperationView[] {
    return [...this.ops.values()].sort((a, b) => a.startedAt.localeCompare(b.startedAt));
  }

  get(id: string): OperationView {
    const op = this.ops.get(id);
    if (!op) throw new DispatcherError('not_found', `no operation ${id}`);
    return op;
  }

  running(): OperationView | undefined {
    return [...this.ops.values()].find((o) => o.state === 'running');
  }

  /** This dispatcher's operations and those the agency holds (of the current cluster), oldest first. */
  async listEverywhere(): Promise<OperationView[]> {
    return mergeRecords(this.list(), await this.publishedOrNone());
  }

  /** An operation run here, or one the agency holds; 404 when neither knows it. */
  async find(id: string): Promise<FoundOperation> {
    return findRecord(id, this.ops.get(id), await this.publishedOrNone());
  }

  /** Whether another dispatcher took over an operation that was running here when this daemon died (a sentence), or undefined. */
  async takenOver(view: OperationView): Promise<string | undefined> {
    return takenOverBy(view, this.self, await this.publishedOrNone());
  }

  private async publishedOrNone() {
    if (!this.clusterLock) return [];
    // The agency may be down (a shut-down cluster): this dispatcher's own records still answer.
    return this.clusterLock.published().catch(() => []);
  }

  /** Takes in an operation another dispatcher ran (to resume or abort it here); it keeps its id. */
  adopt(view: OperationView): OperationView {
    const { stale: _stale, ...copy } = structuredClone(view);
    this.ops.set(copy.id, copy);
    return copy;
  }

  /**
   * Starts `work` as a new operation unless another one runs (409). Returns at once; the work goes on in
   * the background and its outcome lands in the operation's state.
   */
  async start(
    kind: OperationKind,
    cluster: string,
    work: (op: OperationHandle) => Promise<Record<string, unknown> | void>,
    opts: { resumeOf?: OperationView; lock?: LockMode; precondition?: () => void | Promise<void> } = {},
  ): Promise<OperationView> {
    // An operation whose outcome is already visible may still be writing its record and releasing the
    // cluster-wide lock (milliseconds): a client that saw it end and asks for the next one at once waits
    // for that here, instead of a 409 naming the operation that has just ended.
    for (const id of [...this.finishing]) await this.wait(id);
    this.refuseIfRunningHere(opts.resumeOf?.id);
    const view: OperationView = opts.resumeOf ?? { id: randomUUID(), kind, cluster, state: 'running', startedAt: this.isoNow(), events: [] };
    const mode = opts.lock ?? 'if-agency';
    const lockLost = new AbortController();
    const take = async () => {
      if (this.held?.holder.operation === view.id || !this.clusterLock) return;
      const held = await this.clusterLock.acquire(view, { required: mode === 'required', waitForStale: mode === 'when-agency-up' });
      if (!held) return;
      this.held = held;
      held.lost.addEventListener('abort', () => lockLost.abort(held.lost.reason), { once: true });
    };
    // The cluster-wide lock before anything happens: a second operation gets its 409 here, not half-way.
    if (mode !== 'when-agency-up') await take();
    // What the request was computed against (a plan version) is checked only now, under the lock: checked
    // before it, another dispatcher's operation could change the plan in between (docs/DESIGN.md, "Plan versions").
    if (opts.precondition) {
      try {
        await opts.precondition();
      } catch (e) {
        await this.releaseIfHeldFor(view.id);
        throw e;
      }
    }
    view.state = 'running';
    if (this.self) view.runner = this.self;
    delete view.stale;
    this.ops.set(view.id, view);
    const handle: OperationHandle = {
      lockLost: lockLost.signal,
      lockCluster: async () => {
        await take();
        await this.persist(view);
      },
      unlockCluster: async () => {
        const held = this.held;
        if (held?.holder.operation !== view.id) return;
        handle.event({ level: 'info', step: 'unlock', message: `the agency stops now: the rest of this ${kind} is recorded on ${this.self ?? 'this dispatcher'} only` });
        await this.persist(view);
        this.held = undefined;
        await held.release();
      },
      id: view.id,
      view,
      event: (e) => {
        const full: OperationEvent = { seq: view.events.length + 1, at: this.isoNow(), ...e };
        view.events.push(full);
        this.emitter.emit(view.id, full);
        void this.persist(view);
      },
      setProgress: async (progress) => {
        view.progress = progress;
        await this.persist(view);
      },
    };
    await this.persist(view);
    const began = this.clock.now();
    const took = () => Math.round(this.clock.now() - began);
    void (async () => {
      try {
        const result = await work(handle);
        this.finishing.add(view.id);
        view.state = 'succeeded';
        if (result) view.result = result;
        handle.event({ level: 'info', step: 'done', message: `${kind} of ${cluster} succeeded`, durationMs: took() });
      } catch (e) {
        this.finishing.add(view.id);
        view.state = 'failed';
        const err = toDispatcherError(e);
        view.error = {
          code: err.code,
          message: err.message,
          ...(err.details.host ? { host: String(err.details.host) } : {}),
          ...(err.details.process ? { process: String(err.details.process) } : {}),
          ...(Array.isArray(err.details.logTail) ? { logTail: err.details.logTail as string[] } : {}),
        };
        handle.event({ level: 'error', step: 'failed', message: err.message, durationMs: took() });
      } finally {
        view.endedAt = this.isoNow();
        await this.persist(view);
        const held = this.held;
        if (held?.holder.operation === view.id) {
          this.held = undefined;
          await held.release();
        }
        this.finishing.delete(view.id);
        this.emitter.emit(view.id, null);
        await this.prune().catch(() => {});
      }
    })();
    return view;
  }

  /**
   * Runs `fn` — a short change that is not an operation, e.g. a firewall change with its base version
   * check — while this dispatcher holds the cluster-wide lock (if the cluster has an agency) and runs no
   * operation: a 409 naming the running operation otherwise. No record is kept; the lock is freed when fn ends.
   */
  async exclusive<T>(kind: string, cluster: string, fn: () => Promise<T>): Promise<T> {
    this.refuseIfRunningHere();
    this.exclusiveRunning = kind;
    const held = await this.clusterLock?.acquire({ id: `${kind.replace(/\W+/g, '-')}-${randomUUID()}`, kind, cluster }, { required: false }).catch((e) => {
      this.exclusiveRunning = undefined;
      throw e;
    });
    try {
      return await fn();
    } finally {
      this.exclusiveRunning = undefined;
      await held?.release();
    }
  }

  private refuseIfRunningHere(except?: string): void {
    const active = this.running();
    if (active && active.id !== except) {
      throw new DispatcherError('conflict', `operation ${active.id} (${active.kind} of ${active.cluster}) is still running on this dispatcher`, {
        details: { operation: active.id, kind: active.kind, cluster: active.cluster },
      });
    }
    if (this.exclusiveRunning) throw new DispatcherError('conflict', `a ${this.exclusiveRunning} is being applied on this dispatcher right now; try again`);
  }

  private async releaseIfHeldFor(id: string): Promise<void> {
    const held = this.held;
    if (held?.holder.operation !== id) return;
    this.held = undefined;
    await held.release();
  }

  /** Marks an interrupted operation as failed (when it cannot resume). */
  markInterrupted(view: OperationView, message: string): Promise<void> {
    view.error = { code: 'operation_failed', message };
    return this.end(view, 'failed', 'error', message);
  }

  /** Marks an ended (failed) operation as aborted by the operator. */
  markAborted(view: OperationView, message: string): Promise<void> {
    return this.end(view, 'aborted', 'warn', message);
  }

  private async end(view: OperationView, state: 'failed' | 'aborted', level: 'warn' | 'error', message: string): Promise<void> {
    view.state = state;
    view.endedAt = this.isoNow();
    view.events.push({ seq: view.events.length + 1, at: view.endedAt, level, step: state, message });
    this.ops.set(view.id, view);
    await this.persist(view);
  }

  /** Calls `onEvent` for every event so far and every later one; resolves when the operation has ended. */
  follow(id: string, onEvent: (e: OperationEvent) => void, signal?: AbortSignal): Promise<OperationView> {
    const view = this.get(id);
    for (const e of view.events) onEvent(e);
    if (view.state !== 'running' && !this.finishing.has(id)) return Promise.resolve(view);
    return new Promise((resolve) => {
      const listener = (e: OperationEvent | null) => {
        if (e) return onEvent(e);
        this.emitter.off(id, listener);
        resolve(view);
      };
      this.emitter.on(id, listener);
      signal?.addEventListener('abort', () => {
        this.emitter.off(id, listener);
        resolve(view);
      });
    });
  }

  /** Resolves when the operation has ended. */
  wait(id: string): Promise<OperationView> {
    return this.follow(id, () => {});
  }

  private persist(view: OperationView): Promise<void> {
    const prev = this.writes.get(view.id) ?? Promise.resolve();
    const held = this.held;
    const next = prev
      .catch(() => {})
      // A record pruned meanwhile is not written again.
      .then(() => (this.ops.get(view.id) === view ? writeFileAtomic(join(this.dir, `${view.id}.json`), JSON.stringify(view), 0o600) : undefined))
      // Only while this dispatcher holds the cluster lock does its record reach the agency (operation-lock.ts).
      .then(() => held?.publish(view));
    this.writes.set(view.id, next);
    return next;
  }
}
