/**
 * Steps a launch and a scale-out share (docs/DESIGN.md, "Launch" and "Scaling"), as functions of what
 * they use: preflight on a set of dispatchers, the cluster CA signing their certificates, and a role's
 * cluster-level health gate. The Orchestrator (launch, relaunch) and the scale-out steps
 * (scale-out-steps.ts) both call them.
 */
import { DispatcherError, type Problem } from '../../api/errors.js';
import type { Plan, PlanProcess, Role } from '../../api/plan.js';
import { pollUntil, settledCheck, type Clock } from '../../shared/poll.js';
import { certificateInfo, splitPemBundle } from '../pki/certificates.js';
import type { ClusterHealth } from './cluster-health.js';
import { settleAll, type Nodes } from './fan-out.js';
import { clusterCa, issueCertificates } from './issue-certificates.js';
import type { OperationHandle } from './operations.js';
import type { ClusterStore } from './store.js';

/**
 * How often a role's cluster-level health gate is checked (ms). A check is a few local HTTPS/SQL calls; at
 * 500 ms a launch waited ~250 ms per role on average for nothing but the poll (docs/BENCHMARKS.md,
 * "Launch overhead"). Rolling restarts poll their gates at 100 ms too.
 */
export const HEALTH_GATE_POLL_MS = 100;

/** Every dispatcher of `nodes` checks it can run its part of its stored plan; any problem and nothing starts. */
export async function preflightAll(op: OperationHandle, nodes: Nodes, clock: Clock): Promise<void> {
  op.event({ level: 'info', step: 'preflight', message: `checking binaries, ports, data dirs, clocks and firewall on ${nodes.size === 1 ? [...nodes.keys()][0] : 'every dispatcher'}` });
  const now = clock.now();
  const res = await settleAll(nodes, (n) => n.preflight(now), () => clock.now());
  const problems: Problem[] = [];
  for (const [id, list] of res.values) for (const p of list) problems.push({ path: id, message: `${p.check}: ${p.message}` });
  for (const f of res.failed) problems.push({ path: f.host, message: f.error.message });
  for (const p of problems) op.event({ level: 'error', step: 'preflight', host: p.path, message: p.message });
  if (problems.length) {
    throw new DispatcherError('preflight_failed', `preflight failed on ${new Set(problems.map((p) => p.path)).size} dispatcher(s); nothing was started:\n${problems.map((p) => `  ${p.path}: ${p.message}`).join('\n')}`, { problems });
  }
  for (const id of nodes.keys()) op.event({ level: 'info', step: 'preflight', host: id, message: 'ok', durationMs: res.ms.get(id) });
}

/**
 * The cluster CA on this dispatcher signs the process certificates of every dispatcher of `nodes` for
 * `plan` (keys stay where they were made). `create`: a launch makes the CA; a scale-out uses the existing
 * one (409 on a dispatcher that does not hold its key). The cross certificate of a CA rotation stays in
 * the chain while it is valid (server/cluster/ca-rotation.ts).
 */
export async function certificatesAll(op: OperationHandle, store: Pick<ClusterStore, 'get' | 'save'>, self: string, plan: Plan, nodes: Nodes, clock: Clock, opts: { create: boolean }): Promise<void> {
  op.event({ level: 'info', step: 'certificates', message: `cluster CA on ${self} signs the process certificates of ${[...nodes.keys()].join(', ')}` });
  const t0 = clock.now();
  const ca = await clusterCa(store, { create: opts.create });
  const chain = store.get()?.tls?.chain;
  const live = chain && splitPemBundle(chain).every((c) => new Date(certificateInfo(c).notAfter).getTime() > clock.now());
  const issued = await issueCertificates(plan, nodes, ca, ca.certPem, live ? chain : undefined);
  // All dispatchers at once (their requests signed here): each event shows the step up to its line.
  for (const r of issued) op.event({ level: 'info', step: 'certificates', host: r.host, message: `${r.names.length} certificate(s) installed`, durationMs: Math.round(clock.now() - t0) });
}

/** Waits until `role` is healthy cluster-wide (the gate between a launch's roles and after each scale step). */
export async function waitRoleHealthy(
  op: OperationHandle,
  gate: { health: ClusterHealth; clock: Clock; pollMs?: number },
  plan: Plan,
  role: Role,
  processes: PlanProcess[],
  secrets: Record<string, string>,
  timeoutMs: number,
  startedAt = gate.clock.now(),
): Promise<void> {
  let last = '';
  const res = await pollUntil(() => settledCheck(() => gate.health.check(plan, role, processes, secrets)), (r) => r.ok, {
    timeoutMs,
    intervalMs: gate.pollMs ?? HEALTH_GATE_POLL_MS,
    clock: gate.clock,
    onPending: (r) => {
      if (r.detail !== last) op.event({ level: 'info', step: 'waiting', message: `waiting for ${role}s: ${r.detail}` });
      last = r.detail;
    },
    onTimeout: (r) =>
      new DispatcherError('operation_failed', `${role}s not healthy within ${Math.round(timeoutMs / 1000)} s: ${r.detail}`, {
        details: { process: processes.map((p) => p.id).join(','), host: [...new Set(processes.map((p) => p.dispatcher))].join(',') },
      }),
  });
  op.event({ level: 'info', step: 'healthy', message: `${role}s healthy: ${res.detail}`, durationMs: Math.round(gate.clock.now() - startedAt) });
}
