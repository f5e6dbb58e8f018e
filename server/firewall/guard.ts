/**
 * The guard: keeps one policy installed through a backend. apply/verify on demand, a drift loop that
 * re-applies when someone else's tool changed or flushed our rules (Debian's nftables service starts with
 * `flush ruleset`), and commit-confirmed changes that roll back unless confirmed in time, so an operator
 * cannot lock themselves out. Every backend call is serialized: the drift loop never races an apply.
 *
 * A commit-confirmed change does not depend on this process: it is persisted (pending-change.ts) and its
 * rollback is done by a separate watchdog process (rollback-watchdog.ts) that outlives a killed or stopped
 * daemon. This class starts the watchdog, settles the change (confirm, extend, cancel) by claiming the
 * state file, and learns a rollback the watchdog did from the outcome file before any drift check — so the
 * drift loop never re-installs a change that was rolled back.
 *
 * Longer than our usual ~300 lines on purpose: apply, drift repair and the commit-confirmed steps all
 * change the same state (installed policy, rollback target, pending change) and must run through the one
 * serial queue; split across files they would each need that private state exposed. The persistence and
 * the watchdog, which need none of it, live in pending-change.ts and rollback-watchdog.ts.
 */
import { randomBytes } from 'node:crypto';
import { DispatcherError, isDispatcherError } from '../../api/errors.js';
import type { FirewallPolicy } from '../../api/plan.js';
import type { GuardPolicy } from '../core/firewall-policy.js';
import type { FirewallBackend } from './backend.js';
import { PendingChangeFile, type PendingChange } from './pending-change.js';
import { spawnRollbackWatchdog } from './rollback-watchdog.js';
import { pidAlive } from '../../shared/procfs.js';

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
  /** Where a commit-confirmed change is persisted (0700 dir); needed for applyWithDeadline. */
  stateDir?: string;
  /** Starts the rollback watchdog of a change; default a detached process (spawnRollbackWatchdog). */
  startWatchdog?: (dir: string, token: string) => number | undefined;
}

/** What a commit-confirmed change answers: its deadline and the token that confirms, extends or cancels it. */
export interface PendingInfo {
  confirmBy: string;
  token: string;
}

const silent: GuardLogger = { info() {}, warn() {}, error() {} };

export class Guard {
  readonly backend: FirewallBackend;
  private readonly log: GuardLogger;
  private readonly intervalMs: number;
  private policy: GuardPolicy | null = null;
  private previous: GuardPolicy | null = null;
  /** The change waiting for confirmation (its state lives in the pending file; this is the daemon's copy). */
  private pending: { token: string; until: Date; firewall?: FirewallPolicy; timer: NodeJS.Timeout } | null = null;
  private readonly changes?: PendingChangeFile;
  private readonly startWatchdog: (dir: string, token: string) => number | undefined;
  private loop: NodeJS.Timeout | null = null;
  private queue: Promise<unknown> = Promise.resolve();
  private st = { inSync: false, lastAppliedAt: null as string | null, lastCheckedAt: null as string | null, driftRepairs: 0, lastApplyMs: null as number | null, warnings: [] as string[] };

  constructor(opts: GuardOptions) {
    this.backend = opts.backend;
    this.log = opts.logger ?? silent;
    this.intervalMs = opts.driftIntervalMs ?? 3000;
    if (opts.stateDir) this.changes = new PendingChangeFile(opts.stateDir);
    this.startWatchdog = opts.startWatchdog ?? spawnRollbackWatchdog;
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
    this.st.warnings = [
      ...(this.backend.foreignDrops ? await this.backend.foreignDrops(policy).catch(() => []) : []),
      ...(this.backend.sessionWarnings ? await this.backend.sessionWarnings(policy).catch(() => []) : []),
    ];
    for (const w of this.st.warnings) this.log.warn('firewall guard warning', { warning: w });
  }

  /** Installs the policy now (a pending commit-confirmed change is confirmed by it: the caller decided). */
  apply(policy: GuardPolicy): Promise<void> {
    return this.serial(async () => {
      await this.settlePending('confirmed');
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
      await this.learnOutcome();
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
   * Commit-confirmed: persists the change (token, deadline, the policy to go back to), starts its rollback
   * watchdog, THEN installs the policy — so from the first packet under the new rules something outside
   * this process will restore the previous ones at the deadline unless the change is confirmed. With no
   * previous policy, the rollback removes our rules. A second unconfirmed change keeps the oldest confirmed
   * policy as the rollback target.
   */
  applyWithDeadline(policy: GuardPolicy, seconds: number, opts: { token?: string; firewall?: FirewallPolicy } = {}): Promise<PendingInfo> {
    if (!(seconds > 0)) throw new DispatcherError('bad_request', 'the confirm deadline must be a positive number of seconds');
    const changes = this.changes;
    if (!changes) throw new DispatcherError('conflict', 'commit-confirmed changes need a state dir for the pending change');
    return this.serial(async () => {
      await this.learnOutcome();
      const keep = this.pending ? this.previous : this.policy;
      if (this.pending && !(await changes.claim(this.pending.token))) {
        throw new DispatcherError('conflict', 'the previous firewall change is being rolled back right now; try again', { details: { host: policy.host } });
      }
      this.dropPending();
      const token = opts.token ?? randomBytes(16).toString('hex');
      const until = new Date(Date.now() + seconds * 1000);
      const change: PendingChange = {
        token,
        deadline: until.toISOString(),
        backend: this.backend.name,
        ...(this.backend.netns ? { netns: this.backend.netns } : {}),
        next: policy,
        previous: keep,
        ...(opts.firewall ? { firewall: opts.firewall } : {}),
      };
      await changes.write(change);
      const pid = this.startWatchdog(changes.dir, token);
      await changes.write({ ...change, ...(pid ? { watchdogPid: pid } : {}) });
      this.previous = keep;
      try {
        await this.install(policy);
      } catch (e) {
        if (await changes.claim(token)) await changes.writeOutcome({ token, outcome: 'cancelled', at: new Date().toISOString(), error: (e as Error).message });
        throw e;
      }
      this.keepPending(token, until, opts.firewall);
      this.log.info('firewall change applied; rolls back unless confirmed', { confirmBy: until.toISOString() });
      return { confirmBy: until.toISOString(), token };
    });
  }

  /**
   * After a daemon restart: takes up a change still pending in the state file (re-installing its policy —
   * after a reboot the kernel has no rules — and starting a new watchdog when the old one is gone), or
   * rolls it back now when its deadline passed unwatched. Returns the change still pending, if any.
   */
  resumePending(): Promise<PendingChange | undefined> {
    const changes = this.changes;
    if (!changes) return Promise.resolve(undefined);
    return this.serial(async () => {
      const change = await changes.read();
      if (!change || change.backend !== this.backend.name) return undefined;
      this.previous = change.previous;
      if (Date.parse(change.deadline) <= Date.now() && !(change.watchdogPid && pidAlive(change.watchdogPid))) {
        if (await changes.claim(change.token)) await this.rollbackNow(change, 'rolled-back');
        return undefined;
      }
      await this.install(change.next);
      if (!(change.watchdogPid && pidAlive(change.watchdogPid))) {
        const pid = this.startWatchdog(changes.dir, change.token);
        await changes.write({ ...change, ...(pid ? { watchdogPid: pid } : {}) });
      }
      this.keepPending(change.token, new Date(change.deadline), change.firewall);
      this.log.warn('a firewall change is still waiting for confirmation', { confirmBy: change.deadline });
      return change;
    });
  }

  /** Keeps the pending change (token must match). Returns its plan-level policy, or false when none is pending. */
  confirm(token?: string): Promise<{ firewall?: FirewallPolicy } | false> {
    return this.serial(async () => {
      await this.learnOutcome();
      const p = this.pending;
      if (!p || (token !== undefined && token !== p.token)) return false;
      if (this.changes && !(await this.changes.claim(p.token))) {
        await this.learnOutcome();
        return false;
      }
      await this.changes?.writeOutcome({ token: p.token, outcome: 'confirmed', at: new Date().toISOString() });
      this.dropPending();
      this.previous = null;
      this.log.info('firewall change confirmed');
      return { ...(p.firewall ? { firewall: p.firewall } : {}) };
    });
  }

  /** Moves the deadline of the pending change to `seconds` from now. False when none is pending. */
  extend(token: string, seconds: number): Promise<PendingInfo | false> {
    if (!(seconds > 0)) throw new DispatcherError('bad_request', 'the new deadline must be a positive number of seconds');
    return this.serial(async () => {
      await this.learnOutcome();
      const p = this.pending;
      const changes = this.changes;
      if (!p || !changes || token !== p.token) return false;
      const change = await changes.claim(token);
      if (!change) return false;
      const until = new Date(Date.now() + seconds * 1000);
      if (!(await changes.putBack({ ...change, deadline: until.toISOString() }))) return false;
      this.keepPending(token, until, p.firewall);
      this.log.info('firewall change deadline extended', { confirmBy: until.toISOString() });
      return { confirmBy: until.toISOString(), token };
    });
  }

  /** Rolls the pending change back now. False when none is pending. */
  cancel(token: string): Promise<boolean> {
    return this.serial(async () => {
      await this.learnOutcome();
      const p = this.pending;
      const changes = this.changes;
      if (!p || !changes || token !== p.token) return false;
      const change = await changes.claim(token);
      if (!change) return false;
      await this.rollbackNow(change, 'cancelled');
      return true;
    });
  }

  /** Installs the change's previous policy (or removes our rules) and records the outcome. */
  private async rollbackNow(change: PendingChange, outcome: 'cancelled' | 'rolled-back'): Promise<void> {
    this.dropPending();
    this.previous = null;
    if (change.previous) {
      await this.install(change.previous);
    } else {
      await this.backend.remove();
      this.policy = null;
      this.st.inSync = false;
    }
    await this.changes?.writeOutcome({ token: change.token, outcome, at: new Date().toISOString() });
    this.log.warn(`firewall change ${outcome === 'cancelled' ? 'cancelled' : 'not confirmed in time'}: rolled back`, { to: change.previous ? 'previous policy' : 'no rules' });
  }

  /** Learns what the watchdog did: after a rollback, the previous policy is the one to keep (drift repairs it). */
  private async learnOutcome(): Promise<void> {
    const p = this.pending;
    if (!p || !this.changes) return;
    const o = await this.changes.outcome(p.token).catch(() => undefined);
    if (!o) return;
    this.dropPending();
    if (o.outcome === 'rolled-back' || o.outcome === 'cancelled') {
      this.policy = this.previous;
      // The watchdog installed these rules; installing them once more (same rules, one atomic
      // transaction) gives this process the read-back it compares drift against.
      if (this.policy) await this.install(this.policy);
      else this.st.inSync = false;
      this.log.warn('firewall change not confirmed in time: the watchdog rolled it back', { to: this.previous ? 'previous policy' : 'no rules' });
    } else if (o.outcome === 'rollback-failed') {
      this.st.inSync = false;
      this.log.error('the firewall rollback watchdog failed', { err: o.error });
    }
    this.previous = null;
  }

  private keepPending(token: string, until: Date, firewall?: FirewallPolicy): void {
    if (this.pending) clearTimeout(this.pending.timer);
    // Shortly after the deadline, learn the watchdog's rollback (status shows it without waiting for drift).
    const timer = setTimeout(() => void this.serial(() => this.learnOutcome()).catch(() => undefined), Math.max(0, until.getTime() - Date.now()) + 500);
    timer.unref();
    this.pending = { token, until, timer, ...(firewall ? { firewall } : {}) };
  }

  private dropPending(): void {
    if (this.pending) clearTimeout(this.pending.timer);
    this.pending = null;
  }

  /** Settles a pending change without rolling back (a full apply replaces it). */
  private async settlePending(outcome: 'confirmed'): Promise<void> {
    const p = this.pending;
    if (!p) return;
    if (this.changes && (await this.changes.claim(p.token))) await this.changes.writeOutcome({ token: p.token, outcome, at: new Date().toISOString() });
    this.dropPending();
    this.previous = null;
  }

  /** Removes our rules (cluster cleanup). Stops the drift loop and any pending rollback. */
  remove(): Promise<void> {
    this.stop();
    return this.serial(async () => {
      await this.settlePending('confirmed');
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
      pendingConfirmUntil: this.pending ? this.pending.until.toISOString() : null,
      active: this.policy !== null,
    };
  }
}
