/** POST /v1/plans: the Planner over REST (as ArangoDB 2.x's /_admin/clusterPlanner). Pure: nothing is stored. */
import type { RouteModule } from '../app.js';
import { commonErrors, problemResponse } from '../openapi.js';

export const plansModule: RouteModule = {
  name: 'plans',
  register(router) {
    router.post('/v1/plans', async (req, res) => {
      // Imported on use: the planner loads with the cluster side (server/cluster-daemon.ts).
      const [{ planFromRequestBody }, { defaultEngineCatalog }] = await Promise.all([import('../../core/planner.js'), import('../../engines/loader.js')]);
      res.json(planFromRequestBody(req.body, defaultEngineCatalog()));
    });
  },
  openapi: {
    '/v1/plans': {
      post: {
        operationId: 'makePlan',
        summary: 'Make a full plan from a spec (the Planner); every validation problem is listed',
        requestBody: { required: true, content: { 'application/json': { schema: { $ref: 'https://cluster-dispatcher.invalid/plan.schema.json#/$defs/Spec' } } } },
        responses: { '200': { description: 'the plan', content: { 'application/json': { schema: { type: 'object' } } } }, '400': problemResponse('invalid spec'), ...commonErrors },
      },
    },
  },
};
