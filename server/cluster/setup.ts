/**
 * Wires the cluster side of a dispatcher from its configuration: the real engine renderer, firewall guard
 * and health checks behind the small interfaces LocalNode and the Orchestrator use. The daemon calls
 * createClusterRuntime once at start (server/cluster-daemon.ts).
 */
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { DispatcherError } from '../../api/errors.js';
import { refuseUnsafeClusterStart } from './start-checks.js';
import type { FirewallBackendName, Plan, PlanProcess, Role } from '../../api/plan.js';
import type { GuardStatusView } from '../../api/rest.js';
import type { DispatcherConfig } from '../config.js';
import type { Logger } from '../log.js';
import type { Supervisor } from '../supervisor/types.js';
import { allowedPaths, chosenBinaries, loadEngine, renderProcess, generateSecrets, type Engine } from '../engines/index.js';
import { agencyStatus, dbserverState, coordinatorRouting } from '../engines/pg-ha-health.js';
import type { ClusterClientTls } from '../engines/cluster-https.js';
import { DISPATCHER_CERT } from '../core/cert-names.js';
import { validatePlan } from '../core/validate-plan.js';
import { defaultEngineCatalog } from '../engines/loader.js';
import { guardPolicyFromPlan } from '../core/firewall-policy.js';
import { Guard } from '../firewall/guard.js';
import { detectBackend, createBackend } from '../firewall/detect.js';
import { stopLeftover } from './leftover.js';
import { ClusterStore } from './store.js';
import { OperationStore } from './operations.js';
import { LocalNode } from './node.js';
import type { NodeGuard, ProcessRenderer } from './node-api.js';
import { resolveUser } from './run-as-user.js';
import { RemoteNode } from './remote-node.js';
import type { PeerIdentity } from './peer-client.js';
import { Orchestrator, type ClusterHealth } from './orchestrator.js';
import { ClusterService } from './service.js';
import { RestartService } from './restart.js';
import { ScaleService } from './scale.js';
import { scaleOutRunners } from './scale-out-steps.js';
import { scaleInRunners } from './scale-in-steps.js';
import { localUpgradeNode, remoteUpgradeNode } from './restart-upgrade.js';
import { pgHaActions } from '../engines/pg-ha/restart-actions.js';
import { stopWithGrace } from '../../shared/stop-with-grace.js';
import { etcdAgency } from '../engines/agency-kv.js';
import { AgencyOperationLock } from './operation-lock.js';
import { LaunchWatchdog } from './launch-watchdog.js';

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
      return [r.program, ...r.requires, ...(r.companion ? [r.companion.program] : [])].map((prog) => chosen[prog]);
    },
    generateSecrets: (name) => generateSecrets(engine(name)),
    leftoverPidFile(plan, id, dataDir) {
      try {
        // Only the pid file's path matters: stand-in secrets and TLS material let every template render.
        const tls = { ca: 'x', cert: 'x', key: 'x' };
        return renderProcess(engine(plan.engine), plan, id, { dispatcherDataDir: dataDir, binaries: binaries(plan.engine), secrets: new Proxy({}, { get: () => 'x' }), tls }).leftoverPidFile;
      } catch {
        return undefined; // a plan this engine cannot render has no leftover to look for
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
      ...(s.lastApplyMs !== null ? { lastApplyMs: s.lastApplyMs } : {}),
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
        guard = new Guard({ backend, driftIntervalMs: config.firewall.driftIntervalMs, logger, stateDir: join(config.dataDir, 'firewall') });
        // A commit-confirmed change persisted by an earlier run of this daemon is taken up, not overwritten:
        // its rules stay until it is confirmed, cancelled or its watchdog rolls it back.
        if (await guard.resumePending()) {
          if (backend.name !== 'none') guard.start();
          return view()!;
        }
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
    async applyWithDeadline(plan, seconds, token) {
      if (!guard) throw new DispatcherError('conflict', `no firewall guard is installed on ${id}: launch the cluster first`, { details: { host: id } });
      await guard.applyWithDeadline(guardPolicyFromPlan(plan, id), seconds, { token, firewall: plan.firewall });
      return view()!;
    },
    confirm: async (token) => (guard ? guard.confirm(token) : false),
    extend: async (token, seconds) => (guard ? (await guard.extend(token, seconds)) !== false : false),
    cancel: async (token) => (guard ? guard.cancel(token) : false),
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
export function engineHealth(config: DispatcherConfig, tls: () => ClusterClientTls | undefined): ClusterHealth {
  return {
    agencyLeader: async (plan) => (plan.engine === 'pg-ha' ? (await agencyStatus(plan, { timeoutMs: 1000, tls: tls() })).leaderId : undefined),
    async check(plan, role, processes, secrets) {
      if (plan.engine !== 'pg-ha') {
        // arangod is not run here; its processes' own readiness probes (/_api/version) are the gate.
        return { ok: true, detail: `${processes.length} ${role}(s) passed their readiness probes` };
      }
      if (role === 'agent') {
        const st = await agencyStatus(plan, { tls: tls() });
        return { ok: st.hasLeader && st.members.every((m) => m.reachable), detail: describeAgency(st) };
      }
      if (role === 'dbserver') {
        const psql = defaultPath(config, 'pg-ha', 'psql');
        const states = await Promise.all(processes.map((p) => dbserverState(plan, p.id, { psql, superuserPassword: secrets['superuser-password'], tls: tls() })));
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

/**
 * Re-installs the guard of the cluster this dispatcher takes part in, before any process is adopted or
 * restarted (a reboot empties the kernel's rules, and relaunchOnBoot would otherwise start processes
 * unguarded). Every state but `cleaned` keeps its guard: shutdown keeps it, and a launch interrupted after
 * its guard step has processes that must stay guarded. Returns false when the guard could not go in.
 */
export async function guardBeforeProcesses(guard: NodeGuard, config: DispatcherConfig, logger: Logger): Promise<boolean> {
  const snapshot = await new ClusterStore(config.dataDir).load();
  if (!snapshot || snapshot.state === 'cleaned') return true;
  try {
    await guard.apply(snapshot.plan);
    return true;
  } catch (e) {
    logger.error('could not re-apply the firewall guard at start: gone processes stay stopped', { error: (e as Error).message });
    return false;
  }
}

/** What the cluster runtime needs of the daemon (the HTTP AppContext has these and more). */
export interface ClusterRuntimeContext {
  config: DispatcherConfig;
  logger: Logger;
  supervisor: Supervisor;
}

export async function createClusterRuntime(ctx: ClusterRuntimeContext, preGuard?: NodeGuard & { close(): void }): Promise<ClusterRuntime> {
  const { config, logger, supervisor } = ctx;
  const store = new ClusterStore(config.dataDir);
  const snapshot = await store.load();
  const operations = new OperationStore(config.dataDir, { maxAgeMs: config.operations.maxAgeDays * 86_400_000, maxCount: config.operations.maxCount });
  const interrupted = await operations.load();
  const renderer = engineRenderer(config);
  const guard = preGuard ?? nodeGuard(config.id, config, logger);
  refuseUnsafeClusterStart(config);
  const runAs = config.runAs ? await resolveUser(config.runAs) : undefined;
  const node = new LocalNode({
    id: config.id,
    dataDir: config.dataDir,
    supervisor,
    store,
    renderer,
    guard,
    runAs,
    allowedEngines: Object.keys(config.engines),
    afterStop: async (plan, id) => void (await stopLeftover(renderer.leftoverPidFile(plan, id, config.dataDir), runAs, logger)),
  });
  // This dispatcher's own key pair doubles as its client certificate towards peers (mutual TLS).
  const identity: PeerIdentity = { cert: readFileSync(config.cert, 'utf8'), key: readFileSync(config.key, 'utf8') };
  // This dispatcher's client certificate for the cluster's own services (docs/SECURITY.md, "Cluster-internal TLS").
  const clientTls = (): ClusterClientTls | undefined => {
    const m = node.certificates.material(DISPATCHER_CERT);
    return m ? { ...m, caFile: store.caFile } : undefined;
  };
  // The cluster-wide operation lock lives in the cluster's own agency (pg-ha: etcd), reached with this
  // dispatcher's client certificate; a cluster without one (cleaned, or another engine) locks locally only.
  operations.useClusterLock(
    new AgencyOperationLock({
      self: config.id,
      ttlSeconds: config.operations.lockTtlSeconds,
      agency: () => {
        const snap = store.get();
        if (!snap || snap.state === 'cleaned' || snap.plan.engine !== 'pg-ha' || !clientTls()) return undefined;
        return { kv: etcdAgency(snap.plan, clientTls), cluster: snap.plan.name };
      },
      onWarning: (message) => logger.warn(message),
    }),
    config.id,
  );
  const orchestrator = new Orchestrator({
    self: node,
    store,
    renderer,
    health: engineHealth(config, clientTls),
    peer: (d, firstContact) => new RemoteNode(d, identity, firstContact),
    validate: (plan, opts) => validatePlan(plan, defaultEngineCatalog(), opts),
  });
  const engines = engineCache();
  const restarts = new RestartService({
    self: node,
    store,
    operations,
    health: engineHealth(config, clientTls),
    engine: engines,
    peer: (d) => new RemoteNode(d, identity),
    localUpgrade: localUpgradeNode({ id: config.id, dataDir: config.dataDir, store, renderer, runAs, tls: (id) => node.certificates.material(id) }),
    peerUpgrade: (d) => remoteUpgradeNode(d, identity),
    actions: pgHaActions({ psql: defaultPath(config, 'pg-ha', 'psql'), tls: clientTls }),
  });
  // Scale changes (server/cluster/scale.ts): new dispatchers are adopted by first contact, like a launch.
  const scales = new ScaleService({
    self: node,
    store,
    operations,
    health: engineHealth(config, clientTls),
    peer: (d, firstContact) => new RemoteNode(d, identity, firstContact),
    view: () => orchestrator.status(),
    clusterTls: clientTls,
    runners: { ...scaleOutRunners, ...scaleInRunners },
    actions: pgHaActions({ psql: defaultPath(config, 'pg-ha', 'psql'), tls: clientTls }),
    engine: engines,
  });
  for (const op of interrupted) {
    // A rolling restart resumes from its persisted progress (server/cluster/restart.ts); others are reported.
    // In the background: taking the lock back may wait for this dispatcher's old lease to run out.
    if (op.kind === 'restart') void restarts.resume(op).catch((e) => operations.markInterrupted(op, `could not resume: ${(e as Error).message}`));
    else await operations.markInterrupted(op, `the dispatcher restarted while this ${op.kind} ran; it did not finish (run it again)`);
  }
  // A cluster this dispatcher takes part in keeps its guard across daemon restarts (shutdown keeps it too):
  // with startDaemon's beforeProcesses it went in before any process was adopted; without (tests), now.
  if (!preGuard && snapshot && snapshot.state !== 'cleaned') await guardBeforeProcesses(guard, config, logger);
  // A peer left `launching` by a runner that died rolls its own part back (server/cluster/launch-watchdog.ts).
  const watchdog = new LaunchWatchdog({
    self: config.id,
    store,
    node,
    runningHere: () => operations.running() !== undefined,
    staleMs: config.operations.launchStaleSeconds * 1000,
    log: (message) => logger.warn(message),
  });
  watchdog.start(Math.min(10_000, (config.operations.launchStaleSeconds * 1000) / 4));
  return {
    // Peers reach this node through the watched one: each of their calls is a sign of a living launch.
    service: new ClusterService(watchdog.observe(node), orchestrator, operations, store, restarts, clientTls, scales),
    close: () => {
      watchdog.stop();
      guard.close();
    },
  };
}

export type { PlanProcess, Supervisor };
