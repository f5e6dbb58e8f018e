/**
 * Live progress of an operation. On a terminal: a task list (listr2) with one line per process that ticks
 * off as the process becomes ready (or stopped), plus a line for the cluster-wide step in progress. Not on
 * a terminal: one plain line per event. With --json: the events themselves, one JSON object a line.
 */
import { Listr } from 'listr2';
import type { OperationEvent } from '../api/rest.js';

export type ProgressMode = 'tty' | 'plain' | 'json';

export function progressMode(json: boolean, stream: NodeJS.WriteStream = process.stderr): ProgressMode {
  return json ? 'json' : stream.isTTY ? 'tty' : 'plain';
}

/** " (1.23 s)" / " (45 ms)" for an event that carries its step's duration, else "". */
export function formatDuration(e: Pick<OperationEvent, 'durationMs'>): string {
  if (e.durationMs === undefined) return '';
  return e.durationMs >= 1000 ? ` (${(e.durationMs / 1000).toFixed(2)} s)` : ` (${e.durationMs} ms)`;
}

export function formatEvent(e: OperationEvent): string {
  const where = [e.host, e.process].filter(Boolean).join('/');
  const level = e.level === 'info' ? '' : `${e.level.toUpperCase()} `;
  return `${e.at.slice(11, 19)} ${level}${e.step}${where ? ` [${where}]` : ''}: ${e.message}${formatDuration(e)}`;
}

interface Deferred {
  promise: Promise<void>;
  resolve(): void;
  reject(e: Error): void;
  output?: (s: string) => void;
}

function deferred(): Deferred {
  let resolve!: () => void;
  let reject!: (e: Error) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  promise.catch(() => {});
  return { promise, resolve, reject };
}

/** Steps after which a process's line is done. */
const DONE_STEPS = new Set(['ready', 'stop', 'rollback', 'restarted']);

/**
 * Runs `work`, feeding its events to a display. `processes` are the lines to show on a terminal.
 * Returns what `work` returns; the display ends (as failed or done) with it.
 */
export async function withProgress<T>(
  title: string,
  mode: ProgressMode,
  processes: { id: string; host: string }[],
  work: (onEvent: (e: OperationEvent) => void) => Promise<T>,
): Promise<T> {
  if (mode === 'json') return work((e) => process.stdout.write(JSON.stringify(e) + '\n'));
  if (mode === 'plain') return work((e) => process.stderr.write(formatEvent(e) + '\n'));

  const lines = new Map(processes.map((p) => [p.id, deferred()]));
  const overall = deferred();
  const tasks = new Listr(
    [
      {
        title,
        task: (_ctx, task) => {
          overall.output = (s) => (task.output = s);
          return overall.promise;
        },
        rendererOptions: { persistentOutput: false },
      },
      ...processes.map((p) => ({
        title: `${p.id} on ${p.host}`,
        task: (_ctx: unknown, task: { output: string }) => {
          const d = lines.get(p.id)!;
          d.output = (s) => (task.output = s);
          return d.promise;
        },
      })),
    ],
    { concurrent: true, exitOnError: false, renderer: 'default', rendererOptions: { collapseSubtasks: false }, registerSignalListeners: false },
  );
  const shown = tasks.run().catch(() => {});
  try {
    const result = await work((e) => {
      const line = e.process ? lines.get(e.process) : undefined;
      if (line) {
        line.output?.(e.message + formatDuration(e));
        if (e.level === 'error') line.reject(new Error(e.message));
        else if (DONE_STEPS.has(e.step)) line.resolve();
      } else {
        overall.output?.(`${e.step}: ${e.message}${formatDuration(e)}`);
      }
    });
    overall.resolve();
    for (const d of lines.values()) d.resolve();
    await shown;
    return result;
  } catch (e) {
    overall.reject(e as Error);
    for (const d of lines.values()) d.reject(new Error('not finished'));
    await shown;
    throw e;
  }
}
