/**
 * One dispatcher's share of cluster work: the NodeApi. The contacted dispatcher drives every dispatcher of
 * the plan through this interface — itself through LocalNode directly, its peers through RemoteNode
 * (HTTPS, pinned, authenticated), which calls the peer's /v1/node routes, which call the peer's LocalNode.
 * So the same code runs a process whichever dispatcher asked for it. The contracts are in node-api.ts,
 * the checks in preflight.ts, the process dir in process-dir.ts.
 */
import { DispatcherError, isDispatcherError } from '../../api/errors.js';
import type { FirewallPolicy, Plan, PlanProcess } from '../../api/plan.js';
import type { ClusterState, GuardStatusView, NodeAdoptPlan, NodeReleaseAnswer, NodeUpdatePlan, NodeCertificateReload, NodeCertificateRequests, NodeInstallCertificates, NodeStatusView, PreflightProblem } from '../../api/rest.js';
import type { ProcessSpec, ProcessStatus, Supervisor } from '../supervisor/types.js';
import { processesOn } from '../core/order.js';
import { assertValidPlan, STORED_PLAN } from '../core/validate-plan.js';
import { updateNodePlan } from './node-plan-update.js';
import { defaultEngineCatalog } from '../engines/loader.js';
import { reloadCertificates } from '../engines/certificate-reload.js';
import { TLS_FILES } from '../engines/render.js';
import type { ClusterStore } from './store.js';
import { NodeCertificates } from './node-certificates.js';
import type { NodeApi, NodeGuard, ProcessRenderer, StartOptions } from './node-api.js';
import { preflightProblems } from './preflight.js';
import { warmUpAfterAdoption } from './launch-warm-up.js';
import { basename } from 'node:path';
import { processDirOf, removeProcessDir, writeProcessFiles } from './process-dir.js';

export interface LocalNodeDeps {
  id: string;
  dataDir: string;
  supervisor: Supervisor;
  store: ClusterStore;
  renderer: ProcessRenderer;
  guard: NodeGuard;
  /** The unprivileged user processes run as, if configured. */
  runAs?: { uid: number; gid: number; user?: string };
  /** Engines this machine allows. */
  allowedEngines: string[];
  /** Called after a process stopped: ends what may outlive it (a postmaster outlives Patroni). */
  afterStop?(plan: Plan, processId: string): Promise<void>;
  minFreeBytes?: number;
}

export class LocalNode implements NodeApi {
  readonly id: string;
  readonly certificates: NodeCertificates;
  constructor(private readonly deps: LocalNodeDeps) {
    this.id = deps.id;
    this.certificates = new NodeCertificates(deps.id, deps.store);
  }

  certificateRequests(): Promise<NodeCertificateRequests> {
    return this.certificates.requests();
  }

  installCertificates(payload: NodeInstallCertificates): Promise<void> {
    return this.certificates.install(payload);
  }

  trustCa(caBundle: string): Promise<void> {
    return this.certificates.trust(caBundle);
  }

  async reloadCertificates(opts: { caChanged: boolean }): Promise<NodeCertificateReload> {
    const { plan: stored, secrets } = this.requirePlan();
    const plan = assertValidPlan(stored, defaultEngineCatalog(), STORED_PLAN);
    const tlsNames = new Set<string>(Object.values(TLS_FILES));
    const out: NodeCertificateReload['processes'] = [];
    for (const p of this.myProcesses(plan)) {
      const tls = this.certificates.material(p.id);
      if (!tls) throw new DispatcherError('conflict', `no certificate installed for ${p.id} on ${this.id}`, { details: { host: this.id, process: p.id } });
      const rendered = this.deps.renderer.render(plan, p.id, { dispatcherDataDir: this.deps.dataDir, secrets, runAs: this.deps.runAs, tls });
      // Only the TLS files: each created new, owned through its descriptor and renamed over the old one
      // (server/safe-files.ts), so the program never reads a half-written certificate or key.
      const files = rendered.files.filter((f) => tlsNames.has(basename(f.path)));
      const dir = this.processDir(p);
      await writeProcessFiles(this.deps.dataDir, dir, files, this.deps.runAs);
      const st = this.deps.supervisor.get(p.id);
      if (!st?.pid || !(st.state === 'ready' || st.state === 'running')) {
        out.push({ process: p.id, done: `files written; not running (${st?.state ?? 'unknown'}): its next start reads them` });
        continue;
      }
      if (!rendered.certificateReload) throw new DispatcherError('conflict', `engine ${plan.engine} declares no certificate reload for ${p.role}: renew with a rolling restart`, { details: { host: this.id, process: p.id } });
      const content = Object.fromEntries(Object.entries(TLS_FILES).map(([k, name]) => [k, files.find((f) => basename(f.path) === name)!.content])) as Record<keyof typeof TLS_FILES, string>;
      try {
        const done = await reloadCertificates(rendered.certificateReload, { processId: p.id, pid: st.pid, dir, tls: content, caChanged: opts.caChanged, ...(this.deps.runAs ? { runAs: this.deps.runAs } : {}) });
        out.push({ process: p.id, pid: st.pid, done });
        // The role's companion serves with the same TLS files (pg-ha: PgBouncer on the coordinator's public
        // port) and re-reads them on its reload signal, like a companion kept across a rolling restart.
        const c = rendered.companion;
        const cst = c?.reloadSignal ? this.deps.supervisor.get(c.spec.id) : undefined;
        if (c?.reloadSignal && cst?.pid && (cst.state === 'ready' || cst.state === 'running')) {
          process.kill(cst.pid, c.reloadSignal);
          out.push({ process: c.spec.id, pid: cst.pid, done: `${c.reloadSignal} sent: it re-reads its configuration and TLS files` });
        }
      } catch (e) {
        const logTail = await this.deps.supervisor.logTail(p.id, 20).catch(() => []);
        throw new DispatcherError('operation_failed', `${p.id} on ${this.id} did not re-read its certificate: ${(e as Error).message}`, { details: { host: this.id, process: p.id, logTail }, cause: e });
      }
    }
    return { processes: out };
  }

  private requirePlan(): { plan: Plan; secrets: Record<string, string>; state: ClusterState } {
    const snap = this.deps.store.get();
    if (!snap) throw new DispatcherError('not_found', `dispatcher ${this.id} has no cluster plan`, { details: { host: this.id } });
    return snap;
  }

  private myProcesses(plan: Plan): PlanProcess[] {
    return processesOn(plan, this.id);
  }

  /** The absolute data dir of a process, refusing any path that would leave this dispatcher's data dir. */
  processDir(p: PlanProcess): string {
    return processDirOf(this.deps.dataDir, p);
  }

  async adoptPlan(payload: NodeAdoptPlan): Promise<void> {
    // The same validation as /v1/cluster/launch: a peer's plan is input like any other (400 listing every problem).
    const plan = assertValidPlan(payload.plan, defaultEngineCatalog());
    if (!plan.dispatchers.some((d) => d.id === this.id)) {
      throw new DispatcherError('bad_request', `the plan ${plan.name} does not name this dispatcher (${this.id})`, { details: { host: this.id } });
    }
    const current = this.deps.store.get();
    if (current && current.state !== 'cleaned') {
      const sameCluster = current.plan.name === plan.name;
      if (!sameCluster || current.state === 'running' || current.state === 'launching') {
        throw new DispatcherError('conflict', `dispatcher ${this.id} already has cluster ${current.plan.name} (${current.state})`, {
          details: { host: this.id, activePlan: current.plan.name, state: current.state },
        });
      }
    }
    // The plan's pins are now who may call this dispatcher's node routes (server/http/auth.ts): adopting a
    // plan changes which certificates are trusted, never an account.
    await this.deps.store.save({ plan, state: 'launching', secrets: payload.secrets });
    warmUpAfterAdoption();
  }

  async refreshConfig(processId: string): Promise<void> {
    const { plan, secrets } = this.requirePlan();
    const p = this.myProcesses(plan).find((x) => x.id === processId);
    if (!p) throw new DispatcherError('not_found', `process ${processId} is not planned on dispatcher ${this.id}`, { details: { host: this.id, process: processId } });
    const tls = this.certificates.material(processId);
    const rendered = this.deps.renderer.render(plan, processId, { dispatcherDataDir: this.deps.dataDir, secrets, runAs: this.deps.runAs, ...(tls ? { tls } : {}) });
    if (!rendered.configReloadSignal) throw new DispatcherError('conflict', `engine ${plan.engine} declares no configuration reload for ${p.role} ${processId}`, { details: { host: this.id, process: processId } });
    // Each file created new and renamed over the old one (server/safe-files.ts): never half-written.
    await writeProcessFiles(this.deps.dataDir, this.processDir(p), rendered.files, this.deps.runAs);
    const st = this.deps.supervisor.get(processId);
    if (st?.pid && (st.state === 'ready' || st.state === 'running')) process.kill(st.pid, rendered.configReloadSignal);
  }

  /** A scale step's next plan version (node-plan-update.ts). */
  updatePlan(payload: NodeUpdatePlan): Promise<void> {
    return updateNodePlan({ id: this.id, store: this.deps.store, guard: this.deps.guard }, payload);
  }

  async discardPlan(name: string): Promise<void> {
    const snap = this.deps.store.get();
    if (snap && snap.plan.name === name && snap.state === 'launching') await this.deps.store.forget();
  }

  async releasePlan(name: string): Promise<NodeReleaseAnswer> {
    const snap = this.deps.store.get();
    // Already released (a retried step): the plan and its pins are gone, nothing runs of it.
    if (!snap || snap.state === 'cleaned') return { keptDataDirs: [] };
    if (snap.plan.name !== name) throw new DispatcherError('conflict', `dispatcher ${this.id} has cluster ${snap.plan.name}, not ${name}: nothing released`, { details: { host: this.id, activePlan: snap.plan.name } });
    const mine = this.myProcesses(snap.plan);
    // Shutdown order (coordinators first, the agent last); each also leaves the supervisor, so nothing
    // restarts it and a daemon restart does not adopt it again.
    for (const p of [...mine].reverse()) {
      const companions = this.companionsOf(p.id);
      await this.stopProcess(p.id);
      for (const c of companions) await this.deps.supervisor.remove(c);
      if (this.deps.supervisor.get(p.id)) await this.deps.supervisor.remove(p.id);
    }
    await this.deps.guard.remove();
    // Forgetting the plan ends this dispatcher's trust in the cluster's peers (their pins came from it) and
    // drops the cluster secrets; the data dirs stay (docs/DESIGN.md, "Scaling").
    await this.deps.store.forget();
    return { keptDataDirs: mine.map((p) => this.processDir(p)) };
  }

  async preflight(callerTime: number): Promise<PreflightProblem[]> {
    const { plan } = this.requirePlan();
    const { id, dataDir, allowedEngines, minFreeBytes, supervisor, renderer, guard } = this.deps;
    return preflightProblems({ id, plan, callerTime, dataDir, allowedEngines, minFreeBytes, supervisor, renderer, guard, processDir: (p) => this.processDir(p) });
  }

  async guard(): Promise<GuardStatusView> {
    return this.deps.guard.apply(this.requirePlan().plan);
  }

  async verifyGuard(): Promise<GuardStatusView> {
    return this.deps.guard.verify(this.requirePlan().plan);
  }

  async startProcess(processId: string, readyTimeoutMs: number, opts: StartOptions = {}): Promise<ProcessStatus> {
    const { plan: stored, secrets } = this.requirePlan();
    // A plan stored by an older version passes today's rules before anything of it runs again.
    const plan = assertValidPlan(stored, defaultEngineCatalog(), STORED_PLAN);
    const p = this.myProcesses(plan).find((x) => x.id === processId);
    if (!p) throw new DispatcherError('not_found', `process ${processId} is not planned on dispatcher ${this.id}`, { details: { host: this.id, process: processId } });
    const dir = this.processDir(p);
    const tls = this.certificates.material(processId);
    const { spec, files, companion } = this.deps.renderer.render(plan, processId, { dispatcherDataDir: this.deps.dataDir, secrets, runAs: this.deps.runAs, ...(tls ? { tls } : {}), ...(opts.agencyState ? { agencyState: opts.agencyState } : {}) });
    await writeProcessFiles(this.deps.dataDir, dir, [...files, ...(companion?.files ?? [])], this.deps.runAs);
    let current = processId;
    try {
      await this.deps.supervisor.start(spec);
      const st = await this.deps.supervisor.waitReady(processId, readyTimeoutMs);
      if (companion) {
        current = companion.spec.id;
        await this.startCompanion(companion.spec, readyTimeoutMs, companion.reloadSignal);
      }
      return st;
    } catch (e) {
      const logTail = await this.deps.supervisor.logTail(current, 20).catch(() => []);
      const msg = isDispatcherError(e) ? e.message : (e as Error).message;
      throw new DispatcherError('operation_failed', `${current} on ${this.id} did not become ready: ${msg}`, {
        details: { host: this.id, process: processId, logTail },
        cause: e,
      });
    }
  }

  /**
   * Starts a companion after its main program is ready. One that runs with the same spec is kept (a rolling
   * restart of the main program keeps PgBouncer and its clients); one whose spec changed (an upgrade of its
   * binary) is restarted, which closes its clients' connections (docs/DESIGN.md, "Rolling restart without
   * failed statements").
   */
  private async startCompanion(spec: ProcessSpec, readyTimeoutMs: number, reloadSignal?: NodeJS.Signals): Promise<void> {
    const sup = this.deps.supervisor;
    const cur = sup.get(spec.id);
    if (cur && cur.state !== 'stopped' && cur.state !== 'failed') {
      try {
        const kept = await sup.start(spec);
        // Kept: its files were just rewritten (a certificate rotation); it re-reads them (PgBouncer: SIGHUP).
        // The pid the supervisor watches right now; one that exited meanwhile is restarted by it anyway.
        if (reloadSignal && kept.pid) {
          try {
            process.kill(kept.pid, reloadSignal);
          } catch {
            /* gone: the supervisor starts it again with the new files */
          }
        }
      } catch (e) {
        if (!isDispatcherError(e) || e.code !== 'conflict') throw e;
        await sup.stop(spec.id);
        await sup.start(spec);
      }
    } else await sup.start(spec);
    await sup.waitReady(spec.id, readyTimeoutMs);
  }

  /** Supervisor ids of a plan process's companions (the engine's naming: render.ts companionId). */
  private companionsOf(processId: string): string[] {
    return this.deps.supervisor
      .list()
      .map((s) => s.id)
      .filter((id) => id.startsWith(`${processId}.`));
  }

  async changeFirewall(firewall: FirewallPolicy, confirmWithinSeconds: number, token: string): Promise<GuardStatusView> {
    const { plan } = this.requirePlan();
    const changed = assertValidPlan({ ...plan, firewall }, defaultEngineCatalog(), STORED_PLAN);
    return this.deps.guard.applyWithDeadline(changed, confirmWithinSeconds, token);
  }

  async confirmFirewall(token: string): Promise<GuardStatusView> {
    const kept = await this.deps.guard.confirm(token);
    if (!kept) throw this.nothingPending();
    const snap = this.deps.store.get();
    // The plan records the confirmed policy (the persisted change carries it across daemon restarts).
    if (snap && kept.firewall) await this.deps.store.save({ ...snap, plan: { ...snap.plan, firewall: kept.firewall } });
    return this.deps.guard.status()!;
  }

  async extendFirewall(token: string, confirmWithinSeconds: number): Promise<GuardStatusView> {
    if (!(await this.deps.guard.extend(token, confirmWithinSeconds))) throw this.nothingPending();
    return this.deps.guard.status()!;
  }

  async cancelFirewall(token: string): Promise<GuardStatusView> {
    if (!(await this.deps.guard.cancel(token))) throw this.nothingPending();
    return this.deps.guard.status()!;
  }

  private nothingPending(): DispatcherError {
    return new DispatcherError('conflict', `no firewall change with this token is waiting for confirmation on ${this.id} (it may have rolled back already)`, { details: { host: this.id } });
  }

  async logTail(processId: string, lines: number): Promise<string[]> {
    if (!this.deps.supervisor.get(processId)) throw new DispatcherError('not_found', `no process ${processId} on dispatcher ${this.id}`, { details: { host: this.id } });
    return this.deps.supervisor.logTail(processId, lines);
  }

  async stopProcess(processId: string, opts: { keepCompanion?: boolean } = {}): Promise<void> {
    // The companion first: PgBouncer's safe shutdown lets running transactions finish through HAProxy.
    if (!opts.keepCompanion) for (const c of this.companionsOf(processId)) await this.deps.supervisor.stop(c);
    if (this.deps.supervisor.get(processId)) await this.deps.supervisor.stop(processId);
    const snap = this.deps.store.get();
    if (snap) await this.deps.afterStop?.(snap.plan, processId);
  }

  async setClusterState(state: ClusterState): Promise<void> {
    await this.deps.store.setState(state);
  }

  async status(): Promise<NodeStatusView> {
    const snap = this.deps.store.get();
    const ids = new Set(snap ? this.myProcesses(snap.plan).map((p) => p.id) : []);
    const all = this.deps.supervisor.list();
    // A companion's supervisor id is "<plan process id>.<name>" (render.ts companionId).
    const companions = all.filter((s) => { const dot = s.id.lastIndexOf('.'); return dot > 0 && ids.has(s.id.slice(0, dot)); });
    return {
      dispatcher: this.id,
      ...(snap ? { cluster: snap.plan.name, clusterState: snap.state } : {}),
      processes: all.filter((s) => ids.has(s.id)),
      ...(companions.length ? { companions } : {}),
      guard: this.deps.guard.status(),
      ...(snap?.tls ? { certificates: this.certificates.views() } : {}),
      ...(snap ? { planVersion: this.deps.store.version() } : {}),
    };
  }

  async cleanup(confirmName: string): Promise<void> {
    const { plan, state } = this.requirePlan();
    if (confirmName !== plan.name) {
      throw new DispatcherError('bad_request', `cleanup deletes data: repeat the cluster's name (${plan.name}) to confirm`, { details: { host: this.id } });
    }
    if (state === 'running' || state === 'launching') {
      throw new DispatcherError('conflict', `cluster ${plan.name} is ${state} on ${this.id}: shut it down before cleanup`, { details: { host: this.id } });
    }
    for (const p of this.myProcesses(plan).reverse()) {
      const companions = this.companionsOf(p.id);
      await this.stopProcess(p.id);
      for (const c of companions) await this.deps.supervisor.remove(c);
      if (this.deps.supervisor.get(p.id)) await this.deps.supervisor.remove(p.id);
      await removeProcessDir(this.processDir(p), this.deps.runAs);
    }
    await this.deps.guard.remove();
    await this.deps.store.forget();
  }
}
