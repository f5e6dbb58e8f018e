/**
 * Patroni's maintenance mode as the rolling restart's failover hold (RestartActions.holdFailover /
 * releaseFailover; docs/DESIGN.md, "Rolling restart without failed statements"). While an etcd member
 * shuts down, a request Patroni 3.0.2 sends to it can fail with an error it does not retry (measured:
 * "failed to update leader lock" 37 ms after the member's client port closed, bench/agency-restart.ts),
 * and Patroni answers a failed lock update by demoting its leader at once (immediate shutdown: every
 * client connection cut). Paused, Patroni keeps the leader running through such a failure
 * ("continue to run as primary after failing to update leader lock in DCS") and fails nothing over.
 *
 * PATCH /config {"pause": true|null} to any DB server (client certificate of the cluster CA and the REST
 * password: an unsafe method), then wait until every DB server that answers reports it (GET /patroni
 * carries "pause": true while paused) — the same as `patronictl pause --wait`.
 */
import { DispatcherError } from '../../../api/errors.js';
import type { Plan, PlanProcess } from '../../../api/plan.js';
import { pollUntil } from '../../../shared/poll.js';
import { clusterHttps, type ClusterClientTls } from '../cluster-https.js';
import { hostPort } from '../template.js';

function restUrl(p: PlanProcess, path: string): string {
  const rest = p.ports.find((x) => x.name === 'rest');
  if (!rest) throw new DispatcherError('bad_request', `process ${p.id} has no port "rest"`);
  return `https://${hostPort(p.address, rest.port)}${path}`;
}

/** Pure: whether GET /patroni's answer says the member is paused (undefined: not an answer). */
export function reportsPaused(body: string): boolean | undefined {
  try {
    const j = JSON.parse(body) as { pause?: unknown; state?: unknown };
    return typeof j.state === 'string' ? j.pause === true : undefined;
  } catch {
    return undefined;
  }
}

async function setPause(plan: Plan, secrets: Record<string, string>, tls: ClusterClientTls, paused: boolean, timeoutMs: number): Promise<void> {
  const auth = `Basic ${Buffer.from(`patroni:${secrets['rest-password'] ?? ''}`).toString('base64')}`;
  const failures: string[] = [];
  // Any DB server writes the cluster's configuration to the agency; the first that accepts decides.
  for (const p of plan.processes.filter((x) => x.role === 'dbserver')) {
    try {
      const r = await clusterHttps(restUrl(p, '/config'), { method: 'PATCH', headers: { 'content-type': 'application/json', authorization: auth }, body: JSON.stringify({ pause: paused ? true : null }) }, tls, Math.min(5000, timeoutMs));
      if (r.status === 200) return;
      failures.push(`${p.id}: ${r.status} ${r.body.trim().slice(0, 200)}`);
    } catch (e) {
      failures.push(`${p.id}: ${(e as Error).message}`);
    }
  }
  throw new DispatcherError('operation_failed', `no DB server took Patroni's ${paused ? 'pause' : 'resume'}: ${failures.join('; ')}`);
}

/** Polls every DB server until each that answers reports `paused` (at least one must answer). */
async function waitAcknowledged(plan: Plan, tls: ClusterClientTls, paused: boolean, timeoutMs: number): Promise<void> {
  const dbs = plan.processes.filter((x) => x.role === 'dbserver');
  const states = async () =>
    Promise.all(
      dbs.map(async (p) => {
        try {
          const r = await clusterHttps(restUrl(p, '/patroni'), { method: 'GET' }, tls, 2000);
          return { id: p.id, paused: reportsPaused(r.body) };
        } catch {
          return { id: p.id, paused: undefined };
        }
      }),
    );
  await pollUntil(states, (s) => s.some((x) => x.paused !== undefined) && s.every((x) => x.paused === undefined || x.paused === paused), {
    timeoutMs,
    intervalMs: 100,
    onTimeout: (s) => new DispatcherError('operation_failed', `Patroni ${paused ? 'pause' : 'resume'} not acknowledged within ${timeoutMs} ms by: ${s.filter((x) => x.paused !== paused).map((x) => x.id).join(', ')}`),
  });
}

export function failoverHold(opts: { tls: () => ClusterClientTls | undefined }) {
  const material = (what: string) => {
    const t = opts.tls();
    if (!t) throw new DispatcherError('conflict', `this dispatcher has no cluster certificate: Patroni accepts a ${what} only from certificate holders`);
    return t;
  };
  return {
    async holdFailover(plan: Plan, secrets: Record<string, string>, timeoutMs: number) {
      if (plan.engine !== 'pg-ha') return;
      const tls = material('pause');
      await setPause(plan, secrets, tls, true, timeoutMs);
      await waitAcknowledged(plan, tls, true, timeoutMs);
    },
    async releaseFailover(plan: Plan, secrets: Record<string, string>, timeoutMs: number) {
      if (plan.engine !== 'pg-ha') return;
      const tls = material('resume');
      await setPause(plan, secrets, tls, false, timeoutMs);
      await waitAcknowledged(plan, tls, false, timeoutMs);
    },
  };
}
