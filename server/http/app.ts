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
import { authUser, sourceAddress, type Authenticator } from './auth.js';
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
 * Everything route handlers may use. An interface so that later modules can add fields by declaration
 * merging (`declare module '.../server/http/app.js' { interface AppContext { plans: PlanStore } }`) and
 * pass them to startDaemon's `extendContext`.
 */
export interface AppContext {
  config: DispatcherConfig;
  logger: Logger;
  supervisor: Supervisor;
  identity: Identity;
  /** Writes an audit entry (user, source address, action, outcome) for a change requested by `req`. */
  audit(req: Request, action: string, outcome: AuditOutcome, extra?: Record<string, unknown>): void;
}

export interface RouteModule {
  name: string;
  /** Routes behind authentication (HTTP Basic, or the control socket). */
  register(router: express.Router, ctx: AppContext): void;
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
}

export interface CreateAppOptions {
  authenticator: Authenticator;
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
    res.on('finish', () => {
      const outcome: AuditOutcome = res.statusCode < 400 ? 'success' : res.statusCode === 401 || res.statusCode === 403 ? 'denied' : 'failure';
      ctx.audit(req, `${req.method} ${req.route?.path ?? req.path}`, outcome, { status: res.statusCode });
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
  app.use(express.json({ limit: ctx.config.maxBodyBytes, type: ['application/json', 'application/*+json'] }));

  const routes: RegisteredRoute[] = [];
  const publicRouter = express.Router();
  const protectedRouter = express.Router();
  for (const m of modules) {
    if (m.registerPublic) {
      const r = express.Router();
      m.registerPublic(r, ctx);
      routes.push(...routesOf(r).map((x) => ({ ...x, module: m.name, public: true })));
      publicRouter.use(r);
    }
    const r = express.Router();
    m.register(r, ctx);
    routes.push(...routesOf(r).map((x) => ({ ...x, module: m.name, public: false })));
    protectedRouter.use(r);
  }
  app.locals.routes = routes;

  app.use(publicRouter);
  app.use(opts.authenticator.middleware);
  app.use(auditMiddleware(ctx));
  app.use(protectedRouter);
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
