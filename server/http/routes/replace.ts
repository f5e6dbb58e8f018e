/**
 * Replace a dead machine (docs/DESIGN.md, "Scaling"): POST /v1/cluster/replace {dead, with} answers 202 with
 * the scale operation that re-creates the dead dispatcher's processes on the new one, or refuses before one
 * exists (400: bad replacement, 409: quorum, base version, another operation). server/cluster/replace.ts.
 */
import { ReplaceRequestSchema } from '../../../api/rest.js';
import { validate, type RouteModule } from '../app.js';
import { commonErrors, problemResponse } from '../openapi.js';
import { parseBasicCredential } from '../auth/basic-credential.js';

export const replaceModule: RouteModule = {
  name: 'replace',
  register(router, ctx) {
    router.post('/v1/cluster/replace', async (req, res) => {
      const input = validate(ReplaceRequestSchema, req.body);
      // The operator's own credential (verified by the operator gate): first contact with the new dispatcher.
      const operatorCredential = parseBasicCredential(req.headers.authorization);
      // Imported on use: the cluster side loads lazily (server/cluster-daemon.ts).
      const { startReplace } = await import('../../cluster/replace.js');
      const op = await startReplace({ scales: ctx.cluster.scales, store: ctx.cluster.store, self: ctx.cluster.node.id }, { ...input, ...(operatorCredential ? { operatorCredential } : {}) });
      res.status(202).location(`/v1/operations/${op.id}`).json({ operation: op.id, href: `/v1/operations/${op.id}` });
    });
  },
  openapi: {
    '/v1/cluster/replace': {
      post: {
        operationId: 'replaceDispatcher',
        summary: 'Replace a dispatcher that is gone for good: its etcd member removed, its processes re-created on the new dispatcher (new ids), coordinators and firewall updated everywhere',
        requestBody: { required: true, content: { 'application/json': { schema: { type: 'object' } } } },
        responses: {
          '202': { description: 'operation started', content: { 'application/json': { schema: { type: 'object', properties: { operation: { type: 'string' }, href: { type: 'string' } } } } } },
          '400': problemResponse('unknown dead dispatcher, a replacement already in the plan, or an invalid resulting plan (every problem listed)'),
          '409': problemResponse('it would break the agency\'s quorum, another operation runs, or the base version is not the running one'),
          ...commonErrors,
        },
      },
    },
  },
};
