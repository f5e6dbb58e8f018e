/**
 * `dispatch` — the CLI for people and scripts. Global options say which dispatcher to talk to and how to
 * trust it; without them the saved context (from `dispatch local` or `dispatch context save`) is used.
 * Errors are mapped to exit codes in ONE place (exitCodeOf); --json prints machine-readable output.
 */
import { readFile } from 'node:fs/promises';
import { Command, CommanderError, Option } from 'commander';
import YAML from 'yaml';
import { DispatcherError, formatProblems, isDispatcherError } from '../api/errors.js';
import { FirewallPolicySchema, PlanSchema, type Plan, zodProblems } from '../api/plan.js';
import type { ClusterView, Credential, OperationView } from '../api/rest.js';
import { planFromSpecText } from './planner.js';
import type { DispatcherClient } from './client.js';
import { resolveConnection, readPasswordFile, type ConnectOptions } from './connect.js';
import { Kickstarter } from './kickstarter.js';
import { progressMode, withProgress } from './progress.js';
import { formatTable } from './table.js';
import { readContexts, saveContext } from './context.js';
import { registerLocalCommand } from './local.js';
import { registerShellCommand } from './shell.js';
import { registerRestartCommand } from './restart-command.js';
import { registerPlanCommand } from './commands/plan.js';
import { registerFirewallCommands } from './commands/firewall.js';
import { registerConnectCommand } from './commands/connect.js';
import { registerDeployCommand } from './commands/deploy.js';

export const EXIT = { ok: 0, failed: 1, usage: 2, unreachable: 3 } as const;

/** The one mapping from errors to exit codes. */
export function exitCodeOf(e: unknown): number {
  if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : EXIT.usage;
  if (!isDispatcherError(e)) return EXIT.failed;
  switch (e.code) {
    case 'bad_request':
    case 'validation_failed':
      return EXIT.usage;
    case 'unauthorized':
    case 'forbidden':
    case 'too_many_requests':
    case 'peer_unreachable':
    case 'peer_untrusted':
      return EXIT.unreachable;
    default:
      return EXIT.failed;
  }
}

export interface GlobalOptions extends ConnectOptions {
  json?: boolean;
}

export function globals(cmd: Command): GlobalOptions {
  return cmd.optsWithGlobals() as GlobalOptions;
}

export async function connect(cmd: Command) {
  return (await resolveConnection(globals(cmd))).client;
}

/** Runs `fn` with a client for the command's dispatcher and always closes it. */
export async function withClient<T>(cmd: Command, fn: (client: DispatcherClient) => Promise<T>): Promise<T> {
  const client = await connect(cmd);
  try {
    return await fn(client);
  } finally {
    client.close();
  }
}

export function printJson(value: unknown) {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}

/** Reads a plan (JSON or YAML) or makes one from a spec file. */
export async function loadPlanOrSpec(opts: { plan?: string; spec?: string }): Promise<Plan> {
  if (opts.spec) return planFromSpecText(await readFile(opts.spec, 'utf8'), opts.spec);
  if (!opts.plan) throw new DispatcherError('bad_request', 'give --plan FILE or --spec FILE');
  const text = await readFile(opts.plan, 'utf8').catch((e) => {
    throw new DispatcherError('bad_request', `cannot read ${opts.plan}: ${e.code ?? e.message}`);
  });
  let raw: unknown;
  try {
    raw = YAML.parse(text);
  } catch (e) {
    throw new DispatcherError('validation_failed', `${opts.plan} is neither JSON nor YAML: ${(e as Error).message}`);
  }
  const r = PlanSchema.safeParse(raw);
  if (!r.success) throw new DispatcherError('validation_failed', `${opts.plan} is not a valid plan`, { problems: zodProblems(r.error) });
  return r.data;
}

/** Peer credentials file: `{ <dispatcher id>: { user, passwordFile } }` (YAML or JSON). Passwords stay in files. */
async function loadPeerCredentials(file?: string): Promise<Record<string, Credential>> {
  if (!file) return {};
  const raw = YAML.parse(await readFile(file, 'utf8')) as Record<string, { user?: string; passwordFile?: string }>;
  const out: Record<string, Credential> = {};
  for (const [id, v] of Object.entries(raw ?? {})) {
    if (!v?.user || !v?.passwordFile) throw new DispatcherError('validation_failed', `${file}: ${id} needs user and passwordFile`);
    out[id] = { user: v.user, password: await readPasswordFile(v.passwordFile) };
  }
  return out;
}

/** Runs an operation with live progress; prints the outcome; throws when it failed. */
export async function runOperation(
  cmd: Command,
  title: string,
  processes: { id: string; host: string }[],
  start: (k: Kickstarter, onEvent: (e: any) => void) => Promise<OperationView>,
  kOpts: ConstructorParameters<typeof Kickstarter>[2] = {},
  plan?: Plan,
): Promise<OperationView> {
  const g = globals(cmd);
  return withClient(cmd, async (client) => {
    const view = await withProgress(title, progressMode(!!g.json), processes, async (onEvent) => {
      const k = new Kickstarter(plan, client, { ...kOpts, onEvent });
      return start(k, onEvent);
    });
    if (g.json) printJson({ type: 'result', ...summaryOf(view) });
    else printResult(view);
    return view;
  });
}

function summaryOf(view: OperationView) {
  const { events: _e, ...rest } = view;
  return rest;
}

function printResult(view: OperationView) {
  const r = view.result as { coordinators?: { id: string; host: string; port: number }[] } | undefined;
  process.stdout.write(`${view.kind} of ${view.cluster}: ${view.state}\n`);
  if (r?.coordinators?.length) {
    process.stdout.write(`coordinators:\n${r.coordinators.map((c) => `  ${c.id}  ${c.host}:${c.port}`).join('\n')}\n`);
  }
}

async function clusterProcesses(cmd: Command): Promise<{ id: string; host: string }[]> {
  try {
    return await withClient(cmd, async (client) => {
      const view = await client.get<ClusterView>('/v1/cluster');
      return view.processes.map((p) => ({ id: p.id, host: p.host }));
    });
  } catch {
    return [];
  }
}

export function printStatus(view: ClusterView) {
  if (!view.name) {
    process.stdout.write('no cluster on this dispatcher\n');
    return;
  }
  process.stdout.write(`cluster ${view.name} (${view.engine}): ${view.state}${view.activeOperation ? `, operation ${view.activeOperation} running` : ''}\n\n`);
  process.stdout.write(
    formatTable(
      ['DISPATCHER', 'ENDPOINT', 'REACHABLE', 'GUARD'],
      view.dispatchers.map((d) => [d.id, d.endpoint, d.reachable ? 'yes' : `NO: ${d.error ?? ''}`, d.guard ? `${d.guard.backend}${d.guard.inSync === false ? ' (drifted)' : ''}${d.guard.driftRepairs ? `, ${d.guard.driftRepairs} repairs` : ''}` : '-']),
    ) + '\n\n',
  );
  process.stdout.write(
    formatTable(
      ['PROCESS', 'ROLE', 'HOST', 'STATE', 'PID', 'PORTS', 'READY SINCE', 'RESTARTS'],
      view.processes.map((p) => [p.id, p.role, p.host, p.state, p.pid ?? '-', p.ports.map((x) => `${x.name}:${x.port}/${x.exposure}`).join(' '), p.readySince ?? '-', p.restarts]),
    ) + '\n',
  );
  if (view.certificates?.length) {
    // Every certificate of the cluster PKI with its expiry (`dispatch rotate-certs` renews them).
    const days = (iso: string) => (iso ? Math.floor((Date.parse(iso) - Date.now()) / 86_400_000) : NaN);
    process.stdout.write(
      '\n' +
        formatTable(
          ['CERTIFICATE', 'HOST', 'EXPIRES', 'DAYS LEFT'],
          view.certificates.map((c) => [c.name === '@ca' ? 'cluster CA' : c.name === '@dispatcher' ? 'dispatcher (client)' : c.name, c.host, c.notAfter || 'unreadable', Number.isNaN(days(c.notAfter)) ? '-' : days(c.notAfter)]),
        ) +
        '\n',
    );
  }
  if (view.coordinators.length) process.stdout.write(`\nclients connect to: ${view.coordinators.map((c) => `${c.host}:${c.port}`).join(', ')} (dispatch connect: CA file, pgpass, verify-full URL)\n`);
}

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

  program
    .command('launch')
    .description('hand a plan to the dispatcher: propagate, preflight, guard, start in order, wait until healthy')
    .option('--plan <file>', 'plan file (JSON/YAML), as made by `dispatch plan`')
    .option('--spec <file>', 'spec file: plan it first')
    .option('--peer-credentials <file>', 'YAML {dispatcherId: {user, passwordFile}} for peers whose password differs from yours')
    .addOption(new Option('--ready-timeout <seconds>', 'how long each process may take to become ready').default('120').argParser(positiveInt))
    .action(async (opts, cmd) => {
      const plan = await loadPlanOrSpec(opts);
      const peerCredentials = await loadPeerCredentials(opts.peerCredentials);
      await runOperation(cmd, `launch ${plan.name}`, plan.processes.map((p) => ({ id: p.id, host: p.dispatcher })), (k) => k.launch(), { peerCredentials, readyTimeoutMs: Number(opts.readyTimeout) * 1000 }, plan);
    });

  program
    .command('status')
    .description("the cluster's state from this dispatcher: every process and dispatcher")
    .action(async (_opts, cmd) => {
      await withClient(cmd, async (client) => {
        const view = await client.get<ClusterView>('/v1/cluster');
        if (globals(cmd).json) printJson(view);
        else printStatus(view);
        const healthy = view.state === 'running' && view.processes.every((p) => p.state === 'ready') && view.dispatchers.every((d) => d.reachable);
        if (view.name && !healthy) process.exitCode = EXIT.failed;
      });
    });

  program
    .command('shutdown')
    .description('stop every process gracefully, coordinators first, agency last; data and firewall rules stay')
    .action(async (_o, cmd) => {
      await runOperation(cmd, 'shutdown', await clusterProcesses(cmd), (k) => k.shutdown());
    });

  program
    .command('relaunch')
    .description('start the persisted plan again, keeping its data')
    .addOption(new Option('--ready-timeout <seconds>', 'how long each process may take to become ready').default('120').argParser(positiveInt))
    .action(async (opts, cmd) => {
      await runOperation(cmd, 'relaunch', await clusterProcesses(cmd), (k) => k.relaunch(), { readyTimeoutMs: Number(opts.readyTimeout) * 1000 });
    });

  program
    .command('cleanup')
    .description('DELETE every data dir and firewall rule of a shut-down cluster')
    .requiredOption('--name <cluster>', "the cluster's name, repeated as confirmation")
    .action(async (opts, cmd) => {
      await runOperation(cmd, 'cleanup', [], (k) => k.cleanup(opts.name));
    });

  program
    .command('logs')
    .description('last lines of a process log, from whichever dispatcher runs it')
    .argument('<process>', 'process id, e.g. dbserver-1')
    .addOption(new Option('-n, --lines <n>', 'how many lines').default('100').argParser(positiveInt))
    .action(async (id, opts, cmd) => {
      await withClient(cmd, async (client) => {
        const r = await client.get<{ id: string; host: string; lines: string[] }>(`/v1/cluster/processes/${encodeURIComponent(id)}/log?lines=${opts.lines}`);
        if (globals(cmd).json) printJson(r);
        else process.stdout.write(r.lines.join('\n') + (r.lines.length ? '\n' : ''));
      });
    });

  program
    .command('operations')
    .description('operations this dispatcher ran, or one of them with its events')
    .argument('[id]', 'operation id')
    .action(async (id, _opts, cmd) => {
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

  const context = program.command('context').description('saved connections (like kubectl contexts)');
  context
    .command('list')
    .description('list saved contexts; * marks the current one')
    .action(async (_o, cmd) => {
      const all = await readContexts();
      if (globals(cmd).json) return printJson(all);
      process.stdout.write(formatTable(['', 'NAME', 'ENDPOINT', 'USER'], Object.entries(all.contexts).map(([n, c]) => [n === all.current ? '*' : '', n, c.endpoint, c.user])) + '\n');
    });
  context
    .command('save')
    .description('save the global options (--endpoint, --fingerprint or --ca-file, --user, --password-file) under a name and make it current')
    .argument('<name>')
    .action(async (name, _o, cmd) => {
      const g = globals(cmd);
      if (!g.endpoint) throw new DispatcherError('bad_request', 'context save needs --endpoint');
      await saveContext(name, { endpoint: g.endpoint, fingerprint: g.fingerprint, caFile: g.caFile, user: g.user, passwordFile: g.passwordFile });
      process.stdout.write(`context ${name} saved and current\n`);
    });
  context
    .command('use')
    .description('make a saved context current')
    .argument('<name>')
    .action(async (name) => {
      const all = await readContexts();
      const c = all.contexts[name];
      if (!c) throw new DispatcherError('bad_request', `no context ${name}`);
      await saveContext(name, c);
      process.stdout.write(`now using ${name} (${c.endpoint})\n`);
    });

  registerRestartCommand(program);
  registerShellCommand(program);
  registerLocalCommand(program);
  registerConnectCommand(program, { withClient, json: (cmd) => !!globals(cmd).json });
  registerFirewallCommands(program, {
    fetchGuardStatus: async () => {
      const { client } = await resolveConnection(program.opts() as ConnectOptions);
      try {
        return (await client.get<ClusterView>('/v1/cluster')).dispatchers;
      } finally {
        client.close();
      }
    },
  });
  registerFirewallChangeCommands(program.commands.find((c) => c.name() === 'firewall')!);
  registerDeployCommand(program);
  return program;
}

/** `dispatch firewall apply|confirm`: commit-confirmed changes of a running cluster's firewall policy. */
function registerFirewallChangeCommands(firewall: Command): void {
  firewall
    .command('apply')
    .description("change the running cluster's firewall policy on every dispatcher; it rolls back by itself unless `dispatch firewall confirm` follows in time")
    .requiredOption('--policy <file>', 'firewall policy (YAML/JSON): mode, backend, clientSources, operatorSources, sshPort, outboundAllow')
    .addOption(new Option('--confirm-within <seconds>', 'roll back unless confirmed within this many seconds').default('60').argParser(positiveInt))
    .action(async (opts, cmd) => {
      const text = await readFile(opts.policy, 'utf8').catch((e) => {
        throw new DispatcherError('bad_request', `cannot read ${opts.policy}: ${e.code ?? e.message}`);
      });
      const parsed = FirewallPolicySchema.safeParse(YAML.parse(text));
      if (!parsed.success) throw new DispatcherError('validation_failed', `${opts.policy} is not a valid firewall policy`, { problems: zodProblems(parsed.error) });
      await withClient(cmd, async (client) => {
        const r = await client.post<{ confirmBy?: string }>('/v1/cluster/firewall', { firewall: parsed.data, confirmWithinSeconds: Number(opts.confirmWithin) });
        if (globals(cmd).json) printJson(r);
        else process.stdout.write(`firewall change applied on every dispatcher; it rolls back at ${r.confirmBy} unless you run: dispatch firewall confirm\n`);
      });
    });
  firewall
    .command('confirm')
    .description('keep the firewall change applied by `dispatch firewall apply`')
    .action(async (_o, cmd) => {
      await withClient(cmd, async (client) => {
        const r = await client.post('/v1/cluster/firewall/confirm', {});
        if (globals(cmd).json) printJson(r);
        else process.stdout.write('firewall change confirmed on every dispatcher\n');
      });
    });
}

function positiveInt(v: string): string {
  if (!/^\d+$/.test(v) || Number(v) < 1) throw new CommanderError(2, 'dispatch.invalidArgument', `expected a positive whole number, got ${v}`);
  return v;
}

export async function main(argv = process.argv): Promise<number> {
  const program = buildProgram();
  program.exitOverride();
  for (const c of program.commands) c.exitOverride();
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (e) {
    if (e instanceof CommanderError) return exitCodeOf(e);
    const json = argv.includes('--json');
    if (json) process.stdout.write(JSON.stringify({ type: 'error', code: isDispatcherError(e) ? e.code : 'internal', message: (e as Error).message, ...(isDispatcherError(e) ? { problems: e.problems, details: e.details } : {}) }) + '\n');
    else {
      process.stderr.write(`dispatch: ${(e as Error).message}\n`);
      if (isDispatcherError(e)) {
        if (e.problems.length) process.stderr.write(formatProblems(e.problems) + '\n');
        const tail = e.details.logTail;
        if (Array.isArray(tail) && tail.length) process.stderr.write(`last log lines of ${e.details.process ?? 'the process'}:\n${tail.map((l) => `  | ${l}`).join('\n')}\n`);
      }
    }
    return exitCodeOf(e);
  }
}
