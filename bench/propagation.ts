/**
 * Propagation: how long a launch plan takes to be accepted by N dispatchers (N = 3, 10, 30, …), with the
 * bench-only engine bench/engines/bench-sleep (/bin/sleep, readiness /bin/true), so only the dispatchers
 * are measured: propagate (plan + secrets + cluster credential to every peer) + preflight + guard (none) +
 * start of one trivial process per dispatcher + verify.
 *
 *   npx tsc -p . && node dist/bench/propagation.js [--sizes 3,10,30] [--rounds 3]
 *
 * The daemon finds the engine through DISPATCHER_TEMPLATES_DIR (a temp folder linking templates/* and
 * bench/engines/bench-sleep); each dispatcher's config allows it (binaries sleep=/bin/sleep, true=/bin/true).
 */
import { mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { OperationView } from '../api/rest.js';
import { REPO_ROOT } from '../test/helpers/daemon.js';
import { startTestCluster } from '../test/helpers/cluster.js';
import { median } from './stats.js';

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : def;
}

/** CPU time a process has used so far, all its threads (ns, from /proc/<pid>/task/<tid>/schedstat). */
function cpuNs(pid: number): number {
  let sum = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      sum += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
    } catch {
      /* thread ended meanwhile */
    }
  }
  return sum;
}

async function main() {
  const sizes = arg('sizes', '3,10,30').split(',').map(Number);
  const rounds = Number(arg('rounds', '3'));
  const templates = mkdtempSync(join(tmpdir(), 'bench-templates-'));
  for (const e of readdirSync(join(REPO_ROOT, 'templates'))) symlinkSync(join(REPO_ROOT, 'templates', e), join(templates, e));
  symlinkSync(join(REPO_ROOT, 'bench', 'engines', 'bench-sleep'), join(templates, 'bench-sleep'));
  process.env.DISPATCHER_TEMPLATES_DIR = templates; // the Planner in this process needs the engine too
  const rows: Record<string, unknown>[] = [];
  try {
    for (const n of sizes) {
      const tc = await startTestCluster({
        n,
        label: `pr${n}`,
        engines: { 'bench-sleep': { binaries: { sleep: '/bin/sleep', true: '/bin/true' } } },
        env: { DISPATCHER_TEMPLATES_DIR: templates },
      });
      const total: number[] = [];
      const propagate: number[] = [];
      const preflight: number[] = [];
      // CPU of the launch operation, separated (docs/BENCHMARKS.md, "Propagation"): the contacted
      // dispatcher's own, and each peer's own.
      const contactedCpu: number[] = [];
      const peerCpuEach: number[] = [];
      try {
        for (let r = 0; r < rounds; r++) {
          const plan = tc.plan({ name: `prop-${n}-${r}`, engine: 'bench-sleep', agents: 1, dbservers: n - 1, coordinators: 0, ports: undefined });
          const cpu0 = tc.dispatchers.map((d) => cpuNs(d.pid));
          const op: OperationView = await tc.run(0, '/v1/cluster/launch', { plan }, 120_000);
          const cpu = tc.dispatchers.map((d, i) => (cpuNs(d.pid) - cpu0[i]) / 1e6);
          contactedCpu.push(cpu[0]);
          peerCpuEach.push(...cpu.slice(1));
          if (op.state !== 'succeeded') throw new Error(`N=${n}: launch failed: ${JSON.stringify(op.error)}`);
          const at = (pred: (e: OperationView['events'][number]) => boolean, last = false) => {
            const ev = last ? [...op.events].reverse().find(pred) : op.events.find(pred);
            return Date.parse(ev!.at);
          };
          const t0 = Date.parse(op.startedAt);
          total.push(Date.parse(op.endedAt!) - t0);
          propagate.push(at((e) => e.step === 'propagate' && e.message === 'plan accepted', true) - t0);
          preflight.push(at((e) => e.step === 'preflight' && e.message === 'ok', true) - t0);
          if ((await tc.run(0, '/v1/cluster/shutdown', {})).state !== 'succeeded') throw new Error('shutdown failed');
          if ((await tc.run(0, '/v1/cluster/cleanup', { confirmName: plan.name })).state !== 'succeeded') throw new Error('cleanup failed');
        }
      } finally {
        await tc.teardown();
      }
      const cMs = median(contactedCpu);
      const row = {
        n,
        rounds,
        propagatedMs: median(propagate),
        preflightDoneMs: median(preflight),
        launchReadyMs: median(total),
        all: total,
        contactedCpuMs: Math.round(cMs),
        contactedCpuPerPeerMs: Number((cMs / Math.max(1, n - 1)).toFixed(1)),
        peerCpuEachMs: Math.round(median(peerCpuEach)),
        allDispatchersCpuMs: Math.round(cMs + median(peerCpuEach) * (n - 1)),
      };
      console.error(JSON.stringify(row));
      rows.push(row);
    }
  } finally {
    rmSync(templates, { recursive: true, force: true });
  }
  const base = rows[0] as { n: number; launchReadyMs: number };
  console.log(JSON.stringify(rows.map((r: any) => ({ ...r, growthVsFirst: Number((r.launchReadyMs / base.launchReadyMs).toFixed(2)), nRatio: r.n / base.n })), null, 2));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
