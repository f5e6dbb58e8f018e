/** `dispatch logs PROCESS [-n N]`: a process's log, from whichever dispatcher runs it. */
import { Option, type Command } from 'commander';
import { wholeNumber } from '../args.js';
import { globals, printJson, withClient } from '../command-kit.js';

export function registerLogsCommand(program: Command): void {
  program
    .command('logs')
    .description('last lines of a process log, from whichever dispatcher runs it')
    .argument('<process>', 'process id, e.g. dbserver-1')
    .addOption(new Option('-n, --lines <n>', 'how many lines').default(100).argParser(wholeNumber(1)))
    .action(async (id: string, opts: { lines: number }, cmd: Command) => {
      await withClient(cmd, async (client) => {
        const r = await client.get<{ id: string; host: string; lines: string[] }>(`/v1/cluster/processes/${encodeURIComponent(id)}/log?lines=${opts.lines}`);
        if (globals(cmd).json) printJson(r);
        else process.stdout.write(r.lines.join('\n') + (r.lines.length ? '\n' : ''));
      });
    });
}
