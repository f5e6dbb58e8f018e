/**
 * `dispatch plan --spec FILE [-o plan.json] [--json]`: the Planner from the command line (the same pure
 * Planner serves `POST /v1/plans`, server/core/planner.ts).
 * `dispatch plan --diff FILE`: the dry run of a plan change against the running version (POST
 * /v1/cluster/plan/diff; docs/DESIGN.md, "Plan versions"); FILE is a plan or a spec.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import type { Command } from 'commander';
import { DispatcherError, formatProblems, isDispatcherError } from '../../api/errors.js';
import { PlanSchema, zodProblems, type Plan } from '../../api/plan.js';
import type { PlanDiffView } from '../../api/plan-version.js';
import { parseSpecText, planFromSpec } from '../planner.js';
import { globals, withClient } from '../command-kit.js';
import { formatPlanDiff } from '../plan-diff-view.js';
import { planSummary } from '../summary.js';
import { EXIT } from '../exit-codes.js';

/** Exit code for an invalid spec (usage/data error), distinct from 1 (operation failed). */
export const EXIT_INVALID = EXIT.usage;

export interface PlanCommandIO {
  readFile(path: string): string;
  writeFile(path: string, content: string): void;
  out(text: string): void;
  err(text: string): void;
  setExitCode(code: number): void;
  /** Asks the connected dispatcher for the diff of a proposed plan against the running version (default: over HTTPS). */
  diff?(cmd: Command, plan: Plan): Promise<PlanDiffView>;
}

export const defaultPlanIO: PlanCommandIO = {
  readFile: (p) => readFileSync(p, 'utf8'),
  writeFile: (p, c) => writeFileSync(p, c, { mode: 0o644 }),
  out: (t) => process.stdout.write(t),
  err: (t) => process.stderr.write(t),
  setExitCode: (c) => {
    process.exitCode = c;
  },
  diff: (cmd, plan) => withClient(cmd, (client) => client.post<PlanDiffView>('/v1/cluster/plan/diff', { plan })),
};

/** A plan file (it has `apiVersion`) or a spec file to plan first, YAML or JSON. */
export function proposedPlan(text: string, file: string): Plan {
  const raw: unknown = parseSpecText(text, file);
  if (raw !== null && typeof raw === 'object' && 'apiVersion' in raw) {
    const r = PlanSchema.safeParse(raw);
    if (!r.success) throw new DispatcherError('validation_failed', `${file} is not a valid plan`, { problems: zodProblems(r.error) });
    return r.data;
  }
  return planFromSpec(raw as Parameters<typeof planFromSpec>[0]);
}

function readInput(io: PlanCommandIO, file: string): string {
  try {
    return io.readFile(file);
  } catch (err) {
    throw new DispatcherError('bad_request', `cannot read ${file}: ${(err as Error).message}`, {
      problems: [{ path: file, message: (err as NodeJS.ErrnoException).code ?? 'unreadable' }],
    });
  }
}

export function registerPlanCommand(program: Command, io: PlanCommandIO = defaultPlanIO): Command {
  return program
    .command('plan')
    .description('make a launch plan from a spec (YAML or JSON) and show it as a table; or, with --diff, show what a new plan would change in the running cluster')
    .option('--spec <file>', 'spec file (YAML or JSON)')
    .option('--diff <file>', 'dry run: what this plan (or spec) would change against the running plan version (processes, ports, firewall rules per host)')
    .option('-o, --output <file>', 'write the plan (JSON) to this file')
    .option('--json', 'print the plan (or the diff) as JSON instead of the table')
    .action((opts: { spec?: string; diff?: string; output?: string; json?: boolean }, cmd: Command) => {
      // --json is also a global option of `dispatch`; either place asks for JSON.
      const json = !!(opts.json || globals(cmd).json);
      const file = opts.diff ?? opts.spec;
      if (!file || (opts.diff && opts.spec)) {
        io.err('dispatch plan: give either --spec FILE (make a plan) or --diff FILE (compare a plan with the running one)\n');
        io.setExitCode(EXIT_INVALID);
        return;
      }
      let plan: Plan;
      try {
        plan = opts.diff ? proposedPlan(readInput(io, file), file) : planFromSpec(parseSpecText(readInput(io, file), file));
      } catch (err) {
        if (isDispatcherError(err) && (err.code === 'validation_failed' || err.code === 'bad_request')) {
          io.err(`dispatch plan: ${file} is not a valid ${opts.diff ? 'plan or spec' : 'spec'} (${err.problems.length} problem(s)):\n${formatProblems(err.problems)}\n`);
          io.setExitCode(EXIT_INVALID);
          return;
        }
        throw err;
      }
      if (opts.diff) {
        const ask = io.diff ?? defaultPlanIO.diff!;
        return ask(cmd, plan).then((view) => io.out(json ? JSON.stringify(view, null, 2) + '\n' : formatPlanDiff(view)));
      }
      const text = JSON.stringify(plan, null, 2) + '\n';
      if (opts.output) io.writeFile(opts.output, text);
      if (json) io.out(text);
      else io.out(planSummary(plan) + (opts.output ? `plan written to ${opts.output}\n` : ''));
    });
}
