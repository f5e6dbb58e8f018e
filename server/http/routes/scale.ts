/**
 * Scale changes of a running cluster (docs/DESIGN.md, "Scaling"): POST /v1/cluster/scale answers 202 with
 * the operation, or refuses before one exists — 400 for a plan that is not a scale change, 409 for
 * another base version or a change the planner refuses with the health seen now. The work is in
 * server/cluster/scale.ts; the dry run is POST /v1/cluster/plan/diff (routes/plan-versions.ts).
 */
import { ScaleRequestSchema } from '../../../api/rest.js';
import { validate, type RouteModule } from '../app.js';
import { commonErrors, problemResponse } from '../openapi.js';
import { parseBasicCredential } from '../auth/basic-credential.js';

export const scaleModule: RouteModule = {
  name: 'scale',
  register(router, ctx) {
    router.post('/v1/cluster/scale', async (req, res) => {
      const input = validate(ScaleRequestSchema, req.body);
      // The operator's own credential (verified by the operator gate): first contact with new dispatchers only.
      const operatorCredential = parseBasicCredential(req.headers.authorization);
      const op = await ctx.cluster.scales.start({ ...input, ...(operatorCredential ? { operatorCredential } : {}) });
      res.status(202).location(`/v1/operations/${op.id}`).json({ operation: op.id, href: `/v1/operations/${op.id}` });
    });
  },
  openapi: {
    '/v1/cluster/scale': {
      post: {
        operationId: 'scaleCluster',
        summary: 'Apply a plan that adds dispatchers and processes to the running cluster (scale out), step by step under the cluster-wide lock',
        requestBody: { required: true, content: { 'application/json': { schema: { type: 'object' } } } },
        responses: {
          '202': { description: 'operation started', content: { 'application/json': { schema: { type: 'object', properties: { operation: { type: 'string' }, href: { type: 'string' } } } } } },
          '400': problemResponse('invalid plan, or not a scale change of the running plan (every problem listed)'),
          '409': problemResponse('another operation runs, the base version is not the running one, or the change is refused now (quorum, health)'),
          ...commonErrors,
        },
      },
    },
  },
};
