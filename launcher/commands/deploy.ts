/**
 * `dispatch deploy`: put dispatchers onto the machines of an inventory over SSH (deploy/deploy.ts).
 * Exit codes: 0 all hosts succeeded, 1 some host failed, 2 usage (bad options or inventory).
 */
import type { Command } from 'commander';
import { formatProblems, isDispatcherError } from '../../api/errors.js';
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
    .option('--parallel <n>', 'hosts at a time (default: inventory parallelism)')
    .option('--accept-new-host-keys', 'trust an unknown SSH host key on first use (a changed key is always refused)')
    .option('--package <tgz>', 'ship this `npm pack` tarball instead of packing the current checkout')
    .option('--no-build', 'pack the existing dist/ without running the build')
    .action(async (opts: { inventory: string; output: string; uninstall?: boolean; purgeData?: string; json?: boolean; parallel?: string; acceptNewHostKeys?: boolean; package?: string; build: boolean }) => {
      let parallel: number | undefined;
      if (opts.parallel !== undefined) {
        parallel = Number(opts.parallel);
        if (!/^\d+$/.test(opts.parallel) || parallel < 1) {
          process.stderr.write('dispatch deploy: --parallel must be a positive integer\n');
          process.exitCode = 2;
          return;
        }
      }
      try {
        const report = await runDeploy({
          inventoryFile: opts.inventory,
          output: opts.output,
          uninstall: opts.uninstall,
          purgeData: opts.purgeData,
          json: opts.json,
          parallel,
          acceptNewHostKeys: opts.acceptNewHostKeys,
          packageFile: opts.package,
          build: opts.build,
        });
        process.exitCode = report.ok ? 0 : 1;
      } catch (e) {
        if (isDispatcherError(e)) {
          process.stderr.write(`dispatch deploy: ${e.message}\n${e.problems.length ? formatProblems(e.problems) + '\n' : ''}`);
          process.exitCode = e.code === 'bad_request' || e.code === 'validation_failed' ? 2 : 1;
        } else {
          process.stderr.write(`dispatch deploy: ${(e as Error).message}\n`);
          process.exitCode = 1;
        }
      }
    });
}
