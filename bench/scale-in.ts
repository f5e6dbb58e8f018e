/**
 * Scale in and replace of a running pg-ha cluster, in network namespaces (issue 14's benchmark; scale out
 * is bench/scale.ts). Per round, on a fresh test net of five hosts and an outside host: a cluster on d1..d4
 * (5 agents — two on d4 —, 4 DB servers, coordinator-1 on d1 and coordinator-2 on d4) is launched; a writer
 * on the outside host INSERTs through coordinator-1; d4 is scaled in; then d3's processes are killed by pid,
 * its namespace deleted, and d3 is replaced by d5. Baselines of the same round: the launch's time (each
 * operation as a ratio of it) and the writer's longest gap during 10 idle seconds (each operation's gap as
 * a ratio of it). The leaders stay where the launch put them (test/net/scale-in.test.ts puts them on the
 * leaving host, so its switchover and move-leader always run). Reports medians and ranges over the rounds.
 * Needs root, nft and the pg-ha packages (deploy/install-deps.sh); run it under the shared lock:
 *
 *   npx tsc -p . && flock /tmp/cd-heavy.lock node dist/bench/scale-in.js [--rounds 3]
 */
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { OperationView } from '../api/rest.js';
import { planFromSpec } from '../launcher/planner.js';
import { PG_HA_DEBIAN_BINARIES } from '../launcher/local.js';
import { createTestNet } from '../test/helpers/netns.js';
import { clientIn, createNsCluster, ndjson, socketClient } from '../test/helpers/ns-cluster.js';
import { operatorOutsideFirewall } from '../test/helpers/ns-setup.js';
import { psqlClient, startNsWriter } from '../test/helpers/ns-writer.js';
import { median, minMax, numberArg, sleep } from './stats.js';

interface Round {
  launchMs: number;
  scaleInMs: number;
  replaceMs: number;
  idleGapMs: number;
  scaleInGapMs: number;
  replaceGapMs: number;
  failedWrites: number;
  lost: number;
}

async function round(n: number): Promise<Round> {
  const net = await createTestNet({ hosts: 5, outside: true, prefix: 'cdsib' });
  const cluster = await createNsCluster(net, { driftIntervalMs: 1000, backend: 'nftables' }).catch(async (e) => {
    await net.destroy();
    throw e;
  });
  const name = `scaleinbench${n}`;
  try {
    await cluster.startAll();
    const d1 = cluster.dispatchers[0];
    const cred = { user: cluster.user, password: cluster.password };
    const run = async (path: string, body: unknown): Promise<OperationView> => {
      const file = join(cluster.root, `body-${Date.now()}.json`);
      writeFileSync(file, JSON.stringify(body), { mode: 0o600 });
      const r = await clientIn(net, net.outside!.ns, d1, cred, ['run', path, file], 600_000);
      const op = ndjson(r.stdout).find((l) => l.type === 'operation') as unknown as OperationView | undefined;
      if (!op || op.state !== 'succeeded') throw new Error(`${path}: ${op ? JSON.stringify(op.error) : r.stderr}`);
      return op;
    };
    const plan = planFromSpec({ name, engine: 'pg-ha', dispatchers: cluster.specDispatchers().slice(0, 4), agents: 5, dbservers: 4, coordinators: 2, firewall: operatorOutsideFirewall(net) });
    for (const id of ['coordinator-2', 'agent-5']) Object.assign(plan.processes.find((x) => x.id === id)!, { dispatcher: 'd4', address: plan.dispatchers[3].addresses[0] });
    const launch = await run('/v1/cluster/launch', { plan, peerCredentials: {}, readyTimeoutMs: 120_000 });
    const sock = socketClient(d1, 60_000);
    const pg = psqlClient(cluster.root, await sock.get('/v1/cluster/connection'), PG_HA_DEBIAN_BINARIES.psql);
    sock.close();
    const coord = plan.processes.find((p) => p.id === 'coordinator-1')!;
    const conninfo = `host=${coord.address} port=${coord.ports.find((x) => x.name === 'client')!.port} user=postgres dbname=postgres`;
    const sql = (statement: string) => net.exec(net.outside!.ns, [...pg.env, pg.psql, conninfo, '-XtAq', '-v', 'ON_ERROR_STOP=1', '-c', statement], { timeoutMs: 30_000 });
    const created = await sql('CREATE TABLE idle_writes (n int PRIMARY KEY); CREATE TABLE in_writes (n int PRIMARY KEY); CREATE TABLE rep_writes (n int PRIMARY KEY)');
    if (created.code !== 0) throw new Error(created.stderr);

    const idle = await startNsWriter(net, net.outside!.ns, pg, conninfo, 'idle_writes');
    await sleep(10_000);
    const idleGap = (await idle.stop()).longestGapMs;

    const shrunk = { ...plan, dispatchers: plan.dispatchers.filter((d) => d.id !== 'd4'), processes: plan.processes.filter((p) => p.dispatcher !== 'd4') };
    let w = await startNsWriter(net, net.outside!.ns, pg, conninfo, 'in_writes');
    const scaleIn = await run('/v1/cluster/scale', { plan: shrunk, readyTimeoutMs: 120_000 });
    const inW = await w.stop();

    // d3 is gone for good: everything in its namespace killed by pid (ours: this run made it), then the namespace.
    const ns = net.hosts[2].ns;
    for (const pid of execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).split(/\s+/).filter(Boolean).map(Number)) process.kill(pid, 'SIGKILL');
    for (let i = 0; i < 50 && execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).trim(); i++) await sleep(100);
    execFileSync('ip', ['netns', 'delete', ns]);
    w = await startNsWriter(net, net.outside!.ns, pg, conninfo, 'rep_writes');
    const replace = await run('/v1/cluster/replace', { dead: 'd3', with: cluster.specDispatchers()[4], readyTimeoutMs: 180_000 });
    const repW = await w.stop();

    let lost = 0;
    for (const [table, res] of [['in_writes', inW], ['rep_writes', repW]] as const) {
      const have = new Set((await sql(`SELECT n FROM ${table}`)).stdout.split('\n').filter(Boolean).map(Number));
      lost += res.acked.filter((x) => !have.has(x)).length;
    }
    const r: Round = {
      launchMs: launch.events.at(-1)!.durationMs!,
      scaleInMs: scaleIn.events.at(-1)!.durationMs!,
      replaceMs: replace.events.at(-1)!.durationMs!,
      idleGapMs: idleGap,
      scaleInGapMs: inW.longestGapMs,
      replaceGapMs: repW.longestGapMs,
      failedWrites: inW.failedAttempts + repW.failedAttempts,
      lost,
    };
    console.log(`round ${n}: ${JSON.stringify(r)}`);
    await run('/v1/cluster/shutdown', {}).catch(() => undefined);
    await run('/v1/cluster/cleanup', { confirmName: name }).catch(() => undefined);
    return r;
  } finally {
    await cluster.teardown();
    await net.destroy();
  }
}

async function main() {
  const out: Round[] = [];
  for (let i = 1; i <= numberArg('rounds', 3); i++) out.push(await round(i));
  const stat = (f: (r: Round) => number, digits = 0) => ({ median: +median(out.map(f)).toFixed(digits), range: minMax(out.map((r) => +f(r).toFixed(digits))) });
  console.log(
    JSON.stringify(
      {
        rounds: out.length,
        launchMs: stat((r) => r.launchMs),
        scaleInMs: stat((r) => r.scaleInMs),
        replaceMs: stat((r) => r.replaceMs),
        scaleInToLaunch: stat((r) => r.scaleInMs / r.launchMs, 2),
        replaceToLaunch: stat((r) => r.replaceMs / r.launchMs, 2),
        longestWriteGapMs: { idle: stat((r) => r.idleGapMs), scaleIn: stat((r) => r.scaleInGapMs), replace: stat((r) => r.replaceGapMs) },
        gapToIdle: { scaleIn: stat((r) => r.scaleInGapMs / r.idleGapMs, 2), replace: stat((r) => r.replaceGapMs / r.idleGapMs, 2) },
        failedWrites: out.reduce((s, r) => s + r.failedWrites, 0),
        lostWrites: out.reduce((s, r) => s + r.lost, 0),
      },
      null,
      2,
    ),
  );
}

void main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
