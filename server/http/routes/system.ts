/** GET /v1/health (no auth), GET /v1/id, GET /openapi.json. */
import type { RouteModule } from '../app.js';
import { buildOpenApi, commonErrors } from '../openapi.js';

/** `allModules` is read at request time so the document covers modules added after this one. */
export function systemModule(allModules: () => RouteModule[]): RouteModule {
  return {
    name: 'system',
    registerPublic(router) {
      // Says only that the daemon is up: no version, id or process data without a password.
      router.get('/v1/health', (_req, res) => {
        res.json({ status: 'up' });
      });
    },
    register(router, ctx) {
      router.get('/v1/id', (_req, res) => {
        res.json(ctx.identity);
      });
      let doc: Record<string, unknown> | undefined;
      router.get('/openapi.json', (_req, res) => {
        doc ??= buildOpenApi(ctx.identity, allModules());
        res.json(doc);
      });
    },
    openapi: {
      '/v1/health': {
        get: {
          operationId: 'health',
          summary: 'Liveness of the daemon (no authentication)',
          security: [],
          responses: {
            '200': {
              description: 'the daemon is up',
              content: { 'application/json': { schema: { type: 'object', required: ['status'], properties: { status: { const: 'up' } } } } },
            },
          },
        },
      },
      '/v1/id': {
        get: {
          operationId: 'identity',
          summary: 'Identity of this dispatcher',
          responses: {
            '200': {
              description: 'id, version, endpoint and certificate fingerprint',
              content: {
                'application/json': {
                  schema: {
                    type: 'object',
                    required: ['id', 'version', 'endpoint', 'fingerprint'],
                    properties: { id: { type: 'string' }, version: { type: 'string' }, endpoint: { type: 'string' }, fingerprint: { type: 'string' } },
                  },
                },
              },
            },
            ...commonErrors,
          },
        },
      },
      '/openapi.json': {
        get: {
          operationId: 'openapi',
          summary: 'This OpenAPI 3.1 document',
          responses: { '200': { description: 'OpenAPI document', content: { 'application/json': { schema: { type: 'object' } } } }, ...commonErrors },
        },
      },
    },
  };
}
