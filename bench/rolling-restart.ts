/**
 * Rolling restart of the DB servers of a real local pg-ha cluster (3 loopback dispatchers, Debian
 * binaries): the dispatcher's operation (POST /v1/cluster/restart {roles: [dbserver]}) next to the careful
 * hand-run script bench/rolling-restart-by-hand.sh doing the same steps, both in one run and each under a
 * writer inserting numbered rows through the coordinator. Reports duration, longest write gap, failed
 * attempts and lost rows. Needs root and deploy/install-deps.sh.
 *
 *   npx tsc -p . && node dist/bench/rolling-restart.js [--rounds 2] [--base-port 26500]
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { dbserverState } from '../server/engines/pg-ha-health.js';
import { dispatcherClientTls, sql, startPgCluster, startWriter, waitOperation, type PgCluster } from '../test/helpers/pg-cluster.js';
import { numberArg } from './stats.js';

const SCRIPT = join(fileURLToPath(new URL('.', import.meta.url)), '../../bench/rolling-restart-by-hand.sh');

interface Result {
  what: string;
  ms: number;
  gapMs: number;
  failed: number;
  acked: number;
  lost: number;
}

async function measure(cl: PgCluster, what: string, table: string, work: () => Promise<void>): Promise<Result> {
  await sql(cl.pgpass, cl.coordinatorPorts[0], `CREATE TABLE IF NOT EXISTS ${table} (n int PRIMARY KEY)`);
  const writer = startWriter(cl.pgpass, cl.coordinatorPorts.slice(0, 1), table, { maxMs: 180_000 });
  await new Promise((r) => setTimeout(r, 1000));
  const t0 = Date.now();
  await work();
  const ms = Date.now() - t0;
  await new Promise((r) => setTimeout(r, 1000));
  const w = await writer.stop();
  const rows = new Set((await sql(cl.pgpass, cl.coordinatorPorts[0], `SELECT n FROM ${table}`)).split('\n').filter(Boolean).map(Number));
  return { what, ms, gapMs: w.longestGapMs, failed: w.failedAttempts, acked: w.acked.length, lost: w.acked.filter((n) => !rows.has(n)).length };
}

async function byHand(cl: PgCluster): Promise<void> {
  const dbs = cl.plan.processes.filter((p) => p.role === 'dbserver');
  const tls = dispatcherClientTls(cl.dispatchers[0].dir.dataDir);
  const states = await Promise.all(dbs.map((p) => dbserverState(cl.plan, p.id, { tls })));
  const leader = states.find((s) => s.role === 'leader')!.id;
  const ordered = [...dbs.filter((p) => p.id !== leader), dbs.find((p) => p.id === leader)!];
  const lines = ordered.map((p) => {
    const d = cl.dispatchers.find((x) => x.id === p.dispatcher)!;
    const rest = p.ports.find((x) => x.name === 'rest')!.port;
    return `${p.id} ${d.url} ${join(d.dataDir, 'tls', 'cert.pem')} https://${p.address}:${rest}`;
  });
  const d0 = cl.dispatchers[0];
  // The operator's client certificate for Patroni: here the first dispatcher's (root reads its store).
  const dir = mkdtempSync(join(tmpdir(), 'rr-hand-'));
  const files = { PATRONI_CA: join(dir, 'ca.crt'), PATRONI_CERT: join(dir, 'client.crt'), PATRONI_KEY: join(dir, 'client.key') };
  writeFileSync(files.PATRONI_CA, tls.ca, { mode: 0o600 });
  writeFileSync(files.PATRONI_CERT, tls.cert, { mode: 0o600 });
  writeFileSync(files.PATRONI_KEY, tls.key, { mode: 0o600 });
  const restPassword = JSON.parse(readFileSync(join(d0.dataDir, 'cluster', 'secrets.json'), 'utf8')).secrets['rest-password'];
  await new Promise<void>((resolve, reject) => {
    const child = execFile('bash', [SCRIPT], { env: { ...process.env, AUTH: `${d0.user}:${d0.password}`, ...files, PATRONI_AUTH: `patroni:${restPassword}` }, timeout: 300_000 }, (err, _o, stderr) => {
      rmSync(dir, { recursive: true, force: true });
      return err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve();
    });
    child.stdin!.end(lines.join('\n') + '\n');
  });
}

async function byDispatcher(cl: PgCluster): Promise<void> {
  const c = cl.client(0);
  const { operation } = await c.post<{ operation: string }>('/v1/cluster/restart', { processes: { roles: ['dbserver'] } });
  const op = await waitOperation(c, operation, 300_000);
  if (op.state !== 'succeeded') throw new Error(`restart failed: ${op.error?.message}`);
}

async function main() {
  const rounds = numberArg('rounds', 2);
  const cl = await startPgCluster({ name: 'rrbench', basePort: numberArg('base-port', 26500), coordinators: 1 });
  const results: Result[] = [];
  try {
    for (let r = 0; r < rounds; r++) {
      results.push(await measure(cl, 'hand-run script', `hand${r}`, () => byHand(cl)));
      results.push(await measure(cl, 'dispatch restart --role dbserver', `op${r}`, () => byDispatcher(cl)));
    }
  } finally {
    await cl.close();
  }
  console.log('| run | duration | longest write gap | failed attempts / acked writes | lost |');
  console.log('|---|---:|---:|---:|---:|');
  for (const x of results) console.log(`| ${x.what} | ${(x.ms / 1000).toFixed(1)} s | ${(x.gapMs / 1000).toFixed(2)} s | ${x.failed} / ${x.acked} | ${x.lost} |`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
