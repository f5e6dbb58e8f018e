/**
 * pg-ha's facts and actions for a rolling restart (RestartActions): the agency leader from etcd, the DB
 * leader from Patroni, and Patroni's switchover. Engine-specific, so it lives with the engine.
 */
import { execFile } from 'node:child_process';
import { DispatcherError } from '../../../api/errors.js';
import type { PlanProcess } from '../../../api/plan.js';
import { agencyStatus, dbserverState } from '../pg-ha-health.js';
import { psqlTlsEnv, type ClusterClientTls } from '../cluster-https.js';
import type { RestartActions } from '../../core/restart-actions.js';
import { poolerPause } from './pooler-pause.js';
import { patroniSwitchover } from './patroni-members.js';
import { failoverHold } from './failover-hold.js';

function port(p: PlanProcess, name: string): number {
  const x = p.ports.find((q) => q.name === name);
  if (!x) throw new DispatcherError('bad_request', `process ${p.id} has no port "${name}"`);
  return x.port;
}

/** Runs one SQL statement as the superuser on a DB server (password in the child's environment only). */
function psqlRun(psql: string, p: PlanProcess, password: string, sql: string, timeoutMs: number, tls?: ClusterClientTls): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(psql, [`host=${p.address} port=${port(p, 'postgres')} user=postgres dbname=postgres connect_timeout=2`, '-XtAq', '-c', sql], { env: { PGPASSWORD: password, PATH: '/usr/bin:/bin', ...psqlTlsEnv(tls) }, timeout: timeoutMs }, (err, _o, stderr) =>
      err ? reject(new DispatcherError('operation_failed', `psql on ${p.id}: ${String(stderr).trim() || err.message}`, { cause: err })) : resolve(),
    );
  });
}

/**
 * pg-ha: the agency leader from etcd, the DB leader from Patroni, and Patroni 3.0.2's switchover
 * (POST /switchover {"leader", "candidate"}), preceded (prepareSwitchover, outside the pause) by a CHECKPOINT
 * on the leader so its shutdown checkpoint — part of the pause — is short; PgBouncer's PAUSE/RESUME
 * (pooler-pause.ts); and Patroni's maintenance mode around the agency's restart (failover-hold.ts).
 */
export function pgHaActions(opts: { psql?: string; tls?: () => ClusterClientTls | undefined }): RestartActions {
  const tls = () => opts.tls?.();
  return {
    async agencyLeader(plan) {
      return plan.engine === 'pg-ha' ? (await agencyStatus(plan, { tls: tls() })).leaderId : undefined;
    },
    async dbLeader(plan, secrets) {
      if (plan.engine !== 'pg-ha') return undefined;
      const states = await Promise.all(plan.processes.filter((p) => p.role === 'dbserver').map((p) => dbserverState(plan, p.id, { tls: tls() })));
      const leaders = states.filter((s) => s.role === 'leader' && s.running);
      return leaders.length === 1 ? leaders[0].id : undefined;
      void secrets;
    },
    async prepareSwitchover(plan, secrets, leader) {
      const lp = plan.processes.find((p) => p.id === leader && p.role === 'dbserver');
      // Best effort: a failed CHECKPOINT only makes the leader's shutdown checkpoint (the pause) longer.
      if (lp && opts.psql && secrets['superuser-password']) await psqlRun(opts.psql, lp, secrets['superuser-password'], 'CHECKPOINT', 20_000, tls()).catch(() => undefined);
    },
    async switchover(plan, secrets, leader, prefer, timeoutMs) {
      const dbs = plan.processes.filter((p) => p.role === 'dbserver');
      const states = await Promise.all(dbs.map((p) => dbserverState(plan, p.id, { psql: opts.psql, superuserPassword: secrets['superuser-password'], tls: tls() })));
      const healthy = states.filter((s) => s.id !== leader && s.role === 'replica' && s.running && s.streaming !== false).map((s) => s.id);
      if (!healthy.length) throw new DispatcherError('operation_failed', `no healthy streaming replica to take over from ${leader}; the leader was not restarted`, { details: { process: leader } });
      const candidate = healthy.find((id) => prefer.includes(id)) ?? healthy[0];
      await patroniSwitchover(plan, secrets, leader, candidate, tls(), timeoutMs);
      return candidate;
    },
    ...poolerPause({ psql: opts.psql, tls }),
    ...failoverHold({ tls }),
    supports: (action) => action === 'switchover',
  };
}
