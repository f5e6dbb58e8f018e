/**
 * `dispatch firewall apply|confirm|extend|cancel`: commit-confirmed changes of a running cluster's firewall
 * policy. `apply` prints the change's token; each later command is its own process, so it reaches the
 * dispatcher over a NEW connection — a confirm that gets through proves the operator still gets in.
 */
import { readFile } from 'node:fs/promises';
import { Option, type Command } from 'commander';
import YAML from 'yaml';
import { DispatcherError } from '../../api/errors.js';
import { FirewallPolicySchema, zodProblems } from '../../api/plan.js';
import { planVersionArg, wholeNumber } from '../args.js';
import { globals, printJson, withClient } from '../command-kit.js';

const tokenOption = () => new Option('--token <token>', 'the token `dispatch firewall apply` printed').makeOptionMandatory();

export function registerFirewallChangeCommands(firewall: Command): void {
  firewall
    .command('apply')
    .description("change the running cluster's firewall policy on every dispatcher; it rolls back by itself unless `dispatch firewall confirm` follows in time")
    .requiredOption('--policy <file>', 'firewall policy (YAML/JSON): mode, backend, clientSources, operatorSources, sshPort, outboundAllow')
    .addOption(new Option('--confirm-within <seconds>', 'roll back unless confirmed within this many seconds').default(60).argParser(wholeNumber(1)))
    .addOption(new Option('--base-version <version:hash>', 'refuse unless the running plan is still this version (as `dispatch plan --diff` prints it)').argParser(planVersionArg))
    .action(async (opts: { policy: string; confirmWithin: number; baseVersion?: { number: number; hash: string } }, cmd: Command) => {
      const text = await readFile(opts.policy, 'utf8').catch((e) => {
        throw new DispatcherError('bad_request', `cannot read ${opts.policy}: ${e.code ?? e.message}`, { cause: e });
      });
      let raw: unknown;
      try {
        raw = YAML.parse(text);
      } catch (e) {
        throw new DispatcherError('validation_failed', `${opts.policy} is neither JSON nor YAML: ${(e as Error).message}`, { cause: e });
      }
      const parsed = FirewallPolicySchema.safeParse(raw);
      if (!parsed.success) throw new DispatcherError('validation_failed', `${opts.policy} is not a valid firewall policy`, { problems: zodProblems(parsed.error) });
      await withClient(cmd, async (client) => {
        const r = await client.post<{ confirmBy?: string; token?: string }>('/v1/cluster/firewall', { firewall: parsed.data, confirmWithinSeconds: opts.confirmWithin, ...(opts.baseVersion ? { baseVersion: opts.baseVersion } : {}) });
        if (globals(cmd).json) printJson(r);
        else {
          process.stdout.write(
            `firewall change applied on every dispatcher; it rolls back at ${r.confirmBy} unless you run (from a new shell, proving you still get in):\n` +
              `  dispatch firewall confirm --token ${r.token}\n(or: dispatch firewall extend --token ${r.token} --confirm-within SECONDS; dispatch firewall cancel --token ${r.token})\n`,
          );
        }
      });
    });
  firewall
    .command('confirm')
    .description('keep the firewall change applied by `dispatch firewall apply` (over a new connection)')
    .addOption(tokenOption())
    .action(async (opts: { token: string }, cmd: Command) => {
      await withClient(cmd, async (client) => {
        const r = await client.post('/v1/cluster/firewall/confirm', { token: opts.token });
        if (globals(cmd).json) printJson(r);
        else process.stdout.write('firewall change confirmed on every dispatcher\n');
      });
    });
  firewall
    .command('extend')
    .description("move the pending firewall change's rollback deadline")
    .addOption(tokenOption())
    .addOption(new Option('--confirm-within <seconds>', 'the new deadline, from now').makeOptionMandatory().argParser(wholeNumber(1)))
    .action(async (opts: { token: string; confirmWithin: number }, cmd: Command) => {
      await withClient(cmd, async (client) => {
        const r = await client.post<{ confirmBy?: string }>('/v1/cluster/firewall/extend', { token: opts.token, confirmWithinSeconds: opts.confirmWithin });
        if (globals(cmd).json) printJson(r);
        else process.stdout.write(`firewall change now rolls back at ${r.confirmBy} unless confirmed\n`);
      });
    });
  firewall
    .command('cancel')
    .description('roll the pending firewall change back now, on every dispatcher')
    .addOption(tokenOption())
    .action(async (opts: { token: string }, cmd: Command) => {
      await withClient(cmd, async (client) => {
        const r = await client.post('/v1/cluster/firewall/cancel', { token: opts.token });
        if (globals(cmd).json) printJson(r);
        else process.stdout.write('firewall change cancelled: the previous rules are back on every dispatcher\n');
      });
    });
}
