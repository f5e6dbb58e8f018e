/** Read-only view of this dispatcher's supervised processes. */
import { z } from 'zod';
import { DispatcherError } from '../../../api/errors.js';
import { validate, type RouteModule } from '../app.js';
import { commonErrors, problemResponse } from '../openapi.js';

export const LogQuerySchema = z
  .object({
    lines: z
      .string()
      .regex(/^\d+$/, 'must be a whole number')
      .transform(Number)
      .pipe(z.number().int().min(1).max(10_000))
      .default(100),
  })
  .strict();

const processStatusSchema = {
  type: 'object',
  required: ['id', 'role', 'state', 'restarts', 'command'],
  properties: {
    id: { type: 'string' },
    role: { type: 'string' },
    cluster: { type: 'string' },
    state: { enum: ['starting', 'running', 'ready', 'backoff', 'stopping', 'stopped', 'failed'] },
    pid: { type: 'integer' },
    startedAt: { type: 'string', format: 'date-time' },
    readySince: { type: 'string', format: 'date-time' },
    restarts: { type: 'integer' },
    adopted: { type: 'boolean' },
    lastExit: { type: 'object' },
    failure: {
      type: 'object',
      properties: { reason: { type: 'string' }, exitCode: { type: ['integer', 'null'] }, signal: { type: ['string', 'null'] }, logTail: { type: 'array', items: { type: 'string' } } },
    },
    command: { type: 'array', items: { type: 'string' } },
  },
};

const idParam = { name: 'id', in: 'path', required: true, schema: { type: 'string' } };

export const processesModule: RouteModule = {
  name: 'processes',
  register(router, ctx) {
    router.get('/v1/processes', (_req, res) => {
      res.json({ processes: ctx.supervisor.list() });
    });
    router.get('/v1/processes/:id', (req, res) => {
      const id = String(req.params.id);
      const st = ctx.supervisor.get(id);
      if (!st) throw new DispatcherError('not_found', `no process ${id} on this dispatcher`);
      res.json(st);
    });
    router.get('/v1/processes/:id/log', async (req, res) => {
      const { lines } = validate(LogQuerySchema, req.query, 'query');
      const id = String(req.params.id);
      if (!ctx.supervisor.get(id)) throw new DispatcherError('not_found', `no process ${id} on this dispatcher`);
      res.json({ id, lines: await ctx.supervisor.logTail(id, lines) });
    });
  },
  openapi: {
    '/v1/processes': {
      get: {
        operationId: 'listProcesses',
        summary: 'Every process this dispatcher supervises',
        responses: {
          '200': {
            description: 'process list',
            content: { 'application/json': { schema: { type: 'object', required: ['processes'], properties: { processes: { type: 'array', items: processStatusSchema } } } } },
          },
          ...commonErrors,
        },
      },
    },
    '/v1/processes/{id}': {
      get: {
        operationId: 'getProcess',
        summary: 'Status of one process',
        parameters: [idParam],
        responses: { '200': { description: 'process status', content: { 'application/json': { schema: processStatusSchema } } }, '404': problemResponse('no such process'), ...commonErrors },
      },
    },
    '/v1/processes/{id}/log': {
      get: {
        operationId: 'getProcessLog',
        summary: 'Last lines of the process output (stdout and stderr)',
        parameters: [idParam, { name: 'lines', in: 'query', required: false, schema: { type: 'integer', minimum: 1, maximum: 10000, default: 100 } }],
        responses: {
          '200': {
            description: 'log tail',
            content: { 'application/json': { schema: { type: 'object', required: ['id', 'lines'], properties: { id: { type: 'string' }, lines: { type: 'array', items: { type: 'string' } } } } } },
          },
          '400': problemResponse('invalid query'),
          '404': problemResponse('no such process'),
          ...commonErrors,
        },
      },
    },
  },
};
