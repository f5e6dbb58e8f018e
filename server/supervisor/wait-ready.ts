/**
 * Waiting for a process to become ready, and the error that explains why it did not (state, last exit,
 * last probe answer and the tail of its logs), so the operator sees the cause in one answer.
 */
import { DispatcherError } from '../../api/errors.js';
import { describeExit } from '../core/restart-policy.js';
import type { ProcessStatus } from './types.js';
import type { Entry, SupervisorContext } from './context.js';
import { processLogTail } from './log-tail.js';

async function notReadyError(ctx: SupervisorContext, e: Entry, why: string): Promise<DispatcherError> {
  const tail = e.rec.failure?.logTail.length ? e.rec.failure.logTail : await processLogTail(ctx.stateDir, e.rec.spec.id, ctx.tailLines);
  const exit = e.rec.lastExit;
  const parts = [`process ${e.rec.spec.id} is not ready: ${why}`];
  if (e.rec.failure) parts.push(`(${e.rec.failure.reason})`);
  if (e.lastProbe) parts.push(`last probe: ${e.lastProbe}`);
  const msg = parts.join('; ') + (tail.length ? `\n--- last ${tail.length} log lines ---\n${tail.join('\n')}` : '');
  return new DispatcherError('operation_failed', msg, {
    details: {
      process: e.rec.spec.id,
      state: e.rec.state,
      exitCode: exit?.code ?? null,
      signal: exit?.signal ?? null,
      lastProbe: e.lastProbe,
      logTail: tail,
    },
  });
}

export async function waitReady(ctx: SupervisorContext, id: string, timeoutMs: number): Promise<ProcessStatus> {
  const e = ctx.must(id);
  if (e.rec.state === 'ready') return ctx.status(e);
  if (e.rec.state === 'failed' || e.rec.state === 'stopped' || e.rec.state === 'stopping') {
    throw await notReadyError(ctx, e, `it is ${e.rec.state}`);
  }
  // A process in backoff is waited for through its next incarnation.
  return new Promise<ProcessStatus>((resolve, reject) => {
    let done = false;
    const finish = (fn: () => void) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      unsubscribe();
      fn();
    };
    const fail = (why: string) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      unsubscribe();
      notReadyError(ctx, e, why).then(reject, reject);
    };
    const listener = (s: ProcessStatus) => {
      if (s.id !== id) return;
      if (s.state === 'ready') finish(() => resolve(s));
      else if (s.state === 'failed') fail('it failed');
      else if (s.state === 'backoff' || s.state === 'stopped' || s.state === 'stopping') {
        const ex = s.lastExit;
        fail(s.state === 'backoff' && ex ? `it exited with ${describeExit(ex.code, ex.signal)}` : `it is ${s.state}`);
      }
    };
    ctx.listeners.add(listener);
    const unsubscribe = () => ctx.listeners.delete(listener);
    const timer = setTimeout(() => fail(`not ready within ${timeoutMs} ms`), timeoutMs);
  });
}
