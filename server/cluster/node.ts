/**
 * One dispatcher's share of cluster work: the NodeApi. The contacted dispatcher drives every dispatcher of
 * the plan through this interface — itself through LocalNode directly, its peers through RemoteNode
 * (HTTPS, pinned, authenticated), which calls the peer's /v1/node routes, which call the peer's LocalNode.
 * So the same code runs a process whichever dispatcher asked for it.
 */
import { access, chmod, constants, mkdir, rm, rmdir, stat, statfs, writeFile, readFile } from 'node:fs/promises';
import { basename, dirname, join, resolve, sep } from 'node:path';
import { execFile } from 'node:child_process';
import { DispatcherError, isDispatcherError } from '../../api/errors.js';
import type { FirewallPolicy, Plan, PlanProcess } from '../../api/plan.js';
import type { ClusterState, GuardStatusView, NodeAdoptPlan, NodeCertificateRequests, NodeInstallCertificates, NodeStatusView, PreflightProblem } from '../../api/rest.js';
import type { ProcessSpec, ProcessStatus, Supervisor } from '../supervisor/types.js';
import { processesOn } from '../core/order.js';
import { portProblem } from '../core/listening-sockets.js';
import { hostAddresses } from '../core/listen-addresses.js';
import { listeningSockets, localAddresses } from './listening-sockets.js';
import { assertValidPlan } from '../core/validate-plan.js';
import { defaultEngineCatalog } from '../engines/loader.js';
import { ensureDir, writeFileForOwner, type Owner } from '../safe-files.js';
import { withTraverse } from '../data-tree.js';
import type { ClusterStore } from './store.js';
import { NodeCertificates, type ProcessTls } from './node-certificates.js';

export interface NodeApi {
  readonly id: string;
  /** Stores the plan and the cluster secrets (never an account). Refuses (409) while another plan is active. */
  adoptPlan(payload: NodeAdoptPlan): Promise<void>;
  /** Makes keys for this dispatcher's processes and itself; returns only the certificate requests. */
  certificateRequests(): Promise<NodeCertificateRequests>;
  /** Installs the cluster CA and the certificates signed for the pending keys. */
  installCertificates(payload: NodeInstallCertificates): Promise<void>;
  /** Trusts this CA bundle from now on (CA rotation); the installed certificates must chain to it. */
  trustCa(caBundle: string): Promise<void>;
  /** Checks this machine can run its part of the stored plan. An empty list means ready. */
  preflight(callerTime: number): Promise<PreflightProblem[]>;
  /** Installs the firewall guard for the stored plan. */
  guard(): Promise<GuardStatusView>;
  /** Reads the guard back and compares it with the plan. */
  verifyGuard(): Promise<GuardStatusView>;
  /** Renders, starts and waits until the process is ready (its own probe). */
  startProcess(processId: string, readyTimeoutMs: number): Promise<ProcessStatus>;
  stopProcess(processId: string): Promise<void>;
  setClusterState(state: ClusterState): Promise<void>;
  status(): Promise<NodeStatusView>;
  /** Deletes the data dirs of the stored plan's processes on this machine and forgets the plan. */
  cleanup(confirmName: string): Promise<void>;
  /** Forgets a plan that never started anything (a launch refused at preflight). */
  discardPlan(name: string): Promise<void>;
  /** Last lines of a process's log. */
  logTail(processId: string, lines: number): Promise<string[]>;
  /** Applies a new firewall policy with a deadline; the plan keeps the old one until confirmed. */
  changeFirewall(firewall: FirewallPolicy, confirmWithinSeconds: number, token: string): Promise<GuardStatusView>;
  /** Confirms the pending firewall change and records it in the stored plan. */
  confirmFirewall(token: string): Promise<GuardStatusView>;
  /** Moves the pending change's deadline. */
  extendFirewall(token: string, confirmWithinSeconds: number): Promise<GuardStatusView>;
  /** Rolls the pending change back now. */
  cancelFirewall(token: string): Promise<GuardStatusView>;
}

/** The firewall as the node sees it (server/firewall provides the real one). */
export interface NodeGuard {
  available(plan: Plan): Promise<{ ok: boolean; reason?: string }>;
  apply(plan: Plan): Promise<GuardStatusView>;
  verify(plan: Plan): Promise<GuardStatusView>;
  status(): GuardStatusView | undefined;
  remove(): Promise<void>;
  /** Installs the plan's policy, rolling back to the current one unless confirm() comes within `seconds`. */
  applyWithDeadline(plan: Plan, seconds: number, token: string): Promise<GuardStatusView>;
  /** Keeps the pending change; false when none is pending (it may have rolled back already). */
  confirm(token: string): Promise<{ firewall?: FirewallPolicy } | false>;
  extend(token: string, seconds: number): Promise<boolean>;
  cancel(token: string): Promise<boolean>;
}

/** Turns a plan process into a runnable spec plus the files it needs (server/engines provides the real one). */
export interface ProcessRenderer {
  render(
    plan: Plan,
    processId: string,
    ctx: { dispatcherDataDir: string; secrets: Record<string, string>; runAs?: { uid: number; gid: number; user?: string }; tls?: ProcessTls },
  ): { spec: ProcessSpec; files: { path: string; content: string; mode: number }[] };
  /** Absolute binary paths the process of this role needs on this machine. */
  binariesFor(plan: Plan, role: string): string[];
  generateSecrets(engine: string): Record<string, string>;
}

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
    const root = resolve(this.deps.dataDir);
    const dir = resolve(root, p.dataDir);
    if (dir === root || !dir.startsWith(root + sep)) {
      throw new DispatcherError('validation_failed', `process ${p.id}: data dir ${p.dataDir} escapes the data dir`, {
        problems: [{ path: `processes.${p.id}.dataDir`, message: 'must stay inside the dispatcher data dir' }],
      });
    }
    return dir;
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
  }

  async discardPlan(name: string): Promise<void> {
    const snap = this.deps.store.get();
    if (snap && snap.plan.name === name && snap.state === 'launching') await this.deps.store.forget();
  }

  async preflight(callerTime: number): Promise<PreflightProblem[]> {
    const { plan } = this.requirePlan();
    const problems: PreflightProblem[] = [];
    const add = (check: string, message: string) => problems.push({ host: this.id, check, message });

    const skew = Math.abs(Date.now() - callerTime);
    if (skew > 5_000) add('clock', `clock differs from the contacted dispatcher's by ${Math.round(skew / 1000)} s (limit 5 s)`);

    if (!this.deps.allowedEngines.includes(plan.engine)) {
      add('engine', `engine ${plan.engine} is not allowed on this machine (allowed: ${this.deps.allowedEngines.join(', ') || 'none'})`);
      return problems;
    }
    const mine = this.myProcesses(plan);
    const running = new Set(this.deps.supervisor.list().filter((s) => s.pid && ['running', 'ready', 'starting'].includes(s.state)).map((s) => s.id));
    for (const role of new Set(mine.map((p) => p.role))) {
      let paths: string[] = [];
      try {
        paths = this.deps.renderer.binariesFor(plan, role);
      } catch (e) {
        add('binary', (e as Error).message);
      }
      for (const path of paths) {
        try {
          await access(path, constants.X_OK);
        } catch {
          add('binary', `${role}: ${path} is missing or not executable`);
        }
      }
    }
    // Read from the kernel's socket table, never by binding: a test listen() on a plan port would accept
    // outside connects before the guard exists (docs/FIREWALL.md, "Why no port is ever reachable before
    // the guard").
    const listeners = await listeningSockets();
    const local = localAddresses();
    for (const p of mine.filter((x) => !running.has(x.id))) {
      for (const address of hostAddresses(plan, p)) {
        for (const port of p.ports) {
          const err = portProblem(listeners, local, address, port.port);
          if (err) add('port', `${p.id}: ${address}:${port.port} (${port.name}) is not free: ${err}`);
        }
      }
    }
    for (const p of mine) {
      try {
        const dir = this.processDir(p);
        // PostgreSQL and HAProxy put Unix sockets in the process dir; sun_path holds 107 bytes.
        const longest = join(dir, '.s.PGSQL.65535.lock');
        if (Buffer.byteLength(longest) > 107) {
          add('datadir', `${p.id}: ${dir} is too long for the Unix sockets its programs create there (${Buffer.byteLength(longest)} of 107 bytes): use a shorter data dir or dataRoot`);
        }
        await mkdir(dirname(dir), { recursive: true, mode: 0o700 });
        const probe = join(dirname(dir), `.preflight-${process.pid}`);
        await writeFile(probe, 'ok');
        await rm(probe, { force: true });
      } catch (e) {
        add('datadir', `${p.id}: ${(e as Error).message}`);
      }
    }
    try {
      const fs = await statfs(this.deps.dataDir);
      const free = fs.bavail * fs.bsize;
      const need = this.deps.minFreeBytes ?? 512 * 1024 * 1024;
      if (mine.length > 0 && free < need) add('disk', `only ${Math.round(free / 1048576)} MiB free in ${this.deps.dataDir} (need ${Math.round(need / 1048576)} MiB)`);
    } catch (e) {
      add('disk', (e as Error).message);
    }
    const fw = await this.deps.guard.available(plan);
    if (!fw.ok) add('firewall', fw.reason ?? 'firewall backend not usable');
    return problems;
  }

  async guard(): Promise<GuardStatusView> {
    return this.deps.guard.apply(this.requirePlan().plan);
  }

  async verifyGuard(): Promise<GuardStatusView> {
    return this.deps.guard.verify(this.requirePlan().plan);
  }

  async startProcess(processId: string, readyTimeoutMs: number): Promise<ProcessStatus> {
    const { plan: stored, secrets } = this.requirePlan();
    // A plan stored by an older version passes today's rules before anything of it runs again.
    const plan = assertValidPlan(stored, defaultEngineCatalog());
    const p = this.myProcesses(plan).find((x) => x.id === processId);
    if (!p) throw new DispatcherError('not_found', `process ${processId} is not planned on dispatcher ${this.id}`, { details: { host: this.id, process: processId } });
    const dir = this.processDir(p);
    const tls = this.certificates.material(processId);
    const { spec, files } = this.deps.renderer.render(plan, processId, { dispatcherDataDir: this.deps.dataDir, secrets, runAs: this.deps.runAs, ...(tls ? { tls } : {}) });
    await this.writeProcessFiles(dir, files);
    try {
      await this.deps.supervisor.start(spec);
      return await this.deps.supervisor.waitReady(processId, readyTimeoutMs);
    } catch (e) {
      const logTail = await this.deps.supervisor.logTail(processId, 20).catch(() => []);
      const msg = isDispatcherError(e) ? e.message : (e as Error).message;
      throw new DispatcherError('operation_failed', `${processId} on ${this.id} did not become ready: ${msg}`, {
        details: { host: this.id, process: processId, logTail },
        cause: e,
      });
    }
  }

  /**
   * The ONE way rendered files reach a process dir (docs/SECURITY.md, "Process user"): the dir is made and
   * owned through a descriptor, each file is created new and renamed into place, owned by the process user
   * through its descriptor — whatever the process user planted at those paths is replaced, never followed.
   */
  private async writeProcessFiles(dir: string, files: { path: string; content: string; mode: number }[]): Promise<void> {
    const owner = this.deps.runAs;
    await ensureDir(dir, 0o700, owner);
    if (owner) await this.letRunAsTraverse(dir);
    for (const f of files) {
      if (dirname(f.path) !== dir) throw new DispatcherError('config_invalid', `engine file ${f.path} must sit directly in the process dir ${dir}`);
      await writeFileForOwner(dir, basename(f.path), f.content, f.mode, owner);
    }
  }

  async changeFirewall(firewall: FirewallPolicy, confirmWithinSeconds: number, token: string): Promise<GuardStatusView> {
    const { plan } = this.requirePlan();
    const changed = assertValidPlan({ ...plan, firewall }, defaultEngineCatalog());
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

  /**
   * The unprivileged user must be able to walk from the data dir down to its process dir. Parents get
   * the search bit for others (o+x) only: nothing in them can be listed, and every secret file is 0600.
   */
  private async letRunAsTraverse(dir: string): Promise<void> {
    const root = resolve(this.deps.dataDir);
    for (let p = dirname(dir); p.startsWith(root); p = dirname(p)) {
      const st = await stat(p);
      if ((st.mode & 0o001) === 0) await chmod(p, withTraverse(st.mode));
      if (p === root) break;
    }
  }

  async stopProcess(processId: string): Promise<void> {
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
    return {
      dispatcher: this.id,
      ...(snap ? { cluster: snap.plan.name, clusterState: snap.state } : {}),
      processes: this.deps.supervisor.list().filter((s) => ids.has(s.id)),
      guard: this.deps.guard.status(),
      ...(snap?.tls ? { certificates: this.certificates.views() } : {}),
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
      await this.stopProcess(p.id);
      if (this.deps.supervisor.get(p.id)) await this.deps.supervisor.remove(p.id);
      await removeProcessDir(this.processDir(p), this.deps.runAs);
    }
    await this.deps.guard.remove();
    await this.deps.store.forget();
  }
}

/**
 * Deletes a process dir. Its contents belong to the process user, who could swap a subdirectory for a link
 * while root walks it; so the contents are deleted AS that user (find -delete, argv only, no shell): it can
 * only delete what the user could delete anyway. Root then removes the empty dir from its own parent.
 */
export async function removeProcessDir(dir: string, owner?: Owner): Promise<void> {
  if (owner) {
    const st = await stat(dir).catch(() => undefined);
    if (!st) return;
    await new Promise<void>((resolveRm, reject) => {
      execFile('/usr/bin/find', [dir, '-mindepth', '1', '-delete'], { uid: owner.uid, gid: owner.gid, cwd: '/', env: { PATH: '/usr/bin:/bin' }, timeout: 600_000 }, (err, _o, stderr) =>
        err ? reject(new DispatcherError('operation_failed', `could not delete ${dir} as the process user: ${String(stderr).trim().split('\n')[0] || err.message}`)) : resolveRm(),
      );
    });
    await rmdir(dir);
    return;
  }
  await rm(dir, { recursive: true, force: true });
}

/**
 * Reads /etc/passwd to resolve a user name without a shell. Refuses any account whose uid is 0 (root and
 * its aliases such as `toor`): cluster processes never run as root (docs/SECURITY.md, "Process user").
 */
export async function resolveUser(name: string, passwdFile = '/etc/passwd'): Promise<{ uid: number; gid: number; user: string }> {
  const passwd = await readFile(passwdFile, 'utf8');
  for (const line of passwd.split('\n')) {
    const f = line.split(':');
    if (f[0] === name) {
      const uid = Number(f[2]);
      if (!Number.isInteger(uid) || uid === 0) throw new DispatcherError('config_invalid', `runAs: user ${name} has uid ${f[2]}: cluster processes must run as an unprivileged user, never as uid 0`);
      return { user: name, uid, gid: Number(f[3]) };
    }
  }
  throw new DispatcherError('config_invalid', `runAs: no user named ${name} on this machine (create it, e.g. useradd --system ${name})`);
}
