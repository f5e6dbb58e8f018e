/** `dispatch status`: the cluster from this dispatcher; exit 1 when a cluster exists but is not healthy. */
import type { Command } from 'commander';
import type { ClusterView } from '../../api/rest.js';
import { EXIT } from '../exit-codes.js';
import { globals, printJson, withClient } from '../command-kit.js';
import { isHealthy, statusText } from '../status-view.js';

export function registerStatusCommand(program: Command): void {
  program
    .command('status')
    .description("the cluster's state from this dispatcher: every process and dispatcher")
    .action(async (_opts, cmd: Command) => {
      await withClient(cmd, async (client) => {
        const view = await client.get<ClusterView>('/v1/cluster');
        if (globals(cmd).json) printJson(view);
        else process.stdout.write(statusText(view));
        if (view.name && !isHealthy(view)) process.exitCode = EXIT.failed;
      });
    });
}
