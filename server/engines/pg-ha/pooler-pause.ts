/**
 * PgBouncer's admin console for a rolling restart (docs/DESIGN.md, "Rolling restart without failed
 * statements"): PAUSE every chosen coordinator's PgBouncer (it waits for running transactions, then holds
 * new ones), RECONNECT + RESUME afterwards, and wait until each coordinator's loopback HAProxy routes to the
 * new leader only. The console is reached like any client, over TLS verified against the cluster CA, as
 * the admin user whose password is a cluster secret (docs/SECURITY.md, "Connection pooler admin console").
 */
import { execFile } from 'node:child_process';
import { DispatcherError } from '../../../api/errors.js';
import type { Plan, PlanProcess } from '../../../api/plan.js';
import { pollUntil } from '../../../shared/poll.js';
import { coordinatorRouting } from '../pg-ha-health.js';
import { psqlTlsEnv, type ClusterClientTls } from '../cluster-https.js';

/** The admin user of pgbouncer.ini (templates/pg-ha/engine.yaml vars.poolerAdminUser). */
const ADMIN_USER = 'dispatcher';

function coordinator(plan: Plan, id: string): PlanProcess {
  const p = plan.processes.find((x) => x.id === id && x.role === 'coordinator');
  if (!p) throw new DispatcherError('bad_request', `no coordinator ${id} in cluster ${plan.name}`);
  return p;
}

/** One admin-console command on a coordinator's PgBouncer; the password only in the child's environment. */
function adminCommand(psql: string, p: PlanProcess, password: string, command: string, timeoutMs: number, tls: ClusterClientTls | undefined): Promise<void> {
  const port = p.ports.find((x) => x.name === 'client')!.port;
  return new Promise((resolve, reject) => {
    execFile(
      psql,
      [`host=${p.address} port=${port} user=${ADMIN_USER} dbname=pgbouncer connect_timeout=2`, '-XtAq', '-c', command],
      { env: { PGPASSWORD: password, PATH: '/usr/bin:/bin', ...psqlTlsEnv(tls) }, timeout: timeoutMs },
      (err, _o, stderr) => (err ? reject(new DispatcherError('operation_failed', `${command} on ${p.id}'s PgBouncer: ${String(stderr).trim() || (err.killed ? `no answer within ${timeoutMs} ms` : err.message)}`, { cause: err })) : resolve()),
    );
  });
}

export interface PoolerPauseOptions {
  psql?: string;
  tls: () => ClusterClientTls | undefined;
}

function requirePsql(opts: PoolerPauseOptions): string {
  if (!opts.psql) throw new DispatcherError('conflict', 'this dispatcher has no psql configured (engines.pg-ha.binaries.psql): it cannot pause the coordinators');
  return opts.psql;
}

function adminPassword(secrets: Record<string, string>): string {
  const pw = secrets['pooler-admin-password'];
  if (!pw) throw new DispatcherError('conflict', 'this cluster has no pooler admin password (launched before PgBouncer fronted the coordinators): launch it again');
  return pw;
}

export function poolerPause(opts: PoolerPauseOptions) {
  return {
    async pauseCoordinators(plan: Plan, secrets: Record<string, string>, ids: string[], timeoutMs: number): Promise<void> {
      const psql = requirePsql(opts);
      const pw = adminPassword(secrets);
      // All at once: PAUSE returns when that pooler's running transactions are done.
      await Promise.all(ids.map((id) => adminCommand(psql, coordinator(plan, id), pw, 'PAUSE', timeoutMs, opts.tls())));
    },
    async resumeCoordinators(plan: Plan, secrets: Record<string, string>, ids: string[]): Promise<void> {
      const psql = requirePsql(opts);
      const pw = adminPassword(secrets);
      const res = await Promise.allSettled(
        ids.map(async (id) => {
          const p = coordinator(plan, id);
          // RECONNECT: server connections opened before the pause may lead to the old leader; close them
          // as they are released. Best effort: RESUME is what must happen.
          await adminCommand(psql, p, pw, 'RECONNECT', 5000, opts.tls()).catch(() => undefined);
          await adminCommand(psql, p, pw, 'RESUME', 5000, opts.tls()).catch((e: DispatcherError) => {
            // Not paused (a pause that never took, or a restarted PgBouncer): nothing to resume.
            if (!/not paused/i.test(e.message)) throw e;
          });
        }),
      );
      const failed = res.flatMap((r) => (r.status === 'rejected' ? [(r.reason as Error).message] : []));
      if (failed.length) throw new DispatcherError('operation_failed', `RESUME failed: ${failed.join('; ')}`);
    },
    async waitCoordinatorsRouting(plan: Plan, ids: string[], leader: string | undefined, timeoutMs: number): Promise<void> {
      const tls = opts.tls();
      await pollUntil(
        () => Promise.all(ids.map((id) => coordinatorRouting(plan, id, { timeoutMs: 1000, tls }))),
        (states) => states.every((s) => s.ok && (leader === undefined || s.primariesUp[0] === leader)),
        {
          timeoutMs,
          intervalMs: 50,
          onTimeout: (states) =>
            new DispatcherError('operation_failed', `coordinators do not route to ${leader ?? 'one primary'} within ${timeoutMs} ms: ${states.map((s) => `${s.id} → ${s.primariesUp.join('+') || 'none'}`).join(', ')}`),
        },
      );
    },
  };
}
