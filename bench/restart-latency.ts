/**
 * Supervision: `kill -9` → new pid, and → the port accepting again, per program (docs/BENCHMARKS.md,
 * "Supervision: first restart"). Real etcd and HAProxy (root), run by the product's supervisor
 * (server/supervisor) with the default restart policy; the baseline in the same run is the least any
 * supervisor can do: a bare loop in this process that spawns the same argv again from the child's 'exit'
 * event. Rounds alternate baseline / supervisor; every kill is of a process that has been serving for a
 * while (a first crash). `--tree DIR` measures the supervisor of another build (e.g. the commit before).
 *
 *   npx tsc -p . && node dist/bench/restart-latency.js [--rounds 15] [--tree /tmp/base]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import type { ProcessSpec, Supervisor } from '../server/supervisor/types.js';
import { DEFAULT_RESTART_POLICY } from '../server/core/restart-policy.js';
import { median, sleep } from './stats.js';

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : def;
}
const rounds = Number(arg('rounds', '15'));
const tree = resolve(arg('tree', new URL('../..', import.meta.url).pathname));

interface Program {
  name: string;
  port: number;
  argv(dir: string): string[];
  prepare?(dir: string): void;
}

const PROGRAMS: Program[] = [
  {
    name: 'etcd',
    port: 24_381,
    argv: (dir) => [
      '/usr/bin/etcd',
      '--name=b1',
      `--data-dir=${dir}/data`,
      '--listen-client-urls=http://127.0.0.1:24381',
      '--advertise-client-urls=http://127.0.0.1:24381',
      '--listen-peer-urls=http://127.0.0.1:24382',
      '--initial-advertise-peer-urls=http://127.0.0.1:24382',
      '--initial-cluster=b1=http://127.0.0.1:24382',
    ],
  },
  {
    name: 'haproxy',
    port: 24_383,
    prepare: (dir) =>
      writeFileSync(join(dir, 'haproxy.cfg'), 'global\n    maxconn 100\ndefaults\n    mode tcp\n    timeout connect 1s\n    timeout client 1m\n    timeout server 1m\nlisten l\n    bind 127.0.0.1:24383\n    server s 127.0.0.1:24381\n'),
    argv: (dir) => ['/usr/sbin/haproxy', '-db', '-f', join(dir, 'haproxy.cfg')],
  },
];

function accepts(port: number): Promise<boolean> {
  return new Promise((res) => {
    const s = connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      res(true);
    });
    s.once('error', () => res(false));
  });
}

/** Polls (1 ms) until the port accepts; returns performance.now() of the first success. */
async function untilAccepting(port: number, deadline = performance.now() + 10_000): Promise<number> {
  while (performance.now() < deadline) {
    if (await accepts(port)) return performance.now();
    await sleep(1);
  }
  throw new Error(`port ${port} did not accept within 10 s`);
}

interface Sample {
  pidMs: number;
  servingMs: number;
}

/** The baseline: spawn again from the exit event, nothing else. */
async function bareLoop(p: Program, dir: string): Promise<Sample> {
  const out = openSync(join(dir, 'bare.log'), 'a');
  let child: ChildProcess;
  let onPid: ((t: number) => void) | undefined;
  let stopped = false;
  const run = () => {
    child = spawn(p.argv(dir)[0], p.argv(dir).slice(1), { detached: true, stdio: ['ignore', out, out] });
    onPid?.(performance.now());
    child.once('exit', () => {
      if (!stopped) run();
    });
  };
  run();
  await untilAccepting(p.port);
  await sleep(300);
  const gotPid = new Promise<number>((r) => (onPid = r));
  const t0 = performance.now();
  process.kill(child!.pid!, 'SIGKILL');
  const tPid = await gotPid;
  const tServing = await untilAccepting(p.port);
  stopped = true;
  const last = child!;
  const gone = new Promise((r) => last.once('exit', r));
  last.kill('SIGTERM');
  await gone;
  return { pidMs: tPid - t0, servingMs: tServing - t0 };
}

async function supervised(createSupervisor: (o: { stateDir: string }) => Promise<Supervisor>, p: Program, dir: string): Promise<Sample> {
  const sup = await createSupervisor({ stateDir: join(dir, 'state') });
  const spec: ProcessSpec = {
    id: p.name,
    role: 'bench',
    argv: p.argv(dir),
    env: {},
    cwd: dir,
    dir: join(dir, 'proc'),
    readiness: { kind: 'tcp', host: '127.0.0.1', port: p.port },
    readinessIntervalMs: 50,
    stopSignal: 'SIGTERM',
    stopTimeoutMs: 5_000,
    restart: DEFAULT_RESTART_POLICY,
  };
  try {
    const first = await sup.start(spec);
    await sup.waitReady(p.name, 10_000);
    await sleep(300);
    const gotPid = new Promise<number>((r) => {
      const off = sup.onChange((s) => {
        if (s.pid !== undefined && s.pid !== first.pid) {
          off();
          r(performance.now());
        }
      });
    });
    const t0 = performance.now();
    process.kill(first.pid!, 'SIGKILL');
    const tPid = await gotPid;
    const tServing = await untilAccepting(p.port);
    return { pidMs: tPid - t0, servingMs: tServing - t0 };
  } finally {
    await sup.stop(p.name).catch(() => {});
    await sup.close();
  }
}

const summary = (xs: number[]) => ({ median: +median(xs).toFixed(1), min: +Math.min(...xs).toFixed(1), max: +Math.max(...xs).toFixed(1) });

const mod = (await import(pathToFileURL(join(tree, 'dist/server/supervisor/supervisor.js')).href)) as {
  createSupervisor: (o: { stateDir: string }) => Promise<Supervisor>;
};
// The supervisor unrefs its children (they outlive a daemon); keep this process up while it waits for an exit.
const keepAlive = setInterval(() => {}, 1_000);
const result: Record<string, unknown> = { node: process.version, rounds, tree };
for (const p of PROGRAMS) {
  const bare: Sample[] = [];
  const sup: Sample[] = [];
  for (let i = 0; i < rounds; i++) {
    for (const which of i % 2 ? ['sup', 'bare'] : ['bare', 'sup']) {
      const dir = mkdtempSync(join(tmpdir(), `cd-restart-${p.name}-`));
      try {
        p.prepare?.(dir);
        if (which === 'bare') bare.push(await bareLoop(p, dir));
        else sup.push(await supervised(mod.createSupervisor, p, dir));
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    }
  }
  result[p.name] = {
    bareNewPidMs: summary(bare.map((s) => s.pidMs)),
    supervisorNewPidMs: summary(sup.map((s) => s.pidMs)),
    bareServingMs: summary(bare.map((s) => s.servingMs)),
    supervisorServingMs: summary(sup.map((s) => s.servingMs)),
    servingRatio: +(median(sup.map((s) => s.servingMs)) / median(bare.map((s) => s.servingMs))).toFixed(2),
    supervisorRaw: sup.map((s) => Math.round(s.pidMs)),
  };
}
clearInterval(keepAlive);
console.log(JSON.stringify(result, null, 2));
