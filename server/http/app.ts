/**
 * The express application: helmet, JSON body limit, authentication, route modules, audit, one error
 * handler. Routes come in RouteModules so that later features (cluster operations) add a module instead
 * of editing this file; each module also brings its OpenAPI paths, and a test checks both stay in step.
 */
import express, { type Request, type RequestHandler } from 'express';
import helmet from 'helmet';
import type { ZodType } from 'zod';
import { DispatcherError } from '../../api/errors.js';
import { prototypeKeyProblems, zodProblems } from '../../api/plan.js';
import type { DispatcherConfig } from '../config.js';
import type { Logger } from '../log.js';
import type { Supervisor } from '../supervisor/types.js';
import type { ClusterService } from '../cluster/service.js';
import { authUser, sourceAddress, type Authenticator, type PeerPin, type PeerTrust } from './auth.js';
import { errorHandler, notFoundHandler } from './errors.js';

export interface Identity {
  id: string;
  version: string;
  /** https://ADDRESS:PORT this dispatcher is reached at. */
  endpoint: string;
  /** SHA-256 fingerprint of its certificate (pinned by peers and clients). */
  fingerprint: string;
}

export type AuditOutcome = 'success' | 'failure' | 'denied';

/**
 * Everything route handlers may use. Fields filled at start by startDaemon's `extendContext` (the
 * cluster service, server/cluster-daemon.ts) are declared here too, so a route finds what it needs by type.
 */
export interface AppContext {
  config: DispatcherConfig;
  logger: Logger;
  supervisor: Supervisor;
  identity: Identity;
  /** The cluster side (server/cluster/service.ts), set by extendContext before any route is served. */
  cluster: ClusterService;
  /** Writes an audit entry (user, source address, action, outcome) for a change requested by `req`. */
  audit(req: Request, action: string, outcome: AuditOutcome, extra?: Record<string, unknown>): void;
  /** The peers the active plan pins (set by the cluster runtime; without it no peer is accepted). */
  peerTrust?: PeerTrust;
}

/** Node routes (mounted at NODE_PREFIX): only peer dispatchers call them, by mutual TLS. */
export const NODE_PREFIX = '/v1/node';

/** Registers first-contact routes: each needs an operator credential AND a certificate the offered plan pins. */
export interface FirstContactRouter {
  post(path: string, offeredPins: (req: Request) => PeerPin[], handler: RequestHandler): void;
}

export interface RouteModule {
  name: string;
  /** Operator routes: HTTP Basic accounts, or root on the control socket. Never under /v1/node. */
  register(router: express.Router, ctx: AppContext): void;
  /** Peer routes, paths relative to /v1/node: only dispatchers the active plan pins, by client certificate. */
  registerPeer?(router: express.Router, ctx: AppContext): void;
  /** First-contact routes, paths relative to /v1/node (adopting a plan: no active plan pins the caller yet). */
  registerFirstContact?(router: FirstContactRouter, ctx: AppContext): void;
  /** Routes without authentication (keep these to the bare minimum, e.g. health). */
  registerPublic?(router: express.Router, ctx: AppContext): void;
  /** OpenAPI 3.1 `paths` object for every route this module registers (public or not). */
  openapi: Record<string, unknown>;
}

export interface RegisteredRoute {
  module: string;
  method: string;
  /** Express path, e.g. /v1/processes/:id */
  path: string;
  public: boolean;
  /** Who may call it. */
  audience: 'public' | 'operator' | 'peer' | 'first-contact';
}

export interface CreateAppOptions {
  authenticator: Authenticator;
  /** Middleware in front of everything else, authentication included (e.g. the HTTP metrics). */
  before?: RequestHandler[];
  /** Authorization after authentication and audit, before the protected routes (e.g. read-only users). */
  authorize?: RequestHandler[];
}

/** Lists the routes an express Router holds (flat routers as modules build them). */
export function routesOf(router: express.Router): { method: string; path: string }[] {
  const out: { method: string; path: string }[] = [];
  for (const layer of (router as unknown as { stack: { route?: { path: string; methods: Record<string, boolean> } }[] }).stack) {
    if (!layer.route) continue;
    for (const [m, on] of Object.entries(layer.route.methods)) if (on && m !== '_all') out.push({ method: m.toUpperCase(), path: layer.route.path });
  }
  return out;
}

/** Express `:param` to OpenAPI `{param}`. */
export function toOpenApiPath(path: string): string {
  return path.replace(/:([A-Za-z0-9_]+)/g, '{$1}');
}

/** Audit every authenticated request that changes anything (any method but GET/HEAD/OPTIONS). */
function auditMiddleware(ctx: AppContext): RequestHandler {
  return (req, res, next) => {
    if (req.method === 'GET' || req.method === 'HEAD' || req.method === 'OPTIONS') return next();
    // Read now: once the answer is sent the connection may be gone, and with it the peer address.
    const source = sourceAddress(req);
    res.on('finish', () => {
      const outcome: AuditOutcome = res.statusCode < 400 ? 'success' : res.statusCode === 401 || res.statusCode === 403 ? 'denied' : 'failure';
      // A request that started an operation answers 202 with its Location: the trail names the operation.
      const location = res.getHeader('location');
      const operation = typeof location === 'string' ? /^\/v1\/operations\/([^/?#]+)$/.exec(location)?.[1] : undefined;
      ctx.audit(req, `${req.method} ${req.route ? req.baseUrl + String(req.route.path) : req.path}`, outcome, { status: res.statusCode, source, ...(operation ? { operation } : {}) });
    });
    next();
  };
}

/** Standard audit sink: one structured log line with `audit: true`. */
export function logAudit(logger: Logger): AppContext['audit'] {
  return (req, action, outcome, extra = {}) => {
    logger.info('audit', { audit: true, user: authUser(req)?.name ?? null, source: sourceAddress(req), action, path: req.originalUrl.split('?')[0], outcome, ...extra });
  };
}

export function createApp(ctx: AppContext, modules: RouteModule[], opts: CreateAppOptions): express.Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.set('query parser', 'simple'); // no nested objects from query strings
  app.use(helmet());
  for (const mw of opts.before ?? []) app.use(mw);
  app.use(express.json({ limit: ctx.config.maxBodyBytes, type: ['application/json', 'application/*+json'] }));

  const routes: RegisteredRoute[] = [];
  const publicRouter = express.Router();
  const operatorRouter = express.Router();
  const peerRouter = express.Router();
  const firstContactRouter = express.Router();
  const audit = auditMiddleware(ctx);
  const firstContact: FirstContactRouter = {
    post: (path, offeredPins, handler) => firstContactRouter.post(path, opts.authenticator.firstContact(offeredPins), audit, handler),
  };
  const collect = (r: express.Router, module: string, audience: RegisteredRoute['audience'], prefix = '') =>
    routes.push(...routesOf(r).map((x) => ({ method: x.method, path: prefix + x.path, module, public: audience === 'public', audience })));
  for (const m of modules) {
    if (m.registerPublic) {
      const r = express.Router();
      m.registerPublic(r, ctx);
      collect(r, m.name, 'public');
      publicRouter.use(r);
    }
    const r = express.Router();
    m.register(r, ctx);
    // The class "an operator route under the node prefix" cannot exist: refuse to start with one.
    const misplaced = routesOf(r).filter((x) => x.path.toLowerCase().startsWith(NODE_PREFIX));
    if (misplaced.length) throw new DispatcherError('internal', `module ${m.name} registers ${misplaced.map((x) => x.path).join(', ')} as operator routes; node routes belong in registerPeer`);
    collect(r, m.name, 'operator');
    operatorRouter.use(r);
    if (m.registerPeer) {
      const pr = express.Router();
      m.registerPeer(pr, ctx);
      collect(pr, m.name, 'peer', NODE_PREFIX);
      peerRouter.use(pr);
    }
    if (m.registerFirstContact) {
      const before = routesOf(firstContactRouter).length;
      m.registerFirstContact(firstContact, ctx);
      routes.push(...routesOf(firstContactRouter).slice(before).map((x) => ({ method: x.method, path: NODE_PREFIX + x.path, module: m.name, public: false, audience: 'first-contact' as const })));
    }
  }
  app.locals.routes = routes;

  // Each audience is mounted behind its own gate: a route is reachable only through the gate of the router
  // it was registered in (express matches mount paths and routes the same way, case-insensitively).
  app.use(publicRouter);
  app.use(NODE_PREFIX, firstContactRouter);
  app.use(NODE_PREFIX, opts.authenticator.peer, audit, peerRouter);
  app.use(opts.authenticator.operator, audit, ...(opts.authorize ?? []), operatorRouter);
  app.use(notFoundHandler);
  app.use(errorHandler(ctx.logger));
  return app;
}

/** The routes createApp registered (for the OpenAPI consistency test and the openapi builder). */
export function registeredRoutes(app: express.Express): RegisteredRoute[] {
  return app.locals.routes as RegisteredRoute[];
}

/** Validates `value` with a zod schema; on failure a DispatcherError('validation_failed') listing every problem. */
export function validate<S extends ZodType>(schema: S, value: unknown, what = 'request body'): ReturnType<S['parse']> {
  // A "__proto__" key anywhere is refused, not silently dropped by the schema (docs/SECURITY.md).
  const protoKeys = prototypeKeyProblems(value);
  const r = schema.safeParse(value);
  if (!r.success || protoKeys.length) {
    throw new DispatcherError('validation_failed', `${what} is invalid`, { problems: [...protoKeys, ...(r.success ? [] : zodProblems(r.error))] });
  }
  return r.data as ReturnType<S['parse']>;
}

/** Express 5 forwards rejected promises itself; this only narrows handler types for async code. */
export function asyncHandler(fn: (req: express.Request, res: express.Response) => Promise<void>): RequestHandler {
  return (req, res, next) => {
    fn(req, res).catch(next);
  };
}
