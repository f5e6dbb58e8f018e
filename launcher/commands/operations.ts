/**
 * `dispatch operations [ID]`: the operations of the cluster (this dispatcher's and those recorded in the
 * agency), or one of them with its events; `dispatch operations resume|abort ID` continues or aborts one
 * whose dispatcher died, through this one (docs/DESIGN.md, "Operation lifecycle").
 */
import type { Command } from 'commander';
import { DispatcherError } from '../../api/errors.js';
import type { OperationView } from '../../api/rest.js';
import { globals, printJson, runOperation, withClient } from '../command-kit.js';
import { formatTable } from '../table.js';

export function registerOperationsCommand(program: Command): void {
  program
    .command('operations')
    .description('operations of the cluster, or one of them with its events; `operations resume ID` / `operations abort ID` continue or abort one (e.g. after its dispatcher died)')
    .argument('[id]', 'operation id, or resume / abort')
    .argument('[target]', 'with resume or abort: the operation id')
    .action(async (id: string | undefined, target: string | undefined, _opts, cmd: Command) => {
      if (id === 'resume' || id === 'abort') {
        if (!target) throw new DispatcherError('bad_request', `dispatch operations ${id} ID: name the operation (dispatch operations lists them)`);
        const action = id;
        await runOperation(cmd, `${action} of operation ${target}`, [], (k) => (action === 'resume' ? k.resumeOperation(target) : k.abortOperation(target)));
        return;
      }
      if (target) throw new DispatcherError('bad_request', `dispatch operations ${id} ${target}: expected resume ID or abort ID`);
      await withClient(cmd, async (client) => {
        if (id) {
          const op = await client.get<OperationView>(`/v1/operations/${encodeURIComponent(id)}`);
          if (globals(cmd).json) printJson(op);
          else process.stdout.write(`${op.kind} of ${op.cluster}: ${op.state}${op.error ? ` — ${op.error.message}` : ''}\n` + op.events.map((e) => `  ${e.at} ${e.step}${e.host ? ` [${e.host}${e.process ? `/${e.process}` : ''}]` : ''}: ${e.message}`).join('\n') + '\n');
        } else {
          const { operations } = await client.get<{ operations: OperationView[] }>('/v1/operations');
          if (globals(cmd).json) printJson(operations);
          else process.stdout.write(formatTable(['ID', 'KIND', 'CLUSTER', 'STATE', 'RUNNER', 'STARTED', 'ENDED'], operations.map((o) => [o.id, o.kind, o.cluster, o.stale ? 'running (its dispatcher is gone: resume or abort)' : o.state, o.runner, o.startedAt, o.endedAt])) + '\n');
        }
      });
    });
}
