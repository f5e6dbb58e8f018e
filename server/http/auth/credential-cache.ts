/**
 * Bounded TTL cache of verified credentials: scrypt costs ~46 ms, so a pair that verified recently is
 * accepted by an HMAC of user+password (keyed by a per-process random key, so the cache never holds
 * anything a memory dump could brute-force cheaply). Cleared when the users file changes.
 */
import { createHmac, randomBytes } from 'node:crypto';
import { systemClock, type Clock } from '../../../shared/poll.js';

export class CredentialCache {
  private readonly key = randomBytes(32);
  private readonly entries = new Map<string, { user: string; expires: number }>();
  private generation = -1;
  constructor(
    private readonly ttlMs: number,
    private readonly maxEntries: number,
    private readonly clock: Clock = systemClock,
  ) {}
  /** The keyed digest of a pair (also used to coalesce identical checks in flight). */
  digest(user: string, password: string): string {
    return createHmac('sha256', this.key).update(user).update('\0').update(password).digest('base64');
  }
  /** Drops everything when the users' generation changed. */
  sync(generation: number): void {
    if (generation !== this.generation) {
      this.entries.clear();
      this.generation = generation;
    }
  }
  has(user: string, password: string, now = this.clock.now()): boolean {
    if (this.ttlMs <= 0 || this.maxEntries <= 0) return false;
    const d = this.digest(user, password);
    const e = this.entries.get(d);
    if (!e) return false;
    if (e.expires <= now || e.user !== user) {
      this.entries.delete(d);
      return false;
    }
    return true;
  }
  add(user: string, password: string, now = this.clock.now()): void {
    if (this.ttlMs <= 0 || this.maxEntries <= 0) return;
    const d = this.digest(user, password);
    this.entries.delete(d);
    this.entries.set(d, { user, expires: now + this.ttlMs });
    while (this.entries.size > this.maxEntries) this.entries.delete(this.entries.keys().next().value as string);
  }
}
