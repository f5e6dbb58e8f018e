/** POST /v1/plans: the Planner over REST (as ArangoDB 2.x's /_admin/clusterPlanner). Pure: nothing is stored. */
import type { RouteModule } from '../app.js';
import { commonErrors, problemResponse } from '../openapi.js';
import { planFromRequestBody } from '../../core/planner.js';
import { defaultEngineCatalog } from '../../engines/loader.js';

export const plansModule: RouteModule = {
  name: 'plans',
  register(router) {
    router.post('/v1/plans', (req, res) => {
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
