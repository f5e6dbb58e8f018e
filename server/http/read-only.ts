/**
 * Read-only accounts (config `readOnlyUsers`), e.g. the one Prometheus scrapes /metrics with: such a user
 * may read and nothing else, so a scrape password that leaks from a monitoring host cannot shut a cluster
 * down or change its firewall (docs/SECURITY.md, metrics and console). An allow list, not a deny list of
 * routes: GET and HEAD, plus the few POST routes named below that only compute an answer; a route added
 * later is refused to them unless it only reads.
 */
import type { RequestHandler } from 'express';
import { DispatcherError } from '../../api/errors.js';
import { authUser } from './auth.js';

const READ_METHODS = new Set(['GET', 'HEAD']);

/**
 * POST routes that change nothing, by exact path (a request body too large for a query string is their only
 * reason to be POST). A path that only routes to one of these through Express's lenient matching (another
 * case, a trailing slash) is not on the list and is refused: the list fails closed.
 *   /v1/cluster/plan/diff — the dry run of a plan change (server/http/routes/plan-versions.ts): stores nothing.
 */
export const READ_ONLY_POSTS: ReadonlySet<string> = new Set(['/v1/cluster/plan/diff']);

/** Pure: may a read-only account make this request? */
export function readOnlyAllows(method: string, path: string): boolean {
  return READ_METHODS.has(method) || (method === 'POST' && READ_ONLY_POSTS.has(path));
}

export function readOnlyUsers(names: readonly string[]): RequestHandler {
  const readOnly = new Set(names);
  return (req, _res, next) => {
    const user = authUser(req);
    if (user && user.via !== 'socket' && readOnly.has(user.name) && !readOnlyAllows(req.method, req.path)) {
      return next(new DispatcherError('forbidden', `user ${user.name} may only read (GET, and the dry run POST /v1/cluster/plan/diff): it is listed in readOnlyUsers`));
    }
    next();
  };
}
