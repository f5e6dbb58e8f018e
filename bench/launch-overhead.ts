/**
 * Launch overhead: launch-to-ready of a real pg-ha cluster (3 etcd, 3 Patroni/PostgreSQL, 1 HAProxy) through
 * three loopback dispatchers ÷ the same processes started by a plain ordered script (bench/plain-launch.ts)
 * with the same readiness checks — both in one run, alternating, fresh data every round.
 *
 *   npx tsc -p . && node dist/bench/launch-overhead.js [--rounds 9]
 *
 * Dispatcher time = the launch operation's startedAt → endedAt (validate, propagate, preflight, guard,
 * ordered start with health gates, verify); plain time = first spawn → coordinators healthy.
 * Needs root, the pg-ha Debian packages and the cluster-dispatcher user (deploy/install-deps.sh).
 */
import { issuePlanPki } from '../server/pki/issue-plan.js';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import type { OperationEvent, OperationView } from '../api/rest.js';
import { PG_HA_DEBIAN_BINARIES, DEFAULT_RUN_AS } from '../launcher/local.js';
import { generateSecrets, loadEngine } from '../server/engines/index.js';
import { resolveUser } from '../server/cluster/run-as-user.js';
import { startTestCluster, killMatching } from '../test/helpers/cluster.js';
import { plainLaunch } from './plain-launch.js';
import { median, numberArg } from './stats.js';

/** The slowest dispatcher per fan-out step, each role's start → healthy, the whole launch (from durationMs). */
function stepBreakdown(events: OperationEvent[]): Record<string, number> {
  const out: Record<string, number> = {};
  let role = 0;
  for (const e of events) {
    if (e.durationMs === undefined) continue;
    if (e.host && !e.process) out[e.step] = Math.max(out[e.step] ?? 0, e.durationMs);
    else if (e.step === 'healthy') out[`healthy#${++role} ${e.message.split(' ')[0]}`] = e.durationMs;
    else if (e.step === 'ready' && !e.process) out.launch = e.durationMs;
  }
  return out;
}

async function main() {
  const rounds = numberArg('rounds', 9);
  const tc = await startTestCluster({ n: 3, label: 'bl' });
  const runAs = await resolveUser(DEFAULT_RUN_AS);
  const viaDispatchers: number[] = [];
  const wallDispatchers: number[] = [];
  const plain: number[] = [];
  const steps: Record<string, number>[] = [];
  try {
    for (let r = 1; r <= rounds; r++) {
      // Alternate which variant goes first: the machine's load drifts during a run.
      const order = r % 2 ? ['dispatchers', 'plain'] : ['plain', 'dispatchers'];
      let line = `round ${r}:`;
      for (const which of order) {
        if (which === 'dispatchers') {
          const plan = tc.plan({ name: `bench-d${r}` });
          const w0 = performance.now();
          const op: OperationView = await tc.run(0, '/v1/cluster/launch', { plan }, 240_000);
          const wall = performance.now() - w0;
          if (op.state !== 'succeeded') throw new Error(`launch failed: ${JSON.stringify(op.error)}`);
          const ms = Date.parse(op.endedAt!) - Date.parse(op.startedAt);
          viaDispatchers.push(ms);
          wallDispatchers.push(wall);
          steps.push(stepBreakdown(op.events));
          if ((await tc.run(0, '/v1/cluster/shutdown', {})).state !== 'succeeded') throw new Error('shutdown failed');
          if ((await tc.run(0, '/v1/cluster/cleanup', { confirmName: plan.name })).state !== 'succeeded') throw new Error('cleanup failed');
          line += ` dispatchers ${ms.toFixed(0)} ms (client wall ${wall.toFixed(0)} ms)`;
        } else {
          // The same processes, plain script, same readiness checks.
          const pplan = tc.plan({ name: `bench-p${r}` });
          const dataDirOf = (id: string) => tc.dispatchers.find((d) => d.id === id)!.dataDir;
          const c = await plainLaunch(pplan, { dataDirOf, binaries: PG_HA_DEBIAN_BINARIES, secrets: generateSecrets(loadEngine('pg-ha')), runAs, pki: await issuePlanPki(pplan) });
          plain.push(c.readyMs);
          await c.stop();
          await killMatching(join(tc.root, 'd1', 'data', 'c', pplan.name));
          for (const d of tc.dispatchers) await killMatching(join(d.dataDir, 'c', pplan.name));
          for (const d of tc.dispatchers) rmSync(join(d.dataDir, 'c', pplan.name), { recursive: true, force: true });
          line += ` plain ${c.readyMs.toFixed(0)} ms`;
        }
      }
      console.error(line);
    }
  } finally {
    await tc.teardown();
  }
  const md = median(viaDispatchers);
  const mp = median(plain);
  const result = {
    rounds,
    dispatchersMs: viaDispatchers.map(Math.round),
    dispatchersWallMs: wallDispatchers.map(Math.round),
    plainMs: plain.map(Math.round),
    medianDispatchersMs: Math.round(md),
    medianPlainMs: Math.round(mp),
    spreadDispatchersMs: [Math.round(Math.min(...viaDispatchers)), Math.round(Math.max(...viaDispatchers))],
    spreadPlainMs: [Math.round(Math.min(...plain)), Math.round(Math.max(...plain))],
    ratio: Number((md / mp).toFixed(3)),
    // Rounds are paired (same round, adjacent in time): the median of the per-round ratios.
    medianPairedRatio: Number(median(viaDispatchers.map((d, i) => d / plain[i])).toFixed(3)),
    pairedRatios: viaDispatchers.map((d, i) => Number((d / plain[i]).toFixed(3))),
    target: 1.02,
    // Where the dispatchers' time went: medians over the rounds of the events' step durations (ms).
    medianStepMs: Object.fromEntries(Object.keys(steps[0] ?? {}).map((k) => [k, Math.round(median(steps.map((x) => x[k] ?? 0)))])),
  };
  console.log(JSON.stringify(result, null, 2));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
