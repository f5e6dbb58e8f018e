/**
 * What would change if a running plan were replaced by a proposed one (docs/DESIGN.md, "Plan versions"):
 * settings, dispatchers, processes (with their ports), and each host's firewall rules — rendered by the
 * same renderer the guard loads (firewall-render.ts) for both plans and diffed line by line, so the diff
 * shows exactly the rules that would change. Pure; both plans must already be valid.
 */
import type { Plan, PlanDispatcher, PlanProcess } from '../../api/plan.js';
import type { FieldChange, HostRulesDiff, PlanDiff, ProcessSummary } from '../../api/plan-version.js';
import { guardPolicyFromPlan } from './firewall-policy.js';
import { renderNft } from './firewall-render.js';
import { lineDiff } from './line-diff.js';
import { canonicalJson } from './plan-version.js';

const same = (a: unknown, b: unknown) => canonicalJson(a) === canonicalJson(b);

function change(out: FieldChange[], path: string, from: unknown, to: unknown): void {
  if (!same(from, to)) out.push({ path, ...(from === undefined ? {} : { from }), ...(to === undefined ? {} : { to }) });
}

/** Changes of a record, one per key present in either side (`binaries.etcd`, `firewall.clientSources`). */
function recordChanges(out: FieldChange[], prefix: string, from: Record<string, unknown>, to: Record<string, unknown>): void {
  for (const key of [...new Set([...Object.keys(from), ...Object.keys(to)])].sort()) change(out, `${prefix}.${key}`, from[key], to[key]);
}

function summary(p: PlanProcess): ProcessSummary {
  return { id: p.id, role: p.role, host: p.dispatcher, address: p.address, ports: p.ports.map(({ name, port, exposure }) => ({ name, port, exposure })) };
}

function processChanges(a: PlanProcess, b: PlanProcess): FieldChange[] {
  const out: FieldChange[] = [];
  change(out, 'role', a.role, b.role);
  change(out, 'host', a.dispatcher, b.dispatcher);
  change(out, 'address', a.address, b.address);
  const portsOf = (p: PlanProcess) => Object.fromEntries(p.ports.map((x) => [x.name, { port: x.port, exposure: x.exposure }]));
  recordChanges(out, 'ports', portsOf(a), portsOf(b));
  change(out, 'dataDir', a.dataDir, b.dataDir);
  change(out, 'args', a.args, b.args);
  return out;
}

function dispatcherChanges(a: PlanDispatcher, b: PlanDispatcher): FieldChange[] {
  const out: FieldChange[] = [];
  for (const key of ['endpoint', 'fingerprint', 'addresses', 'allowAgents', 'allowDBservers', 'allowCoordinators'] as const) change(out, key, a[key], b[key]);
  return out;
}

/** Added, removed and changed items of two id-keyed lists, in the order of `before` then the new ones. */
function byId<T extends { id: string }>(before: readonly T[], after: readonly T[], changes: (a: T, b: T) => FieldChange[]) {
  const next = new Map(after.map((x) => [x.id, x]));
  const prev = new Map(before.map((x) => [x.id, x]));
  return {
    added: after.filter((x) => !prev.has(x.id)),
    removed: before.filter((x) => !next.has(x.id)),
    changed: before.flatMap((a) => {
      const b = next.get(a.id);
      const c = b ? changes(a, b) : [];
      return c.length ? [{ id: a.id, changes: c }] : [];
    }),
  };
}

/** The nft rules the guard would load on a host under a plan ('' when the plan has no such host). */
function rulesOf(plan: Plan, host: string): string {
  return plan.dispatchers.some((d) => d.id === host) ? renderNft(guardPolicyFromPlan(plan, host)) : '';
}

function firewallDiff(before: Plan, after: Plan): HostRulesDiff[] {
  const hosts = [...new Set([...before.dispatchers.map((d) => d.id), ...after.dispatchers.map((d) => d.id)])];
  return hosts.map((host) => {
    const a = rulesOf(before, host);
    const b = rulesOf(after, host);
    const lines = a === b ? [] : lineDiff(a, b);
    const kind: HostRulesDiff['change'] = !a ? 'added' : !b ? 'removed' : lines.length ? 'changed' : 'unchanged';
    return { host, change: kind, lines };
  });
}

export function diffPlans(before: Plan, after: Plan): PlanDiff {
  const settings: FieldChange[] = [];
  change(settings, 'name', before.name, after.name);
  change(settings, 'engine', before.engine, after.engine);
  change(settings, 'dataRoot', before.dataRoot, after.dataRoot);
  recordChanges(settings, 'binaries', before.binaries, after.binaries);
  recordChanges(settings, 'firewall', before.firewall, after.firewall);
  const d = byId(before.dispatchers, after.dispatchers, dispatcherChanges);
  const p = byId(before.processes, after.processes, processChanges);
  const firewall = firewallDiff(before, after);
  const changed =
    settings.length > 0 ||
    d.added.length + d.removed.length + d.changed.length + p.added.length + p.removed.length + p.changed.length > 0 ||
    firewall.some((f) => f.change !== 'unchanged');
  return {
    cluster: before.name,
    changed,
    settings,
    dispatchers: { added: d.added.map((x) => x.id), removed: d.removed.map((x) => x.id), changed: d.changed },
    processes: { added: p.added.map(summary), removed: p.removed.map(summary), changed: p.changed },
    firewall,
  };
}
