/**
 * Rolling restarts and upgrades: POST /v1/cluster/restart (202 + operation), retry and abort of a restart
 * operation, and the two dispatcher-to-dispatcher routes an upgrade needs (preflight a plan whose binaries
 * changed; store it); certificate rotation (new certificates, then every process re-reads them in place). The work is in
 * server/cluster/restart.ts.
 */
import { z } from 'zod';
import type { Response } from 'express';
import { PlanSchema } from '../../../api/plan.js';
import { RestartRequestSchema } from '../../../api/rest.js';
import { validate, type RouteModule } from '../app.js';
import { commonErrors, problemResponse } from '../openapi.js';

const NodePlanSchema = z.object({ plan: PlanSchema }).strict();
const RotateCertsSchema = z
  .object({
    /** Renew the cluster CA: each call runs the next of three phases (trust, leaves, finish); see server/cluster/ca-rotation.ts. */
    ca: z.boolean().default(false),
    readyTimeoutMs: z.number().int().min(1000).max(3_600_000).default(120_000),
  })
  .strict();

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


/** Imported on use: the cluster side loads lazily (server/cluster-daemon.ts). */
const caRotationModule = () => import('../../cluster/ca-rotation.js');

export const restartModule: RouteModule = {
  name: 'restart',
  register(router, ctx) {
    const svc = () => ctx.cluster.restarts;
    router.post('/v1/cluster/restart', async (req, res) => {
      // An upgrade changes the plan: refused when computed against another version (docs/DESIGN.md, "Plan
      // versions"), checked by the service under the cluster-wide lock.
      validate(RestartRequestSchema, req.body ?? {});
      const op = await svc().start(req.body ?? {});
      accepted(res, op);
    });
    // Certificate rotation (docs/DESIGN.md, "Certificate renewal"): new keys and certificates everywhere,
    // then every process re-reads them in place (engine.yaml `certificateReload`); an engine that declares
    // no reload for a role gets the rolling restart instead.
    const pickUp = async (readyTimeoutMs: number, caRotation = false) => {
      const { caRotationReloads } = await caRotationModule();
      const certs = ctx.cluster.orchestrator.certificates;
      // After the finish phase the rotation state is gone; its leaves carry the cross certificate already.
      const crossless = caRotation && !!ctx.cluster.store.get()?.tls?.rotation && !caRotationReloads(ctx.cluster.store);
      if (!certs.reloadable() || crossless) return svc().start({ readyTimeoutMs });
      const name = ctx.cluster.store.get()!.plan.name;
      return ctx.cluster.operations.start('rotate-certs', name, (op) => certs.reload(op, { caChanged: caRotation }), { lock: 'required' });
    };
    router.post('/v1/cluster/rotate-certs', async (req, res) => {
      const { ca, readyTimeoutMs } = validate(RotateCertsSchema, req.body ?? {});
      await svc().precheck({});
      if (!ca) {
        const certs = ctx.cluster.orchestrator.certificates;
        if (certs.reloadable()) {
          // New certificates are issued inside the operation, under the cluster-wide lock: no other operation
          // (a restart through another dispatcher) runs while the files change.
          const name = ctx.cluster.store.get()!.plan.name;
          const work = async (op: Parameters<typeof certs.reload>[0]) => {
            await certs.renew();
            return certs.reload(op, { caChanged: false });
          };
          accepted(res, await ctx.cluster.operations.start('rotate-certs', name, work, { lock: 'required' }));
          return;
        }
        await certs.renew();
        accepted(res, await pickUp(readyTimeoutMs));
        return;
      }
      // The CA itself: one phase per call (trust new+old, new leaves, trust new only), each ending with the pick-up.
      const ops = ctx.cluster.operations;
      const phase = await ctx.cluster.orchestrator.certificates.caRotationPhase((id) => {
        try {
          return ops.get(id).state === 'succeeded';
        } catch {
          return false; // unknown operation: redo the phase
        }
      });
      const op = await pickUp(readyTimeoutMs, true);
      if (phase !== 'finish') await (await caRotationModule()).recordCaRotationOperation(ctx.cluster.store, op.id);
      res.status(202).location(`/v1/operations/${op.id}`).json({ operation: op.id, href: `/v1/operations/${op.id}`, phase, more: phase !== 'finish' });
    });
    router.post('/v1/operations/:id/retry', async (req, res) => {
      const op = await svc().retry(String(req.params.id));
      accepted(res, op);
    });
    router.post('/v1/operations/:id/abort', async (req, res) => {
      const op = await ctx.cluster.abortOperation(String(req.params.id));
      accepted(res, op);
    });
    // An operation whose dispatcher died (its agency lease expired), continued here (docs/DESIGN.md, "Operation lifecycle").
    router.post('/v1/operations/:id/resume', async (req, res) => {
      const op = await ctx.cluster.resumeOperation(String(req.params.id));
      accepted(res, op);
    });
  },
  // Dispatcher-to-dispatcher (upgrade), under /v1/node: peers of the active plan only.
  registerPeer(router, ctx) {
    const svc = () => ctx.cluster.restarts;
    router.post('/restart/preflight', async (req, res) => {
      const { plan } = validate(NodePlanSchema, req.body);
      res.json({ problems: await svc().localUpgrade.preflightPlan(plan) });
    });
    router.post('/restart/plan', async (req, res) => {
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
    '/v1/cluster/rotate-certs': { post: { operationId: 'rotateCertificates', summary: 'Renew every process and dispatcher certificate; every process re-reads them in place (no restart; a rolling restart only for an engine that declares no reload); with ca: true, the next phase of a CA rotation (call until more is false)', requestBody: { ...body, required: false }, responses: { ...op202, '409': problemResponse('cluster not healthy, or the CA key is on another dispatcher') } } },
    '/v1/operations/{id}/retry': { post: { operationId: 'retryOperation', summary: 'Continue a failed or aborted restart from its persisted progress', parameters: [idParam], responses: { ...op202, '404': problemResponse('no such operation') } } },
    '/v1/operations/{id}/abort': { post: { operationId: 'abortOperation', summary: 'Abort a restart: stop a running one, start again what a failed one (or one whose dispatcher died) stopped', parameters: [idParam], responses: { ...op202, '404': problemResponse('no such operation') } } },
    '/v1/operations/{id}/resume': { post: { operationId: 'resumeOperation', summary: 'Continue, here, a restart whose dispatcher died (its agency lease expired) from the step it recorded', parameters: [idParam], responses: { ...op202, '404': problemResponse('no such operation') } } },
    '/v1/node/restart/preflight': { post: { operationId: 'nodeRestartPreflight', summary: '(peer) check an upgraded plan can run here', requestBody: body, responses: { '200': { description: 'problems', content: { 'application/json': { schema: { type: 'object' } } } }, ...commonErrors } } },
    '/v1/node/restart/plan': { post: { operationId: 'nodeRestartPlan', summary: '(peer) store an upgraded plan (binaries only)', requestBody: body, responses: { '204': { description: 'stored' }, ...commonErrors } } },
  },
};
