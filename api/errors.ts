/**
 * The one error type of cluster-dispatcher. Every failure that reaches a user — an HTTP answer, a CLI exit,
 * a failed operation — is a DispatcherError with a stable `code`. The HTTP layer maps it to an
 * application/problem+json body in one place (server/http/errors.ts); the CLI maps it to an exit code in
 * one place (launcher/exit-codes.ts). Throwing sites only pick a code and say what went wrong; code that
 * catches something unknown wraps it with toDispatcherError, which keeps the original as `cause`.
 */

/** Stable machine-readable codes, with the HTTP status each maps to. */
export const ERROR_STATUS = {
  bad_request: 400,
  validation_failed: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  conflict: 409,
  payload_too_large: 413,
  too_many_requests: 429,
  headers_too_large: 431,
  preflight_failed: 422,
  peer_unreachable: 502,
  peer_untrusted: 502,
  /** A peer answered something that does not match the REST schema. */
  peer_invalid_answer: 502,
  operation_failed: 500,
  internal: 500,
  config_invalid: 500,
  state_damaged: 500,
} as const;

export type ErrorCode = keyof typeof ERROR_STATUS;

/** One problem found in an input, named by its path (e.g. `processes[3].ports[0].port`). */
export interface Problem {
  path: string;
  message: string;
}

export class DispatcherError extends Error {
  readonly code: ErrorCode;
  /** Every problem found, when the error is about an input (validation lists all of them, not the first). */
  readonly problems: Problem[];
  /** Extra facts safe to show to the caller (never a secret). */
  readonly details: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, opts: { problems?: Problem[]; details?: Record<string, unknown>; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'DispatcherError';
    this.code = code;
    this.problems = opts.problems ?? [];
    this.details = opts.details ?? {};
  }

  get status(): number {
    return ERROR_STATUS[this.code];
  }
}

export function isDispatcherError(e: unknown): e is DispatcherError {
  return e instanceof DispatcherError;
}

/** Formats problems as one line each, for CLI output and log messages. */
export function formatProblems(problems: Problem[]): string {
  return problems.map((p) => `  - ${p.path || '(root)'}: ${p.message}`).join('\n');
}

/**
 * Anything thrown, as a DispatcherError: a DispatcherError stays itself; anything else becomes `code` with
 * its message, keeping the original as `cause` (so its stack reaches the log). The one such wrapper.
 */
export function toDispatcherError(e: unknown, code: ErrorCode = 'internal'): DispatcherError {
  if (e instanceof DispatcherError) return e;
  const message = e instanceof Error ? e.message : String(e);
  return new DispatcherError(code, message, { cause: e });
}
