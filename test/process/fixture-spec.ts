/**
 * Shared helpers of the process tier: ProcessSpecs for the fixture program, free ports, temp dirs,
 * waiting for a condition.
 */
import { pidAlive } from '../../shared/procfs.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ProcessSpec, RestartPolicyConfig } from '../../server/supervisor/types.js';

export const FIXTURE = fileURLToPath(new URL('../fixtures/fixture-proc.js', import.meta.url));
export const SUPERVISOR_HOST = fileURLToPath(new URL('../fixtures/supervisor-host.js', import.meta.url));
export const STATE_WRITER = fileURLToPath(new URL('../fixtures/state-writer.js', import.meta.url));

export const FAST_RESTART: RestartPolicyConfig = {
  enabled: true,
  initialDelayMs: 100,
  maxDelayMs: 2_000,
  quickFailureWindowMs: 5_000,
  maxQuickFailures: 5,
};

export function tempDir(prefix = 'cd-proc-'): { path: string; cleanup(): void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, cleanup: () => rmSync(path, { recursive: true, force: true }) };
}

export function fixtureSpec(root: string, id: string, flags: string[], over: Partial<ProcessSpec> = {}): ProcessSpec {
  const dir = join(root, 'procs', id);
  return {
    id,
    role: 'agent',
    argv: [process.execPath, FIXTURE, ...flags],
    env: { FIXTURE_ID: id },
    cwd: root,
    dir,
    readiness: { kind: 'command', argv: ['/bin/true'] },
    readinessIntervalMs: 50,
    stopSignal: 'SIGTERM',
    stopTimeoutMs: 2_000,
    restart: FAST_RESTART,
    ...over,
  };
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

export async function waitFor<T>(what: string, fn: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 10_000): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

export { pidAlive };
