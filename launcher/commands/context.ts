/** `dispatch context list | save | use`: saved connections (like kubectl contexts). */
import type { Command } from 'commander';
import { DispatcherError } from '../../api/errors.js';
import { globals, printJson } from '../command-kit.js';
import { readContexts, saveContext } from '../context.js';
import { formatTable } from '../table.js';

export function registerContextCommands(program: Command): void {
  const context = program.command('context').description('saved connections (like kubectl contexts)');
  context
    .command('list')
    .description('list saved contexts; * marks the current one')
    .action(async (_o, cmd: Command) => {
      const all = await readContexts();
      if (globals(cmd).json) return printJson(all);
      process.stdout.write(formatTable(['', 'NAME', 'ENDPOINT', 'USER'], Object.entries(all.contexts).map(([n, c]) => [n === all.current ? '*' : '', n, c.endpoint, c.user])) + '\n');
    });
  context
    .command('save')
    .description('save the global options (--endpoint, --fingerprint or --ca-file, --user, --password-file) under a name and make it current')
    .argument('<name>')
    .action(async (name: string, _o, cmd: Command) => {
      const g = globals(cmd);
      if (!g.endpoint) throw new DispatcherError('bad_request', 'context save needs --endpoint');
      await saveContext(name, { endpoint: g.endpoint, fingerprint: g.fingerprint, caFile: g.caFile, user: g.user, passwordFile: g.passwordFile });
      process.stdout.write(`context ${name} saved and current\n`);
    });
  context
    .command('use')
    .description('make a saved context current')
    .argument('<name>')
    .action(async (name: string) => {
      const all = await readContexts();
      const c = all.contexts[name];
      if (!c) throw new DispatcherError('bad_request', `no context ${name}`);
      await saveContext(name, c);
      process.stdout.write(`now using ${name} (${c.endpoint})\n`);
    });
}
