/**
 * The ONE quoting function for anything sent to a remote shell over SSH. An SSH "exec" request is a
 * single string that the remote user's login shell parses, so every argument we send is wrapped in
 * single quotes (the only POSIX quoting with no special characters inside), and an embedded single quote
 * becomes '\'' . NUL cannot be passed through a command line at all, so it is refused instead of
 * silently truncating an argument.
 */
import { DispatcherError } from '../api/errors.js';

/** Words that need no quoting: keeps logged commands readable. Everything else is single-quoted. */
const SAFE_WORD = /^[A-Za-z0-9_@%+=:,./-]+$/;

export function shQuote(arg: string): string {
  if (typeof arg !== 'string') throw new DispatcherError('internal', `shQuote: not a string: ${typeof arg}`);
  if (arg.includes('\0')) throw new DispatcherError('bad_request', 'a remote command argument contains a NUL byte');
  if (arg !== '' && SAFE_WORD.test(arg)) return arg;
  return `'${arg.replace(/'/g, `'\\''`)}'`;
}

/** Joins argv into one command line for a POSIX shell; each element stays exactly one argument. */
export function shJoin(argv: readonly string[]): string {
  if (argv.length === 0) throw new DispatcherError('internal', 'shJoin: empty argv');
  return argv.map(shQuote).join(' ');
}
