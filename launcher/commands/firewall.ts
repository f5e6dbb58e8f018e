/**
 * `dispatch firewall export|verify|show`.
 *   export — renders the plan's guard for other tools (nft, iptables, ufw, firewalld, aws, hetzner,
 *            digitalocean), per host where it differs;
 *   verify — a TCP connect scan, from where it runs, of every plan port on every host, compared with what
 *            this vantage point (client, operator or cluster) should reach; exit 1 when a port is open that
 *            must not be;
 *   show   — each dispatcher's guard state (backend, in sync, drift repairs, warnings) from the API.
 * Exit codes: 0 fine, 1 a check failed, 2 usage (bad options or plan), 3 the daemon could not be reached
 * (launcher/exit-codes.ts).
 */
import { readFile } from 'node:fs/promises';
import { formatTable } from '../table.js';
import type { Command } from 'commander';
import { DispatcherError } from '../../api/errors.js';
import { reportError } from '../exit-codes.js';
import { PlanSchema, zodProblems, type Exposure, type Plan } from '../../api/plan.js';
import type { GuardStatusView } from '../../api/rest.js';
import { guardPolicyFromPlan } from '../../server/core/firewall-policy.js';
import { EXPORT_FORMATS, exportPolicy, type ExportFormat } from '../../server/core/firewall-export.js';
import { tcpConnectScan, type ScanResult, type ScanTarget } from '../scan.js';

export type VantageRole = 'client' | 'operator' | 'cluster';

export interface GuardStatusRow {
  id: string;
  reachable?: boolean;
  error?: string;
  guard?: GuardStatusView;
}

export interface FirewallCommandDeps {
  /** Guard state per dispatcher from the daemon API (e.g. the ClusterView's dispatchers). */
  fetchGuardStatus?: (opts: Record<string, unknown>) => Promise<GuardStatusRow[]>;
  scan?: (targets: readonly ScanTarget[]) => Promise<ScanResult[]>;
  out?: (text: string) => void;
  err?: (text: string) => void;
}

export async function loadPlanFile(file: string): Promise<Plan> {
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(file, 'utf8'));
  } catch (e) {
    throw new DispatcherError('bad_request', `cannot read plan ${file}: ${(e as Error).message}`);
  }
  const r = PlanSchema.safeParse(raw);
  if (!r.success) throw new DispatcherError('validation_failed', `plan ${file} is not valid`, { problems: zodProblems(r.error) });
  return r.data;
}

/** Whether a port of this exposure should be reachable from a vantage point of this role. */
export function reachableFrom(role: VantageRole, exposure: Exposure): boolean {
  if (role === 'cluster') return true;
  if (role === 'operator') return exposure !== 'cluster';
  return exposure === 'public';
}

export interface VerifyRow {
  host: string;
  address: string;
  port: number;
  exposure: Exposure;
  names: string[];
  expected: 'reachable' | 'blocked';
  state: ScanResult['state'];
  verdict: 'ok' | 'VIOLATION' | 'unreachable';
}

/** Compares scan results with the plan. Pure. A blocked port must not be open ("closed" counts as blocked). */
export function verifyRows(plan: Plan, role: VantageRole, results: readonly ScanResult[]): VerifyRow[] {
  const rows: VerifyRow[] = [];
  for (const d of plan.dispatchers) {
    const policy = guardPolicyFromPlan(plan, d.id);
    for (const address of d.addresses) {
      for (const p of policy.ports) {
        const r = results.find((x) => x.host === address && x.port === p.port);
        if (!r) continue;
        const expected = reachableFrom(role, p.exposure) ? 'reachable' : 'blocked';
        const verdict = expected === 'blocked' ? (r.state === 'open' ? 'VIOLATION' : 'ok') : r.state === 'open' ? 'ok' : 'unreachable';
        rows.push({ host: d.id, address, port: p.port, exposure: p.exposure, names: p.names, expected, state: r.state, verdict });
      }
    }
  }
  return rows;
}

export function verifyTargets(plan: Plan): ScanTarget[] {
  const targets: ScanTarget[] = [];
  for (const d of plan.dispatchers) {
    const policy = guardPolicyFromPlan(plan, d.id);
    for (const address of d.addresses) for (const p of policy.ports) targets.push({ host: address, port: p.port });
  }
  return targets;
}

const tableWithNewline = (header: string[], rows: string[][]) => formatTable(header, rows) + '\n';

function fail(e: unknown, cmd: string, err: (t: string) => void): number {
  return reportError(e, { prefix: `dispatch firewall ${cmd}`, err });
}

export function registerFirewallCommands(program: Command, deps: FirewallCommandDeps = {}): Command {
  const out = deps.out ?? ((t: string) => void process.stdout.write(t));
  const err = deps.err ?? ((t: string) => void process.stderr.write(t));
  const fw = program.command('firewall').description('the host firewall guard: export it for other tools, verify it by a scan, show its state');

  fw.command('export')
    .description('render the plan\'s guard for another firewall tool')
    .requiredOption('--plan <file>', 'plan JSON')
    .requiredOption('--format <format>', EXPORT_FORMATS.join('|'))
    .option('--host <id>', 'only this dispatcher\'s host (cloud formats: that host\'s ports instead of the union)')
    .option('--group-id <sg>', 'aws: the security group id to put in the JSON')
    .action(async (opts: { plan: string; format: string; host?: string; groupId?: string }) => {
      try {
        if (!(EXPORT_FORMATS as readonly string[]).includes(opts.format)) {
          throw new DispatcherError('bad_request', `--format must be one of ${EXPORT_FORMATS.join(', ')}`);
        }
        const plan = await loadPlanFile(opts.plan);
        out(exportPolicy(plan, opts.format as ExportFormat, { host: opts.host, awsGroupId: opts.groupId }));
        process.exitCode = 0;
      } catch (e) {
        process.exitCode = fail(e, 'export', err);
      }
    });

  fw.command('verify')
    .description('TCP connect scan of every plan port on every host, compared with what this vantage point should reach')
    .requiredOption('--plan <file>', 'plan JSON')
    .option('--from-role <role>', 'client|operator|cluster: what this machine is to the cluster', 'client')
    .option('--json', 'print the rows as JSON')
    .action(async (opts: { plan: string; fromRole: string; json?: boolean }, cmd: Command) => {
      const json = !!(opts.json || cmd.optsWithGlobals().json);
      try {
        if (!['client', 'operator', 'cluster'].includes(opts.fromRole)) throw new DispatcherError('bad_request', '--from-role must be client, operator or cluster');
        const plan = await loadPlanFile(opts.plan);
        const scan = deps.scan ?? ((t: readonly ScanTarget[]) => tcpConnectScan(t));
        const rows = verifyRows(plan, opts.fromRole as VantageRole, await scan(verifyTargets(plan)));
        if (json) out(JSON.stringify(rows, null, 2) + '\n');
        else
          out(
            tableWithNewline(
              ['HOST', 'ADDRESS', 'PORT', 'EXPOSURE', 'WHAT', 'EXPECTED', 'STATE', 'VERDICT'],
              rows.map((r) => [r.host, r.address, String(r.port), r.exposure, r.names.join(','), r.expected, r.state, r.verdict]),
            ),
          );
        const bad = rows.filter((r) => r.verdict === 'VIOLATION');
        if (bad.length) err(`dispatch firewall verify: ${bad.length} port(s) open that must be blocked from a ${opts.fromRole}\n`);
        process.exitCode = bad.length ? 1 : 0;
      } catch (e) {
        process.exitCode = fail(e, 'verify', err);
      }
    });

  fw.command('show')
    .description('each dispatcher\'s guard: backend, in sync, drift repairs, warnings (from the daemon API)')
    .option('--json', 'print as JSON')
    .action(async (opts: Record<string, unknown>, cmd: Command) => {
      const json = !!(opts.json || cmd.optsWithGlobals().json);
      try {
        if (!deps.fetchGuardStatus) throw new DispatcherError('config_invalid', 'firewall show needs a connection to a dispatcher, which this build of the CLI does not provide');
        const rows = await deps.fetchGuardStatus(opts);
        if (json) out(JSON.stringify(rows, null, 2) + '\n');
        else {
          out(
            tableWithNewline(
              ['DISPATCHER', 'BACKEND', 'IN SYNC', 'LAST APPLIED', 'DRIFT REPAIRS', 'WARNINGS'],
              rows.map((r) => [
                r.id,
                r.guard?.backend ?? (r.reachable === false ? `unreachable: ${r.error ?? ''}` : '-'),
                r.guard ? String(r.guard.inSync) : '-',
                r.guard?.lastAppliedAt ?? '-',
                r.guard ? String(r.guard.driftRepairs) : '-',
                r.guard ? String(r.guard.warnings.length) : '-',
              ]),
            ),
          );
          for (const r of rows) for (const w of r.guard?.warnings ?? []) out(`warning ${r.id}: ${w}\n`);
        }
        const bad = rows.some((r) => r.reachable === false || (r.guard && r.guard.inSync === false));
        process.exitCode = bad ? 1 : 0;
      } catch (e) {
        process.exitCode = fail(e, 'show', err);
      }
    });
  return fw;
}
