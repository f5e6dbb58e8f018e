/**
 * Rolling restarts and upgrades: POST /v1/cluster/restart (202 + operation), retry and abort of a restart
 * operation, and the two dispatcher-to-dispatcher routes an upgrade needs (preflight a plan whose binaries
 * changed; store it). The work is in server/cluster/restart.ts.
 */
import { z } from 'zod';
import type { Response } from 'express';
import { PlanSchema } from '../../../api/plan.js';
import { validate, type RouteModule } from '../app.js';
import { commonErrors, problemResponse } from '../openapi.js';

const NodePlanSchema = z.object({ plan: PlanSchema }).strict();

function accepted(res: Response, op: { id: string }) {
  res.status(202).location(`/v1/operations/${op.id}`).json({ operation: op.id, href: `/v1/operations/${op.id}` });
}

const op202 = {
  '202': { description: 'operation started', content: { 'application/json': { schema: { type: 'object', properties: { operation: { type: 'string' }, href: { type: 'string' } } } } } },
  '409': problemResponse('another operation runs, or the cluster is not healthy (pass force)'),
  ...commonErrors,
};
const body = { required: true, content: { 'application/json': { schema: { type: 'object' } } } };
const idParam = { name: 'id', in: 'path', required: true, schema: { type: 'string' } };

export const restartModule: RouteModule = {
  name: 'restart',
  register(router, ctx) {
    const svc = () => ctx.cluster.restarts;
    router.post('/v1/cluster/restart', async (req, res) => {
      const op = await svc().start(req.body ?? {});
      accepted(res, op);
    });
    router.post('/v1/operations/:id/retry', async (req, res) => {
      const op = await svc().retry(String(req.params.id));
      accepted(res, op);
    });
    router.post('/v1/operations/:id/abort', async (req, res) => {
      const op = await svc().abort(String(req.params.id));
      accepted(res, op);
    });
    // Dispatcher-to-dispatcher (upgrade).
    router.post('/v1/node/restart/preflight', async (req, res) => {
      const { plan } = validate(NodePlanSchema, req.body);
      res.json({ problems: await svc().localUpgrade.preflightPlan(plan) });
    });
    router.post('/v1/node/restart/plan', async (req, res) => {
      const { plan } = validate(NodePlanSchema, req.body);
      await svc().localUpgrade.adoptPlan(plan);
      res.status(204).end();
    });
  },
  openapi: {
    '/v1/cluster/restart': {
      post: {
        operationId: 'restartCluster',
        summary: 'Rolling (or all-at-once) restart of selected processes, optionally onto new binaries (upgrade)',
        requestBody: body,
        responses: { ...op202, '400': problemResponse('invalid selection or upgrade') },
      },
    },
    '/v1/operations/{id}/retry': { post: { operationId: 'retryOperation', summary: 'Continue a failed or aborted restart from its persisted progress', parameters: [idParam], responses: { ...op202, '404': problemResponse('no such operation') } } },
    '/v1/operations/{id}/abort': { post: { operationId: 'abortOperation', summary: 'Abort a restart: stop a running one, start again what a failed one stopped', parameters: [idParam], responses: { ...op202, '404': problemResponse('no such operation') } } },
    '/v1/node/restart/preflight': { post: { operationId: 'nodeRestartPreflight', summary: '(peer) check an upgraded plan can run here', requestBody: body, responses: { '200': { description: 'problems', content: { 'application/json': { schema: { type: 'object' } } } }, ...commonErrors } } },
    '/v1/node/restart/plan': { post: { operationId: 'nodeRestartPlan', summary: '(peer) store an upgraded plan (binaries only)', requestBody: body, responses: { '204': { description: 'stored' }, ...commonErrors } } },
  },
};
