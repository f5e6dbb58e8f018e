/** `dispatch status` as text: the dispatchers table, the processes table and where clients connect. Pure. */
import type { ClusterView } from '../api/rest.js';
import { formatTable } from './table.js';
import { systemClock } from '../shared/poll.js';

export function statusText(view: ClusterView, now = systemClock.now()): string {
  if (!view.name) return 'no cluster on this dispatcher\n';
  let text = `cluster ${view.name} (${view.engine}): ${view.state}${view.activeOperation ? `, operation ${view.activeOperation} running` : ''}\n\n`;
  text +=
    formatTable(
      ['DISPATCHER', 'ENDPOINT', 'REACHABLE', 'GUARD'],
      view.dispatchers.map((d) => [d.id, d.endpoint, d.reachable ? 'yes' : `NO: ${d.error ?? ''}`, d.guard ? `${d.guard.backend}${d.guard.inSync === false ? ' (drifted)' : ''}${d.guard.driftRepairs ? `, ${d.guard.driftRepairs} repairs` : ''}` : '-']),
    ) + '\n\n';
  text +=
    formatTable(
      ['PROCESS', 'ROLE', 'HOST', 'STATE', 'PID', 'PORTS', 'READY SINCE', 'RESTARTS'],
      view.processes.flatMap((p) => [
        [p.id, p.role, p.host, p.state, p.pid ?? '-', p.ports.map((x) => `${x.name}:${x.port}/${x.exposure}`).join(' '), p.readySince ?? '-', p.restarts],
        // Its companions (pg-ha: the coordinator's PgBouncer, which serves the client port) right under it.
        ...(p.companions ?? []).map((c) => [c.id, `${p.role} ${c.name}`, p.host, c.state, c.pid ?? '-', '-', c.readySince ?? '-', c.restarts]),
      ]),
    ) + '\n';
  if (view.certificates?.length) {
    // Every certificate of the cluster PKI with its expiry (renew with `dispatch rotate-certs`).
    const days = (iso: string) => (iso ? Math.floor((Date.parse(iso) - now) / 86_400_000) : NaN);
    text +=
      '\n' +
      formatTable(
        ['CERTIFICATE', 'HOST', 'EXPIRES', 'DAYS LEFT'],
        view.certificates.map((c) => [c.name === '@ca' ? 'cluster CA' : c.name === '@dispatcher' ? 'dispatcher (client)' : c.name, c.host, c.notAfter || 'unreadable', Number.isNaN(days(c.notAfter)) ? '-' : days(c.notAfter)]),
      ) +
      '\n';
  }
  if (view.coordinators.length) text += `\nclients connect to: ${view.coordinators.map((c) => `${c.host}:${c.port}`).join(', ')} (dispatch connect: CA file, pgpass, verify-full URL)\n`;
  return text;
}

/** Healthy: running, every process and companion ready, every dispatcher reachable. */
export function isHealthy(view: ClusterView): boolean {
  return view.state === 'running' && view.processes.every((p) => p.state === 'ready' && (p.companions ?? []).every((c) => c.state === 'ready')) && view.dispatchers.every((d) => d.reachable);
}
