/**
 * Starting one process from a resolved ProcessSpec. The argv goes straight to exec (never a shell); the
 * process gets its own process group (detached) so that stop() can signal the whole group and so that it
 * outlives a restart of the daemon; its stdout/stderr are appended to files (not pipes: a pipe would die
 * with the daemon and take the process down with SIGPIPE); and `command.txt` records what ran, for a human,
 * with secret-looking environment values redacted. Those three files are the daemon's own: they live in a
 * root-owned directory of the supervisor (processLogDir), never in the process's directory, which the
 * process user can write (docs/SECURITY.md, "Process user"). The process gets the open descriptors.
 *
 * The actual spawn is injected (zx's idea): the default is node's spawn, tests wrap it to catch leaks.
 */
import { spawn as nodeSpawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { join } from 'node:path';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { DispatcherError } from '../../api/errors.js';
import { writeFileAtomic } from '../../shared/atomic-file.js';
import { ensureDir, openOwnLogForAppend } from '../safe-files.js';
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

/** Where the daemon keeps a process's stdout.log, stderr.log and command.txt: inside its own state dir. */
export function processLogDir(stateDir: string, id: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(id)) throw new DispatcherError('bad_request', `process id ${JSON.stringify(id)} is not a plain name`);
  return join(stateDir, 'processes', id);
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
export async function spawnProcess(spec: ProcessSpec, logDir: string, spawn: SpawnFn = defaultSpawn): Promise<Spawned> {
  if (spec.argv.length === 0) throw new DispatcherError('bad_request', `process ${spec.id}: empty argv`);
  await ensureDir(spec.dir, 0o700, spec.runAs);
  await ensureDir(logDir, 0o700);
  // A restart runs the same command: rewriting the file would put two fsyncs between a crash and the
  // new pid (docs/DESIGN.md, "The supervisor"), so it is written only when its text changes.
  const commandText = renderCommandText(spec);
  const commandFile = join(logDir, COMMAND_FILE);
  if ((await readFile(commandFile, 'utf8').catch(() => undefined)) !== commandText) await writeFileAtomic(commandFile, commandText, 0o600);

  const out = await openOwnLogForAppend(join(logDir, STDOUT_LOG));
  const err = await openOwnLogForAppend(join(logDir, STDERR_LOG)).catch(async (e) => {
    await out.close();
    throw e;
  });
  let child: ChildProcess;
  let spawnError: (Error & { code?: string }) | undefined;
  let exited!: Spawned['exited'];
  try {
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
