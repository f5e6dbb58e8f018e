/**
 * Saved CLI contexts (as kubectl's): where a dispatcher is and how to trust and log in to it, so that
 * after `dispatch local` (or `dispatch context set`) commands work without options. Stored 0600 in
 * $DISPATCH_CONFIG_DIR or ~/.config/cluster-dispatcher/contexts.json. Passwords are never stored here:
 * a context names a password FILE.
 */
import { mkdir, readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { DispatcherError } from '../api/errors.js';
import { writeFileAtomic } from '../shared/atomic-file.js';

export const ContextSchema = z
  .object({
    endpoint: z.string().url(),
    fingerprint: z.string().optional(),
    caFile: z.string().optional(),
    user: z.string().optional(),
    passwordFile: z.string().optional(),
    /** For a local cluster: the directory `dispatch local` manages. */
    localDir: z.string().optional(),
  })
  .strict();
export type Context = z.infer<typeof ContextSchema>;

const ContextsFileSchema = z.object({ current: z.string().optional(), contexts: z.record(z.string(), ContextSchema) }).strict();
type ContextsFile = z.infer<typeof ContextsFileSchema>;

export function configDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.DISPATCH_CONFIG_DIR) return env.DISPATCH_CONFIG_DIR;
  return join(env.XDG_CONFIG_HOME || join(homedir(), '.config'), 'cluster-dispatcher');
}

function contextsFile(env?: NodeJS.ProcessEnv) {
  return join(configDir(env), 'contexts.json');
}

export async function readContexts(env?: NodeJS.ProcessEnv): Promise<ContextsFile> {
  const file = contextsFile(env);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e: any) {
    if (e.code === 'ENOENT') return { contexts: {} };
    throw e;
  }
  const parsed = ContextsFileSchema.safeParse(JSON.parse(text));
  if (!parsed.success) throw new DispatcherError('bad_request', `${file} is damaged (${parsed.error.issues[0]?.message}); fix or remove it`);
  return parsed.data;
}

export async function saveContext(name: string, ctx: Context, opts: { makeCurrent?: boolean; env?: NodeJS.ProcessEnv } = {}): Promise<void> {
  const all = await readContexts(opts.env);
  all.contexts[name] = ctx;
  if (opts.makeCurrent ?? true) all.current = name;
  await mkdir(configDir(opts.env), { recursive: true, mode: 0o700 });
  await writeFileAtomic(contextsFile(opts.env), JSON.stringify(all, null, 2), 0o600);
}

export async function removeContext(name: string, env?: NodeJS.ProcessEnv): Promise<void> {
  const all = await readContexts(env);
  delete all.contexts[name];
  if (all.current === name) delete all.current;
  await mkdir(configDir(env), { recursive: true, mode: 0o700 });
  await writeFileAtomic(contextsFile(env), JSON.stringify(all, null, 2), 0o600);
}

export async function currentContext(name?: string, env?: NodeJS.ProcessEnv): Promise<{ name: string; context: Context } | undefined> {
  const all = await readContexts(env);
  const n = name ?? all.current;
  if (!n) return undefined;
  const c = all.contexts[n];
  if (!c) throw new DispatcherError('bad_request', `no saved context named ${n} (known: ${Object.keys(all.contexts).join(', ') || 'none'})`);
  return { name: n, context: c };
}
