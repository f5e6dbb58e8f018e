/**
 * What every `dispatch` command that talks to a dispatcher shares: its global options, a client that is
 * always closed, JSON output, and running an operation with live progress. No command logic lives here.
 */
import type { Command } from 'commander';
import type { ClusterView, OperationView } from '../api/rest.js';
import type { Plan } from '../api/plan.js';
import type { DispatcherClient } from '../client/dispatcher-client.js';
import { resolveConnection, type ConnectOptions } from './connect.js';
import { Kickstarter } from './kickstarter.js';
import { progressMode, withProgress } from './progress.js';

export interface GlobalOptions extends ConnectOptions {
  json?: boolean;
}

export function globals(cmd: Command): GlobalOptions {
  return cmd.optsWithGlobals() as GlobalOptions;
}

export async function connect(cmd: Command): Promise<DispatcherClient> {
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

export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}

/** The cluster's processes (for progress lines). An unreachable dispatcher is an error, not an empty list. */
export async function clusterProcesses(cmd: Command): Promise<{ id: string; host: string }[]> {
  return withClient(cmd, async (client) => {
    const view = await client.get<ClusterView>('/v1/cluster');
    return view.processes.map((p) => ({ id: p.id, host: p.host }));
  });
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

function printResult(view: OperationView): void {
  const r = view.result as { coordinators?: { id: string; host: string; port: number }[] } | undefined;
  process.stdout.write(`${view.kind} of ${view.cluster}: ${view.state}\n`);
  if (r?.coordinators?.length) {
    process.stdout.write(`coordinators:\n${r.coordinators.map((c) => `  ${c.id}  ${c.host}:${c.port}`).join('\n')}\n`);
  }
}
