/**
 * GET /metrics (Prometheus text format), GET /v1/audit (the audit trail, with the outcome of the
 * operations its entries started) and GET /v1/cluster/health (agency leader, DB leader and replication
 * lag). All behind authentication; the web console and Prometheus use them like any other client.
 */
import { z } from 'zod';
import type { OperationState } from '../../../api/rest.js';
import { DispatcherError } from '../../../api/errors.js';
import { validate, type RouteModule } from '../app.js';
import { commonErrors, problemResponse } from '../openapi.js';
import type { ClusterService } from '../../cluster/service.js';
import '../../observability/wiring.js';

const whole = (min: number, max: number) => z.string().regex(/^\d+$/, 'must be a whole number').transform(Number).pipe(z.number().int().min(min).max(max));

export const AuditQuerySchema = z
  .object({
    limit: whole(1, 10_000).default(200),
    user: z.string().min(1).max(200).optional(),
    outcome: z.enum(['success', 'failure', 'denied']).optional(),
    after: whole(0, Number.MAX_SAFE_INTEGER).optional(),
  })
  .strict();

const json = (description: string, schema: Record<string, unknown> = { type: 'object' }) => ({ '200': { description, content: { 'application/json': { schema } } }, ...commonErrors });

const auditEntrySchema = {
  type: 'object',
  required: ['seq', 'at', 'user', 'source', 'action', 'path', 'outcome'],
  properties: {
    seq: { type: 'integer' },
    at: { type: 'string', format: 'date-time' },
    user: { type: ['string', 'null'] },
    source: { type: 'string', description: 'peer address of the request, or unix-socket' },
    action: { type: 'string', description: 'method and route pattern, e.g. POST /v1/cluster/restart' },
    path: { type: 'string' },
    outcome: { enum: ['success', 'failure', 'denied'], description: 'of the request' },
    status: { type: 'integer' },
    operation: { type: 'string', description: 'id of the operation the request started' },
    operationState: { enum: ['running', 'succeeded', 'failed', 'aborted', 'unknown'], description: 'outcome of that operation, when read' },
  },
};

export const observabilityModule: RouteModule = {
  name: 'observability',
  register(router, ctx) {
    router.get('/metrics', async (_req, res) => {
      const { contentType, body } = await ctx.metrics.scrape();
      res.setHeader('cache-control', 'no-store');
      res.type(contentType).send(body);
    });
    router.get('/v1/audit', (req, res) => {
      const q = validate(AuditQuerySchema, req.query, 'query');
      const ops = (ctx as { cluster?: ClusterService }).cluster?.operations;
      const stateOf = (id: string): OperationState | 'unknown' => {
        try {
          return ops ? ops.get(id).state : 'unknown';
        } catch {
          return 'unknown';
        }
      };
      const entries = ctx.auditTrail.query(q).map((e) => (e.operation ? { ...e, operationState: stateOf(e.operation) } : e));
      res.json({ entries, kept: ctx.auditTrail.size, maxEntries: ctx.auditTrail.maxEntries });
    });
    router.get('/v1/cluster/health', async (_req, res) => {
      res.json(await ctx.engineHealth());
    });
    // Who may reach what: the firewall part of the stored plan and the cluster's own hosts (always allowed).
    router.get('/v1/cluster/firewall', (_req, res) => {
      const plan = (ctx as { cluster?: ClusterService }).cluster?.store.get()?.plan;
      if (!plan) throw new DispatcherError('not_found', 'no cluster on this dispatcher');
      res.json({ cluster: plan.name, firewall: plan.firewall, clusterHosts: plan.dispatchers.map((d) => ({ id: d.id, addresses: d.addresses })) });
    });
  },
  openapi: {
    '/metrics': {
      get: {
        operationId: 'metrics',
        summary: 'Prometheus metrics of this dispatcher (text exposition format, names under cluster_dispatcher_)',
        responses: { '200': { description: 'metrics', content: { 'text/plain': { schema: { type: 'string' } } } }, ...commonErrors },
      },
    },
    '/v1/audit': {
      get: {
        operationId: 'audit',
        summary: 'The audit trail: who requested which change from where, its outcome and the outcome of the operation it started (newest first, bounded)',
        parameters: [
          { name: 'limit', in: 'query', required: false, schema: { type: 'integer', minimum: 1, maximum: 10000, default: 200 } },
          { name: 'user', in: 'query', required: false, schema: { type: 'string' } },
          { name: 'outcome', in: 'query', required: false, schema: { enum: ['success', 'failure', 'denied'] } },
          { name: 'after', in: 'query', required: false, schema: { type: 'integer', minimum: 0 }, description: 'only entries with a larger seq' },
        ],
        responses: {
          ...json('audit entries', { type: 'object', required: ['entries', 'kept', 'maxEntries'], properties: { entries: { type: 'array', items: auditEntrySchema }, kept: { type: 'integer' }, maxEntries: { type: 'integer' } } }),
          '400': problemResponse('invalid query'),
        },
      },
    },
    '/v1/cluster/health': {
      get: {
        operationId: 'clusterHealth',
        summary: 'Agency and DB health as this dispatcher sees it: etcd leader and members, Patroni leader, replication lag (cached a few seconds)',
        responses: json('engine health'),
      },
    },
    '/v1/cluster/firewall': {
      get: {
        operationId: 'clusterFirewallPolicy',
        summary: 'The firewall policy in force: backend, mode, client and operator sources, and the cluster hosts (which always reach every port)',
        responses: { ...json('firewall policy'), '404': problemResponse('no cluster') },
      },
    },
  },
};
