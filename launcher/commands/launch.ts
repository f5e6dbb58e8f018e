/** `dispatch launch --plan FILE | --spec FILE`: hand a plan to the dispatcher and follow the launch. */
import { Option, type Command } from 'commander';
import { wholeNumber } from '../args.js';
import { runOperation } from '../command-kit.js';
import { loadPeerCredentials, loadPlanOrSpec } from '../plan-input.js';

export function registerLaunchCommand(program: Command): void {
  program
    .command('launch')
    .description('hand a plan to the dispatcher: propagate, preflight, guard, start in order, wait until healthy')
    .option('--plan <file>', 'plan file (JSON/YAML), as made by `dispatch plan`')
    .option('--spec <file>', 'spec file: plan it first')
    .option('--peer-credentials <file>', 'YAML {dispatcherId: {user, passwordFile}} for peers whose password differs from yours')
    .addOption(new Option('--ready-timeout <seconds>', 'how long each process may take to become ready').default(120).argParser(wholeNumber(1)))
    .action(async (opts: { plan?: string; spec?: string; peerCredentials?: string; readyTimeout: number }, cmd: Command) => {
      const plan = await loadPlanOrSpec(opts);
      const peerCredentials = await loadPeerCredentials(opts.peerCredentials);
      await runOperation(
        cmd,
        `launch ${plan.name}`,
        plan.processes.map((p) => ({ id: p.id, host: p.dispatcher })),
        (k) => k.launch(),
        { peerCredentials, readyTimeoutMs: opts.readyTimeout * 1000 },
        plan,
      );
    });
}
