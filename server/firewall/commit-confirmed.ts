/**
 * Commit-confirmed firewall changes (docs/FIREWALL.md): a change rolls back unless it is confirmed in
 * time, so an operator cannot lock themselves out. The change does not depend on this process: it is
 * persisted (pending-change.ts) and rolled back by a separate watchdog process (rollback-watchdog.ts)
 * that outlives a killed or stopped daemon. This part starts the watchdog, settles the change (confirm,
 * extend, cancel) by claiming the state file, and learns a rollback the watchdog did from the outcome file
 * before any drift check — so the drift loop never re-installs a change that was rolled back.
 *
 * It changes rules only through the guard (GuardRules: install, remove) and runs only inside the guard's
 * serial queue: every method here but the timer assumes it is called from there (guard.ts).
 */
import { randomBytes } from 'node:crypto';
import { DispatcherError } from '../../api/errors.js';
import type { FirewallPolicy } from '../../api/plan.js';
import type { GuardPolicy } from '../core/firewall-policy.js';
import type { FirewallBackend } from './backend.js';
import type { GuardLogger } from './guard-status.js';
import { PendingChangeFile, type PendingChange } from './pending-change.js';
import { pidAlive } from '../../shared/procfs.js';
import type { Clock } from '../../shared/poll.js';

/**
 * How long past its deadline a change the watchdog claimed may go without an outcome before the guard
 * stops waiting for it (the watchdog died in the middle of the rollback).
 */
const ROLLBACK_GRACE_MS = 30_000;

/** What a commit-confirmed change answers: its deadline and the token that confirms, extends or cancels it. */
export interface PendingInfo {
  confirmBy: string;
  token: string;
}

/** The guard's side, as this part needs it. */
export interface GuardRules {
  readonly backend: FirewallBackend;
  readonly log: GuardLogger;
  readonly clock: Clock;
  /** Installs a policy (it becomes the one drift repair keeps). */
  install(policy: GuardPolicy): Promise<void>;
  /** Removes our rules; no policy is kept any more. */
  removeRules(): Promise<void>;
  /** Makes `policy` the one kept after the watchdog restored it: installs it once more (null: none kept, not in sync). */
  adopt(policy: GuardPolicy | null): Promise<void>;
  markOutOfSync(): void;
  /** Runs fn in the guard's serial queue (for the timer, which starts outside of it). */
  serial<T>(fn: () => Promise<T>): Promise<T>;
}

interface Pending {
  token: string;
  until: Date;
  firewall?: FirewallPolicy;
  timer: NodeJS.Timeout;
}

export class CommitConfirmed {
  /** The change waiting for confirmation (its state lives in the pending file; this is the daemon's copy). */
  private pending: Pending | null = null;
  /** The policy a rollback goes back to (null: no rules). */
  private previous: GuardPolicy | null = null;
  private readonly changes: PendingChangeFile;

  constructor(
    private readonly rules: GuardRules,
    stateDir: string,
    private readonly startWatchdog: (dir: string, token: string) => number | undefined,
  ) {
    this.changes = new PendingChangeFile(stateDir);
  }

  /** The deadline of the change waiting for confirmation, or null. */
  pendingUntil(): Date | null {
    return this.pending?.until ?? null;
  }

  /**
   * Persists the change (token, deadline, the policy to go back to), starts its rollback watchdog, THEN
   * installs the policy — so from the first packet under the new rules something outside this process
   * will restore the previous ones at the deadline unless the change is confirmed. With no previous policy,
   * the rollback removes our rules. A second unconfirmed change keeps the oldest confirmed policy as the
   * rollback target.
   */
  async apply(installed: GuardPolicy | null, policy: GuardPolicy, seconds: number, opts: { token?: string; firewall?: FirewallPolicy }): Promise<PendingInfo> {
    const { changes, rules } = this;
    await this.learnOutcome();
    const keep = this.pending ? this.previous : installed;
    if (this.pending && !(await changes.claim(this.pending.token))) {
      throw new DispatcherError('conflict', 'the previous firewall change is being rolled back right now; try again', { details: { host: policy.host } });
    }
    this.dropPending();
    const token = opts.token ?? randomBytes(16).toString('hex');
    const until = new Date(rules.clock.now() + seconds * 1000);
    const change: PendingChange = {
      token,
      deadline: until.toISOString(),
      backend: rules.backend.name,
      ...(rules.backend.netns ? { netns: rules.backend.netns } : {}),
      next: policy,
      previous: keep,
      ...(opts.firewall ? { firewall: opts.firewall } : {}),
    };
    await changes.write(change);
    const pid = this.startWatchdog(changes.dir, token);
    await changes.write({ ...change, ...(pid ? { watchdogPid: pid } : {}) });
    this.previous = keep;
    try {
      await rules.install(policy);
    } catch (e) {
      if (await changes.claim(token)) await this.record(token, 'cancelled', (e as Error).message);
      throw e;
    }
    this.keepPending(token, until, opts.firewall);
    rules.log.info('firewall change applied; rolls back unless confirmed', { confirmBy: until.toISOString() });
    return { confirmBy: until.toISOString(), token };
  }

  /**
   * After a daemon restart: takes up a change still pending in the state file (re-installing its policy —
   * after a reboot the kernel has no rules — and starting a new watchdog when the old one is gone), or
   * rolls it back now when its deadline passed unwatched. Returns the change still pending, if any.
   */
  async resume(): Promise<PendingChange | undefined> {
    const { changes, rules } = this;
    const change = await changes.read();
    if (!change || change.backend !== rules.backend.name) return undefined;
    this.previous = change.previous;
    const watched = change.watchdogPid !== undefined && pidAlive(change.watchdogPid);
    if (Date.parse(change.deadline) <= rules.clock.now() && !watched) {
      if (await changes.claim(change.token)) await this.rollbackNow(change, 'rolled-back');
      return undefined;
    }
    await rules.install(change.next);
    if (!watched) {
      const pid = this.startWatchdog(changes.dir, change.token);
      await changes.write({ ...change, ...(pid ? { watchdogPid: pid } : {}) });
    }
    this.keepPending(change.token, new Date(change.deadline), change.firewall);
    rules.log.warn('a firewall change is still waiting for confirmation', { confirmBy: change.deadline });
    return change;
  }

  /** Keeps the pending change (token must match when given). Returns its plan-level policy, or false when none is pending. */
  async confirm(token?: string): Promise<{ firewall?: FirewallPolicy } | false> {
    const claimed = await this.claimPending(token);
    if (!claimed) return false;
    await this.record(claimed.pending.token, 'confirmed');
    this.dropPending();
    this.previous = null;
    this.rules.log.info('firewall change confirmed');
    return { ...(claimed.pending.firewall ? { firewall: claimed.pending.firewall } : {}) };
  }

  /** Moves the deadline of the pending change to `seconds` from now. False when none is pending. */
  async extend(token: string, seconds: number): Promise<PendingInfo | false> {
    const claimed = await this.claimPending(token);
    if (!claimed) return false;
    const until = new Date(this.rules.clock.now() + seconds * 1000);
    if (!(await this.changes.putBack({ ...claimed.change, deadline: until.toISOString() }))) return false;
    this.keepPending(token, until, claimed.pending.firewall);
    this.rules.log.info('firewall change deadline extended', { confirmBy: until.toISOString() });
    return { confirmBy: until.toISOString(), token };
  }

  /** Rolls the pending change back now. False when none is pending. */
  async cancel(token: string): Promise<boolean> {
    const claimed = await this.claimPending(token);
    if (!claimed) return false;
    await this.rollbackNow(claimed.change, 'cancelled');
    return true;
  }

  /** Settles a pending change without rolling back (a full apply or a cleanup replaces it). */
  async settle(): Promise<void> {
    const p = this.pending;
    if (!p) return;
    if (await this.changes.claim(p.token)) await this.record(p.token, 'confirmed');
    this.dropPending();
    this.previous = null;
  }

  /** Learns what the watchdog did: after a rollback, the previous policy is the one to keep (drift repairs it). */
  async learnOutcome(): Promise<void> {
    const p = this.pending;
    if (!p) return;
    const o = await this.changes.outcome(p.token).catch(() => undefined);
    if (!o) return;
    this.dropPending();
    if (o.outcome === 'rolled-back' || o.outcome === 'cancelled') {
      // The watchdog installed these rules; installing them once more (same rules, one atomic
      // transaction) gives this process the read-back it compares drift against.
      await this.rules.adopt(this.previous);
      this.rules.log.warn('firewall change not confirmed in time: the watchdog rolled it back', { to: this.previous ? 'previous policy' : 'no rules' });
    } else if (o.outcome === 'rollback-failed') {
      this.rules.markOutOfSync();
      this.rules.log.error('the firewall rollback watchdog failed', { err: o.error });
    }
    this.previous = null;
  }

  /**
   * True while the watchdog rolls the pending change back: it claimed the state file (so the file no longer
   * holds this change) and has not written its outcome yet. Its steps are claim, install the previous
   * policy, write the outcome; a drift check in between would see "our rules changed" and re-install the
   * change being rolled back, cutting the operator off again until the next check — so the guard does not
   * repair then (docs/FIREWALL.md). Long past the deadline with still no outcome, the watchdog died
   * mid-rollback: the change counts as rolled back and the previous policy is installed.
   */
  async rollbackInFlight(): Promise<boolean> {
    const p = this.pending;
    if (!p) return false;
    const onDisk = await this.changes.read().catch(() => undefined);
    if (onDisk?.token === p.token) return false;
    if (this.rules.clock.now() <= p.until.getTime() + ROLLBACK_GRACE_MS) return true;
    this.dropPending();
    await this.rules.adopt(this.previous);
    this.rules.log.error('the firewall rollback watchdog claimed a change but recorded no outcome: installed the policy before it', { to: this.previous ? 'previous policy' : 'no rules' });
    this.previous = null;
    return false;
  }

  /**
   * The one way confirm, extend and cancel take hold of the pending change: after learning what the
   * watchdog did, the token must name the pending change and this process must win the claim of its
   * state file (a watchdog rolling it back at this moment wins otherwise, and we learn that instead).
   */
  private async claimPending(token: string | undefined): Promise<{ pending: Pending; change: PendingChange } | undefined> {
    await this.learnOutcome();
    const pending = this.pending;
    if (!pending || (token !== undefined && token !== pending.token)) return undefined;
    const change = await this.changes.claim(pending.token);
    if (!change) {
      await this.learnOutcome();
      return undefined;
    }
    return { pending, change };
  }

  /** Installs the change's previous policy (or removes our rules) and records the outcome. */
  private async rollbackNow(change: PendingChange, outcome: 'cancelled' | 'rolled-back'): Promise<void> {
    this.dropPending();
    this.previous = null;
    if (change.previous) await this.rules.install(change.previous);
    else await this.rules.removeRules();
    await this.record(change.token, outcome);
    this.rules.log.warn(`firewall change ${outcome === 'cancelled' ? 'cancelled' : 'not confirmed in time'}: rolled back`, { to: change.previous ? 'previous policy' : 'no rules' });
  }

  private record(token: string, outcome: 'confirmed' | 'cancelled' | 'rolled-back', error?: string): Promise<void> {
    return this.changes.writeOutcome({ token, outcome, at: new Date(this.rules.clock.now()).toISOString(), ...(error !== undefined ? { error } : {}) });
  }

  private keepPending(token: string, until: Date, firewall?: FirewallPolicy): void {
    if (this.pending) clearTimeout(this.pending.timer);
    // Shortly after the deadline, learn the watchdog's rollback (status shows it without waiting for drift).
    const timer = setTimeout(() => void this.rules.serial(() => this.learnOutcome()).catch(() => undefined), Math.max(0, until.getTime() - this.rules.clock.now()) + 500);
    timer.unref();
    this.pending = { token, until, timer, ...(firewall ? { firewall } : {}) };
  }

  private dropPending(): void {
    if (this.pending) clearTimeout(this.pending.timer);
    this.pending = null;
  }
}
