/**
 * Logging: winston, JSON lines to a file in the data dir plus stdout (human-readable when stdout is a TTY).
 *
 * Two defences are built into the format chain rather than left to call sites:
 *  - Errors anywhere in the metadata are turned into {name, message, stack, code} (winston alone logs
 *    `{ err }` as `{}`), so `logger.error('x', { err })` and `logger.error('x', err)` both work.
 *  - Keys that look like secrets (password, secret, token, authorization, hash, cookie, ...) are replaced
 *    by "[redacted]" at any depth: call sites should never pass them, this is defence in depth.
 */
import winston from 'winston';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';

export type Logger = winston.Logger;
export type LogLevel = 'error' | 'warn' | 'info' | 'debug';

export interface LoggerOptions {
  level?: LogLevel;
  /** JSON-lines log file; its directory is created (0700). Omit for no file. */
  file?: string;
  /** Also log to stdout (default true). */
  console?: boolean;
  /** Human-readable console lines (default: stdout is a TTY). */
  pretty?: boolean;
}

const SECRET_KEY = /pass(word|phrase)?|secret|token|authori[sz]ation|cookie|hash|credential|private.?key|^key$/i;

/** Returns a copy of `value` with secret-looking keys redacted and Errors made serialisable. */
export function sanitize(value: unknown, depth = 0, seen = new WeakSet<object>()): unknown {
  if (value instanceof Error) {
    const out: Record<string, unknown> = { name: value.name, message: value.message, stack: value.stack };
    const code = (value as { code?: unknown }).code;
    if (code !== undefined) out.code = code;
    if (value.cause !== undefined && depth < 4) out.cause = sanitize(value.cause, depth + 1, seen);
    return out;
  }
  if (value === null || typeof value !== 'object') return value;
  if (depth > 8 || seen.has(value)) return '[…]';
  seen.add(value);
  if (Array.isArray(value)) return value.map((v) => sanitize(v, depth + 1, seen));
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    out[k] = SECRET_KEY.test(k) ? '[redacted]' : sanitize(v, depth + 1, seen);
  }
  return out;
}

/** winston format: sanitises every metadata key of the info object (level/message/timestamp untouched). */
const redact = winston.format((info) => {
  for (const key of Object.keys(info)) {
    if (key === 'level' || key === 'message' || key === 'timestamp') continue;
    const v = (info as Record<string, unknown>)[key];
    (info as Record<string, unknown>)[key] = SECRET_KEY.test(key) ? '[redacted]' : sanitize(v);
  }
  // logger.error(err): winston puts the Error's message in `message` and keeps `stack` via format.errors.
  return info;
});

export function createLogger(opts: LoggerOptions = {}): Logger {
  const transports: winston.transport[] = [];
  const base = [winston.format.errors({ stack: true }), winston.format.timestamp(), redact()];
  if (opts.file) {
    mkdirSync(dirname(opts.file), { recursive: true, mode: 0o700 });
    transports.push(
      new winston.transports.File({
        filename: opts.file,
        // The log may contain addresses and user names: keep it private.
        options: { flags: 'a', mode: 0o600 },
        format: winston.format.combine(...base, winston.format.json()),
      }),
    );
  }
  if (opts.console ?? true) {
    const pretty = opts.pretty ?? Boolean(process.stdout.isTTY);
    transports.push(
      new winston.transports.Console({
        format: pretty
          ? winston.format.combine(
              ...base,
              winston.format.colorize(),
              winston.format.printf((info) => {
                const { level, message, timestamp, stack, ...rest } = info as Record<string, unknown>;
                const meta = Object.keys(rest).length ? ' ' + JSON.stringify(rest) : '';
                return `${String(timestamp)} ${String(level)} ${String(message)}${meta}${stack ? '\n' + String(stack) : ''}`;
              }),
            )
          : winston.format.combine(...base, winston.format.json()),
      }),
    );
  }
  if (transports.length === 0) transports.push(new winston.transports.Console({ silent: true }));
  return winston.createLogger({ level: opts.level ?? 'info', transports });
}

/** Waits until every transport has flushed (file transport writes asynchronously). */
export async function closeLogger(logger: Logger): Promise<void> {
  await new Promise<void>((resolve) => {
    let done = false;
    const finish = () => {
      if (!done) {
        done = true;
        resolve();
      }
    };
    logger.on('finish', finish);
    // A logger with nothing pending may never emit 'finish' quickly; don't hang a shutdown on it.
    setTimeout(finish, 1000).unref();
    logger.end();
  });
}
