/**
 * The guard: keeps one policy installed through a backend. apply/verify on demand, a drift loop that
 * re-applies when someone else's tool changed or flushed our rules (Debian's nftables service starts with
 * `flush ruleset`), and commit-confirmed changes that roll back unless confirmed in time, so an operator
 * cannot lock themselves out. Every backend call is serialized: the drift loop never races an apply.
 */
import { DispatcherError, isDispatcherError } from '../../api/errors.js';
import type { GuardPolicy } from '../core/firewall-policy.js';
import type { FirewallBackend } from './backend.js';

export interface GuardLogger {
  info(msg: string, meta?: Record<string, unknown>): void;
  warn(msg: string, meta?: Record<string, unknown>): void;
  error(msg: string, meta?: Record<string, unknown>): void;
}

export interface GuardStatus {
  backend: string;
  /** Result of the last check (apply or verify); false before the first apply. */
  inSync: boolean;
  /** ISO time of the last successful apply (including drift repairs and rollbacks), or null. */
  lastAppliedAt: string | null;
  lastCheckedAt: string | null;
  /** How many times the drift loop (or verify with repair) found our rules changed and re-applied them. */
  driftRepairs: number;
  /** How long the last successful apply took (ms), or null before the first (a metric: docs/OBSERVABILITY.md). */
  lastApplyMs: number | null;
  /** Other tables/chains that may drop ports we allow; problems the last check met. */
  warnings: string[];
  /** Set while a commit-confirmed change waits for confirm(): ISO deadline. */
  pendingConfirmUntil: string | null;
  /** Whether a policy is installed by this guard. */
  active: boolean;
}

export interface GuardOptions {
  backend: FirewallBackend;
  /** Drift check period; default 3000 ms. */
  driftIntervalMs?: number;
  logger?: GuardLogger;
}

const silent: GuardLogger = { info() {}, warn() {}, error() {} };

export class Guard {
  readonly backend: FirewallBackend;
  private readonly log: GuardLogger;
  private readonly intervalMs: number;
  private policy: GuardPolicy | null = null;
  private previous: GuardPolicy | null = null;
  private pending: NodeJS.Timeout | null = null;
  private pendingUntil: Date | null = null;
  private loop: NodeJS.Timeout | null = null;
  private queue: Promise<unknown> = Promise.resolve();
  private st = { inSync: false, lastAppliedAt: null as string | null, lastCheckedAt: null as string | null, driftRepairs: 0, lastApplyMs: null as number | null, warnings: [] as string[] };

  constructor(opts: GuardOptions) {
    this.backend = opts.backend;
    this.log = opts.logger ?? silent;
    this.intervalMs = opts.driftIntervalMs ?? 3000;
  }

  /** Runs fn after every earlier backend operation of this guard. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async install(policy: GuardPolicy): Promise<void> {
    const t0 = performance.now();
    try {
      await this.backend.apply(policy);
    } catch (e) {
      this.st.inSync = false;
      if (isDispatcherError(e)) throw e;
      throw new DispatcherError('operation_failed', `could not apply the firewall guard with ${this.backend.name}: ${(e as Error).message}`, {
        cause: e,
        details: { backend: this.backend.name, host: policy.host },
      });
    }
    this.policy = policy;
    this.st.inSync = true;
    this.st.lastApplyMs = performance.now() - t0;
    this.st.lastAppliedAt = new Date().toISOString();
    this.st.lastCheckedAt = this.st.lastAppliedAt;
    this.st.warnings = this.backend.foreignDrops ? await this.backend.foreignDrops(policy).catch(() => []) : [];
    for (const w of this.st.warnings) this.log.warn('firewall: another rule may drop a port the guard allows', { warning: w });
  }

  /** Installs the policy now (a pending commit-confirmed change is confirmed by it: the caller decided). */
  apply(policy: GuardPolicy): Promise<void> {
    return this.serial(async () => {
      this.clearPending();
      await this.install(policy);
      this.log.info('firewall guard applied', { backend: this.backend.name, host: policy.host, ports: policy.ports.length });
    });
  }

  /** Reads the rules back and compares; does not repair. */
  verify(): Promise<boolean> {
    return this.serial(async () => {
      const ok = this.policy ? await this.backend.inSync(this.policy) : false;
      this.st.inSync = ok;
      this.st.lastCheckedAt = new Date().toISOString();
      return ok;
    });
  }

  /** One drift check: re-applies when our rules were changed or flushed. Returns whether it repaired. */
  checkDrift(): Promise<boolean> {
    return this.serial(async () => {
      const policy = this.policy;
      if (!policy) return false;
      const ok = await this.backend.inSync(policy);
      this.st.lastCheckedAt = new Date().toISOString();
      if (ok) {
        this.st.inSync = true;
        return false;
      }
      this.log.warn('firewall guard drifted (changed or flushed by something else): re-applying', { backend: this.backend.name, host: policy.host });
      await this.install(policy);
      this.st.driftRepairs++;
      return true;
    });
  }

  /** Starts the periodic drift check (idempotent). The timer does not keep the process alive. */
  start(): void {
    if (this.loop) return;
    const tick = (): void => {
      this.checkDrift()
        .catch((e: unknown) => {
          this.st.inSync = false;
          this.log.error('firewall drift check failed', { err: e instanceof Error ? e.message : String(e) });
        })
        .finally(() => {
          if (this.loop) {
            this.loop = setTimeout(tick, this.intervalMs);
            this.loop.unref();
          }
        });
    };
    this.loop = setTimeout(tick, this.intervalMs);
    this.loop.unref();
  }

  stop(): void {
    if (this.loop) clearTimeout(this.loop);
    this.loop = null;
  }

  /**
   * Commit-confirmed: installs the policy, keeps the previous one, and rolls back to it after `seconds`
   * unless confirm() is called first. With no previous policy, the rollback removes our rules.
   */
  applyWithDeadline(policy: GuardPolicy, seconds: number): Promise<{ confirmBy: string }> {
    if (!(seconds > 0)) throw new DispatcherError('bad_request', 'the confirm deadline must be a positive number of seconds');
    return this.serial(async () => {
      // A second unconfirmed change keeps the oldest confirmed policy as the rollback target.
      const keep = this.pending ? this.previous : this.policy;
      this.clearPending();
      this.previous = keep;
      await this.install(policy);
      this.pendingUntil = new Date(Date.now() + seconds * 1000);
      this.pending = setTimeout(() => {
        this.pending = null;
        void this.rollback().catch((e: unknown) => this.log.error('firewall rollback failed', { err: e instanceof Error ? e.message : String(e) }));
      }, seconds * 1000);
      this.pending.unref();
      this.log.info('firewall change applied; rolls back unless confirmed', { confirmBy: this.pendingUntil.toISOString() });
      return { confirmBy: this.pendingUntil.toISOString() };
    });
  }

  /** Keeps the pending change. Returns false when nothing was pending (e.g. it already rolled back). */
  confirm(): boolean {
    if (!this.pending) return false;
    this.clearPending();
    this.previous = null;
    this.log.info('firewall change confirmed');
    return true;
  }

  private clearPending(): void {
    if (this.pending) clearTimeout(this.pending);
    this.pending = null;
    this.pendingUntil = null;
  }

  private rollback(): Promise<void> {
    return this.serial(async () => {
      const prev = this.previous;
      this.previous = null;
      this.pendingUntil = null;
      if (prev) {
        await this.install(prev);
      } else {
        await this.backend.remove();
        this.policy = null;
        this.st.inSync = false;
      }
      this.log.warn('firewall change not confirmed in time: rolled back', { to: prev ? 'previous policy' : 'no rules' });
    });
  }

  /** Removes our rules (cluster cleanup). Stops the drift loop and any pending rollback. */
  remove(): Promise<void> {
    this.stop();
    return this.serial(async () => {
      this.clearPending();
      this.previous = null;
      await this.backend.remove();
      this.policy = null;
      this.st.inSync = false;
    });
  }

  /** The policy this guard keeps installed, or null. */
  current(): GuardPolicy | null {
    return this.policy;
  }

  status(): GuardStatus {
    return {
      backend: this.backend.name,
      inSync: this.st.inSync,
      lastAppliedAt: this.st.lastAppliedAt,
      lastCheckedAt: this.st.lastCheckedAt,
      driftRepairs: this.st.driftRepairs,
      lastApplyMs: this.st.lastApplyMs,
      warnings: [...this.st.warnings],
      pendingConfirmUntil: this.pendingUntil ? this.pendingUntil.toISOString() : null,
      active: this.policy !== null,
    };
  }
}
