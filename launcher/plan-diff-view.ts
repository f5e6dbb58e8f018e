/**
 * The text of `dispatch plan --diff` (like `nomad job plan`): what a proposed plan would change against the
 * running version — settings, dispatchers, processes with their ports, and every host's firewall rules as
 * +/- lines — and how to apply it against that version only. Pure: the diff comes from the dispatcher.
 */
import type { FieldChange, PlanDiffView, PlanVersion, ProcessSummary, ScaleStep } from '../api/plan-version.js';

const show = (v: unknown) => (v === undefined ? '(none)' : JSON.stringify(v));

function fieldLines(changes: FieldChange[], indent: string): string[] {
  return changes.map((c) => `${indent}${c.path}: ${show(c.from)} => ${show(c.to)}`);
}

function processLine(sign: '+' | '-', p: ProcessSummary): string {
  const ports = p.ports.map((x) => `${x.name} ${x.port} (${x.exposure})`).join(', ');
  return `${sign} process ${p.id}: ${p.role} on ${p.host} ${p.address}; ports ${ports}`;
}

function stepText(s: ScaleStep): string {
  switch (s.kind) {
    case 'widen-firewall':
      return `widen the firewall on ${s.hosts.join(', ')} to let in ${s.addresses.join(', ')}`;
    case 'shrink-firewall':
      return `shrink the firewall on ${s.hosts.join(', ')}: ${s.addresses.join(', ')} no longer let in`;
    case 'reconfigure-coordinators':
      return `reconfigure coordinators ${s.processes.join(', ')} (re-render, graceful reload)`;
    case 'switchover-away':
      return `move the Patroni leader away from ${s.from.join(', ')} (switchover, if it leads)`;
    case 'adopt-dispatcher':
    case 'release-dispatcher':
      return `${s.kind} ${s.host}`;
    default:
      return `${s.kind} ${s.process} on ${s.host}`;
  }
}

/** `N:HASH`, the form `--base-version` takes. */
export function formatBaseVersion(v: PlanVersion): string {
  return `${v.number}:${v.hash}`;
}

export function formatPlanDiff(view: PlanDiffView): string {
  const { diff, base } = view;
  const out: string[] = [`cluster ${diff.cluster}: proposed plan ${view.proposed.hash} against the running plan, version ${base.number} (${base.hash})`];
  for (const d of view.behind) {
    out.push(`! dispatcher ${d.id} ${!d.reachable ? 'did not answer' : d.version ? `stores version ${d.version.number} (${d.version.hash}): it missed a change` : 'stores no plan version'}`);
  }
  if (!diff.changed) return out.concat('no changes', '').join('\n');
  for (const c of diff.settings) out.push(`~ setting ${c.path}: ${show(c.from)} => ${show(c.to)}`);
  for (const id of diff.dispatchers.added) out.push(`+ dispatcher ${id}`);
  for (const id of diff.dispatchers.removed) out.push(`- dispatcher ${id}`);
  for (const d of diff.dispatchers.changed) out.push(`~ dispatcher ${d.id}`, ...fieldLines(d.changes, '    '));
  for (const p of diff.processes.added) out.push(processLine('+', p));
  for (const p of diff.processes.removed) out.push(processLine('-', p));
  for (const p of diff.processes.changed) out.push(`~ process ${p.id}`, ...fieldLines(p.changes, '    '));
  const hosts = diff.firewall.filter((h) => h.change !== 'unchanged');
  if (hosts.length) {
    out.push('', 'firewall rules (nft) per host:');
    for (const h of hosts) {
      out.push(`  ${h.change === 'added' ? '+' : h.change === 'removed' ? '-' : '~'} ${h.host} (${h.change})`);
      for (const l of h.lines) out.push(`      ${l.op} ${String(l.line).padStart(3)}  ${l.text.replace(/\t/g, '  ')}`);
    }
  }
  const unchanged = diff.firewall.filter((h) => h.change === 'unchanged').map((h) => h.host);
  if (unchanged.length) out.push(`  firewall rules unchanged on: ${unchanged.join(', ')}`);
  if (view.scale.problems.length) {
    out.push('', 'as a scale operation it would be REFUSED:', ...view.scale.problems.map((p) => `  - ${p.path}: ${p.message}`));
  } else if (view.scale.steps.length) {
    out.push('', 'scale steps, in order:', ...view.scale.steps.map((s, i) => `  ${String(i + 1).padStart(2)}. ${stepText(s)}`));
  }
  out.push('', `computed against version ${base.number}; a change made with --base-version ${formatBaseVersion(base)} is refused if the plan changed since`, '');
  return out.join('\n');
}
