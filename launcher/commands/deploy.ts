/**
 * `dispatch deploy`: put dispatchers onto the machines of an inventory over SSH (deploy/deploy.ts).
 * Exit codes: 0 all hosts succeeded, 1 some host failed, 2 usage (bad options or inventory), 3 unreachable
 * (launcher/exit-codes.ts).
 */
import { Option, type Command } from 'commander';
import { wholeNumber } from '../args.js';
import { reportError } from '../exit-codes.js';
import { runDeploy } from '../../deploy/deploy.js';

export function registerDeployCommand(program: Command): Command {
  return program
    .command('deploy')
    .description('install, configure and start a dispatcher on every host of an inventory (over SSH)')
    .requiredOption('--inventory <file>', 'inventory YAML (hosts, SSH access, cluster-wide settings)')
    .option('-o, --output <file>', 'dispatchers file to write', 'dispatchers.yaml')
    .option('--uninstall', 'stop and remove the daemon (data dirs are kept)')
    .option('--purge-data <cluster>', 'with --uninstall: also remove data dirs; repeat the cluster name')
    .option('--json', 'print progress as one JSON object per line')
    .addOption(new Option('--parallel <n>', 'hosts at a time (default: inventory parallelism)').argParser(wholeNumber(1)))
    .option('--accept-new-host-keys', 'trust an unknown SSH host key on first use (a changed key is always refused)')
    .option('--package <tgz>', 'ship this `npm pack` tarball instead of packing the current checkout')
    .option('--no-build', 'pack the existing dist/ without running the build')
    .action(async (opts: { inventory: string; output: string; uninstall?: boolean; purgeData?: string; json?: boolean; parallel?: number; acceptNewHostKeys?: boolean; package?: string; build: boolean }, cmd: Command) => {
      try {
        const report = await runDeploy({
          inventoryFile: opts.inventory,
          output: opts.output,
          uninstall: opts.uninstall,
          purgeData: opts.purgeData,
          json: !!(opts.json || cmd.optsWithGlobals().json),
          parallel: opts.parallel,
          acceptNewHostKeys: opts.acceptNewHostKeys,
          packageFile: opts.package,
          build: opts.build,
        });
        process.exitCode = report.ok ? 0 : 1;
      } catch (e) {
        process.exitCode = reportError(e, { prefix: 'dispatch deploy' });
      }
    });
}
