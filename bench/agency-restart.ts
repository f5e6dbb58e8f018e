/**
 * What a rolling restart of the agency (the etcd members) does to the Patroni leader (issue 17, the
 * pause-restart flake): per round, `restart` of the agent role only, through the API, on a real local pg-ha
 * cluster (3 loopback dispatchers), while a sampler asks every etcd member for its leader every 100 ms.
 * Counts, per round: Patroni demotions (log lines of the DB servers), the longest time without an agency
 * leader seen by a quorum, how long each member was away (stop → ready), and what etcd logged about
 * leadership, and the failover hold's events (Patroni's maintenance mode around the agents). `--hog N` runs N busy loops (started and ended by this script, by pid) to load the machine.
 * Needs root and deploy/install-deps.sh.
 *
 * `--pgbench` runs pgbench -C (a connection per transaction) through the coordinator during every round.
 *
 *   npx tsc -p . && node dist/bench/agency-restart.js [--rounds 5] [--hog 2] [--pgbench] [--base-port 27300]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { agencyStatus } from '../server/engines/pg-ha-health.js';
import { dispatcherClientTls, startPgCluster, waitOperation } from '../test/helpers/pg-cluster.js';
import { pgbenchInit, pgbenchRun } from '../test/helpers/pgbench.js';
import { numberArg } from './stats.js';

/** Every file called `name` under dir (the dispatchers' process log dirs). */
function filesNamed(dir: string, name: string, out: string[] = []): string[] {
  for (const e of readdirSync(dir)) {
    const p = join(dir, e);
    let st;
    try {
      st = statSync(p);
    } catch {
      continue;
    }
    if (st.isDirectory()) filesNamed(p, name, out);
    else if (e === name) out.push(p);
  }
  return out;
}

/** Log files of processes whose directory path contains `idPart`. */
function logFiles(root: string, idPart: string): string[] {
  return [...filesNamed(root, 'stderr.log'), ...filesNamed(root, 'stdout.log')].filter((f) => f.includes(idPart));
}

/** Line counts per log file now: where this round's lines start. */
function marks(root: string, idPart: string): Map<string, number> {
  return new Map(logFiles(root, idPart).map((f) => [f, readFileSync(f, 'utf8').split('\n').length - 1]));
}

/** Lines matching re written since `since` in the logs of processes whose directory path contains `idPart`. */
function newLines(root: string, idPart: string, since: Map<string, number>, re: RegExp): string[] {
  return logFiles(root, idPart).flatMap((f) =>
    readFileSync(f, 'utf8')
      .split('\n')
      .slice(since.get(f) ?? 0)
      .filter((l) => re.test(l))
      .map((l) => `${f.split('/').slice(-2, -1)[0]}: ${l.slice(0, 400)}`),
  );
}

async function main() {
  const rounds = numberArg('rounds', 5);
  const hogs = numberArg('hog', 0);
  const root = mkdtempSync('/tmp/agency-restart-');
  const cl = await startPgCluster({ name: 'agencybench', basePort: numberArg('base-port', 27300), coordinators: 1, root });
  const children: ChildProcess[] = [];
  const demotion = /demot/i;
  // Patroni's signs of a DCS it could not reach in time (short of a demotion).
  const dcsTrouble = /ERROR|WARNING|Error|Retrying on|failed to update leader|Loop time exceeded|not accessible|timeout|demot|code/;
  const etcdLeadership = /leadership|transferee|elected leader|became leader|lost leader|skipped leadership/i;
  const rows: string[] = [];
  let totalDemotions = 0;
  let dcsTroubleLines = 0;
  // The trigger of a demotion (a failed leader-lock update), and the leader kept through it while paused.
  let lockUpdateFailures = 0;
  let keptWhilePaused = 0;
  let pgbenchFailures = 0;
  const withPgbench = process.argv.includes('--pgbench');
  try {
    const tls = dispatcherClientTls(cl.dispatchers[0].dataDir);
    const c = cl.client(0);
    const target = { port: cl.coordinatorPorts[0], pgpass: cl.pgpass, ca: tls.ca };
    if (withPgbench) await pgbenchInit(target);
    for (let i = 0; i < hogs; i++) {
      const h = spawn('/bin/sh', ['-c', 'while :; do :; done'], { stdio: 'ignore' });
      children.push(h);
    }
    for (let round = 1; round <= rounds; round++) {
      const dbMark = marks(root, 'dbserver');
      const etcdMark = marks(root, 'agent');
      const bench = withPgbench ? pgbenchRun(target, { seconds: 20, connectPerTransaction: true }) : undefined;
      await new Promise((r) => setTimeout(r, withPgbench ? 2000 : 0));
      let sampling = true;
      let leaderless = 0;
      let longestLeaderless = 0;
      let since: number | undefined;
      const sampler = (async () => {
        while (sampling) {
          const s = await agencyStatus(cl.plan, { tls, timeoutMs: 1000 });
          const now = Date.now();
          if (!s.hasLeader) {
            since ??= now;
            leaderless++;
          } else if (since !== undefined) {
            longestLeaderless = Math.max(longestLeaderless, now - since);
            since = undefined;
          }
          await new Promise((r) => setTimeout(r, 100));
        }
      })();
      const { operation } = await c.post<{ operation: string }>('/v1/cluster/restart', { processes: { roles: ['agent'] }, readyTimeoutMs: 60_000 });
      const op = await waitOperation(c, operation, 300_000);
      sampling = false;
      await sampler;
      if (since !== undefined) longestLeaderless = Math.max(longestLeaderless, Date.now() - since);
      const r = await bench;
      const demotions = newLines(root, 'dbserver', dbMark, demotion);
      const trouble = newLines(root, 'dbserver', dbMark, dcsTrouble);
      dcsTroubleLines += trouble.length;
      lockUpdateFailures += trouble.filter((l) => /failed to update leader lock/.test(l)).length;
      keptWhilePaused += newLines(root, 'dbserver', dbMark, /continue to run as primary/).length;
      const holds = op.events.filter((e) => e.step.startsWith('failover-')).map((e) => e.message);
      if (r) pgbenchFailures += r.failed + r.abortedClients;
      totalDemotions += demotions.length;
      const away = op.events
        .filter((e) => e.step === 'stop')
        .map((e) => {
          const ready = op.events.find((r) => r.step === 'ready' && r.process === e.process && Date.parse(r.at) >= Date.parse(e.at));
          const stopped = op.events.find((r) => r.step === 'start' && r.process === e.process && Date.parse(r.at) >= Date.parse(e.at));
          return `${e.process} stop ${stopped ? Date.parse(stopped.at) - Date.parse(e.at) : '?'} ms, away ${ready ? Date.parse(ready.at) - Date.parse(e.at) : '?'} ms`;
        });
      const plan = op.events.find((e) => e.step === 'plan')?.message.split('\n')[0] ?? '';
      rows.push(
        `round ${round}: ${op.state}, ${op.result?.durationMs} ms; ${plan}\n  ${holds.join(' | ') || 'no failover hold'}\n  ${away.join('; ')}\n  longest leaderless ${longestLeaderless} ms (${leaderless} samples)\n  ${r ? `pgbench -C: ${r.processed} tx, ${r.failed} failed, ${r.abortedClients} aborted clients\n  ` : ''}demotions ${demotions.length}; Patroni DCS trouble:${trouble.length ? `\n    ${trouble.join('\n    ')}` : ' none'}\n  etcd:\n    ${newLines(root, 'agent', etcdMark, etcdLeadership).filter((l) => !/elected leader/.test(l)).join('\n    ')}`,
      );
      console.log(rows[rows.length - 1]);
      await new Promise((r) => setTimeout(r, 3000));
    }
  } finally {
    for (const h of children) h.kill('SIGKILL');
    await cl.close();
  }
  console.log(JSON.stringify({ rounds, hogs, pgbench: withPgbench, totalDemotions, lockUpdateFailures, keptWhilePaused, dcsTroubleLines, pgbenchFailures }));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
