/**
 * Who is calling, and may they use this route? Three kinds of caller (docs/SECURITY.md, "Identities"):
 *  - an operator account: HTTP Basic over TLS (strict header parsing, scrypt, verified-credential cache,
 *    throttled per account and per source with checks in flight counted) — operator routes only;
 *  - root on the machine: the 0600 control socket — operator routes only;
 *  - a peer dispatcher: mutual TLS, its certificate's fingerprint pinned by the ACTIVE plan — `/v1/node/*`
 *    only, never throttled, no password. The one exception is first contact (adopting a plan): it needs an
 *    operator credential AND a certificate the offered plan pins.
 * Each kind of route is mounted behind its own gate (server/http/app.ts), so a route's gate follows from
 * where it is registered, not from a path comparison.
 */
import type { Request, RequestHandler, Response } from 'express';
import { Passport } from 'passport';
import { BasicStrategy } from 'passport-http';
import { DispatcherError } from '../../api/errors.js';
import type { UserDirectory } from '../users.js';
import type { Logger } from '../log.js';
import { parseBasicCredential, type BasicCredential } from './auth/basic-credential.js';
import { CredentialCache } from './auth/credential-cache.js';
import { LoginThrottle } from './auth/throttle.js';
import { matchPin, presentedFingerprint, type PeerPin } from './auth/peer-certificate.js';

export { CredentialCache } from './auth/credential-cache.js';
export { LoginThrottle } from './auth/throttle.js';
export type { PeerPin } from './auth/peer-certificate.js';

export interface AuthOptions {
  cacheTtlMs: number;
  cacheMaxEntries: number;
  /** Attempts per source address within failWindowMs. */
  maxFailures: number;
  /** Attempts per account within failWindowMs, over all sources. */
  maxAccountFailures: number;
  failWindowMs: number;
}

export interface AuthUser {
  name: string;
  via: 'basic' | 'socket' | 'peer';
  /** May remove accounts (root on the socket, or an account with role admin). */
  admin: boolean;
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

/** Source address for throttling and audit (no proxy trust: the socket's peer address). */
export function sourceAddress(req: Request): string {
  return isSocketRequest(req) ? 'unix-socket' : req.socket.remoteAddress ?? 'unknown';
}

/** Where the pins of the active plan come from (the cluster runtime; none without a plan). */
export interface PeerTrust {
  /** Dispatchers the active plan pins, this dispatcher excluded. */
  activePins(): PeerPin[];
}

export interface Authenticator {
  /** Operators (Basic) and root (socket). */
  operator: RequestHandler;
  /** Peers pinned by the active plan (mutual TLS). */
  peer: RequestHandler;
  /** First contact: an operator credential plus a certificate pinned by the plan offered in the request. */
  firstContact(offeredPins: (req: Request) => PeerPin[]): RequestHandler;
  throttle: LoginThrottle;
  cache: CredentialCache;
}

export function createAuthenticator(users: UserDirectory, opts: AuthOptions, logger: Logger, trust: PeerTrust = { activePins: () => [] }): Authenticator {
  const throttle = new LoginThrottle({ maxPerSource: opts.maxFailures, maxPerAccount: opts.maxAccountFailures, windowMs: opts.failWindowMs });
  const cache = new CredentialCache(opts.cacheTtlMs, opts.cacheMaxEntries);
  /** Checks of identical credentials in flight share one scrypt check and one throttle reservation. */
  const inFlight = new Map<string, Promise<boolean>>();

  const challenge = (res: Response) => res.setHeader('WWW-Authenticate', `Basic realm="${REALM}"`);

  /**
   * The account behind a user name and password, or false; throws 429 while the account or the source is
   * throttled. Identical checks in flight share one scrypt check and one throttle reservation.
   */
  async function checkCredential(req: Request, user: string, password: string): Promise<AuthUser | false> {
    const res = req.res!;
    const account = async (): Promise<AuthUser> => ({ name: user, via: 'basic', admin: await users.isAdmin(user) });
    const source = sourceAddress(req);
    const refuse = (r: { retryAfterSeconds: number; limitedBy: 'source' | 'account' }) => {
      res.setHeader('Retry-After', String(r.retryAfterSeconds));
      // No user name in these lines: a mistyped one may be a password.
      logger.warn('login throttled', { source, limitedBy: r.limitedBy });
      return new DispatcherError('too_many_requests', `too many failed logins ${r.limitedBy === 'source' ? 'from this address' : 'for this account'}; try again later`, {
        details: { retryAfterSeconds: r.retryAfterSeconds },
      });
    };
    // Blocked means blocked, cached or not (see LoginThrottle.blocked).
    const blocked = throttle.blocked(user, source);
    if (blocked) throw refuse(blocked);
    cache.sync(await users.generation());
    if (cache.has(user, password)) return account();
    const digest = cache.digest(user, password);
    let check = inFlight.get(digest);
    if (!check) {
      const decision = throttle.begin(user, source);
      if (!decision.ok) throw refuse(decision);
      check = users.verify(user, password).then(
        (ok) => {
          if (ok) {
            throttle.succeed(decision.ticket);
            cache.add(user, password);
          } else {
            throttle.fail(decision.ticket);
            logger.warn('login failed', { source, path: req.path });
          }
          return ok;
        },
        (err) => {
          throttle.fail(decision.ticket);
          throw err;
        },
      );
      inFlight.set(digest, check);
      void check.finally(() => inFlight.delete(digest)).catch(() => {});
    }
    return (await check) ? account() : false;
  }

  /**
   * The hot path (docs/BENCHMARKS.md, "Daemon memory and authenticated throughput"): a pair that verified
   * recently and is not throttled is accepted here, from the strictly parsed header, without a trip through
   * passport (whose per-request strategy objects and deprecated Buffer() decoding cost a third of an
   * authenticated request). Anything else goes through passport-http and scrypt below.
   */
  async function acceptCached(req: Request, cred: BasicCredential): Promise<AuthUser | undefined> {
    if (throttle.blocked(cred.user, sourceAddress(req))) return undefined;
    cache.sync(await users.generation());
    if (!cache.has(cred.user, cred.password)) return undefined;
    return { name: cred.user, via: 'basic', admin: await users.isAdmin(cred.user) };
  }

  /**
   * acceptCached without a promise: while the users file was looked at within its stat interval (every
   * request but about one per interval under load), a cached pair is accepted before this middleware returns.
   * An authenticated request used to pass through five async functions here (a promise and a microtask
   * turn each); it cost the daemon 1.25× a health request, and rounds of the paired benchmark fell either
   * side of the 0.8 target (docs/BENCHMARKS.md, "Daemon memory and authenticated throughput"). Anything
   * else (no recent read, a malformed header, not cached, throttled) answers undefined and takes the path
   * below, unchanged.
   */
  function acceptCachedNow(req: Request): AuthUser | undefined {
    const directory = users.current?.();
    if (!directory) return undefined;
    let cred: BasicCredential | undefined;
    try {
      cred = parseBasicCredential(req.headers.authorization);
    } catch {
      return undefined; // the full path refuses it with its 401 and challenge
    }
    if (!cred || throttle.blocked(cred.user, sourceAddress(req))) return undefined;
    cache.sync(directory.generation);
    if (!cache.has(cred.user, cred.password)) return undefined;
    return { name: cred.user, via: 'basic', admin: directory.isAdmin(cred.user) };
  }

  // passport-http's BasicStrategy reads the header and hands the pair to checkCredential, on a Passport
  // instance of our own (no global state, no session). It splits at the first ':' and drops what follows a
  // second one, so parseBasicCredential refuses such headers before it runs (docs/SECURITY.md, identities).
  const basic = new Passport();
  basic.use(
    'basic',
    new BasicStrategy({ realm: REALM, passReqToCallback: true }, (req: Request, user: string, password: string, done: (err: unknown, user?: AuthUser | false) => void) => {
      checkCredential(req, user, password).then((u) => done(null, u), (err) => done(err));
    }),
  );
  const passportBasic = (req: Request, res: Response): Promise<AuthUser | false> =>
    new Promise((resolve, reject) => {
      const middleware = basic.authenticate('basic', { session: false }, (err: unknown, user: AuthUser | false) => (err ? reject(err) : resolve(user || false)));
      middleware(req, res, reject);
    });

  /** Verifies the Basic credential of `req`: the account, undefined when none was presented, or throws 401/429. */
  async function verifyOperator(req: Request, res: Response): Promise<AuthUser | undefined> {
    let cred: BasicCredential | undefined;
    try {
      cred = parseBasicCredential(req.headers.authorization);
    } catch (e) {
      challenge(res);
      throw e;
    }
    if (!cred) return undefined;
    const cached = await acceptCached(req, cred);
    if (cached) return cached;
    const user = await passportBasic(req, res);
    if (user) return user;
    challenge(res);
    throw new DispatcherError('unauthorized', 'wrong user name or password');
  }

  const gate =
    (fn: (req: Request, res: Response) => Promise<AuthUser>): RequestHandler =>
    (req, res, next) => {
      fn(req, res).then(
        (user) => {
          req.user = user;
          next();
        },
        (err) => next(err),
      );
    };

  /** Why a caller that is not an accepted peer gets no node route: 401 when unknown, 403 when known. */
  async function refusePeer(req: Request, res: Response, why: string): Promise<never> {
    if (isSocketRequest(req)) throw new DispatcherError('forbidden', `node routes answer only peer dispatchers (by certificate); use /v1/cluster/* on the control socket`);
    const operator = await verifyOperator(req, res);
    if (operator) throw new DispatcherError('forbidden', `operator accounts cannot use node routes (${operator.name}); they answer only peer dispatchers of the active plan, by certificate`);
    if (presentedFingerprint(req)) throw new DispatcherError('forbidden', why);
    challenge(res);
    throw new DispatcherError('unauthorized', 'node routes need the client certificate of a peer dispatcher of the active plan');
  }

  const operatorGate = gate(async (req, res) => {
    if (isSocketRequest(req)) return { name: SOCKET_USER, via: 'socket', admin: true };
    const user = await verifyOperator(req, res);
    if (user) return user;
    challenge(res);
    throw new DispatcherError('unauthorized', 'authentication required');
  });

  return {
    throttle,
    cache,
    operator: (req, res, next) => {
      const cached = isSocketRequest(req) ? undefined : acceptCachedNow(req);
      if (!cached) return operatorGate(req, res, next);
      req.user = cached;
      next();
    },
    peer: gate(async (req, res) => {
      const pin = isSocketRequest(req) ? undefined : matchPin(trust.activePins(), presentedFingerprint(req));
      if (pin) return { name: `peer:${pin.id}`, via: 'peer', admin: false };
      return refusePeer(req, res, 'this certificate is not pinned by the active plan of this dispatcher');
    }),
    firstContact: (offeredPins) =>
      gate(async (req, res) => {
        if (isSocketRequest(req)) throw new DispatcherError('forbidden', 'node routes answer only peer dispatchers (by certificate)');
        const operator = await verifyOperator(req, res);
        if (!operator) {
          challenge(res);
          throw new DispatcherError('unauthorized', 'first contact needs the operator credential of this dispatcher');
        }
        const pin = matchPin(offeredPins(req), presentedFingerprint(req));
        if (!pin) throw new DispatcherError('forbidden', `operator accounts cannot use node routes (${operator.name}); the caller must present the certificate of a dispatcher the offered plan pins`);
        return { name: `peer:${pin.id}(operator ${operator.name})`, via: 'peer', admin: false };
      }),
  };
}

declare module 'express-serve-static-core' {
  interface Request {
    /** The authenticated caller, set by the gates above. */
    user?: AuthUser;
  }
}
