/**
 * The human-readable summary of a plan: one row per port, hosts × processes × ports × exposure. Pure.
 */
import type { Plan } from '../api/plan.js';

export function planSummary(plan: Plan): string {
  const header = ['DISPATCHER', 'ADDRESS', 'PROCESS', 'ROLE', 'PORT', 'NAME', 'EXPOSURE', 'DATA DIR'];
  const rows: string[][] = [];
  for (const d of plan.dispatchers) {
    const procs = plan.processes.filter((p) => p.dispatcher === d.id);
    if (procs.length === 0) rows.push([d.id, d.addresses[0], '-', '-', '', '', '', '']);
    for (const p of procs) {
      p.ports.forEach((port, j) => {
        rows.push(j === 0 ? [d.id, p.address, p.id, p.role, String(port.port), port.name, port.exposure, p.dataDir] : ['', '', '', '', String(port.port), port.name, port.exposure, '']);
      });
    }
  }
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const fmt = (r: string[]) => r.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd();
  const counts = (['agent', 'dbserver', 'coordinator'] as const).map((r) => `${plan.processes.filter((p) => p.role === r).length} ${r}s`).join(', ');
  const title = `cluster ${plan.name} (engine ${plan.engine}): ${counts} on ${plan.dispatchers.length} dispatcher(s); firewall ${plan.firewall.mode}, backend ${plan.firewall.backend}`;
  const publicEps = plan.processes
    .filter((p) => p.role === 'coordinator')
    .flatMap((p) => p.ports.filter((x) => x.exposure === 'public').map((x) => `${p.address.includes(':') ? `[${p.address}]` : p.address}:${x.port} (${x.name})`));
  return [title, '', fmt(header), ...rows.map(fmt), '', `client endpoints: ${publicEps.join(', ') || 'none'}`].join('\n') + '\n';
}
