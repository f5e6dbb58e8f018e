/**
 * The running plan and its version (GET /v1/cluster/plan), and the dry run of a plan change
 * (POST /v1/cluster/plan/diff), like `nomad job plan`: nothing is stored or applied; the answer names the
 * version it was computed against, which a change then carries as its base, and the scale steps the change
 * amounts to with the cluster's health now (or why it would be refused) (docs/DESIGN.md, "Plan versions").
 */
import { PlanDiffRequestSchema, type DispatcherPlanVersion, type PlanDiffView, type RunningPlanView } from '../../../api/plan-version.js';
import type { ClusterView } from '../../../api/rest.js';
import { DispatcherError } from '../../../api/errors.js';
import { validate, type RouteModule } from '../app.js';
import { commonErrors, problemResponse } from '../openapi.js';
import type { ClusterStore } from '../../cluster/store.js';

function running(store: ClusterStore) {
  const snap = store.get();
  if (!snap || snap.state === 'cleaned') throw new DispatcherError('not_found', 'this dispatcher has no cluster plan; launch one first');
  return snap;
}

function dispatcherVersions(view: ClusterView): DispatcherPlanVersion[] {
  return view.dispatchers.map((d) => ({ id: d.id, reachable: d.reachable, ...(d.planVersion ? { version: d.planVersion } : {}) }));
}

export const planVersionsModule: RouteModule = {
  name: 'plan-versions',
  register(router, ctx) {
    router.get('/v1/cluster/plan', async (_req, res) => {
      const store = ctx.cluster.store;
      running(store);
      const cluster = await ctx.cluster.orchestrator.status();
      const snap = running(store);
      const view: RunningPlanView = { cluster: snap.plan.name, state: snap.state, version: store.version(), history: store.history(), dispatchers: dispatcherVersions(cluster), plan: snap.plan };
      res.json(view);
    });
    router.post('/v1/cluster/plan/diff', async (req, res) => {
      const store = ctx.cluster.store;
      running(store);
      const { plan: input } = validate(PlanDiffRequestSchema, req.body);
      // Imported on use: the planning code loads with the cluster side (server/cluster-daemon.ts).
      const [{ assertValidPlan }, { diffPlans }, { planHash }, { planScale, scaleHealthOf }, { defaultEngineCatalog }] = await Promise.all([
        import('../../core/validate-plan.js'),
        import('../../core/plan-diff.js'),
        import('../../core/plan-version.js'),
        import('../../core/scale-plan.js'),
        import('../../engines/loader.js'),
      ]);
      // The same one validation as a launch: every problem of the proposed plan, with its path (400).
      const proposed = assertValidPlan(input, defaultEngineCatalog());
      // The scale steps depend on what answers now (a dead host's members count against quorum).
      const cluster = await ctx.cluster.orchestrator.status();
      const snap = running(store);
      const base = store.version();
      const view: PlanDiffView = {
        base,
        proposed: { hash: planHash(proposed) },
        diff: diffPlans(snap.plan, proposed),
        behind: dispatcherVersions(cluster).filter((d) => !d.version || d.version.hash !== base.hash || d.version.number !== base.number),
        scale: planScale(snap.plan, proposed, scaleHealthOf(cluster)),
      };
      res.json(view);
    });
  },
  openapi: {
    '/v1/cluster/plan': {
      get: {
        operationId: 'runningPlan',
        summary: 'The running plan with its version (number and hash) and the versions this dispatcher stored',
        responses: { '200': { description: 'the running plan', content: { 'application/json': { schema: { type: 'object' } } } }, ...commonErrors },
      },
    },
    '/v1/cluster/plan/diff': {
      post: {
        operationId: 'diffPlan',
        summary: 'Dry run: what a proposed plan would change against the running version (processes, ports, firewall rules per host); nothing is applied',
        requestBody: { required: true, content: { 'application/json': { schema: { type: 'object', properties: { plan: { $ref: 'https://cluster-dispatcher.invalid/plan.schema.json' } } } } } },
        responses: {
          '200': { description: 'the diff and the version it was computed against', content: { 'application/json': { schema: { type: 'object' } } } },
          '400': problemResponse('invalid plan (every problem listed)'),
          ...commonErrors,
        },
      },
    },
  },
};
