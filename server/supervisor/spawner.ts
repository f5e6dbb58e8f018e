/**
 * Starting one process from a resolved ProcessSpec. The argv goes straight to exec (never a shell); the
 * process gets its own process group (detached) so that stop() can signal the whole group and so that it
 * outlives a restart of the daemon; its stdout/stderr are appended to files in its dir (not pipes: a pipe
 * would die with the daemon and take the process down with SIGPIPE); and `command.txt` records what ran,
 * for a human, with secret-looking environment values redacted.
 *
 * The actual spawn is injected (zx's idea): the default is node's spawn, tests wrap it to catch leaks.
 */
import { spawn as nodeSpawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { mkdir, chmod, chown, open } from 'node:fs/promises';
import { join } from 'node:path';
import { once } from 'node:events';
import { DispatcherError } from '../../api/errors.js';
import { writeFileAtomic } from '../../shared/atomic-file.js';
import { readStat } from '../../shared/procfs.js';
import type { ProcessSpec } from './types.js';

export type SpawnFn = (command: string, args: readonly string[], options: SpawnOptions) => ChildProcess;

export const defaultSpawn: SpawnFn = (command, args, options) => nodeSpawn(command, args, options);

export const STDOUT_LOG = 'stdout.log';
export const STDERR_LOG = 'stderr.log';
export const COMMAND_FILE = 'command.txt';

const SECRET_KEY = /PASSWORD|PASSWD|SECRET|TOKEN|PRIVATE|CREDENTIAL|API_?KEY/i;

/** Quotes one word the way a POSIX shell would read it back (for people; the daemon never uses a shell). */
export function shellQuote(word: string): string {
  if (word !== '' && /^[A-Za-z0-9_\-./=:,@+%^]+$/.test(word)) return word;
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

export function isSecretEnvKey(key: string): boolean {
  return SECRET_KEY.test(key);
}

/** The text of command.txt: a header (user, cwd), the environment (secret values redacted), the argv. */
export function renderCommandText(spec: ProcessSpec): string {
  const lines = [
    `# ${spec.id} (${spec.role}) — the exact command the dispatcher ran; for reading, the daemon never runs it through a shell`,
    `# cwd: ${spec.cwd}`,
  ];
  if (spec.runAs) lines.push(`# user: ${spec.runAs.user ?? ''} uid=${spec.runAs.uid} gid=${spec.runAs.gid}`);
  const env = Object.keys(spec.env)
    .sort()
    .map((k) => `${k}=${isSecretEnvKey(k) ? '<redacted>' : shellQuote(spec.env[k])}`);
  const parts = ['env -i', ...env, ...spec.argv.map(shellQuote)];
  lines.push(parts.join(' \\\n  '));
  return lines.join('\n') + '\n';
}

/** Creates a directory (and parents) as 0700, owned by `owner` when given. */
export async function ensurePrivateDir(dir: string, owner?: { uid: number; gid: number }): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await chmod(dir, 0o700);
  if (owner) await chown(dir, owner.uid, owner.gid);
}

export interface Spawned {
  child: ChildProcess;
  pid: number;
  /** Resolves with the exit of the process (listened to from the moment of spawn, so a fast exit is never missed). */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** /proc start time in clock ticks; undefined only when the process vanished before it could be read. */
  startTime: number | undefined;
}

/**
 * Spawns the process; resolves once it has a pid. Rejects with a DispatcherError when exec fails
 * (missing binary, bad cwd, bad uid): that is a configuration fault, not something to retry blindly.
 */
export async function spawnProcess(spec: ProcessSpec, spawn: SpawnFn = defaultSpawn): Promise<Spawned> {
  if (spec.argv.length === 0) throw new DispatcherError('bad_request', `process ${spec.id}: empty argv`);
  await ensurePrivateDir(spec.dir, spec.runAs);
  await writeFileAtomic(join(spec.dir, COMMAND_FILE), renderCommandText(spec), 0o600);

  const out = await open(join(spec.dir, STDOUT_LOG), 'a', 0o600);
  const err = await open(join(spec.dir, STDERR_LOG), 'a', 0o600);
  let child: ChildProcess;
  let spawnError: (Error & { code?: string }) | undefined;
  let exited!: Spawned['exited'];
  try {
    if (spec.runAs) {
      await out.chown(spec.runAs.uid, spec.runAs.gid);
      await err.chown(spec.runAs.uid, spec.runAs.gid);
    }
    child = spawn(spec.argv[0], spec.argv.slice(1), {
      cwd: spec.cwd,
      // Exactly the spec's environment: nothing of the daemon's own (DISPATCHER_* settings) leaks in.
      env: { ...spec.env },
      detached: true,
      stdio: ['ignore', out.fd, err.fd],
      uid: spec.runAs?.uid,
      gid: spec.runAs?.gid,
      windowsHide: true,
    });
    // Listen at once: an exec failure is emitted on the next tick, an exit may come before we return.
    child.on('error', (e) => {
      spawnError ??= e;
    });
    exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  } finally {
    // The child holds its own copies of the descriptors.
    await out.close();
    await err.close();
  }

  if (child.pid === undefined) {
    if (!spawnError) await once(child, 'error').catch(() => {});
    const e = spawnError;
    throw new DispatcherError('operation_failed', `process ${spec.id}: could not start ${spec.argv[0]}: ${e?.message ?? 'unknown error'}`, {
      details: { process: spec.id, argv0: spec.argv[0], errno: e?.code },
      cause: e,
    });
  }
  child.unref();
  const st = readStat(child.pid);
  return { child, pid: child.pid, exited, startTime: st?.startTime };
}
