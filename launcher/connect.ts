/**
 * Turns the CLI's global options (or a saved context) into a DispatcherClient. Passwords come from a file
 * or the DISPATCH_PASSWORD environment variable — never from the command line, where `ps` shows them.
 */
import { readFile } from 'node:fs/promises';
import { DispatcherError } from '../api/errors.js';
import { DispatcherClient } from '../client/dispatcher-client.js';
import { currentContext, type Context } from './context.js';

export interface ConnectOptions {
  endpoint?: string;
  user?: string;
  passwordFile?: string;
  fingerprint?: string;
  caFile?: string;
  socket?: string;
  context?: string;
}

export async function readPasswordFile(file: string): Promise<string> {
  try {
    return (await readFile(file, 'utf8')).replace(/\r?\n$/, '');
  } catch (e: any) {
    throw new DispatcherError('bad_request', `cannot read password file ${file}: ${e.code ?? e.message}`);
  }
}

export async function resolveConnection(opts: ConnectOptions, env: NodeJS.ProcessEnv = process.env): Promise<{ client: DispatcherClient; context?: Context }> {
  if (opts.socket) return { client: new DispatcherClient({ endpoint: 'http://localhost', socketPath: opts.socket }) };
  const saved = opts.endpoint ? undefined : await currentContext(opts.context, env);
  const ctx: Partial<Context> = saved?.context ?? {};
  const endpoint = opts.endpoint ?? env.DISPATCH_ENDPOINT ?? ctx.endpoint;
  if (!endpoint) {
    throw new DispatcherError('bad_request', 'no dispatcher to talk to: pass --endpoint https://HOST:PORT with --fingerprint, run `dispatch local`, or set DISPATCH_ENDPOINT');
  }
  const user = opts.user ?? env.DISPATCH_USER ?? ctx.user ?? 'operator';
  const passwordFile = opts.passwordFile ?? ctx.passwordFile;
  const password = env.DISPATCH_PASSWORD ?? (passwordFile ? await readPasswordFile(passwordFile) : undefined);
  if (!password) throw new DispatcherError('bad_request', 'no password: use --password-file FILE or the DISPATCH_PASSWORD environment variable');
  const caFile = opts.caFile ?? ctx.caFile;
  const ca = caFile ? await readFile(caFile, 'utf8') : undefined;
  const fingerprint = opts.fingerprint ?? env.DISPATCH_FINGERPRINT ?? ctx.fingerprint;
  return { client: new DispatcherClient({ endpoint, fingerprint, ca, credential: { user, password } }), context: saved?.context };
}
