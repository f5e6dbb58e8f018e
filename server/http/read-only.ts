/**
 * Read-only accounts (config `readOnlyUsers`), e.g. the one Prometheus scrapes /metrics with: such a user
 * may read (GET, HEAD) and nothing else, so a scrape password that leaks from a monitoring host cannot
 * shut a cluster down or change its firewall (docs/SECURITY.md, metrics and console). An allow list of
 * methods, not a deny list of routes: a route added later is refused to them unless it only reads.
 */
import type { RequestHandler } from 'express';
import { DispatcherError } from '../../api/errors.js';
import { authUser } from './auth.js';

const READ_METHODS = new Set(['GET', 'HEAD']);

export function readOnlyUsers(names: readonly string[]): RequestHandler {
  const readOnly = new Set(names);
  return (req, _res, next) => {
    const user = authUser(req);
    if (user && user.via !== 'socket' && readOnly.has(user.name) && !READ_METHODS.has(req.method)) {
      return next(new DispatcherError('forbidden', `user ${user.name} may only read (GET): it is listed in readOnlyUsers`));
    }
    next();
  };
}
