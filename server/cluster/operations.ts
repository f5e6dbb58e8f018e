/**
 * Long-running cluster operations (launch, shutdown, relaunch, cleanup, restart): an id, a state and a
 * stream of progress events. Each operation is persisted in <dataDir>/operations/<id>.json after every
 * event, so its outcome (and a rolling restart's progress) survives a dispatcher restart. Finished records
 * are bounded by age and count (config `operations`), in memory and on disk; a running one is never dropped.
 */
import { EventEmitter } from 'node:events';
import { mkdir, readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { DispatcherError, isDispatcherError, toDispatcherError } from '../../api/errors.js';
import type { OperationEvent, OperationKind, OperationView } from '../../api/rest.js';
import { writeFileAtomic } from '../../shared/atomic-file.js';
import { systemClock, type Clock } from '../../shared/poll.js';

export interface OperationHandle {
  readonly id: string;
  readonly view: OperationView;
  event(e: Omit<OperationEvent, 'seq' | 'at'>): void;
  setProgress(progress: Record<string, unknown>): Promise<void>;
}

export class OperationStore {
  private readonly dir: string;
  private readonly ops = new Map<string, OperationView>();
  private readonly emitter = new EventEmitter();
  /** Persist writes per operation are serialized so an older view never lands after a newer one. */
  private readonly writes = new Map<string, Promise<void>>();

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

  /**
   * Starts `work` as a new operation unless another one runs (409). Returns at once; the work goes on in
   * the background and its outcome lands in the operation's state.
   */
  async start(
    kind: OperationKind,
    cluster: string,
    work: (op: OperationHandle) => Promise<Record<string, unknown> | void>,
    opts: { resumeOf?: OperationView } = {},
  ): Promise<OperationView> {
    const active = this.running();
    if (active && active.id !== opts.resumeOf?.id) {
      throw new DispatcherError('conflict', `operation ${active.id} (${active.kind} of ${active.cluster}) is still running`, {
        details: { operation: active.id, kind: active.kind, cluster: active.cluster },
      });
    }
    const view: OperationView = opts.resumeOf ?? { id: randomUUID(), kind, cluster, state: 'running', startedAt: this.isoNow(), events: [] };
    view.state = 'running';
    this.ops.set(view.id, view);
    const handle: OperationHandle = {
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
        view.state = 'succeeded';
        if (result) view.result = result;
        handle.event({ level: 'info', step: 'done', message: `${kind} of ${cluster} succeeded`, durationMs: took() });
      } catch (e) {
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
        this.emitter.emit(view.id, null);
        await this.prune().catch(() => {});
      }
    })();
    return view;
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
    if (view.state !== 'running') return Promise.resolve(view);
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
    const next = prev
      .catch(() => {})
      // A record pruned meanwhile is not written again.
      .then(() => (this.ops.get(view.id) === view ? writeFileAtomic(join(this.dir, `${view.id}.json`), JSON.stringify(view), 0o600) : undefined));
    this.writes.set(view.id, next);
    return next;
  }
}
