/**
 * The one error handler: every failure leaves the API as application/problem+json (RFC 9457) with a
 * stable `code` from api/errors.ts. DispatcherError maps by its code; zod errors become
 * validation_failed with every problem; body-parser errors keep their meaning (413, 400); anything else
 * is logged with its stack and answered as a generic 500 without internals.
 */
import type { ErrorRequestHandler, Request, RequestHandler, Response } from 'express';
import type { Duplex } from 'node:stream';
import { ZodError } from 'zod';
import { DispatcherError, ERROR_STATUS, type ErrorCode } from '../../api/errors.js';
import { zodProblems } from '../../api/plan.js';
import type { Logger } from '../log.js';

export const PROBLEM_CONTENT_TYPE = 'application/problem+json';

const TITLES: Partial<Record<ErrorCode, string>> = {
  bad_request: 'Bad request',
  validation_failed: 'Validation failed',
  unauthorized: 'Authentication required',
  forbidden: 'Forbidden',
  not_found: 'Not found',
  conflict: 'Conflict',
  payload_too_large: 'Payload too large',
  too_many_requests: 'Too many requests',
  headers_too_large: 'Request headers too large',
  peer_invalid_answer: 'Invalid answer from a peer dispatcher',
  internal: 'Internal error',
};

export interface ProblemBody {
  type: string;
  title: string;
  status: number;
  code: ErrorCode;
  detail: string;
  instance?: string;
  problems?: { path: string; message: string }[];
  details?: Record<string, unknown>;
}

/**
 * What a request failure looks like to the client (the only shape the handler answers with). Unlike
 * api/errors.ts toDispatcherError it hides an unknown error's message (internals stay in the log).
 */
export function httpProblemOf(err: unknown): DispatcherError {
  if (err instanceof DispatcherError) return err;
  if (err instanceof ZodError) return new DispatcherError('validation_failed', 'request is invalid', { problems: zodProblems(err) });
  const e = err as { type?: string; status?: number; statusCode?: number; expose?: boolean; message?: string };
  // body-parser / raw-body errors carry `type` and a 4xx `status`.
  if (e?.type === 'entity.too.large' || e?.status === 413) return new DispatcherError('payload_too_large', 'request body is too large', { cause: err });
  if (e?.type === 'entity.parse.failed') return new DispatcherError('bad_request', 'request body is not valid JSON', { cause: err });
  const status = e?.status ?? e?.statusCode;
  if (typeof status === 'number' && status >= 400 && status < 500) {
    const code = (Object.entries(ERROR_STATUS).find(([, s]) => s === status)?.[0] as ErrorCode | undefined) ?? 'bad_request';
    return new DispatcherError(code, e.expose && e.message ? e.message : TITLES[code] ?? 'bad request', { cause: err });
  }
  return new DispatcherError('internal', 'internal error', { cause: err });
}

export function problemBody(err: DispatcherError, instance?: string): ProblemBody {
  const body: ProblemBody = {
    type: `https://cluster-dispatcher.invalid/problems/${err.code}`,
    title: TITLES[err.code] ?? err.code.replace(/_/g, ' '),
    status: err.status,
    code: err.code,
    detail: err.message,
  };
  if (instance) body.instance = instance;
  if (err.problems.length) body.problems = err.problems;
  if (Object.keys(err.details).length) body.details = err.details;
  return body;
}

export function sendProblem(res: Response, err: DispatcherError, req?: Request): void {
  res.status(err.status).type(PROBLEM_CONTENT_TYPE).send(JSON.stringify(problemBody(err, req?.originalUrl?.split('?')[0])));
}

export const notFoundHandler: RequestHandler = (req, _res, next) => {
  next(new DispatcherError('not_found', `no route ${req.method} ${req.path}`));
};

export function errorHandler(logger: Logger): ErrorRequestHandler {
  return (err, req, res, next) => {
    if (res.headersSent) return next(err);
    const de = httpProblemOf(err);
    if (de.status >= 500) logger.error('request failed', { err: de.code === 'internal' && de.cause ? de.cause : de, method: req.method, path: req.path });
    sendProblem(res, de, req);
  };
}

/**
 * Node's HTTP parser rejects some requests before express sees them (a header block over the limit, a
 * malformed request line) and by default answers a bare status line. This answers them as problem+json
 * too (431 for oversized headers, 400 otherwise), then closes the connection.
 */
export function answerClientError(err: Error & { code?: string }, socket: Duplex): void {
  if (!socket.writable || (socket as Duplex & { _httpMessage?: unknown })._httpMessage) {
    socket.destroy();
    return;
  }
  const tooLarge = err.code === 'HPE_HEADER_OVERFLOW';
  const de = tooLarge
    ? new DispatcherError('headers_too_large', 'request headers are too large')
    : new DispatcherError('bad_request', 'malformed HTTP request');
  const body = JSON.stringify(problemBody(de));
  const reason = tooLarge ? 'Request Header Fields Too Large' : 'Bad Request';
  socket.end(`HTTP/1.1 ${de.status} ${reason}\r\nContent-Type: ${PROBLEM_CONTENT_TYPE}\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
}
