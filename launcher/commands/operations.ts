/** `dispatch operations [ID]`: the operations this dispatcher ran, or one of them with its events. */
import type { Command } from 'commander';
import type { OperationView } from '../../api/rest.js';
import { globals, printJson, withClient } from '../command-kit.js';
import { formatTable } from '../table.js';

export function registerOperationsCommand(program: Command): void {
  program
    .command('operations')
    .description('operations this dispatcher ran, or one of them with its events')
    .argument('[id]', 'operation id')
    .action(async (id: string | undefined, _opts, cmd: Command) => {
      await withClient(cmd, async (client) => {
        if (id) {
          const op = await client.get<OperationView>(`/v1/operations/${encodeURIComponent(id)}`);
          if (globals(cmd).json) printJson(op);
          else process.stdout.write(`${op.kind} of ${op.cluster}: ${op.state}${op.error ? ` — ${op.error.message}` : ''}\n` + op.events.map((e) => `  ${e.at} ${e.step}${e.host ? ` [${e.host}${e.process ? `/${e.process}` : ''}]` : ''}: ${e.message}`).join('\n') + '\n');
        } else {
          const { operations } = await client.get<{ operations: OperationView[] }>('/v1/operations');
          if (globals(cmd).json) printJson(operations);
          else process.stdout.write(formatTable(['ID', 'KIND', 'CLUSTER', 'STATE', 'STARTED', 'ENDED'], operations.map((o) => [o.id, o.kind, o.cluster, o.state, o.startedAt, o.endedAt])) + '\n');
        }
      });
    });
}
