/**
 * `dispatch plan --spec FILE [-o plan.json] [--json]`: the Planner from the command line (the same pure
 * Planner serves `POST /v1/plans`, server/core/planner.ts).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import type { Command } from 'commander';
import { DispatcherError, formatProblems, isDispatcherError } from '../../api/errors.js';
import type { Plan } from '../../api/plan.js';
import { parseSpecText, planFromSpec } from '../planner.js';
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
}

export const defaultPlanIO: PlanCommandIO = {
  readFile: (p) => readFileSync(p, 'utf8'),
  writeFile: (p, c) => writeFileSync(p, c, { mode: 0o644 }),
  out: (t) => process.stdout.write(t),
  err: (t) => process.stderr.write(t),
  setExitCode: (c) => {
    process.exitCode = c;
  },
};

export function registerPlanCommand(program: Command, io: PlanCommandIO = defaultPlanIO): Command {
  return program
    .command('plan')
    .description('make a launch plan from a spec (YAML or JSON) and show it as a table')
    .requiredOption('--spec <file>', 'spec file (YAML or JSON)')
    .option('-o, --output <file>', 'write the plan (JSON) to this file')
    .option('--json', 'print the plan as JSON instead of the table')
    .action((opts: { spec: string; output?: string; json?: boolean }, cmd: Command) => {
      // --json is also a global option of `dispatch`; either place asks for JSON.
      const json = !!(opts.json || cmd.optsWithGlobals().json);
      let plan: Plan;
      try {
        let text: string;
        try {
          text = io.readFile(opts.spec);
        } catch (err) {
          throw new DispatcherError('bad_request', `cannot read ${opts.spec}: ${(err as Error).message}`, {
            problems: [{ path: opts.spec, message: (err as NodeJS.ErrnoException).code ?? 'unreadable' }],
          });
        }
        plan = planFromSpec(parseSpecText(text, opts.spec));
      } catch (err) {
        if (isDispatcherError(err) && (err.code === 'validation_failed' || err.code === 'bad_request')) {
          io.err(`dispatch plan: ${opts.spec} is not a valid spec (${err.problems.length} problem(s)):\n${formatProblems(err.problems)}\n`);
          io.setExitCode(EXIT_INVALID);
          return;
        }
        throw err;
      }
      const text = JSON.stringify(plan, null, 2) + '\n';
      if (opts.output) io.writeFile(opts.output, text);
      if (json) io.out(text);
      else io.out(planSummary(plan) + (opts.output ? `plan written to ${opts.output}\n` : ''));
    });
}
