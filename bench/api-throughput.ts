/**
 * API throughput and idle memory of one real dispatcherd (child process, loopback, HTTPS keep-alive):
 * authenticated GET /v1/processes vs unauthenticated GET /v1/health, and the daemon's RSS from
 * /proc/<pid>/status at idle (before load) and after load.
 *
 *   npx tsc -p . && node dist/bench/api-throughput.js [--seconds 5] [--clients 16]
 */
import { Agent, request } from 'node:https';
import { readFileSync } from 'node:fs';
import { startDispatcherd } from '../test/helpers/daemon.js';
import { numberArg } from './stats.js';

function rssKiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : NaN;
}

async function load(url: string, ca: string, auth: string | undefined, seconds: number, clients: number): Promise<{ rps: number; errors: number }> {
  const agent = new Agent({ keepAlive: true, maxSockets: clients, ca });
  const end = Date.now() + seconds * 1000;
  let ok = 0;
  let errors = 0;
  const one = () =>
    new Promise<void>((resolve) => {
      const req = request(url, { agent, auth }, (res) => {
        res.resume();
        res.on('end', () => {
          if (res.statusCode === 200) ok++;
          else errors++;
          resolve();
        });
      });
      req.on('error', () => {
        errors++;
        resolve();
      });
      req.end();
    });
  const t0 = Date.now();
  await Promise.all(Array.from({ length: clients }, async () => {
    while (Date.now() < end) await one();
  }));
  const elapsed = (Date.now() - t0) / 1000;
  agent.destroy();
  return { rps: ok / elapsed, errors };
}

const seconds = numberArg('seconds', 5);
const clients = numberArg('clients', 16);
const d = await startDispatcherd({ id: 'bench' });
try {
  await new Promise((r) => setTimeout(r, 2000));
  const idle = rssKiB(d.pid);
  // Warm-up: TLS sessions, JIT, and the one scrypt verification that fills the credential cache.
  await load(`${d.url}/v1/processes`, d.cert, `${d.user}:${d.password}`, 1, clients);
  const health = await load(`${d.url}/v1/health`, d.cert, undefined, seconds, clients);
  const procs = await load(`${d.url}/v1/processes`, d.cert, `${d.user}:${d.password}`, seconds, clients);
  const loaded = rssKiB(d.pid);
  const result = {
    node: process.version,
    seconds,
    clients,
    healthRps: Math.round(health.rps),
    processesAuthRps: Math.round(procs.rps),
    ratio: Number((procs.rps / health.rps).toFixed(3)),
    errors: health.errors + procs.errors,
    idleRssMiB: Number((idle / 1024).toFixed(1)),
    afterLoadRssMiB: Number((loaded / 1024).toFixed(1)),
  };
  console.log(JSON.stringify(result, null, 2));
} finally {
  await d.stop();
  d.dir.remove();
}
