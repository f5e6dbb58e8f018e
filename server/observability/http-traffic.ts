/**
 * HTTP traffic metrics, counted as requests finish: requests by route, method and status; failed logins
 * (a 401 to a request that presented Basic credentials); throttled requests (429) and how many distinct
 * source addresses were throttled recently. It reads only the finished response, so it needs nothing from
 * the authentication module (server/http/auth.ts) and keeps working whatever that module becomes.
 */
import type { Request, RequestHandler } from 'express';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { systemClock, type Clock } from '../../shared/poll.js';

const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);
/** A source counts as "throttled recently" for this long after its last 429. */
const THROTTLE_MEMORY_MS = 10 * 60_000;
/** Bounded memory under a spray of addresses. */
const MAX_SOURCES = 10_000;

/** The route pattern that served the request (bounded label values), never the raw URL. */
export function routeLabel(req: Request): string {
  const path = (req.route as { path?: unknown } | undefined)?.path;
  return typeof path === 'string' ? path : 'unmatched';
}

export class HttpTraffic {
  readonly middleware: RequestHandler;
  private readonly throttled = new Map<string, number>();

  constructor(registry: Registry, n: (s: string) => string, clock: Clock = systemClock) {
    const registers = [registry];
    const requests = new Counter({ name: n('http_requests_total'), help: 'HTTP requests by route pattern, method and status', labelNames: ['route', 'method', 'status'], registers });
    const duration = new Histogram({
      name: n('http_request_duration_seconds'),
      help: 'Time to the last byte of HTTP responses (streams included), by route pattern',
      labelNames: ['route', 'method'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60],
      registers,
    });
    const failedLogins = new Counter({ name: n('http_failed_logins_total'), help: 'Requests that presented wrong Basic credentials (answered 401)', registers });
    const throttledRequests = new Counter({ name: n('http_throttled_requests_total'), help: 'Requests refused with 429 (too many failed logins from their source)', registers });
    const throttled = this.throttled;
    new Gauge({
      name: n('http_throttled_sources'),
      help: 'Distinct source addresses answered 429 in the last 10 minutes',
      registers,
      collect() {
        const now = clock.now();
        for (const [k, at] of throttled) if (now - at > THROTTLE_MEMORY_MS) throttled.delete(k);
        this.set(throttled.size);
      },
    });
    this.middleware = (req, res, next) => {
      const t0 = performance.now();
      res.on('finish', () => {
        const method = METHODS.has(req.method) ? req.method : 'OTHER';
        const route = routeLabel(req);
        requests.inc({ route, method, status: String(res.statusCode) });
        duration.observe({ route, method }, (performance.now() - t0) / 1000);
        if (res.statusCode === 401 && /^basic\s/i.test(String(req.headers.authorization ?? ''))) failedLogins.inc();
        if (res.statusCode === 429) {
          throttledRequests.inc();
          const source = req.socket.remoteAddress ?? 'unknown';
          throttled.delete(source);
          throttled.set(source, clock.now());
          while (throttled.size > MAX_SOURCES) throttled.delete(throttled.keys().next().value as string);
        }
      });
      next();
    };
  }
}
