/**
 * `dispatch shell`: an interactive JavaScript shell in the spirit of arangosh — node:repl with top-level
 * await and a history file — holding the Planner, the Kickstarter and a `cluster` object connected to the
 * dispatcher of the global options or the saved context.
 */
import repl from 'node:repl';
import { once } from 'node:events';
import { readFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Command } from 'commander';
import type { Plan } from '../api/plan.js';
import type { RestartRequest } from '../api/rest.js';
import { planFromSpec, planFromSpecText } from './planner.js';
import { Kickstarter, type KickstarterOptions } from './kickstarter.js';
import { resolveConnection } from './connect.js';
import { configDir } from './context.js';
import { formatEvent } from './progress.js';
import type { DispatcherClient } from '../client/dispatcher-client.js';
import { DispatcherError } from '../api/errors.js';

const HELP = `cluster-dispatcher shell — JavaScript with top-level await.

  Planner.fromSpec(spec)            plan from a spec object (same as \`dispatch plan\`)
  await Planner.fromSpecFile(path)  plan from a YAML/JSON spec file
  const k = new Kickstarter(plan)   drives the connected dispatcher through the plan's life cycle:
    await k.launch()                  propagate, preflight, guard, start in order, wait healthy
    await k.isHealthy()               true when every process is ready
    await k.shutdown()                stop everything (data and firewall stay)
    await k.relaunch()                start the persisted plan again
    await k.cleanup()                 DELETE the data dirs (the plan's name confirms)
    await k.rollingRestart({processes: {roles: ['dbserver']}})
  cluster                           the connected cluster: await cluster.status(), cluster.logs('dbserver-1'),
                                    cluster.shutdown(), cluster.relaunch(), cluster.restart({...}), cluster.operations()
  help(obj)                         what an object offers, e.g. help(Kickstarter)
  .exit                             leave (history is kept in ${'$'}DISPATCH_CONFIG_DIR/shell_history)`;

function describe(obj: unknown): string {
  if (obj === undefined) return HELP;
  const own = typeof obj === 'object' && obj ? Object.keys(obj) : [];
  // Walk the whole prototype chain: the shell's Kickstarter is a subclass, its methods live one level up.
  const methods: string[] = [];
  let proto: object | null = typeof obj === 'function' ? ((obj as { prototype?: object }).prototype ?? null) : Object.getPrototypeOf(obj);
  for (let depth = 0; proto && proto !== Object.prototype && proto !== Function.prototype && depth < 10; depth++) {
    methods.push(...Object.getOwnPropertyNames(proto).filter((n) => n !== 'constructor'));
    proto = Object.getPrototypeOf(proto);
  }
  return `${[...new Set([...own, ...methods])].sort().join(', ')}`;
}

export function shellContext(client: DispatcherClient | undefined, print: (s: string) => void) {
  const need = () => {
    if (!client) throw new DispatcherError('bad_request', 'not connected: start the shell with --endpoint/--fingerprint/--password-file, or run `dispatch local` first');
    return client;
  };
  const onEvent = (e: Parameters<NonNullable<KickstarterOptions['onEvent']>>[0]) => print(formatEvent(e));
  class ShellKickstarter extends Kickstarter {
    constructor(plan?: Plan, opts: KickstarterOptions = {}) {
      super(plan, need(), { onEvent, ...opts });
    }
  }
  const k = () => new Kickstarter(undefined, need(), { onEvent });
  return {
    Planner: {
      fromSpec: planFromSpec,
      fromSpecFile: async (path: string) => planFromSpecText(await readFile(path, 'utf8'), path),
    },
    Kickstarter: ShellKickstarter,
    cluster: {
      status: () => k().status(),
      isHealthy: () => k().isHealthy(),
      shutdown: () => k().shutdown(),
      relaunch: () => k().relaunch(),
      cleanup: (name: string) => k().cleanup(name),
      restart: (req: RestartRequest = {}) => k().rollingRestart(req),
      logs: async (id: string, lines = 50) => (await need().get<{ lines: string[] }>(`/v1/cluster/processes/${encodeURIComponent(id)}/log?lines=${lines}`)).lines.join('\n'),
      operations: async () => (await need().get<{ operations: unknown[] }>('/v1/operations')).operations,
    },
    help: (obj?: unknown) => {
      print(describe(obj));
    },
  };
}

export async function runShell(cmd: Command): Promise<void> {
  let client: DispatcherClient | undefined;
  let note = '';
  try {
    client = (await resolveConnection(cmd.optsWithGlobals())).client;
    note = `connected to ${client.endpoint.origin === 'null' ? 'the local socket' : client.endpoint.origin}`;
  } catch (e) {
    note = `not connected (${(e as Error).message})`;
  }
  process.stdout.write(`cluster-dispatcher shell — ${note}. Type help() or .guide for help.\n`);
  const server = repl.start({ prompt: 'dispatch> ', useGlobal: false, ignoreUndefined: true });
  const print = (s: string) => server.output.write(s + '\n');
  Object.assign(server.context, shellContext(client, print));
  server.defineCommand('guide', {
    help: 'What this shell offers',
    action() {
      print(HELP);
      this.displayPrompt();
    },
  });
  await mkdir(configDir(), { recursive: true, mode: 0o700 });
  await new Promise<void>((resolve) => server.setupHistory(join(configDir(), 'shell_history'), () => resolve()));
  await once(server, 'exit');
  client?.close();
}

export function registerShellCommand(program: Command): void {
  program
    .command('shell')
    .description('interactive JavaScript shell with Planner, Kickstarter and a connected `cluster` (top-level await)')
    .action(async (_o, cmd) => runShell(cmd));
}
