/**
 * Cluster routes: what an operator asks of any dispatcher (/v1/cluster/*, /v1/operations/*), and what
 * dispatchers ask of each other (/v1/node/*: peer routes, only for dispatchers the active plan pins, by
 * client certificate; adopting a plan is first contact — operator credential plus a certificate the
 * offered plan pins). See server/http/auth.ts and docs/SECURITY.md, "Identities".
 */
import { z } from 'zod';
import type { Request, Response } from 'express';
import { LaunchRequestSchema, CleanupRequestSchema, NodeAdoptPlanSchema, NodeUpdatePlanSchema, NodeInstallCertificatesSchema, NodeTrustCaSchema, NodeReloadCertificatesSchema, FirewallChangeSchema, FirewallTokenSchema, FirewallExtendSchema } from '../../../api/rest.js';
import { DispatcherError } from '../../../api/errors.js';
import { validate, type AppContext, type RouteModule } from '../app.js';
import type { PeerPin } from '../auth.js';
import { commonErrors, problemResponse } from '../openapi.js';
import { LogQuerySchema } from './processes.js';
import type { ClusterService } from '../../cluster/service.js';
import { parseBasicCredential } from '../auth/basic-credential.js';

const RelaunchSchema = z.object({ readyTimeoutMs: z.number().int().min(1000).max(3_600_000).default(120_000) }).strict();
const PreflightSchema = z.object({ callerTime: z.number() }).strict();
/** agencyState: `existing` for an agent a scale operation added to the running agency first (docs/DESIGN.md, "Scaling"). */
const StartSchema = z.object({ readyTimeoutMs: z.number().int().min(1000).max(3_600_000), agencyState: z.enum(['new', 'existing']).optional() }).strict();
/** keepCompanion: a rolling restart restarts the main program only (server/cluster/node.ts). */
const StopSchema = z.object({ keepCompanion: z.boolean().optional() }).strict();
const StateSchema = z.object({ state: z.enum(['launching', 'running', 'failed', 'shutdown']) }).strict();
const DiscardSchema = z.object({ name: z.string().min(1) }).strict();

/**
 * The connections that carried a firewall change, by token. A confirm must come over a NEW connection (as
 * NETCONF confirmed-commit, RFC 6241 §8.4): one that was opened after the new rules went in proves the
 * operator still gets in; the connection that carried the change was accepted under the old rules.
 */
const changeConnections = new WeakMap<object, string>();

function requireNewConnection(req: Request, token: string): void {
  if (changeConnections.get(req.socket) === token) {
    throw new DispatcherError('conflict', 'confirm the firewall change over a new connection (it proves you still get in under the new rules); `dispatch firewall confirm` opens one');
  }
}

/** The dispatchers (other than this one) the plan in a first-contact request names, as certificate pins. */
function offeredPins(ctx: AppContext): (req: Request) => PeerPin[] {
  return (req) => {
    const list = (req.body as { plan?: { dispatchers?: unknown } } | undefined)?.plan?.dispatchers;
    if (!Array.isArray(list)) return [];
    return list
      .filter((d): d is PeerPin => typeof d?.id === 'string' && typeof d?.fingerprint === 'string')
      .filter((d) => d.id !== ctx.identity.id)
      .map((d) => ({ id: d.id, fingerprint: d.fingerprint }));
  };
}

/** The operator's own credential (already verified by the operator gate), forwarded to peers at first contact only. */
function operatorCredentialOf(req: Request) {
  return parseBasicCredential(req.headers.authorization);
}

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
      accepted(res, await ctx.cluster.launch({ ...input, operatorCredential: operatorCredentialOf(req) }));
    });
    router.get('/v1/cluster', async (_req, res) => {
      const view = await ctx.cluster.orchestrator.status();
      res.json({ ...view, ...(ctx.cluster.operations.running() ? { activeOperation: ctx.cluster.operations.running()!.id } : {}) });
    });
    router.get('/v1/cluster/connection', (_req, res) => {
      // Carries the database password: never cached by anything in between.
      res.setHeader('cache-control', 'no-store');
      res.json(ctx.cluster.connection());
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
      const { firewall, confirmWithinSeconds, baseVersion } = validate(FirewallChangeSchema, req.body);
      // The base version is checked under the cluster-wide lock (server/cluster/firewall-change.ts).
      // Imported on use: the cluster side loads lazily (server/cluster-daemon.ts).
      const { changeFirewallLocked } = await import('../../cluster/firewall-change.js');
      const result = await changeFirewallLocked(
        { operations: ctx.cluster.operations, store: ctx.cluster.store, apply: (f, s) => ctx.cluster.orchestrator.firewall.change(f, s) },
        { firewall, confirmWithinSeconds, ...(baseVersion ? { baseVersion } : {}) },
      );
      changeConnections.set(req.socket, String(result.token));
      res.json(result);
    });
    router.post('/v1/cluster/firewall/confirm', async (req, res) => {
      const { token } = validate(FirewallTokenSchema, req.body);
      requireNewConnection(req, token);
      res.json(await ctx.cluster.orchestrator.firewall.settle('confirm', token));
    });
    router.post('/v1/cluster/firewall/extend', async (req, res) => {
      const { token, confirmWithinSeconds } = validate(FirewallExtendSchema, req.body);
      res.json(await ctx.cluster.orchestrator.firewall.settle('extend', token, confirmWithinSeconds));
    });
    router.post('/v1/cluster/firewall/cancel', async (req, res) => {
      const { token } = validate(FirewallTokenSchema, req.body);
      res.json(await ctx.cluster.orchestrator.firewall.settle('cancel', token));
    });
    router.get('/v1/operations', async (_req, res) => {
      res.json({ operations: (await ctx.cluster.listOperations()).map(({ events: _e, ...o }) => o) });
    });
    router.get('/v1/operations/:id', async (req, res) => {
      res.json(await ctx.cluster.getOperation(String(req.params.id)));
    });
    router.get('/v1/operations/:id/events', (req, res) => streamEvents(ctx, req, res));

  },
  registerFirstContact(router, ctx) {
    // The plan is not adopted yet, so no active plan pins the caller: the caller must present the
    // certificate of a dispatcher the offered plan names, and an operator credential of this dispatcher.
    router.post('/plan', offeredPins(ctx), async (req, res) => {
      await ctx.cluster.node.adoptPlan(validate(NodeAdoptPlanSchema, req.body));
      res.status(204).end();
    });
  },
  registerPeer(router, ctx) {
    const node = () => ctx.cluster.node;
    router.post('/firewall', async (req, res) => {
      const { firewall, confirmWithinSeconds, token } = validate(FirewallChangeSchema, req.body);
      if (!token) throw new DispatcherError('bad_request', 'a peer firewall change carries the token of the cluster change');
      res.json(await node().changeFirewall(firewall, confirmWithinSeconds, token));
    });
    router.post('/firewall/confirm', async (req, res) => {
      res.json(await node().confirmFirewall(validate(FirewallTokenSchema, req.body).token));
    });
    router.post('/firewall/extend', async (req, res) => {
      const { token, confirmWithinSeconds } = validate(FirewallExtendSchema, req.body);
      res.json(await node().extendFirewall(token, confirmWithinSeconds));
    });
    router.post('/firewall/cancel', async (req, res) => {
      res.json(await node().cancelFirewall(validate(FirewallTokenSchema, req.body).token));
    });
    router.post('/plan/update', async (req, res) => {
      await node().updatePlan(validate(NodeUpdatePlanSchema, req.body));
      res.status(204).end();
    });
    router.post('/tls/requests', async (_req, res) => {
      res.json(await node().certificateRequests());
    });
    router.post('/tls/certificates', async (req, res) => {
      await node().installCertificates(validate(NodeInstallCertificatesSchema, req.body));
      res.status(204).end();
    });
    router.post('/tls/reload', async (req, res) => {
      res.json(await node().reloadCertificates(validate(NodeReloadCertificatesSchema, req.body ?? {})));
    });
    router.post('/tls/trust', async (req, res) => {
      await node().trustCa(validate(NodeTrustCaSchema, req.body).ca);
      res.status(204).end();
    });
    router.post('/preflight', async (req, res) => {
      const { callerTime } = validate(PreflightSchema, req.body);
      res.json({ problems: await node().preflight(callerTime) });
    });
    router.post('/guard', async (_req, res) => {
      res.json(await node().guard());
    });
    router.post('/guard/verify', async (_req, res) => {
      res.json(await node().verifyGuard());
    });
    router.post('/processes/:id/start', async (req, res) => {
      const { readyTimeoutMs, agencyState } = validate(StartSchema, req.body);
      res.json(await node().startProcess(String(req.params.id), readyTimeoutMs, agencyState ? { agencyState } : {}));
    });
    router.post('/processes/:id/refresh-config', async (req, res) => {
      await node().refreshConfig(String(req.params.id));
      res.status(204).end();
    });
    router.post('/processes/:id/stop', async (req, res) => {
      const { keepCompanion } = validate(StopSchema, req.body ?? {});
      await node().stopProcess(String(req.params.id), keepCompanion ? { keepCompanion } : {});
      res.status(204).end();
    });
    router.get('/processes/:id/log', async (req, res) => {
      const { lines } = validate(LogQuerySchema, req.query, 'query');
      res.json({ lines: await node().logTail(String(req.params.id), lines) });
    });
    router.post('/state', async (req, res) => {
      await node().setClusterState(validate(StateSchema, req.body).state);
      res.status(204).end();
    });
    router.get('/status', async (_req, res) => {
      res.json(await node().status());
    });
    router.post('/cleanup', async (req, res) => {
      await node().cleanup(validate(CleanupRequestSchema, req.body).confirmName);
      res.status(204).end();
    });
    router.post('/discard', async (req, res) => {
      await node().discardPlan(validate(DiscardSchema, req.body).name);
      res.status(204).end();
    });
    router.post('/release', async (req, res) => {
      res.json(await node().releasePlan(validate(DiscardSchema, req.body).name));
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
    '/v1/cluster/connection': { get: { operationId: 'clusterConnection', summary: 'What a database client needs: cluster CA, coordinators, user, database and password (for a 0600 pgpass; dispatch connect)', responses: { ...json('connection details'), '404': problemResponse('no cluster'), '409': problemResponse('no cluster CA') } } },
    '/v1/cluster/shutdown': { post: { operationId: 'shutdownCluster', summary: 'Stop every process, coordinators first; data and firewall stay', responses: op202 } },
    '/v1/cluster/relaunch': { post: { operationId: 'relaunchCluster', summary: 'Start the persisted plan again, keeping data', requestBody: { ...body, required: false }, responses: op202 } },
    '/v1/cluster/cleanup': { post: { operationId: 'cleanupCluster', summary: 'Delete data dirs and firewall rules of a shut-down cluster (repeat its name)', requestBody: body, responses: op202 } },
    '/v1/cluster/firewall': {
      post: {
        operationId: 'changeFirewall',
        summary: 'Apply a new firewall policy on every dispatcher; it rolls back unless confirmed within confirmWithinSeconds',
        requestBody: body,
        responses: { ...json('pending change with its confirm deadline'), '400': problemResponse('invalid policy'), '409': problemResponse('computed against another plan version (baseVersion), or another cluster operation runs') },
      },
    },
    '/v1/cluster/firewall/confirm': {
      post: { operationId: 'confirmFirewall', summary: 'Keep the pending firewall change on every dispatcher (body: its token; over a new connection)', requestBody: body, responses: { ...json('confirmed'), '409': problemResponse('nothing pending (rolled back already?) or the same connection as the change') } },
    },
    '/v1/cluster/firewall/extend': { post: { operationId: 'extendFirewall', summary: 'Move the pending change\'s deadline to confirmWithinSeconds from now', requestBody: body, responses: { ...json('extended'), '409': problemResponse('nothing pending') } } },
    '/v1/cluster/firewall/cancel': { post: { operationId: 'cancelFirewall', summary: 'Roll the pending change back now on every dispatcher', requestBody: body, responses: { ...json('cancelled'), '409': problemResponse('nothing pending') } } },
    '/v1/node/firewall': { post: { operationId: 'nodeChangeFirewall', summary: '(peer) apply a firewall policy with a confirm deadline', requestBody: body, responses: json('guard status') } },
    '/v1/node/firewall/confirm': { post: { operationId: 'nodeConfirmFirewall', summary: '(peer) keep the pending firewall change', requestBody: body, responses: { ...json('guard status'), '409': problemResponse('nothing pending') } } },
    '/v1/node/firewall/extend': { post: { operationId: 'nodeExtendFirewall', summary: '(peer) move the pending change\'s deadline', requestBody: body, responses: { ...json('guard status'), '409': problemResponse('nothing pending') } } },
    '/v1/node/firewall/cancel': { post: { operationId: 'nodeCancelFirewall', summary: '(peer) roll the pending change back now', requestBody: body, responses: { ...json('guard status'), '409': problemResponse('nothing pending') } } },
    '/v1/operations': { get: { operationId: 'listOperations', summary: 'Operations this dispatcher ran and those recorded in the cluster\'s agency (stale: its runner died)', responses: json('operations') } },
    '/v1/operations/{id}': { get: { operationId: 'getOperation', summary: 'An operation with its events', parameters: [idParam], responses: { ...json('operation'), '404': problemResponse('no such operation') } } },
    '/v1/operations/{id}/events': {
      get: {
        operationId: 'streamOperationEvents',
        summary: 'NDJSON stream of the events of an operation until it ends',
        parameters: [idParam],
        responses: { '200': { description: 'one JSON object a line', content: { 'application/x-ndjson': { schema: { type: 'object' } } } }, '404': problemResponse('no such operation'), ...commonErrors },
      },
    },
    '/v1/node/plan': { post: { operationId: 'nodeAdoptPlan', summary: '(first contact: operator credential + a certificate the offered plan pins) store a plan and its secrets', requestBody: body, responses: { '204': { description: 'stored' }, '409': problemResponse('another cluster is active'), ...commonErrors } } },
    '/v1/node/tls/requests': { post: { operationId: 'nodeCertificateRequests', summary: '(peer) make keys for this dispatcher\'s processes and itself; answer certificate requests (keys stay)', responses: json('certificate requests') } },
    '/v1/node/tls/certificates': { post: { operationId: 'nodeInstallCertificates', summary: '(peer) install the cluster CA and the certificates signed for the pending keys', requestBody: body, responses: { '204': { description: 'installed' }, ...commonErrors } } },
    '/v1/node/tls/reload': { post: { operationId: 'nodeReloadCertificates', summary: '(peer) write the installed certificates into the process dirs and make the running processes re-read them (no restart)', responses: { '200': { description: 'what each process did', content: { 'application/json': { schema: { type: 'object' } } } }, ...commonErrors } } },
    '/v1/node/tls/trust': { post: { operationId: 'nodeTrustCa', summary: '(peer) trust this CA bundle from now on (CA rotation)', requestBody: body, responses: { '204': { description: 'trusted' }, ...commonErrors } } },
    '/v1/node/preflight': { post: { operationId: 'nodePreflight', summary: '(peer) check this machine can run its part', requestBody: body, responses: json('problems') } },
    '/v1/node/guard': { post: { operationId: 'nodeGuard', summary: '(peer) install the firewall guard', responses: json('guard status') } },
    '/v1/node/guard/verify': { post: { operationId: 'nodeGuardVerify', summary: '(peer) read the guard back', responses: json('guard status') } },
    '/v1/node/processes/{id}/start': { post: { operationId: 'nodeStartProcess', summary: '(peer) start a planned process and wait until ready', parameters: [idParam], requestBody: body, responses: json('process status') } },
    '/v1/node/processes/{id}/stop': { post: { operationId: 'nodeStopProcess', summary: '(peer) stop a process gracefully, and its companion unless {"keepCompanion": true} (a rolling restart)', parameters: [idParam], requestBody: { ...body, required: false }, responses: { '204': { description: 'stopped' }, ...commonErrors } } },
    '/v1/node/state': { post: { operationId: 'nodeSetState', summary: '(peer) record the cluster state', requestBody: body, responses: { '204': { description: 'recorded' }, ...commonErrors } } },
    '/v1/node/processes/{id}/log': { get: { operationId: 'nodeProcessLog', summary: '(peer) last lines of a process log', parameters: [idParam], responses: json('log lines') } },
    '/v1/node/status': { get: { operationId: 'nodeStatus', summary: '(peer) processes and guard of this dispatcher', responses: json('node status') } },
    '/v1/node/cleanup': { post: { operationId: 'nodeCleanup', summary: '(peer) delete this machine\'s data dirs of the cluster', requestBody: body, responses: { '204': { description: 'removed' }, ...commonErrors } } },
    '/v1/node/processes/{id}/refresh-config': { post: { operationId: 'nodeRefreshConfig', summary: '(peer) re-render a running process\'s configuration from the stored plan and signal it to re-read it', parameters: [idParam], responses: { '204': { description: 're-read' }, ...commonErrors } } },
    '/v1/node/plan/update': { post: { operationId: 'nodeUpdatePlan', summary: '(peer) store the next plan version of a scale operation (dispatchers and processes only) and re-render the guard from it', requestBody: body, responses: { '204': { description: 'stored' }, '409': problemResponse('the stored version is not the base'), ...commonErrors } } },
    '/v1/node/discard': { post: { operationId: 'nodeDiscard', summary: '(peer) forget a plan that never started', requestBody: body, responses: { '204': { description: 'forgotten' }, ...commonErrors } } },
    '/v1/node/release': { post: { operationId: 'nodeRelease', summary: '(peer) leave the cluster (scale in): stop this machine\'s processes, remove its guard, forget the plan and its pins; data dirs are kept', requestBody: body, responses: { ...json('the data dirs kept'), '409': problemResponse('another cluster\'s plan') } } },
  },
};
