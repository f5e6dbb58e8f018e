/**
 * The upgrade side of a rolling restart: a dispatcher checks that a plan whose binaries changed can run
 * here (preflight) and stores it (binaries only). localUpgradeNode is this dispatcher's (served to peers by
 * server/http/routes/restart.ts); remoteUpgradeNode reaches a peer's over pinned HTTPS.
 */
import { access, constants } from 'node:fs/promises';
import { DispatcherError } from '../../api/errors.js';
import type { PlanDispatcher } from '../../api/plan.js';
import { NoContentSchema, PreflightAnswerSchema, type PreflightProblem } from '../../api/rest.js';
import { PeerClient, type PeerIdentity } from './peer-client.js';
import { sameExceptBinaries } from '../core/restart-plan.js';
import { assertValidPlan, STORED_PLAN, validatePlan } from '../core/validate-plan.js';
import { defaultEngineCatalog } from '../engines/loader.js';
import type { ClusterStore } from './store.js';
import type { ProcessRenderer } from './node-api.js';
import type { UpgradeNode } from './restart-context.js';

/** Preflight and adoption of an upgraded plan on this dispatcher (served to peers by routes/restart.ts). */
export function localUpgradeNode(deps: {
  id: string;
  dataDir: string;
  store: ClusterStore;
  renderer: ProcessRenderer;
  runAs?: { uid: number; gid: number; user?: string };
  /** A process's installed TLS material (the templates need it to render). */
  tls?: (processId: string) => { ca: string; cert: string; key: string } | undefined;
}): UpgradeNode {
  return {
    async preflightPlan(plan) {
      const snap = deps.store.get();
      const problems: PreflightProblem[] = [];
      const add = (check: string, message: string) => problems.push({ host: deps.id, check, message });
      if (!snap) return [{ host: deps.id, check: 'plan', message: 'no cluster plan on this dispatcher' }];
      for (const p of validatePlan(plan, defaultEngineCatalog())) add('plan', `${p.path}: ${p.message}`);
      if (problems.length) return problems;
      if (snap.plan.name !== plan.name || !sameExceptBinaries(snap.plan, plan)) add('plan', 'an upgrade may change only the plan\'s binaries');
      for (const p of plan.processes.filter((x) => x.dispatcher === deps.id)) {
        try {
          const tls = deps.tls?.(p.id);
          const { spec } = deps.renderer.render(plan, p.id, { dispatcherDataDir: deps.dataDir, secrets: snap.secrets, runAs: deps.runAs, ...(tls ? { tls } : {}) });
          try {
            await access(spec.argv[0], constants.X_OK);
          } catch {
            add('binary', `${p.id}: ${spec.argv[0]} is missing or not executable`);
          }
        } catch (e) {
          add('binary', `${p.id}: ${(e as Error).message}`);
        }
      }
      return problems;
    },
    async adoptPlan(plan) {
      const snap = deps.store.get();
      if (!snap) throw new DispatcherError('not_found', `dispatcher ${deps.id} has no cluster plan`);
      assertValidPlan(plan, defaultEngineCatalog(), STORED_PLAN);
      if (snap.plan.name !== plan.name || !sameExceptBinaries(snap.plan, plan)) {
        throw new DispatcherError('conflict', `dispatcher ${deps.id}: an upgrade may change only the binaries of cluster ${snap.plan.name}`);
      }
      await deps.store.save({ ...snap, plan });
    },
  };
}

/** A peer's upgrade side over mutual TLS (routes/restart.ts serves /v1/node/restart/*); answers validated. */
export function remoteUpgradeNode(d: PlanDispatcher, identity: PeerIdentity): UpgradeNode {
  const client = new PeerClient(d, identity);
  return {
    preflightPlan: async (plan) => (await client.call('POST', '/v1/node/restart/preflight', PreflightAnswerSchema, { body: { plan } })).problems,
    adoptPlan: async (plan) => void (await client.call('POST', '/v1/node/restart/plan', NoContentSchema, { body: { plan } })),
    close: () => client.close(),
  };
}
