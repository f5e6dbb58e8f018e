/**
 * Cost of observability (docs/BENCHMARKS.md, "Metrics and console"):
 *  1. idle RSS of one real dispatcherd with metrics and console on (this tree) against the same daemon
 *     without them (a baseline checkout, built, e.g. the commit before them), alternating in one run:
 *     fresh data dir, start, GET /ui/ + GET /metrics + GET /v1/processes, 3 s idle, VmRSS;
 *  2. the same for the three dispatchers of a running local pg-ha cluster, baseline tree then this one;
 *  3. the scrape on a running local pg-ha cluster (`dispatch local`: 3 dispatchers, 3 etcd, 3 Patroni,
 *     1 HAProxy): ms and bytes of GET /metrics, warm (engine health cached) and cold (it probes etcd and
 *     Patroni), against GET /v1/cluster (what `dispatch status` asks) in the same run.
 * Needs root and deploy/install-deps.sh for part 2.
 *
 *   git archive BASE | tar -x -C /tmp/base && ln -s $PWD/node_modules /tmp/base/ && (cd /tmp/base && npx tsc -p .)
 *   npx tsc -p . && node dist/bench/observability.js --baseline /tmp/base [--rounds 5] [--scrapes 50] [--cluster-rounds 2] [--idle-seconds 15] [--no-cluster] [--no-scrape]
 */
import { execFile, spawn } from 'node:child_process';
import { Agent, request } from 'node:https';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, REPO_ROOT } from '../test/helpers/daemon.js';
import { startLocalCluster } from '../test/helpers/local-cluster.js';
import { median } from './stats.js';

function arg(name: string, def?: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : def;
}

const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))];
const spread = (xs: number[], f = (x: number) => x.toFixed(1)) => `${f(Math.min(...xs))}–${f(Math.max(...xs))}`;

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

function get(url: string, ca: string, auth?: string, agent?: Agent): Promise<{ status: number; bytes: number; ms: number }> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const req = request(url, { ca, auth, agent, timeout: 20_000 }, (res) => {
      let bytes = 0;
      res.on('data', (d: Buffer) => (bytes += d.length));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, bytes, ms: performance.now() - t0 }));
    });
    req.on('error', reject);
    req.end();
  });
}

function run(tree: string, args: string[], input = ''): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(process.execPath, [join(tree, 'bin', 'dispatcherd'), ...args], { timeout: 30_000 }, (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(String(stdout))));
    child.stdin!.end(input);
  });
}

/** Idle RSS (MiB) of a daemon of `tree` after a console load, a scrape and an API call. */
async function idleRss(tree: string): Promise<number> {
  const root = mkdtempSync(join(tmpdir(), 'bench-obs-'));
  const dataDir = join(root, 'data');
  try {
    await run(tree, ['init', '--data-dir', dataDir, '--listen', '127.0.0.1']);
    await run(tree, ['user', 'add', 'operator', '--data-dir', dataDir], 'bench-password-42\n');
    const port = await freePort();
    const child = spawn(process.execPath, [join(tree, 'bin', 'dispatcherd'), 'start', '--data-dir', dataDir], { env: { ...process.env, DISPATCHER_PORT: String(port), DISPATCHER_LISTEN: '127.0.0.1' }, stdio: 'ignore' });
    try {
      const ca = readFileSync(join(dataDir, 'tls', 'cert.pem'), 'utf8');
      const url = `https://127.0.0.1:${port}`;
      for (let i = 0; i < 150; i++) {
        if ((await get(`${url}/v1/health`, ca).catch(() => ({ status: 0 }))).status === 200) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      await get(`${url}/ui/`, ca);
      await get(`${url}/metrics`, ca, 'operator:bench-password-42');
      await get(`${url}/v1/processes`, ca, 'operator:bench-password-42');
      await new Promise((r) => setTimeout(r, 3000));
      return rssMiB(child.pid!);
    } finally {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    }
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

async function main() {
  const baseline = arg('baseline');
  const rounds = Number(arg('rounds', '5'));
  const scrapes = Number(arg('scrapes', '50'));
  console.log(`node ${process.version}`);

  if (baseline && rounds > 0) {
    const base: number[] = [];
    const now: number[] = [];
    for (let i = 0; i < rounds; i++) {
      base.push(await idleRss(baseline));
      now.push(await idleRss(REPO_ROOT));
      console.log(`round ${i + 1}: baseline ${base[i].toFixed(1)} MiB, with metrics+console ${now[i].toFixed(1)} MiB`);
    }
    console.log(`idle RSS: baseline median ${median(base).toFixed(1)} MiB (${spread(base)}), with metrics+console median ${median(now).toFixed(1)} MiB (${spread(now)}), ratio ${(median(now) / median(base)).toFixed(3)}`);
  }

  if (process.argv.includes('--no-cluster')) return;
  // Idle RSS of the three dispatchers of a running local cluster: baseline tree, then this one.
  const clusterRss = async (tree: string) => {
    const c = await startLocalCluster({ tree });
    try {
      await new Promise((r) => setTimeout(r, Number(arg('idle-seconds', '15')) * 1000));
      return [1, 2, 3].map((i) => rssMiB(Number(readFileSync(join(c.localDir, `local-${i}`, 'dispatcherd.pid'), 'utf8'))));
    } finally {
      await c.destroy();
    }
  };
  if (baseline) {
    const base: number[] = [];
    const now: number[] = [];
    for (let i = 0; i < Number(arg('cluster-rounds', '2')); i++) {
      base.push(...(await clusterRss(baseline)));
      now.push(...(await clusterRss(REPO_ROOT)));
    }
    console.log(`idle RSS of a running local cluster's dispatchers: baseline median ${median(base).toFixed(1)} MiB (${spread(base)}), with metrics+console median ${median(now).toFixed(1)} MiB (${spread(now)}), ratio ${(median(now) / median(base)).toFixed(3)}`);
  }

  if (process.argv.includes('--no-scrape')) return;
  const c = await startLocalCluster();
  try {
    const auth = `operator:${c.password}`;
    const agent = new Agent({ keepAlive: true, maxSockets: 1, ca: c.cert });
    const measure = async (path: string, n: number, pauseMs = 0) => {
      const out: { ms: number; bytes: number }[] = [];
      for (let i = 0; i < n; i++) {
        if (pauseMs) await new Promise((r) => setTimeout(r, pauseMs));
        const r = await get(`${c.endpoint}${path}`, c.cert, auth, agent);
        if (r.status !== 200) throw new Error(`${path}: ${r.status}`);
        out.push(r);
      }
      return out;
    };
    await measure('/v1/cluster', 3); // connection and credential cache warm
    const status = await measure('/v1/cluster', scrapes);
    const warm = await measure('/metrics', scrapes);
    const cold = await measure('/metrics', Math.max(3, Math.floor(rounds)), 3500); // engine health cache (3 s) expired
    const ms = (xs: { ms: number }[]) => xs.map((x) => x.ms);
    const row = (what: string, xs: { ms: number; bytes: number }[]) =>
      console.log(`${what}: median ${median(ms(xs)).toFixed(2)} ms (${spread(ms(xs), (x) => x.toFixed(2))}), p90 ${pct(ms(xs), 0.9).toFixed(2)} ms, ${median(xs.map((x) => x.bytes))} bytes, ratio to GET /v1/cluster ${(median(ms(xs)) / median(ms(status))).toFixed(2)}`);
    row('GET /v1/cluster (baseline)', status);
    row('GET /metrics warm', warm);
    row('GET /metrics cold', cold);
    agent.destroy();
  } finally {
    const left = await c.destroy();
    if (left.length) console.log(`had to kill: ${left.join(', ')}`);
  }
}

await main();
