/**
 * Scale out of a running pg-ha cluster onto a fourth host, in network namespaces (issue 14's benchmark):
 * per round, a 3-host cluster (3 agents, 3 DB servers, 1 coordinator) is launched, a writer on the outside
 * host INSERTs through the coordinator, and the cluster is scaled out onto the fourth host (2 agents, a DB
 * server, a coordinator; test/helpers/scale-fixture.ts); then shutdown and cleanup. Baselines of the same
 * round: the launch's time (scale-out time as a ratio of it), and the writer's longest gap during an idle
 * period as long as 10 s before the scale (the gap during the scale as a ratio of it). Reports medians and
 * ranges over the rounds. Needs root, nft and the pg-ha packages (deploy/install-deps.sh); run it under
 * the shared lock:
 *
 *   npx tsc -p . && flock /tmp/cd-heavy.lock node dist/bench/scale.js [--rounds 3]
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Plan } from '../api/plan.js';
import type { OperationView } from '../api/rest.js';
import { planFromSpec } from '../launcher/planner.js';
import { PG_HA_DEBIAN_BINARIES } from '../launcher/local.js';
import { createTestNet } from '../test/helpers/netns.js';
import { clientIn, createNsCluster, ndjson, socketClient } from '../test/helpers/ns-cluster.js';
import { operatorOutsideFirewall } from '../test/helpers/ns-setup.js';
import { psqlClient, startNsWriter } from '../test/helpers/ns-writer.js';
import { grownByHost } from '../test/helpers/scale-fixture.js';
import { median, minMax, numberArg, sleep } from './stats.js';

interface Round {
  launchMs: number;
  scaleMs: number;
  idleGapMs: number;
  scaleGapMs: number;
  failedWrites: number;
  lost: number;
}

async function main() {
  const rounds = numberArg('rounds', 3);
  const net = await createTestNet({ hosts: 4, outside: true, prefix: 'cdsb' });
  const cluster = await createNsCluster(net, { driftIntervalMs: 1000, backend: 'nftables' }).catch(async (e) => {
    await net.destroy();
    throw e;
  });
  const out: Round[] = [];
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
    for (let round = 1; round <= rounds; round++) {
      const name = `scalebench${round}`;
      const running: Plan = planFromSpec({ name, engine: 'pg-ha', dispatchers: cluster.specDispatchers().slice(0, 3), agents: 3, dbservers: 3, coordinators: 1, firewall: operatorOutsideFirewall(net) });
      const proposed = grownByHost(running, cluster.specDispatchers()[3]);
      const launch = await run('/v1/cluster/launch', { plan: running, peerCredentials: {}, readyTimeoutMs: 120_000 });
      const sock = socketClient(d1, 60_000);
      try {
        const pg = psqlClient(cluster.root, await sock.get('/v1/cluster/connection'), PG_HA_DEBIAN_BINARIES.psql);
        const coord = running.processes.find((p) => p.role === 'coordinator')!;
        const conninfo = `host=${coord.address} port=${coord.ports.find((x) => x.name === 'client')!.port} user=postgres dbname=postgres`;
        const created = await net.exec(net.outside!.ns, [...pg.env, pg.psql, conninfo, '-XtAq', '-v', 'ON_ERROR_STOP=1', '-c', 'CREATE TABLE idle_writes (n int PRIMARY KEY); CREATE TABLE scale_writes (n int PRIMARY KEY)'], { timeoutMs: 30_000 });
        if (created.code !== 0) throw new Error(created.stderr);
        // Baseline: the writer's longest gap during 10 s in which nothing happens.
        const idle = await startNsWriter(net, net.outside!.ns, pg, conninfo, 'idle_writes');
        await sleep(10_000);
        const idleGap = (await idle.stop()).longestGapMs;
        const during = await startNsWriter(net, net.outside!.ns, pg, conninfo, 'scale_writes');
        const scale = await run('/v1/cluster/scale', { plan: proposed, readyTimeoutMs: 120_000 });
        const w = await during.stop();
        const stored = await net.exec(net.outside!.ns, [...pg.env, pg.psql, conninfo, '-XtAq', '-c', 'SELECT n FROM scale_writes'], { timeoutMs: 30_000 });
        const have = new Set(stored.stdout.split('\n').filter(Boolean).map(Number));
        out.push({
          launchMs: launch.events.at(-1)!.durationMs!,
          scaleMs: scale.events.at(-1)!.durationMs!,
          idleGapMs: idleGap,
          scaleGapMs: w.longestGapMs,
          failedWrites: w.failedAttempts,
          lost: w.acked.filter((n) => !have.has(n)).length,
        });
        console.log(`round ${round}: ${JSON.stringify(out.at(-1))}`);
      } finally {
        sock.close();
      }
      await run('/v1/cluster/shutdown', {});
      await run('/v1/cluster/cleanup', { confirmName: name });
    }
  } finally {
    await cluster.teardown();
    await net.destroy();
  }
  const pick = (f: (r: Round) => number) => out.map(f);
  console.log(
    JSON.stringify(
      {
        rounds: out.length,
        scaleOutMs: { median: median(pick((r) => r.scaleMs)), range: minMax(pick((r) => r.scaleMs)) },
        launchMs: { median: median(pick((r) => r.launchMs)), range: minMax(pick((r) => r.launchMs)) },
        scaleToLaunchRatio: { median: +median(pick((r) => r.scaleMs / r.launchMs)).toFixed(2), range: minMax(pick((r) => +(r.scaleMs / r.launchMs).toFixed(2))) },
        longestWriteGapMs: { duringScale: { median: median(pick((r) => r.scaleGapMs)), range: minMax(pick((r) => r.scaleGapMs)) }, idle: { median: median(pick((r) => r.idleGapMs)), range: minMax(pick((r) => r.idleGapMs)) } },
        gapRatioScaleToIdle: { median: +median(pick((r) => r.scaleGapMs / r.idleGapMs)).toFixed(2), range: minMax(pick((r) => +(r.scaleGapMs / r.idleGapMs).toFixed(2))) },
        failedWrites: out.reduce((n, r) => n + r.failedWrites, 0),
        lostWrites: out.reduce((n, r) => n + r.lost, 0),
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
