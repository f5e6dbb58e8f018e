/**
 * The ONE mapping from an error to the CLI's exit code and the one way an error is shown. Every `dispatch`
 * command ends here (launcher/cli.ts main, and the commands that keep their own IO for tests):
 * 0 ok · 1 operation failed · 2 usage or invalid input · 3 unreachable, untrusted or unauthorized.
 */
import { CommanderError } from 'commander';
import { formatProblems, isDispatcherError, toDispatcherError } from '../api/errors.js';

export const EXIT = { ok: 0, failed: 1, usage: 2, unreachable: 3 } as const;

export function exitCodeOf(e: unknown): number {
  if (e instanceof CommanderError) return e.exitCode === 0 ? EXIT.ok : EXIT.usage;
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

/** Shows an error (as one JSON line with --json, else as text on `err`) and returns its exit code. */
export function reportError(e: unknown, opts: { prefix: string; json?: boolean; out?: (t: string) => void; err?: (t: string) => void }): number {
  const out = opts.out ?? ((t: string) => void process.stdout.write(t));
  const err = opts.err ?? ((t: string) => void process.stderr.write(t));
  const de = toDispatcherError(e);
  if (opts.json) {
    out(JSON.stringify({ type: 'error', code: de.code, message: de.message, problems: de.problems, details: de.details }) + '\n');
  } else {
    err(`${opts.prefix}: ${de.message}\n`);
    if (de.problems.length) err(formatProblems(de.problems) + '\n');
    const tail = de.details.logTail;
    if (Array.isArray(tail) && tail.length) err(`last log lines of ${de.details.process ?? 'the process'}:\n${tail.map((l) => `  | ${l}`).join('\n')}\n`);
  }
  return exitCodeOf(e);
}
