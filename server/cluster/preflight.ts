/**
 * The preflight checks of one dispatcher (docs/DESIGN.md, "The path of a launch"): before anything starts,
 * this machine's clock, engine, binaries, ports, data dirs, disk and firewall backend are checked for its
 * part of the plan. Every problem is listed; an empty list means ready.
 */
import { access, constants, mkdir, rm, statfs, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Plan, PlanProcess } from '../../api/plan.js';
import type { PreflightProblem } from '../../api/rest.js';
import type { Supervisor } from '../supervisor/types.js';
import { processesOn } from '../core/order.js';
import { portProblem } from '../core/listening-sockets.js';
import { hostAddresses } from '../core/listen-addresses.js';
import { listeningSockets, localAddresses } from './listening-sockets.js';
import type { NodeGuard, ProcessRenderer } from './node-api.js';
import { systemClock, type Clock } from '../../shared/poll.js';

export interface PreflightInput {
  /** This dispatcher's id. */
  id: string;
  plan: Plan;
  /** The contacted dispatcher's clock (ms), to find a skew. */
  callerTime: number;
  /** This machine's clock (default systemClock). */
  clock?: Clock;
  dataDir: string;
  allowedEngines: string[];
  minFreeBytes?: number;
  supervisor: Supervisor;
  renderer: ProcessRenderer;
  guard: NodeGuard;
  processDir(p: PlanProcess): string;
}

export async function preflightProblems(input: PreflightInput): Promise<PreflightProblem[]> {
  const { plan, callerTime } = input;
  const problems: PreflightProblem[] = [];
  const add = (check: string, message: string) => problems.push({ host: input.id, check, message });

  const skew = Math.abs((input.clock ?? systemClock).now() - callerTime);
  if (skew > 5_000) add('clock', `clock differs from the contacted dispatcher's by ${Math.round(skew / 1000)} s (limit 5 s)`);

  if (!input.allowedEngines.includes(plan.engine)) {
    add('engine', `engine ${plan.engine} is not allowed on this machine (allowed: ${input.allowedEngines.join(', ') || 'none'})`);
    return problems;
  }
  const mine = processesOn(plan, input.id);
  const running = new Set(input.supervisor.list().filter((s) => s.pid && ['running', 'ready', 'starting'].includes(s.state)).map((s) => s.id));
  for (const role of new Set(mine.map((p) => p.role))) {
    let paths: string[] = [];
    try {
      paths = input.renderer.binariesFor(plan, role);
    } catch (e) {
      add('binary', (e as Error).message);
    }
    for (const path of paths) {
      try {
        await access(path, constants.X_OK);
      } catch {
        add('binary', `${role}: ${path} is missing or not executable`);
      }
    }
  }
  // Read from the kernel's socket table, never by binding: a test listen() on a plan port would accept
  // outside connects before the guard exists (docs/FIREWALL.md, "Why no port is ever reachable before
  // the guard").
  const listeners = await listeningSockets();
  const local = localAddresses();
  for (const p of mine.filter((x) => !running.has(x.id))) {
    for (const address of hostAddresses(plan, p)) {
      for (const port of p.ports) {
        const err = portProblem(listeners, local, address, port.port);
        if (err) add('port', `${p.id}: ${address}:${port.port} (${port.name}) is not free: ${err}`);
      }
    }
  }
  for (const p of mine) {
    try {
      const dir = input.processDir(p);
      // PostgreSQL and HAProxy put Unix sockets in the process dir; sun_path holds 107 bytes.
      const longest = join(dir, '.s.PGSQL.65535.lock');
      if (Buffer.byteLength(longest) > 107) {
        add('datadir', `${p.id}: ${dir} is too long for the Unix sockets its programs create there (${Buffer.byteLength(longest)} of 107 bytes): use a shorter data dir or dataRoot`);
      }
      await mkdir(dirname(dir), { recursive: true, mode: 0o700 });
      const probe = join(dirname(dir), `.preflight-${process.pid}`);
      await writeFile(probe, 'ok');
      await rm(probe, { force: true });
    } catch (e) {
      add('datadir', `${p.id}: ${(e as Error).message}`);
    }
  }
  try {
    const fs = await statfs(input.dataDir);
    const free = fs.bavail * fs.bsize;
    const need = input.minFreeBytes ?? 512 * 1024 * 1024;
    if (mine.length > 0 && free < need) add('disk', `only ${Math.round(free / 1048576)} MiB free in ${input.dataDir} (need ${Math.round(need / 1048576)} MiB)`);
  } catch (e) {
    add('disk', (e as Error).message);
  }
  const fw = await input.guard.available(plan);
  if (!fw.ok) add('firewall', fw.reason ?? 'firewall backend not usable');
  return problems;
}
