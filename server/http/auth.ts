/**
 * Authentication: HTTP Basic (passport-http BasicStrategy, on a Passport instance of our own — no global
 * state, no sessions, no Digest), with
 *  - a verified-credential cache: scrypt costs ~46 ms, so a pair that verified recently is accepted by an
 *    HMAC of user+password (keyed by a per-process random key, so the cache never holds anything a
 *    memory dump could brute-force cheaply); bounded, short TTL, cleared when the users file changes;
 *  - a failed-login limit per source address: after `maxFailures` failures within `failWindowMs`, 429 with
 *    Retry-After, checked BEFORE scrypt so a flood cannot burn the CPU.
 * Requests from the control socket are already authenticated by file permissions (user 'root@socket').
 */
import { createHmac, randomBytes } from 'node:crypto';
import type { Request, RequestHandler } from 'express';
import passport from 'passport';
import { BasicStrategy } from 'passport-http';
import { DispatcherError } from '../../api/errors.js';
import type { UserDirectory } from '../users.js';
import type { Logger } from '../log.js';

export interface AuthOptions {
  cacheTtlMs: number;
  cacheMaxEntries: number;
  maxFailures: number;
  failWindowMs: number;
}

export interface AuthUser {
  name: string;
  via: 'basic' | 'socket';
}

export const SOCKET_USER = 'root@socket';
export const REALM = 'cluster-dispatcher';

/** Set by the control-socket server on each request object (cannot come from the network). */
export const VIA_SOCKET = Symbol('dispatcher.viaControlSocket');

export function isSocketRequest(req: Request): boolean {
  return (req as unknown as Record<symbol, unknown>)[VIA_SOCKET] === true;
}

export function authUser(req: Request): AuthUser | undefined {
  return req.user as AuthUser | undefined;
}

/** Source address for rate limiting and audit (no proxy trust: the socket's peer address). */
export function sourceAddress(req: Request): string {
  return isSocketRequest(req) ? 'unix-socket' : req.socket.remoteAddress ?? 'unknown';
}

/** Pure sliding-window counter of failures per key. `now` injected for tests. */
export class FailureLimiter {
  private readonly failures = new Map<string, number[]>();
  constructor(
    private readonly max: number,
    private readonly windowMs: number,
    private readonly maxKeys = 10_000,
  ) {}
  /** Seconds to wait if the key is blocked now, else 0. */
  retryAfter(key: string, now = Date.now()): number {
    const list = this.prune(key, now);
    if (list.length < this.max) return 0;
    return Math.max(1, Math.ceil((list[0] + this.windowMs - now) / 1000));
  }
  fail(key: string, now = Date.now()): void {
    const list = this.prune(key, now);
    list.push(now);
    this.failures.delete(key);
    this.failures.set(key, list);
    // Bounded memory under a spray of source addresses: drop the least recently failing.
    while (this.failures.size > this.maxKeys) this.failures.delete(this.failures.keys().next().value as string);
  }
  reset(key: string): void {
    this.failures.delete(key);
  }
  private prune(key: string, now: number): number[] {
    const list = (this.failures.get(key) ?? []).filter((t) => now - t < this.windowMs);
    if (list.length) this.failures.set(key, list);
    else this.failures.delete(key);
    return list;
  }
}

/** Bounded TTL cache of verified credential digests. */
export class CredentialCache {
  private readonly key = randomBytes(32);
  private readonly entries = new Map<string, { user: string; expires: number }>();
  private generation = -1;
  constructor(
    private readonly ttlMs: number,
    private readonly maxEntries: number,
  ) {}
  private digest(user: string, password: string): string {
    return createHmac('sha256', this.key).update(user).update('\0').update(password).digest('base64');
  }
  /** Drops everything when the users' generation changed. */
  sync(generation: number): void {
    if (generation !== this.generation) {
      this.entries.clear();
      this.generation = generation;
    }
  }
  has(user: string, password: string, now = Date.now()): boolean {
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
  add(user: string, password: string, now = Date.now()): void {
    if (this.ttlMs <= 0 || this.maxEntries <= 0) return;
    const d = this.digest(user, password);
    this.entries.delete(d);
    this.entries.set(d, { user, expires: now + this.ttlMs });
    while (this.entries.size > this.maxEntries) this.entries.delete(this.entries.keys().next().value as string);
  }
}

export interface Authenticator {
  middleware: RequestHandler;
  limiter: FailureLimiter;
  cache: CredentialCache;
}

export function createAuthenticator(users: UserDirectory, opts: AuthOptions, logger: Logger): Authenticator {
  const limiter = new FailureLimiter(opts.maxFailures, opts.failWindowMs);
  const cache = new CredentialCache(opts.cacheTtlMs, opts.cacheMaxEntries);
  const pp = new passport.Passport();
  pp.use(
    'basic',
    new BasicStrategy({ realm: REALM }, (user: string, password: string, done: (err: unknown, user?: AuthUser | false) => void) => {
      (async () => {
        cache.sync(await users.generation());
        if (cache.has(user, password)) return { name: user, via: 'basic' as const };
        if (await users.verify(user, password)) {
          cache.add(user, password);
          return { name: user, via: 'basic' as const };
        }
        return false as const;
      })().then(
        (u) => done(null, u),
        (err) => done(err),
      );
    }),
  );
  const middleware: RequestHandler = (req, res, next) => {
    if (isSocketRequest(req)) {
      req.user = { name: SOCKET_USER, via: 'socket' } satisfies AuthUser;
      return next();
    }
    const source = sourceAddress(req);
    const wait = limiter.retryAfter(source);
    if (wait > 0) {
      res.setHeader('Retry-After', String(wait));
      return next(new DispatcherError('too_many_requests', 'too many failed logins from this address; try again later', { details: { retryAfterSeconds: wait } }));
    }
    // Custom callback: passport would otherwise answer 401 in text/plain; we want problem+json.
    pp.authenticate('basic', { session: false }, (err: unknown, user: AuthUser | false, challenge: unknown) => {
      if (err) return next(err);
      if (!user) {
        const presented = typeof req.headers.authorization === 'string' && /^basic\s/i.test(req.headers.authorization);
        if (presented) {
          limiter.fail(source);
          logger.warn('login failed', { source, path: req.path });
        }
        res.setHeader('WWW-Authenticate', typeof challenge === 'string' ? challenge : `Basic realm="${REALM}"`);
        return next(new DispatcherError('unauthorized', presented ? 'wrong user name or password' : 'authentication required'));
      }
      limiter.reset(source);
      req.user = user;
      next();
    })(req, res, next);
  };
  return { middleware, limiter, cache };
}
