/**
 * The daemon itself (docs/BENCHMARKS.md, "Daemon memory and authenticated throughput"): idle RSS of one
 * real `dispatcherd start`, and authenticated `GET /v1/processes` (HTTP Basic, verified-credential cache)
 * against unauthenticated `GET /v1/health` on the same daemon, HTTPS keep-alive, loopback.
 *
 * Variants run alternating in one run, each round a fresh daemon per variant (variant order rotates per
 * round, and so does the order of the two loads): this tree with default V8 settings, this tree with
 * extra node flags (`--flags`), and optionally another build (`--tree DIR`, e.g. the commit before).
 *
 *   npx tsc -p . && node dist/bench/daemon-footprint.js [--rounds 5] [--seconds 2] [--clients 16]
 *       [--flags=--max-semi-space-size=1] [--tree /tmp/base] [--tree-flags=--max-semi-space-size=1]
 *
 * Per variant it also reports the first authenticated `GET /v1/cluster` after the idle wait (where the
 * cluster side is lazy, that request loads it: server/cluster-daemon.ts), the second, and VmRSS after both.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { Agent, request } from 'node:https';
import { join, resolve } from 'node:path';
import { addUser, freePort, httpsGet, initDataDir, REPO_ROOT } from '../test/helpers/daemon.js';
import { median, sleep } from './stats.js';

function arg(name: string, def: string): string {
  const eq = process.argv.find((a) => a.startsWith(`--${name}=`));
  if (eq) return eq.slice(name.length + 3);
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : def;
}
const rounds = Number(arg('rounds', '5'));
const seconds = Number(arg('seconds', '2'));
const clients = Number(arg('clients', '16'));
const idleMs = Number(arg('idle-ms', '3000'));
const flags = arg('flags', '').split(/\s+/).filter(Boolean);
const otherTree = arg('tree', '');
/** Node flags for the other tree (e.g. the shipped `--max-semi-space-size=1`, to compare as shipped). */
const treeFlags = arg('tree-flags', '').split(/\s+/).filter(Boolean);

interface Variant {
  name: string;
  tree: string;
  nodeArgs: string[];
}
const variants: Variant[] = [{ name: 'this tree', tree: REPO_ROOT, nodeArgs: [] }];
if (flags.length) variants.push({ name: `this tree ${flags.join(' ')}`, tree: REPO_ROOT, nodeArgs: flags });
if (otherTree) variants.push({ name: `tree ${otherTree}${treeFlags.length ? ' ' + treeFlags.join(' ') : ''}`, tree: resolve(otherTree), nodeArgs: treeFlags });

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

const agents = new Map<string, Agent>();

/** The daemon's CPU time so far (user + system, µs; clock ticks of 10 ms), from /proc/<pid>/stat. */
function cpuMicros(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10_000;
}

/** Requests per second over `forS` seconds; one kept-alive agent per daemon and CA, reused across slices. */
async function load(url: string, ca: string, auth: string | undefined, forS = 1): Promise<number> {
  return (await loadCounted(url, ca, auth, forS)).rps;
}

async function loadCounted(url: string, ca: string, auth: string | undefined, forS: number): Promise<{ rps: number; ok: number }> {
  const key = `${url} ${auth ?? ''}`;
  let agent = agents.get(key);
  if (!agent) agents.set(key, (agent = new Agent({ keepAlive: true, maxSockets: clients, ca })));
  const end = Date.now() + forS * 1000;
  let ok = 0;
  const one = () =>
    new Promise<void>((done) => {
      const req = request(url, { agent, auth }, (res) => {
        res.resume();
        res.on('end', () => {
          if (res.statusCode === 200) ok++;
          done();
        });
      });
      req.on('error', () => done());
      req.end();
    });
  const t0 = Date.now();
  await Promise.all(Array.from({ length: clients }, async () => {
    while (Date.now() < end) await one();
  }));
  return { rps: ok / ((Date.now() - t0) / 1000), ok };
}

interface Sample {
  idleMiB: number;
  healthRps: number;
  authRps: number;
  /** Median over the slice pairs of auth ÷ health (a burst of foreign load spoils one slice, not the round). */
  slicePairMedian: number;
  /** The daemon's CPU per request: health ÷ authenticated (the relative cost, whoever else uses the CPUs). */
  cpuRatio: number;
  /** The first `GET /v1/cluster` after idle (loads the cluster side where it is lazy), and the second, ms. */
  firstClusterMs: number;
  secondClusterMs: number;
  /** VmRSS right after those two requests. */
  afterClusterMiB: number;
}

/** Duration of one authenticated GET (ms), its status checked. */
async function timedGet(url: string, ca: string, auth: string): Promise<number> {
  const t0 = process.hrtime.bigint();
  const r = await httpsGet(url, ca, { auth, timeoutMs: 30_000 });
  if (r.status !== 200) throw new Error(`${url}: ${r.status} ${r.body}`);
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

async function measure(v: Variant, round: number): Promise<Sample> {
  const dir = await initDataDir({ id: 'bench' });
  let child: ChildProcess | undefined;
  try {
    await addUser(dir.dataDir, 'operator', 'correct-horse-battery');
    const port = await freePort();
    child = spawn(process.execPath, [...v.nodeArgs, join(v.tree, 'bin', 'dispatcherd'), 'start', '--config', dir.configFile], {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', DISPATCHER_PORT: String(port), DISPATCHER_LISTEN: '127.0.0.1' },
      stdio: 'ignore',
    });
    const url = `https://127.0.0.1:${port}`;
    for (let i = 0; ; i++) {
      if (i > 150) throw new Error(`${v.name}: the daemon did not answer /v1/health`);
      if ((await httpsGet(`${url}/v1/health`, dir.cert).catch(() => ({ status: 0 }))).status === 200) break;
      await sleep(100);
    }
    await sleep(idleMs);
    const idleMiB = rssMiB(child.pid!);
    const auth = 'operator:correct-horse-battery';
    // First cluster request: the credential is verified (scrypt) by a request before it, so the time is
    // the cluster side's load (if lazy) plus the handler; the second is the same request once loaded.
    await timedGet(`${url}/v1/processes`, dir.cert, auth);
    const firstClusterMs = await timedGet(`${url}/v1/cluster`, dir.cert, auth);
    const secondClusterMs = await timedGet(`${url}/v1/cluster`, dir.cert, auth);
    const afterClusterMiB = rssMiB(child.pid!);
    // Warm-up: TLS sessions, JIT, and the one scrypt check that fills the credential cache.
    await load(`${url}/v1/processes`, dir.cert, auth);
    // Paired and finely alternated: the machine's load changes within seconds (other work shares the CPUs),
    // so the two loads take turns in short slices and each total is the sum over its slices.
    const slices = Math.max(2, Math.round(seconds / 0.25));
    const sliceS = seconds / slices;
    let health = 0;
    let authed = 0;
    const pairs: number[] = [];
    const cpu = { health: 0, auth: 0, healthRequests: 0, authRequests: 0 };
    const timed = async (path: string, withAuth: boolean) => {
      const c0 = cpuMicros(child!.pid!);
      const r = await loadCounted(`${url}${path}`, dir.cert, withAuth ? auth : undefined, sliceS);
      const used = cpuMicros(child!.pid!) - c0;
      if (withAuth) (cpu.auth += used), (cpu.authRequests += r.ok);
      else (cpu.health += used), (cpu.healthRequests += r.ok);
      return r.rps;
    };
    for (let i = 0; i < slices; i++) {
      const first = (i + round) % 2 === 0;
      let h = 0;
      if (first) h = await timed('/v1/health', false);
      const a = await timed('/v1/processes', true);
      if (!first) h = await timed('/v1/health', false);
      health += h;
      authed += a;
      pairs.push(a / h);
    }
    const healthRps = health / slices;
    const authRps = authed / slices;
    const cpuRatio = cpu.health / cpu.healthRequests / (cpu.auth / cpu.authRequests);
    return { idleMiB, healthRps, authRps, slicePairMedian: median(pairs), cpuRatio, firstClusterMs, secondClusterMs, afterClusterMiB };
  } finally {
    for (const a of agents.values()) a.destroy();
    agents.clear();
    if (child && child.exitCode === null) {
      const gone = new Promise((r) => child!.once('exit', r));
      child.kill('SIGTERM');
      await gone;
    }
    dir.remove();
  }
}

const stat = (xs: number[], digits = 1) => ({ median: +median(xs).toFixed(digits), min: +Math.min(...xs).toFixed(digits), max: +Math.max(...xs).toFixed(digits) });

const samples = new Map<string, Sample[]>(variants.map((v) => [v.name, []]));
for (let r = 0; r < rounds; r++) {
  for (let k = 0; k < variants.length; k++) {
    const v = variants[(r + k) % variants.length];
    samples.get(v.name)!.push(await measure(v, r));
  }
}
const out: Record<string, unknown> = { node: process.version, rounds, seconds, clients, idleMs };
for (const v of variants) {
  const s = samples.get(v.name)!;
  out[v.name] = {
    idleRssMiB: stat(s.map((x) => x.idleMiB)),
    healthRps: stat(s.map((x) => x.healthRps), 0),
    authProcessesRps: stat(s.map((x) => x.authRps), 0),
    authOverHealth: stat(s.map((x) => x.authRps / x.healthRps), 3),
    authOverHealthPerRound: s.map((x) => +(x.authRps / x.healthRps).toFixed(3)),
    slicePairMedian: stat(s.map((x) => x.slicePairMedian), 3),
    slicePairMedianPerRound: s.map((x) => +x.slicePairMedian.toFixed(3)),
    cpuPerRequestHealthOverAuth: stat(s.map((x) => x.cpuRatio), 3),
    idlePerRound: s.map((x) => +x.idleMiB.toFixed(1)),
    rssAfterFirstClusterRequestMiB: stat(s.map((x) => x.afterClusterMiB)),
    firstClusterRequestMs: stat(s.map((x) => x.firstClusterMs)),
    secondClusterRequestMs: stat(s.map((x) => x.secondClusterMs)),
  };
}
console.log(JSON.stringify(out, null, 2));
