/**
 * The guard: keeps one policy installed through a backend. apply/verify on demand, a drift loop that
 * re-applies when someone else's tool changed or flushed our rules (Debian's nftables service starts with
 * `flush ruleset`), and commit-confirmed changes (commit-confirmed.ts) that roll back unless confirmed in
 * time. Every backend call is serialized through one queue: the drift loop never races an apply or a
 * confirm. What the guard reports about itself is kept in guard-status.ts.
 */
import { DispatcherError, isDispatcherError } from '../../api/errors.js';
import type { FirewallPolicy } from '../../api/plan.js';
import type { GuardPolicy } from '../core/firewall-policy.js';
import type { FirewallBackend } from './backend.js';
import { CommitConfirmed, type GuardRules, type PendingInfo } from './commit-confirmed.js';
import { GuardRecord, silentGuardLogger, type GuardLogger, type GuardStatus } from './guard-status.js';
import type { PendingChange } from './pending-change.js';
import { spawnRollbackWatchdog } from './rollback-watchdog.js';
import { systemClock, type Clock } from '../../shared/poll.js';

export type { GuardLogger, GuardStatus } from './guard-status.js';
export type { PendingInfo } from './commit-confirmed.js';

export interface GuardOptions {
  backend: FirewallBackend;
  /** Drift check period; default 3000 ms. */
  driftIntervalMs?: number;
  logger?: GuardLogger;
  /** Where a commit-confirmed change is persisted (0700 dir); needed for applyWithDeadline. */
  stateDir?: string;
  /** Starts the rollback watchdog of a change; default a detached process (spawnRollbackWatchdog). */
  startWatchdog?: (dir: string, token: string) => number | undefined;
  /** Times of applies, checks and deadlines; default systemClock. */
  clock?: Clock;
}

export class Guard {
  readonly backend: FirewallBackend;
  private readonly log: GuardLogger;
  private readonly clock: Clock;
  private readonly intervalMs: number;
  private policy: GuardPolicy | null = null;
  /** Present when the guard has a state dir: commit-confirmed changes need one. */
  private readonly commits?: CommitConfirmed;
  private loop: NodeJS.Timeout | null = null;
  private queue: Promise<unknown> = Promise.resolve();
  private readonly record: GuardRecord;

  constructor(opts: GuardOptions) {
    this.backend = opts.backend;
    this.log = opts.logger ?? silentGuardLogger;
    this.clock = opts.clock ?? systemClock;
    this.intervalMs = opts.driftIntervalMs ?? 3000;
    this.record = new GuardRecord(this.clock);
    if (opts.stateDir) this.commits = new CommitConfirmed(this.rules(), opts.stateDir, opts.startWatchdog ?? spawnRollbackWatchdog);
  }

  /** What the commit-confirmed part may do to the rules (it runs inside this guard's queue). */
  private rules(): GuardRules {
    return {
      backend: this.backend,
      log: this.log,
      clock: this.clock,
      install: (policy) => this.install(policy),
      removeRules: () => this.removeRules(),
      adopt: async (policy) => {
        this.policy = policy;
        if (policy) await this.install(policy);
        else this.record.inSync = false;
      },
      markOutOfSync: () => {
        this.record.inSync = false;
      },
      serial: (fn) => this.serial(fn),
    };
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
      this.record.inSync = false;
      if (isDispatcherError(e)) throw e;
      throw new DispatcherError('operation_failed', `could not apply the firewall guard with ${this.backend.name}: ${(e as Error).message}`, {
        cause: e,
        details: { backend: this.backend.name, host: policy.host },
      });
    }
    this.policy = policy;
    this.record.applied(performance.now() - t0);
    const warnings = [
      ...(this.backend.foreignDrops ? await this.backend.foreignDrops(policy).catch(() => []) : []),
      ...(this.backend.sessionWarnings ? await this.backend.sessionWarnings(policy).catch(() => []) : []),
    ];
    this.record.warned(warnings);
    for (const w of warnings) this.log.warn('firewall guard warning', { warning: w });
  }

  private async removeRules(): Promise<void> {
    await this.backend.remove();
    this.policy = null;
    this.record.inSync = false;
  }

  /** Installs the policy now (a pending commit-confirmed change is confirmed by it: the caller decided). */
  apply(policy: GuardPolicy): Promise<void> {
    return this.serial(async () => {
      await this.commits?.settle();
      await this.install(policy);
      this.log.info('firewall guard applied', { backend: this.backend.name, host: policy.host, ports: policy.ports.length });
    });
  }

  /** Reads the rules back and compares; does not repair. */
  verify(): Promise<boolean> {
    return this.serial(async () => {
      const ok = this.policy ? await this.backend.inSync(this.policy) : false;
      this.record.checked(ok);
      return ok;
    });
  }

  /** One drift check: re-applies when our rules were changed or flushed. Returns whether it repaired. */
  checkDrift(): Promise<boolean> {
    return this.serial(async () => {
      await this.commits?.learnOutcome();
      if (await this.commits?.rollbackInFlight()) return false;
      const policy = this.policy;
      if (!policy) return false;
      const ok = await this.backend.inSync(policy);
      if (ok) {
        this.record.checked(true);
        return false;
      }
      this.record.checked(false);
      this.log.warn('firewall guard drifted (changed or flushed by something else): re-applying', { backend: this.backend.name, host: policy.host });
      await this.install(policy);
      this.record.repaired();
      return true;
    });
  }

  /** Starts the periodic drift check (idempotent). The timer does not keep the process alive. */
  start(): void {
    if (this.loop) return;
    const tick = (): void => {
      this.checkDrift()
        .catch((e: unknown) => {
          this.record.inSync = false;
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

  /** Commit-confirmed apply: rolls back at the deadline unless confirmed (commit-confirmed.ts). */
  applyWithDeadline(policy: GuardPolicy, seconds: number, opts: { token?: string; firewall?: FirewallPolicy } = {}): Promise<PendingInfo> {
    if (!(seconds > 0)) throw new DispatcherError('bad_request', 'the confirm deadline must be a positive number of seconds');
    const commits = this.commits;
    if (!commits) throw new DispatcherError('conflict', 'commit-confirmed changes need a state dir for the pending change');
    return this.serial(() => commits.apply(this.policy, policy, seconds, opts));
  }

  /** After a daemon restart: takes up a change still pending in the state file, or rolls it back when overdue. */
  resumePending(): Promise<PendingChange | undefined> {
    const commits = this.commits;
    return commits ? this.serial(() => commits.resume()) : Promise.resolve(undefined);
  }

  /** Keeps the pending change (token must match). Returns its plan-level policy, or false when none is pending. */
  confirm(token?: string): Promise<{ firewall?: FirewallPolicy } | false> {
    const commits = this.commits;
    return commits ? this.serial(() => commits.confirm(token)) : Promise.resolve(false);
  }

  /** Moves the deadline of the pending change to `seconds` from now. False when none is pending. */
  extend(token: string, seconds: number): Promise<PendingInfo | false> {
    if (!(seconds > 0)) throw new DispatcherError('bad_request', 'the new deadline must be a positive number of seconds');
    const commits = this.commits;
    return commits ? this.serial(() => commits.extend(token, seconds)) : Promise.resolve(false);
  }

  /** Rolls the pending change back now. False when none is pending. */
  cancel(token: string): Promise<boolean> {
    const commits = this.commits;
    return commits ? this.serial(() => commits.cancel(token)) : Promise.resolve(false);
  }

  /** Removes our rules (cluster cleanup). Stops the drift loop and any pending rollback. */
  remove(): Promise<void> {
    this.stop();
    return this.serial(async () => {
      await this.commits?.settle();
      await this.removeRules();
    });
  }

  /** The policy this guard keeps installed, or null. */
  current(): GuardPolicy | null {
    return this.policy;
  }

  status(): GuardStatus {
    return this.record.view(this.backend.name, this.commits?.pendingUntil() ?? null, this.policy !== null);
  }
}
