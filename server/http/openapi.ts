/** The OpenAPI 3.1 document, assembled from every RouteModule's `paths`. */
import type { Identity, RouteModule } from './app.js';
import { DispatcherError } from '../../api/errors.js';

export const problemSchema = {
  type: 'object',
  required: ['type', 'title', 'status', 'code', 'detail'],
  properties: {
    type: { type: 'string' },
    title: { type: 'string' },
    status: { type: 'integer' },
    code: { type: 'string', description: 'stable machine-readable error code' },
    detail: { type: 'string' },
    instance: { type: 'string' },
    problems: { type: 'array', items: { type: 'object', required: ['path', 'message'], properties: { path: { type: 'string' }, message: { type: 'string' } } } },
    details: { type: 'object' },
  },
} as const;

/** Reusable response references for modules' documents. */
export const problemResponse = (description: string) => ({
  description,
  content: { 'application/problem+json': { schema: { $ref: '#/components/schemas/Problem' } } },
});

export const commonErrors = {
  '401': problemResponse('authentication required or failed'),
  '403': problemResponse('authenticated, but not allowed: operator routes take accounts, /v1/node/* only peer dispatchers of the active plan (client certificate)'),
  '429': problemResponse('too many failed logins from this address or for this account'),
};

export function buildOpenApi(identity: Pick<Identity, 'version' | 'endpoint'>, modules: RouteModule[]): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const m of modules) {
    for (const [p, ops] of Object.entries(m.openapi)) {
      const existing = paths[p] ?? {};
      for (const method of Object.keys(ops as object)) {
        if (method in existing) throw new DispatcherError('internal', `OpenAPI: ${method.toUpperCase()} ${p} documented twice (module ${m.name})`);
      }
      paths[p] = { ...existing, ...(ops as object) };
    }
  }
  return {
    openapi: '3.1.0',
    info: { title: 'cluster-dispatcher', version: identity.version, description: 'Control API of one dispatcher (dispatcherd).' },
    servers: [{ url: identity.endpoint }],
    security: [{ basic: [] }],
    components: {
      securitySchemes: { basic: { type: 'http', scheme: 'basic' } },
      schemas: { Problem: problemSchema },
    },
    paths,
  };
}
