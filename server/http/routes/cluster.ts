/**
 * Cluster routes: what an operator asks of any dispatcher (/v1/cluster/*, /v1/operations/*), and what
 * dispatchers ask of each other (/v1/node/*). Both sit behind authentication; peers use the cluster
 * credential established at launch.
 */
import { z } from 'zod';
import type { Request, Response } from 'express';
import { LaunchRequestSchema, CleanupRequestSchema, NodeAdoptPlanSchema, FirewallChangeSchema } from '../../../api/rest.js';
import { validate, type RouteModule } from '../app.js';
import { commonErrors, problemResponse } from '../openapi.js';
import { LogQuerySchema } from './processes.js';
import { basicCredential, type ClusterService } from '../../cluster/service.js';

const RelaunchSchema = z.object({ readyTimeoutMs: z.number().int().min(1000).max(3_600_000).default(120_000) }).strict();
const PreflightSchema = z.object({ callerTime: z.number() }).strict();
const StartSchema = z.object({ readyTimeoutMs: z.number().int().min(1000).max(3_600_000) }).strict();
const StateSchema = z.object({ state: z.enum(['launching', 'running', 'failed', 'shutdown']) }).strict();
const DiscardSchema = z.object({ name: z.string().min(1) }).strict();

function accepted(res: Response, op: { id: string }) {
  res.status(202).location(`/v1/operations/${op.id}`).json({ operation: op.id, href: `/v1/operations/${op.id}` });
}

async function streamEvents(ctx: { cluster: ClusterService }, req: Request, res: Response) {
  const id = String(req.params.id);
  ctx.cluster.operations.get(id); // 404 before any byte is sent
  res.status(200).type('application/x-ndjson');
  res.setHeader('cache-control', 'no-store');
  res.flushHeaders();
  const abort = new AbortController();
  req.on('close', () => abort.abort());
  const view = await ctx.cluster.operations.follow(id, (e) => res.write(JSON.stringify({ type: 'event', ...e }) + '\n'), abort.signal);
  if (!abort.signal.aborted) {
    const { events: _events, ...summary } = view;
    res.write(JSON.stringify({ type: 'end', ...summary }) + '\n');
  }
  res.end();
}

const op202 = {
  '202': { description: 'operation started', content: { 'application/json': { schema: { type: 'object', properties: { operation: { type: 'string' }, href: { type: 'string' } } } } } },
  '409': problemResponse('another operation or cluster is active'),
  ...commonErrors,
};
const json = (description: string) => ({ '200': { description, content: { 'application/json': { schema: { type: 'object' } } } }, ...commonErrors });
const body = { required: true, content: { 'application/json': { schema: { type: 'object' } } } };
const idParam = { name: 'id', in: 'path', required: true, schema: { type: 'string' } };

export const clusterModule: RouteModule = {
  name: 'cluster',
  register(router, ctx) {
    router.post('/v1/cluster/launch', async (req, res) => {
      const input = validate(LaunchRequestSchema, req.body);
      accepted(res, await ctx.cluster.launch({ ...input, operatorCredential: basicCredential(req.headers.authorization) }));
    });
    router.get('/v1/cluster', async (_req, res) => {
      const view = await ctx.cluster.orchestrator.status();
      res.json({ ...view, ...(ctx.cluster.operations.running() ? { activeOperation: ctx.cluster.operations.running()!.id } : {}) });
    });
    router.get('/v1/cluster/processes/:id/log', async (req, res) => {
      const { lines } = validate(LogQuerySchema, req.query, 'query');
      res.json(await ctx.cluster.orchestrator.processLog(String(req.params.id), lines));
    });
    router.post('/v1/cluster/shutdown', async (_req, res) => accepted(res, await ctx.cluster.shutdown()));
    router.post('/v1/cluster/relaunch', async (req, res) => {
      const { readyTimeoutMs } = validate(RelaunchSchema, req.body ?? {});
      accepted(res, await ctx.cluster.relaunch(readyTimeoutMs));
    });
    router.post('/v1/cluster/cleanup', async (req, res) => {
      const { confirmName } = validate(CleanupRequestSchema, req.body ?? {});
      accepted(res, await ctx.cluster.cleanup(confirmName));
    });
    router.post('/v1/cluster/firewall', async (req, res) => {
      const { firewall, confirmWithinSeconds } = validate(FirewallChangeSchema, req.body);
      res.json(await ctx.cluster.orchestrator.changeFirewall(firewall, confirmWithinSeconds));
    });
    router.post('/v1/cluster/firewall/confirm', async (_req, res) => {
      res.json(await ctx.cluster.orchestrator.confirmFirewall());
    });
    router.post('/v1/node/firewall', async (req, res) => {
      const { firewall, confirmWithinSeconds } = validate(FirewallChangeSchema, req.body);
      res.json(await node().changeFirewall(firewall, confirmWithinSeconds));
    });
    router.post('/v1/node/firewall/confirm', async (_req, res) => {
      res.json(await node().confirmFirewall());
    });
    router.get('/v1/operations', (_req, res) => {
      res.json({ operations: ctx.cluster.operations.list().map(({ events: _e, ...o }) => o) });
    });
    router.get('/v1/operations/:id', (req, res) => {
      res.json(ctx.cluster.operations.get(String(req.params.id)));
    });
    router.get('/v1/operations/:id/events', (req, res) => streamEvents(ctx, req, res));

    // Dispatcher-to-dispatcher.
    const node = () => ctx.cluster.node;
    router.post('/v1/node/plan', async (req, res) => {
      await node().adoptPlan(validate(NodeAdoptPlanSchema, req.body));
      res.status(204).end();
    });
    router.post('/v1/node/preflight', async (req, res) => {
      const { callerTime } = validate(PreflightSchema, req.body);
      res.json({ problems: await node().preflight(callerTime) });
    });
    router.post('/v1/node/guard', async (_req, res) => {
      res.json(await node().guard());
    });
    router.post('/v1/node/guard/verify', async (_req, res) => {
      res.json(await node().verifyGuard());
    });
    router.post('/v1/node/processes/:id/start', async (req, res) => {
      const { readyTimeoutMs } = validate(StartSchema, req.body);
      res.json(await node().startProcess(String(req.params.id), readyTimeoutMs));
    });
    router.post('/v1/node/processes/:id/stop', async (req, res) => {
      await node().stopProcess(String(req.params.id));
      res.status(204).end();
    });
    router.post('/v1/node/state', async (req, res) => {
      await node().setClusterState(validate(StateSchema, req.body).state);
      res.status(204).end();
    });
    router.get('/v1/node/status', async (_req, res) => {
      res.json(await node().status());
    });
    router.post('/v1/node/cleanup', async (req, res) => {
      await node().cleanup(validate(CleanupRequestSchema, req.body).confirmName);
      res.status(204).end();
    });
    router.post('/v1/node/discard', async (req, res) => {
      await node().discardPlan(validate(DiscardSchema, req.body).name);
      res.status(204).end();
    });
  },
  openapi: {
    '/v1/cluster/launch': { post: { operationId: 'launchCluster', summary: 'Validate, propagate, preflight, guard and start a plan on every dispatcher', requestBody: body, responses: { ...op202, '400': problemResponse('invalid plan') } } },
    '/v1/cluster': { get: { operationId: 'clusterStatus', summary: 'State of every process and dispatcher of the cluster', responses: json('cluster view') } },
    '/v1/cluster/processes/{id}/log': {
      get: {
        operationId: 'clusterProcessLog',
        summary: 'Last lines of a process log, from whichever dispatcher runs it',
        parameters: [idParam, { name: 'lines', in: 'query', required: false, schema: { type: 'integer', minimum: 1, maximum: 10000 } }],
        responses: { ...json('log lines'), '404': problemResponse('no such process') },
      },
    },
    '/v1/cluster/shutdown': { post: { operationId: 'shutdownCluster', summary: 'Stop every process, coordinators first; data and firewall stay', responses: op202 } },
    '/v1/cluster/relaunch': { post: { operationId: 'relaunchCluster', summary: 'Start the persisted plan again, keeping data', requestBody: { ...body, required: false }, responses: op202 } },
    '/v1/cluster/cleanup': { post: { operationId: 'cleanupCluster', summary: 'Delete data dirs and firewall rules of a shut-down cluster (repeat its name)', requestBody: body, responses: op202 } },
    '/v1/cluster/firewall': {
      post: {
        operationId: 'changeFirewall',
        summary: 'Apply a new firewall policy on every dispatcher; it rolls back unless confirmed within confirmWithinSeconds',
        requestBody: body,
        responses: { ...json('pending change with its confirm deadline'), '400': problemResponse('invalid policy') },
      },
    },
    '/v1/cluster/firewall/confirm': { post: { operationId: 'confirmFirewall', summary: 'Keep the pending firewall change on every dispatcher', responses: { ...json('confirmed'), '409': problemResponse('nothing pending (rolled back already?)') } } },
    '/v1/node/firewall': { post: { operationId: 'nodeChangeFirewall', summary: '(peer) apply a firewall policy with a confirm deadline', requestBody: body, responses: json('guard status') } },
    '/v1/node/firewall/confirm': { post: { operationId: 'nodeConfirmFirewall', summary: '(peer) keep the pending firewall change', responses: { ...json('guard status'), '409': problemResponse('nothing pending') } } },
    '/v1/operations': { get: { operationId: 'listOperations', summary: 'Operations this dispatcher ran', responses: json('operations') } },
    '/v1/operations/{id}': { get: { operationId: 'getOperation', summary: 'An operation with its events', parameters: [idParam], responses: { ...json('operation'), '404': problemResponse('no such operation') } } },
    '/v1/operations/{id}/events': {
      get: {
        operationId: 'streamOperationEvents',
        summary: 'NDJSON stream of the events of an operation until it ends',
        parameters: [idParam],
        responses: { '200': { description: 'one JSON object a line', content: { 'application/x-ndjson': { schema: { type: 'object' } } } }, '404': problemResponse('no such operation'), ...commonErrors },
      },
    },
    '/v1/node/plan': { post: { operationId: 'nodeAdoptPlan', summary: '(peer) store a plan, its secrets and the cluster credential', requestBody: body, responses: { '204': { description: 'stored' }, '409': problemResponse('another cluster is active'), ...commonErrors } } },
    '/v1/node/preflight': { post: { operationId: 'nodePreflight', summary: '(peer) check this machine can run its part', requestBody: body, responses: json('problems') } },
    '/v1/node/guard': { post: { operationId: 'nodeGuard', summary: '(peer) install the firewall guard', responses: json('guard status') } },
    '/v1/node/guard/verify': { post: { operationId: 'nodeGuardVerify', summary: '(peer) read the guard back', responses: json('guard status') } },
    '/v1/node/processes/{id}/start': { post: { operationId: 'nodeStartProcess', summary: '(peer) start a planned process and wait until ready', parameters: [idParam], requestBody: body, responses: json('process status') } },
    '/v1/node/processes/{id}/stop': { post: { operationId: 'nodeStopProcess', summary: '(peer) stop a process gracefully', parameters: [idParam], responses: { '204': { description: 'stopped' }, ...commonErrors } } },
    '/v1/node/state': { post: { operationId: 'nodeSetState', summary: '(peer) record the cluster state', requestBody: body, responses: { '204': { description: 'recorded' }, ...commonErrors } } },
    '/v1/node/status': { get: { operationId: 'nodeStatus', summary: '(peer) processes and guard of this dispatcher', responses: json('node status') } },
    '/v1/node/cleanup': { post: { operationId: 'nodeCleanup', summary: '(peer) delete this machine\'s data dirs of the cluster', requestBody: body, responses: { '204': { description: 'removed' }, ...commonErrors } } },
    '/v1/node/discard': { post: { operationId: 'nodeDiscard', summary: '(peer) forget a plan that never started', requestBody: body, responses: { '204': { description: 'forgotten' }, ...commonErrors } } },
  },
};
