/**
 * Wires the cluster side of a dispatcher from its configuration: the real engine renderer, firewall guard
 * and health checks behind the small interfaces LocalNode and the Orchestrator use. The daemon calls
 * createClusterService once at start (see clusterDaemonOptions).
 */
import { DispatcherError, formatProblems } from '../../api/errors.js';
import { checkDataTree } from '../data-tree.js';
import type { FirewallBackendName, Plan, PlanProcess, Role } from '../../api/plan.js';
import type { GuardStatusView } from '../../api/rest.js';
import type { DispatcherConfig } from '../config.js';
import type { Logger } from '../log.js';
import type { Supervisor } from '../supervisor/types.js';
import type { AppContext, RouteModule } from '../http/app.js';
import { addUser } from '../users.js';
import { allowedPaths, chosenBinaries, loadEngine, renderProcess, generateSecrets, type Engine } from '../engines/index.js';
import { agencyStatus, dbserverState, coordinatorRouting } from '../engines/pg-ha-health.js';
import { validatePlan } from '../core/validate-plan.js';
import { guardPolicyFromPlan } from '../core/firewall-policy.js';
import { Guard } from '../firewall/guard.js';
import { detectBackend, createBackend } from '../firewall/detect.js';
import { stopLeftover } from './leftover.js';
import { ClusterStore } from './store.js';
import { OperationStore } from './operations.js';
import { LocalNode, resolveUser, type NodeGuard, type ProcessRenderer } from './node.js';
import { RemoteNode } from './remote-node.js';
import { Orchestrator, type ClusterHealth } from './orchestrator.js';
import { ClusterService } from './service.js';
import { clusterModule } from '../http/routes/cluster.js';
import { plansModule } from '../http/routes/plans.js';
import { restartModule } from '../http/routes/restart.js';
import { RestartService, registerRestartService, localUpgradeNode, remoteUpgradeNode, pgHaActions } from './restart.js';

/** The machine's default path of an engine program (the first it allows), if configured. */
function defaultPath(config: DispatcherConfig, engine: string, program: string): string | undefined {
  const e = Object.hasOwn(config.engines, engine) ? config.engines[engine] : undefined;
  return e ? allowedPaths(e.binaries, program)[0] : undefined;
}

/** Engines are data read from templates/; read each once. */
function engineCache() {
  const cache = new Map<string, Engine>();
  return (name: string) => {
    let e = cache.get(name);
    if (!e) cache.set(name, (e = loadEngine(name)));
    return e;
  };
}

export function engineRenderer(config: DispatcherConfig): ProcessRenderer & { leftoverPidFile(plan: Plan, id: string, dataDir: string): string | undefined } {
  const engine = engineCache();
  const binaries = (name: string) => {
    const b = Object.hasOwn(config.engines, name) ? config.engines[name].binaries : undefined;
    if (!b) throw new DispatcherError('preflight_failed', `engine ${name} is not allowed on this machine (config: engines.${name})`);
    return b;
  };
  return {
    render: (plan, processId, ctx) => renderProcess(engine(plan.engine), plan, processId, { ...ctx, binaries: binaries(plan.engine) }),
    binariesFor(plan, role) {
      const e = engine(plan.engine);
      const r = e.manifest.roles[role as Role];
      const chosen = chosenBinaries(e, plan, { dispatcherDataDir: config.dataDir, binaries: binaries(plan.engine), secrets: {} }, role as Role);
      return [r.program, ...r.requires].map((prog) => chosen[prog]);
    },
    generateSecrets: (name) => generateSecrets(engine(name)),
    leftoverPidFile(plan, id, dataDir) {
      try {
        return renderProcess(engine(plan.engine), plan, id, { dispatcherDataDir: dataDir, binaries: binaries(plan.engine), secrets: new Proxy({}, { get: () => 'x' }) }).leftoverPidFile;
      } catch {
        return undefined;
      }
    },
  };
}

/** The firewall as LocalNode needs it: one Guard per installed policy, with its drift loop running. */
export function nodeGuard(id: string, config: DispatcherConfig, logger: Logger): NodeGuard & { close(): void } {
  let guard: Guard | undefined;
  const backendName = (plan: Plan): FirewallBackendName => (plan.firewall.backend !== 'auto' ? plan.firewall.backend : config.firewall.backend);
  const view = (): GuardStatusView | undefined => {
    if (!guard) return undefined;
    const s = guard.status();
    return {
      backend: s.backend,
      inSync: s.inSync,
      ...(s.lastAppliedAt ? { lastAppliedAt: s.lastAppliedAt } : {}),
      driftRepairs: s.driftRepairs,
      warnings: s.warnings,
      ...(s.pendingConfirmUntil ? { pendingConfirmUntil: s.pendingConfirmUntil } : {}),
      ...(s.backend === 'none' ? { note: 'no firewall: backend none, accepted only because every port binds loopback' } : {}),
    };
  };
  return {
    async available(plan) {
      try {
        const b = await detectBackend(backendName(plan));
        if (b.name === 'none' && !guardPolicyFromPlan(plan, id).loopbackOnly) {
          return { ok: false, reason: 'firewall backend none is only accepted when every port binds loopback' };
        }
        return { ok: true };
      } catch (e) {
        return { ok: false, reason: (e as Error).message };
      }
    },
    async apply(plan) {
      const policy = guardPolicyFromPlan(plan, id);
      const backend = await detectBackend(backendName(plan));
      if (!guard || guard.backend.name !== backend.name) {
        guard?.stop();
        guard = new Guard({ backend, driftIntervalMs: config.firewall.driftIntervalMs, logger });
      }
      await guard.apply(policy);
      if (backend.name !== 'none') guard.start();
      return view()!;
    },
    async verify() {
      if (!guard) throw new DispatcherError('operation_failed', `no firewall guard installed on ${id}`, { details: { host: id } });
      await guard.verify();
      return view()!;
    },
    status: view,
    async applyWithDeadline(plan, seconds) {
      if (!guard) throw new DispatcherError('conflict', `no firewall guard is installed on ${id}: launch the cluster first`, { details: { host: id } });
      await guard.applyWithDeadline(guardPolicyFromPlan(plan, id), seconds);
      return view()!;
    },
    confirm: () => guard?.confirm() ?? false,
    async remove() {
      if (!guard) return;
      guard.stop();
      await guard.remove();
      guard = undefined;
    },
    close() {
      guard?.stop();
    },
  };
}

/** Cluster-level health per engine and role (beyond each process's own probe). */
export function engineHealth(config: DispatcherConfig): ClusterHealth {
  return {
    agencyLeader: async (plan) => (plan.engine === 'pg-ha' ? (await agencyStatus(plan, { timeoutMs: 1000 })).leaderId : undefined),
    async check(plan, role, processes, secrets) {
      if (plan.engine !== 'pg-ha') {
        // arangod is not run here; its processes' own readiness probes (/_api/version) are the gate.
        return { ok: true, detail: `${processes.length} ${role}(s) passed their readiness probes` };
      }
      if (role === 'agent') {
        const st = await agencyStatus(plan);
        return { ok: st.hasLeader && st.members.every((m) => m.reachable), detail: describeAgency(st) };
      }
      if (role === 'dbserver') {
        const psql = defaultPath(config, 'pg-ha', 'psql');
        const states = await Promise.all(processes.map((p) => dbserverState(plan, p.id, { psql, superuserPassword: secrets['superuser-password'] })));
        const leaders = states.filter((s) => s.role === 'leader' && s.running);
        const replicasOk = states.filter((s) => s.role === 'replica' && s.running && s.streaming !== false);
        const ok = leaders.length === 1 && leaders.length + replicasOk.length === states.length;
        return { ok, detail: states.map((s) => `${s.id}=${s.reachable ? `${s.role}${s.running ? '' : ' (not running)'}${s.role === 'replica' ? (s.streaming ? ' streaming' : ' not streaming') : ''}` : 'unreachable'}`).join(', ') };
      }
      const routes = await Promise.all(processes.map((p) => coordinatorRouting(plan, p.id)));
      return {
        ok: routes.every((r) => r.ok),
        detail: routes.map((r) => `${r.id}: ${r.reachable ? (r.checked ? `${r.primariesUp.length} primary up, ${r.replicasUp.length} replica(s) up` : 'checks not run yet') : 'unreachable'}`).join('; '),
      };
    },
  };
}

function describeAgency(st: Awaited<ReturnType<typeof agencyStatus>>): string {
  return `${st.members.filter((m) => m.reachable).length}/${st.members.length} members answering, ${st.hasLeader ? `leader ${st.leaderId}` : "no leader"}`;
}

export interface ClusterRuntime {
  service: ClusterService;
  close(): void;
}

/** Stops a postmaster that outlived Patroni (postgres is not Patroni's child; DESIGN §8). */
export async function createClusterRuntime(ctx: AppContext): Promise<ClusterRuntime> {
  const { config, logger, supervisor } = ctx;
  const store = new ClusterStore(config.dataDir);
  const snapshot = await store.load();
  const operations = new OperationStore(config.dataDir);
  const interrupted = await operations.load();
  const renderer = engineRenderer(config);
  const guard = nodeGuard(config.id, config, logger);
  const treeProblems = checkDataTree(config.dataDir, process.getuid?.() ?? 0);
  if (treeProblems.length) {
    throw new DispatcherError('config_invalid', `refusing to start: the data dir is not safe:\n${formatProblems(treeProblems)}`, { problems: treeProblems });
  }
  const runAs = config.runAs ? await resolveUser(config.runAs) : undefined;
  if (!runAs && process.getuid?.() === 0 && Object.keys(config.engines).length > 0) {
    throw new DispatcherError('config_invalid', 'refusing to start: this dispatcher runs as root and allows engines, but no runAs user is configured, so cluster processes would run as root. Set runAs to an unprivileged user (dispatcherd init --run-as cluster-dispatcher, or DISPATCHER_RUN_AS).');
  }
  const node = new LocalNode({
    id: config.id,
    dataDir: config.dataDir,
    supervisor,
    store,
    renderer,
    guard,
    runAs,
    allowedEngines: Object.keys(config.engines),
    ensureClusterUser: async (user, password) => {
      await addUser(config.usersFile, user, password, { replace: true });
    },
    afterStop: async (plan, id) => void (await stopLeftover(renderer.leftoverPidFile(plan, id, config.dataDir), runAs, logger)),
  });
  const orchestrator = new Orchestrator({
    self: node,
    store,
    renderer,
    health: engineHealth(config),
    peer: (d, credential) => new RemoteNode(d, credential),
    validate: (plan) => validatePlan(plan),
  });
  const engines = engineCache();
  const restarts = new RestartService({
    self: node,
    store,
    operations,
    health: engineHealth(config),
    engine: engines,
    peer: (d, credential) => new RemoteNode(d, credential),
    localUpgrade: localUpgradeNode({ id: config.id, dataDir: config.dataDir, store, renderer, runAs }),
    peerUpgrade: remoteUpgradeNode,
    actions: pgHaActions({ psql: defaultPath(config, 'pg-ha', 'psql') }),
  });
  registerRestartService(operations, restarts);
  for (const op of interrupted) {
    // A rolling restart resumes from its persisted progress (server/cluster/restart.ts); others are reported.
    if (op.kind === 'restart') await restarts.resume(op).catch((e) => operations.markInterrupted(op, `could not resume: ${(e as Error).message}`));
    else await operations.markInterrupted(op, `the dispatcher restarted while this ${op.kind} ran; it did not finish (run it again)`);
  }
  // A cluster this dispatcher takes part in keeps its guard across daemon restarts (shutdown keeps it too).
  if (snapshot && snapshot.state !== 'launching') {
    guard.apply(snapshot.plan).catch((e) => logger.error('could not re-apply the firewall guard at start', { error: (e as Error).message }));
  }
  return { service: new ClusterService(node, orchestrator, operations, store), close: () => guard.close() };
}

/** What startDaemon needs to serve the cluster API. */
export function clusterDaemonOptions(): { modules: RouteModule[]; extendContext: (ctx: AppContext) => Promise<void>; runtime: () => ClusterRuntime | undefined } {
  let runtime: ClusterRuntime | undefined;
  return {
    modules: [plansModule, clusterModule, restartModule],
    extendContext: async (ctx) => {
      runtime = await createClusterRuntime(ctx);
      ctx.cluster = runtime.service;
    },
    runtime: () => runtime,
  };
}

export type { PlanProcess, Supervisor };
