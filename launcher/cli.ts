/**
 * `dispatch` — the CLI for people and scripts. Global options say which dispatcher to talk to and how to
 * trust it; without them the saved context (from `dispatch local` or `dispatch context save`) is used.
 * Each command lives in launcher/commands/<command>.ts; this file only assembles them and runs the
 * program. Errors become exit codes in ONE place (launcher/exit-codes.ts); --json prints machine-readable
 * output.
 */
import { Command, CommanderError } from 'commander';
import type { ClusterView } from '../api/rest.js';
import { resolveConnection, type ConnectOptions } from './connect.js';
import { exitCodeOf, reportError } from './exit-codes.js';
import { registerPlanCommand } from './commands/plan.js';
import { registerLaunchCommand } from './commands/launch.js';
import { registerStatusCommand } from './commands/status.js';
import { registerLifecycleCommands } from './commands/lifecycle.js';
import { registerLogsCommand } from './commands/logs.js';
import { registerOperationsCommand } from './commands/operations.js';
import { registerContextCommands } from './commands/context.js';
import { registerRestartCommand } from './commands/restart.js';
import { registerScaleCommand } from './commands/scale.js';
import { registerReplaceCommand } from './commands/replace.js';
import { registerShellCommand } from './shell.js';
import { registerLocalCommand } from './commands/local.js';
import { registerFirewallCommands } from './commands/firewall.js';
import { registerFirewallChangeCommands } from './commands/firewall-change.js';
import { registerDeployCommand } from './commands/deploy.js';
import { registerConnectCommand } from './commands/connect.js';

export { EXIT, exitCodeOf } from './exit-codes.js';

export function buildProgram(): Command {
  const program = new Command('dispatch')
    .description('Launch and operate a database cluster through one dispatcher (HTTPS, password, pinned certificate).')
    .version(process.env.npm_package_version ?? '0.1.0')
    .option('-e, --endpoint <url>', 'dispatcher to talk to, https://HOST:PORT (default: the saved context)')
    .option('-u, --user <name>', 'user name (default: operator, or DISPATCH_USER)')
    .option('--password-file <file>', 'file holding the password (or set DISPATCH_PASSWORD; never pass a password as an argument)')
    .option('--fingerprint <sha256>', "the dispatcher certificate's SHA-256 fingerprint to pin (dispatcherd init prints it)")
    .option('--ca-file <file>', 'trust this CA (PEM) instead of a fingerprint pin')
    .option('--socket <path>', "talk to the local dispatcher's control socket (root on that machine, no password)")
    .option('--context <name>', 'use this saved context instead of the current one')
    .option('--json', 'machine-readable output: JSON, and progress events as JSON lines')
    .showHelpAfterError()
    .addHelpText(
      'after',
      `
Exit codes: 0 ok · 1 operation failed · 2 usage or invalid input · 3 unreachable, untrusted or unauthorized.
Environment: DISPATCH_ENDPOINT, DISPATCH_USER, DISPATCH_PASSWORD, DISPATCH_FINGERPRINT, DISPATCH_CONFIG_DIR.

Start here:  dispatch local            a pg-ha cluster on this machine (three dispatchers on loopback)
             dispatch status           what runs, where, and whether it is healthy`,
    );

  registerPlanCommand(program);
  registerLaunchCommand(program);
  registerStatusCommand(program);
  registerLifecycleCommands(program);
  registerLogsCommand(program);
  registerOperationsCommand(program);
  registerContextCommands(program);
  registerRestartCommand(program);
  registerScaleCommand(program);
  registerReplaceCommand(program);
  registerShellCommand(program);
  registerLocalCommand(program);
  registerConnectCommand(program);
  const firewall = registerFirewallCommands(program, {
    fetchGuardStatus: async () => {
      const { client } = await resolveConnection(program.opts() as ConnectOptions);
      try {
        return (await client.get<ClusterView>('/v1/cluster')).dispatchers;
      } finally {
        client.close();
      }
    },
  });
  registerFirewallChangeCommands(firewall);
  registerDeployCommand(program);
  return program;
}

export async function main(argv = process.argv): Promise<number> {
  const program = buildProgram();
  // Every (sub)command throws instead of exiting, so main() maps every outcome to an exit code.
  const throwInsteadOfExit = (c: Command): void => {
    c.exitOverride();
    c.commands.forEach(throwInsteadOfExit);
  };
  throwInsteadOfExit(program);
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (e) {
    // Commander has already printed its usage error.
    if (e instanceof CommanderError) return exitCodeOf(e);
    return reportError(e, { prefix: 'dispatch', json: argv.includes('--json') });
  }
}
