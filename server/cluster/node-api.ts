/**
 * The contracts of one dispatcher's share of cluster work (docs/DESIGN.md, "Components"): NodeApi, which
 * LocalNode (this machine) and RemoteNode (a peer over HTTPS) both implement, and the two edges LocalNode
 * is given: the firewall guard and the process renderer.
 */
import type { FirewallPolicy, Plan } from '../../api/plan.js';
import type { ClusterState, GuardStatusView, NodeAdoptPlan, NodeReleaseAnswer, NodeUpdatePlan, NodeCertificateReload, NodeCertificateRequests, NodeInstallCertificates, NodeStatusView, PreflightProblem } from '../../api/rest.js';
import type { ProcessSpec, ProcessStatus } from '../supervisor/types.js';
import type { ProcessTls } from './node-certificates.js';
import type { CertificateReload } from '../engines/render.js';

/** How a process starts: `agencyState: 'existing'` for an agent that joins a running agency (a scale step). */
export interface StartOptions {
  agencyState?: 'new' | 'existing';
}

export interface NodeApi {
  readonly id: string;
  /** Stores the plan and the cluster secrets (never an account). Refuses (409) while another plan is active. */
  adoptPlan(payload: NodeAdoptPlan): Promise<void>;
  /**
   * Takes the next plan version of a running cluster (a scale step, docs/DESIGN.md "Scaling"): refused
   * (409) unless the stored version is `base`; only dispatchers and processes may differ. The guard
   * re-renders from the new plan in one transaction before it is stored.
   */
  updatePlan(payload: NodeUpdatePlan): Promise<void>;
  /**
   * Re-renders a running process's configuration from the stored plan and makes it re-read it (its
   * engine's `configReload` signal): a scale step added hosts it must know (pg_hba). Restarts nothing.
   */
  refreshConfig(processId: string): Promise<void>;
  /** Makes keys for this dispatcher's processes and itself; returns only the certificate requests. */
  certificateRequests(): Promise<NodeCertificateRequests>;
  /** Installs the cluster CA and the certificates signed for the pending keys. */
  installCertificates(payload: NodeInstallCertificates): Promise<void>;
  /** Trusts this CA bundle from now on (CA rotation); the installed certificates must chain to it. */
  trustCa(caBundle: string): Promise<void>;
  /**
   * Writes every process's TLS files from the installed certificates and CA, then makes each running
   * process re-read them its engine's way (docs/DESIGN.md, "Certificate renewal"); restarts nothing.
   */
  reloadCertificates(opts: { caChanged: boolean }): Promise<NodeCertificateReload>;
  /** Checks this machine can run its part of the stored plan. An empty list means ready. */
  preflight(callerTime: number): Promise<PreflightProblem[]>;
  /** Installs the firewall guard for the stored plan. */
  guard(): Promise<GuardStatusView>;
  /** Reads the guard back and compares it with the plan. */
  verifyGuard(): Promise<GuardStatusView>;
  /** Renders, starts and waits until the process is ready (its own probe). */
  startProcess(processId: string, readyTimeoutMs: number, opts?: StartOptions): Promise<ProcessStatus>;
  /** Stops the process and its companion (keepCompanion: the main program only, for a rolling restart). */
  stopProcess(processId: string, opts?: { keepCompanion?: boolean }): Promise<void>;
  setClusterState(state: ClusterState): Promise<void>;
  status(): Promise<NodeStatusView>;
  /** Deletes the data dirs of the stored plan's processes on this machine and forgets the plan. */
  cleanup(confirmName: string): Promise<void>;
  /** Forgets a plan that never started anything (a launch refused at preflight). */
  discardPlan(name: string): Promise<void>;
  /**
   * Leaves the cluster `name` (scale in): stops this dispatcher's processes (coordinators first, the agent
   * last), removes its firewall guard and forgets the plan — and with it every peer pin and the cluster
   * secrets — but KEEPS the data dirs (named in the answer; only an explicit removal deletes data).
   * Nothing to do when no plan is stored; 409 for another cluster's plan.
   */
  releasePlan(name: string): Promise<NodeReleaseAnswer>;
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
    ctx: { dispatcherDataDir: string; secrets: Record<string, string>; runAs?: { uid: number; gid: number; user?: string }; tls?: ProcessTls; agencyState?: 'new' | 'existing' },
  ): { spec: ProcessSpec; files: { path: string; content: string; mode: number }[]; companion?: { spec: ProcessSpec; files: { path: string; content: string; mode: number }[]; reloadSignal?: NodeJS.Signals }; certificateReload?: CertificateReload; configReloadSignal?: NodeJS.Signals };
  /** Absolute binary paths the process of this role needs on this machine. */
  binariesFor(plan: Plan, role: string): string[];
  generateSecrets(engine: string): Record<string, string>;
}
