/**
 * Certificate renewal without a restart (docs/DESIGN.md, "Certificate renewal"; docs/SECURITY.md,
 * "Cluster-internal TLS"): once the new certificates are installed in every dispatcher's store, each
 * dispatcher writes them into its process dirs and makes the running processes re-read them the way the
 * engine declares (templates/<engine>/engine.yaml `certificateReload`). One dispatcher at a time, so a
 * failure stops the renewal with every earlier process already on its new files (all of them still
 * trusted: the CA is unchanged, or during a CA rotation both CAs are).
 */
import { DispatcherError } from '../../api/errors.js';
import { ROLES, type Plan } from '../../api/plan.js';
import { loadEngine } from '../engines/loader.js';
import type { OperationHandle } from './operations.js';
import type { Nodes } from './fan-out.js';

/** True when every role the plan runs declares how it re-reads its certificates (else: rolling restart). */
export function engineReloadsCertificates(plan: Plan): boolean {
  const roles = loadEngine(plan.engine).manifest.roles;
  return ROLES.filter((r) => plan.processes.some((p) => p.role === r)).every((r) => roles[r].certificateReload !== undefined);
}

/** Every dispatcher: TLS files written, running processes told to re-read them. */
export async function reloadCertificatesEverywhere(plan: Plan, nodes: Nodes, op: OperationHandle, opts: { caChanged: boolean }): Promise<Record<string, unknown>> {
  const reloaded: { host: string; process: string; pid?: number }[] = [];
  for (const d of plan.dispatchers) {
    const node = nodes.get(d.id);
    if (!node) throw new DispatcherError('operation_failed', `no connection to dispatcher ${d.id}`, { details: { host: d.id } });
    const { processes } = await node.reloadCertificates(opts);
    for (const p of processes) {
      op.event({ level: 'info', step: 'reload', process: p.process, host: d.id, message: `${p.process} on ${d.id}: ${p.done}` });
      reloaded.push({ host: d.id, process: p.process, ...(p.pid ? { pid: p.pid } : {}) });
    }
  }
  return { reloaded };
}
