/**
 * Failed-login throttling, pure (the time comes from an injected Clock, or as a parameter). Two limits,
 * both checked BEFORE a password is verified, and a check in flight counts as an attempt until its outcome
 * is known — so 100 guesses sent at once are not 100 scrypt checks (docs/SECURITY.md, "Identities"):
 *  - per source address: `maxPerSource` attempts within the window;
 *  - per account: `maxPerAccount` attempts within the window, summed over every source (a guesser that
 *    rotates source addresses). It is larger than the per-source limit, so one throttled source can never
 *    lock an account by itself; and a source that logged in as that account recently is exempt from the
 *    account limit, so an operator is not locked out by someone else's guessing from elsewhere.
 * Memory is bounded: each map keeps at most `maxKeys` keys, dropping the least recently used.
 * Peers never come here: they authenticate by certificate.
 */
import { systemClock, type Clock } from '../../../shared/poll.js';

export interface ThrottleOptions {
  maxPerSource: number;
  maxPerAccount: number;
  windowMs: number;
  /** How long a successful (account, source) pair stays exempt from the account limit. */
  trustedSourceMs?: number;
  maxKeys?: number;
  /** Time source of the windows (default systemClock). */
  clock?: Clock;
}

export type ThrottleDecision = { ok: true; ticket: ThrottleTicket } | { ok: false; retryAfterSeconds: number; limitedBy: 'source' | 'account' };

export interface ThrottleTicket {
  readonly account: string;
  readonly source: string;
  settled: boolean;
}

interface Window {
  failures: number[];
  inFlight: number;
}

/** An LRU map of sliding windows. */
class Windows {
  private readonly map = new Map<string, Window>();
  constructor(
    private readonly windowMs: number,
    private readonly maxKeys: number,
  ) {}
  get size(): number {
    return this.map.size;
  }
  peek(key: string, now: number): Window {
    const w = this.map.get(key) ?? { failures: [], inFlight: 0 };
    w.failures = w.failures.filter((t) => now - t < this.windowMs);
    return w;
  }
  touch(key: string, w: Window): void {
    this.map.delete(key);
    if (w.failures.length === 0 && w.inFlight === 0) return;
    this.map.set(key, w);
    while (this.map.size > this.maxKeys) {
      const oldest = this.map.keys().next().value as string;
      this.map.delete(oldest);
    }
  }
  retryAfter(w: Window, now: number): number {
    const first = w.failures[0];
    return first === undefined ? 1 : Math.max(1, Math.ceil((first + this.windowMs - now) / 1000));
  }
}

export class LoginThrottle {
  private readonly sources: Windows;
  private readonly accounts: Windows;
  /** `account\0source` pairs that logged in recently, with the time of the last success (LRU). */
  private readonly trusted = new Map<string, number>();
  private readonly maxKeys: number;
  private readonly clock: Clock;

  constructor(private readonly opts: ThrottleOptions) {
    this.maxKeys = opts.maxKeys ?? 10_000;
    this.clock = opts.clock ?? systemClock;
    this.sources = new Windows(opts.windowMs, this.maxKeys);
    this.accounts = new Windows(opts.windowMs, this.maxKeys);
  }

  /** Number of keys held (for the bounded-memory test). */
  get keys(): number {
    return this.sources.size + this.accounts.size + this.trusted.size;
  }

  private isTrusted(account: string, source: string, now: number): boolean {
    const at = this.trusted.get(`${account}\0${source}`);
    return at !== undefined && now - at < (this.opts.trustedSourceMs ?? 24 * 3600_000);
  }

  /**
   * Whether an attempt would be refused now, without reserving one. Also asked before a cached credential
   * is accepted: otherwise a blocked guesser would learn from 200-versus-429 whether a guess is right.
   */
  blocked(account: string, source: string, now = this.clock.now()): { retryAfterSeconds: number; limitedBy: 'source' | 'account' } | undefined {
    const s = this.sources.peek(source, now);
    if (s.failures.length + s.inFlight >= this.opts.maxPerSource) return { retryAfterSeconds: this.sources.retryAfter(s, now), limitedBy: 'source' };
    const a = this.accounts.peek(account, now);
    if (!this.isTrusted(account, source, now) && a.failures.length + a.inFlight >= this.opts.maxPerAccount) {
      return { retryAfterSeconds: this.accounts.retryAfter(a, now), limitedBy: 'account' };
    }
    return undefined;
  }

  /** Reserves an attempt (call before verifying), or says how long to wait. */
  begin(account: string, source: string, now = this.clock.now()): ThrottleDecision {
    const refused = this.blocked(account, source, now);
    if (refused) return { ok: false, ...refused };
    const s = this.sources.peek(source, now);
    const a = this.accounts.peek(account, now);
    s.inFlight++;
    a.inFlight++;
    this.sources.touch(source, s);
    this.accounts.touch(account, a);
    return { ok: true, ticket: { account, source, settled: false } };
  }

  /** The attempt failed: it stays counted, now as a failure. */
  fail(ticket: ThrottleTicket, now = this.clock.now()): void {
    this.settle(ticket, now, true);
  }

  /** The attempt succeeded: it is no longer counted, and this source is trusted for this account. */
  succeed(ticket: ThrottleTicket, now = this.clock.now()): void {
    this.settle(ticket, now, false);
    const key = `${ticket.account}\0${ticket.source}`;
    this.trusted.delete(key);
    this.trusted.set(key, now);
    while (this.trusted.size > this.maxKeys) this.trusted.delete(this.trusted.keys().next().value as string);
  }

  private settle(ticket: ThrottleTicket, now: number, failed: boolean): void {
    if (ticket.settled) return;
    ticket.settled = true;
    for (const [windows, key] of [
      [this.sources, ticket.source],
      [this.accounts, ticket.account],
    ] as const) {
      const w = windows.peek(key, now);
      w.inFlight = Math.max(0, w.inFlight - 1);
      if (failed) w.failures.push(now);
      windows.touch(key, w);
    }
  }
}
