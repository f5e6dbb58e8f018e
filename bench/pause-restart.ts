/**
 * What a client sees during a rolling restart of every role (issue 17): pgbench (-c 4 -j 2 -T S) through
 * the coordinator of a real local pg-ha cluster (3 loopback dispatchers; etcd, Patroni/PostgreSQL 15,
 * HAProxy + PgBouncer), per round three runs in one cluster: a baseline without restart, persistent
 * connections during `restart`, and -C (a connection per transaction) during `restart`. Reports, per run,
 * transactions, failed transactions, aborted clients and the longest transaction latency from pgbench's
 * per-transaction log; over the rounds the median and range of the longest latency, and its ratio to the
 * baseline's. Needs root and deploy/install-deps.sh.
 *
 *   npx tsc -p . && node dist/bench/pause-restart.js [--rounds 3] [--seconds 45] [--base-port 26700]
 */
import { dispatcherClientTls, startPgCluster, waitOperation } from '../test/helpers/pg-cluster.js';
import { pgbenchInit, pgbenchRun, type PgbenchResult } from '../test/helpers/pgbench.js';
import { median, numberArg } from './stats.js';

async function main() {
  const rounds = numberArg('rounds', 3);
  const seconds = numberArg('seconds', 45);
  const cl = await startPgCluster({ name: 'pausebench', basePort: numberArg('base-port', 26700), coordinators: 1 });
  const rows: { round: number; run: string; r: PgbenchResult; restartMs?: number; pauses?: string }[] = [];
  try {
    const target = { port: cl.coordinatorPorts[0], pgpass: cl.pgpass, ca: dispatcherClientTls(cl.dispatchers[0].dataDir).ca };
    await pgbenchInit(target);
    const c = cl.client(0);
    for (let round = 1; round <= rounds; round++) {
      rows.push({ round, run: 'baseline (no restart)', r: await pgbenchRun(target, { seconds, connectPerTransaction: false }) });
      for (const connectPerTransaction of [false, true]) {
        const bench = pgbenchRun(target, { seconds, connectPerTransaction });
        await new Promise((r) => setTimeout(r, 2000));
        const { operation } = await c.post<{ operation: string }>('/v1/cluster/restart', { readyTimeoutMs: 60_000 });
        const op = await waitOperation(c, operation, 300_000);
        const r = await bench;
        if (op.state !== 'succeeded') throw new Error(`restart ${op.state}: ${op.error?.message}`);
        // Which step the longest transaction waited for: the pooler pauses and the steps around its end.
        const around = op.events.filter((e) => Math.abs(Date.parse(e.at) - (r.maxLatencyEndMs - r.maxLatencyMs / 2)) <= r.maxLatencyMs / 2 + 1000);
        const pauses = around.map((e) => `${e.step}: ${e.message.split('\n')[0].slice(0, 80)}`).join(' | ');
        rows.push({ round, run: connectPerTransaction ? 'restart, -C' : 'restart, persistent', r, restartMs: Number(op.result?.durationMs), pauses });
      }
    }
  } finally {
    await cl.close();
  }
  for (const x of rows) {
    console.log(`round ${x.round} ${x.run}: ${x.r.processed} tx, ${x.r.failed} failed, ${x.r.abortedClients} aborted clients, longest ${x.r.maxLatencyMs} ms${x.restartMs ? `, restart ${x.restartMs} ms` : ''}${x.pauses ? `\n  during the longest: ${x.pauses}` : ''}`);
  }
  const summary: Record<string, unknown> = {};
  const base = rows.filter((x) => x.run.startsWith('baseline')).map((x) => x.r.maxLatencyMs);
  for (const run of [...new Set(rows.map((x) => x.run))]) {
    const lat = rows.filter((x) => x.run === run).map((x) => x.r.maxLatencyMs);
    summary[run] = {
      longestMsMedian: median(lat),
      longestMsRange: [Math.min(...lat), Math.max(...lat)],
      ratioToBaselineMedian: +(median(lat) / median(base)).toFixed(2),
      failed: rows.filter((x) => x.run === run).reduce((n, x) => n + x.r.failed, 0),
      abortedClients: rows.filter((x) => x.run === run).reduce((n, x) => n + x.r.abortedClients, 0),
    };
  }
  console.log(JSON.stringify({ rounds, seconds, summary }, null, 2));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
