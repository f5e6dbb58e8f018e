/** `dispatch shutdown | relaunch | cleanup`: the operations on a cluster's persisted plan. */
import { Option, type Command } from 'commander';
import { wholeNumber } from '../args.js';
import { clusterProcesses, runOperation } from '../command-kit.js';

export function registerLifecycleCommands(program: Command): void {
  program
    .command('shutdown')
    .description('stop every process gracefully, coordinators first, agency last; data and firewall rules stay')
    .action(async (_o, cmd: Command) => {
      await runOperation(cmd, 'shutdown', await clusterProcesses(cmd), (k) => k.shutdown());
    });

  program
    .command('relaunch')
    .description('start the persisted plan again, keeping its data')
    .addOption(new Option('--ready-timeout <seconds>', 'how long each process may take to become ready').default(120).argParser(wholeNumber(1)))
    .action(async (opts: { readyTimeout: number }, cmd: Command) => {
      await runOperation(cmd, 'relaunch', await clusterProcesses(cmd), (k) => k.relaunch(), { readyTimeoutMs: opts.readyTimeout * 1000 });
    });

  program
    .command('cleanup')
    .description('DELETE every data dir and firewall rule of a shut-down cluster')
    .requiredOption('--name <cluster>', "the cluster's name, repeated as confirmation")
    .action(async (opts: { name: string }, cmd: Command) => {
      await runOperation(cmd, 'cleanup', [], (k) => k.cleanup(opts.name));
    });
}
