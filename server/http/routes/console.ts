/**
 * The web console (docs/OBSERVABILITY.md, web console): a few static files of the package's console/ folder,
 * served on the dispatcher's own HTTPS port under /ui/. The files are read once at start from a fixed
 * allow list (no path from a request ever reaches the file system) and hold no data: everything they show
 * comes from the authenticated REST API, called by the page with the user's Basic credentials (kept in
 * the page's memory only). So the files themselves need no login, like /v1/health.
 *
 * Strict Content-Security-Policy on every console response: scripts, styles and fetches from this origin
 * only, nothing inline, no frames, no forms posting elsewhere (docs/SECURITY.md, web console).
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { RequestHandler, Response } from 'express';
import { DispatcherError } from '../../../api/errors.js';
import type { RouteModule } from '../app.js';

/** The package's console/ folder (dist/server/http/routes → ../../../../console). */
export const CONSOLE_DIR = fileURLToPath(new URL('../../../../console/', import.meta.url));

const FILES: Record<string, string> = {
  'index.html': 'text/html; charset=utf-8',
  'app.js': 'text/javascript; charset=utf-8',
  'views.js': 'text/javascript; charset=utf-8',
  'api.js': 'text/javascript; charset=utf-8',
  'style.css': 'text/css; charset=utf-8',
};

export const CONSOLE_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self'",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

/** The page asks with this header; its 401s then carry no WWW-Authenticate, so the browser shows our login form instead of its own prompt. */
export const CONSOLE_REQUEST_HEADER = 'x-dispatcher-console';

const withoutBrowserPrompt: RequestHandler = (req, res, next) => {
  if (req.headers[CONSOLE_REQUEST_HEADER] === '1') {
    const set = res.setHeader.bind(res);
    res.setHeader = ((name: string, value: number | string | readonly string[]) => (name.toLowerCase() === 'www-authenticate' ? res : set(name, value))) as Response['setHeader'];
  }
  next();
};

export const consoleModule: RouteModule = {
  name: 'console',
  registerPublic(router) {
    const files = new Map(Object.entries(FILES).map(([name, type]) => [name, { type, body: readFileSync(CONSOLE_DIR + name) }]));
    const send = (res: Response, name: string) => {
      const f = files.get(name)!;
      res.setHeader('content-security-policy', CONSOLE_CSP);
      res.setHeader('cache-control', 'no-cache');
      res.type(f.type).send(f.body);
    };
    router.use(withoutBrowserPrompt);
    // Express routes are not strict about a trailing slash: this serves /ui and /ui/ (the page's links are absolute).
    router.get('/ui/', (_req, res) => send(res, 'index.html'));
    router.get('/ui/:file', (req, res) => {
      const name = String(req.params.file);
      if (!files.has(name)) throw new DispatcherError('not_found', `no console file ${name}`);
      send(res, name);
    });
  },
  register() {},
  openapi: {
    '/ui/': { get: { operationId: 'console', summary: 'The web console (static page; its data comes from this API with your login)', security: [], responses: { '200': { description: 'HTML page', content: { 'text/html': { schema: { type: 'string' } } } } } } },
    '/ui/{file}': {
      get: {
        operationId: 'consoleFile',
        summary: 'A static file of the web console (fixed list: app.js, api.js, views.js, style.css, index.html)',
        security: [],
        parameters: [{ name: 'file', in: 'path', required: true, schema: { type: 'string' } }],
        responses: { '200': { description: 'the file' }, '404': { description: 'not a console file' } },
      },
    },
  },
};
