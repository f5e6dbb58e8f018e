/** `dispatch firewall apply|confirm`: commit-confirmed changes of a running cluster's firewall policy. */
import { readFile } from 'node:fs/promises';
import { Option, type Command } from 'commander';
import YAML from 'yaml';
import { DispatcherError } from '../../api/errors.js';
import { FirewallPolicySchema, zodProblems } from '../../api/plan.js';
import { wholeNumber } from '../args.js';
import { globals, printJson, withClient } from '../command-kit.js';

export function registerFirewallChangeCommands(firewall: Command): void {
  firewall
    .command('apply')
    .description("change the running cluster's firewall policy on every dispatcher; it rolls back by itself unless `dispatch firewall confirm` follows in time")
    .requiredOption('--policy <file>', 'firewall policy (YAML/JSON): mode, backend, clientSources, operatorSources, sshPort, outboundAllow')
    .addOption(new Option('--confirm-within <seconds>', 'roll back unless confirmed within this many seconds').default(60).argParser(wholeNumber(1)))
    .action(async (opts: { policy: string; confirmWithin: number }, cmd: Command) => {
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
        const r = await client.post<{ confirmBy?: string }>('/v1/cluster/firewall', { firewall: parsed.data, confirmWithinSeconds: opts.confirmWithin });
        if (globals(cmd).json) printJson(r);
        else process.stdout.write(`firewall change applied on every dispatcher; it rolls back at ${r.confirmBy} unless you run: dispatch firewall confirm\n`);
      });
    });
  firewall
    .command('confirm')
    .description('keep the firewall change applied by `dispatch firewall apply`')
    .action(async (_o, cmd: Command) => {
      await withClient(cmd, async (client) => {
        const r = await client.post('/v1/cluster/firewall/confirm', {});
        if (globals(cmd).json) printJson(r);
        else process.stdout.write('firewall change confirmed on every dispatcher\n');
      });
    });
}
