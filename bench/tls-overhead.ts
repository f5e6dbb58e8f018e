/**
 * TLS overhead: launch-to-ready of a real pg-ha cluster (3 etcd, 3 Patroni/PostgreSQL, 1 HAProxy on
 * loopback) with cluster-internal TLS (templates/pg-ha, certificates from a per-run CA) ÷ the same
 * processes with the pre-TLS profile (bench/engines/plaintext/pg-ha: plain etcd and Patroni REST, pg_hba
 * "host"). Both in one run, alternating which goes first, fresh data every round, same readiness method:
 * bench/plain-launch.ts in launch order, each process's own readiness probe (etcd /health, psql through
 * the socket, HAProxy's stats showing a checked primary), no cluster-level gates (those need TLS now).
 * The certificates (CA + 7 leaves) are made inside the measured time of the TLS variant.
 *
 *   npx tsc -p . && node dist/bench/tls-overhead.js [--rounds 5]
 *
 * Needs root, the pg-ha Debian packages and the cluster-dispatcher user (deploy/install-deps.sh).
 */
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { planFromSpec } from '../launcher/planner.js';
import { PG_HA_DEBIAN_BINARIES, DEFAULT_RUN_AS } from '../launcher/local.js';
import { generateSecrets, loadEngine } from '../server/engines/index.js';
import { resolveUser } from '../server/cluster/run-as-user.js';
import { issuePlanPki } from '../server/pki/issue-plan.js';
import { plainLaunch } from './plain-launch.js';
import { median, numberArg } from './stats.js';

const PLAINTEXT_ENGINES = fileURLToPath(new URL('../../bench/engines/plaintext', import.meta.url));

async function main() {
  const rounds = numberArg('rounds', 5);
  const runAs = await resolveUser(DEFAULT_RUN_AS);
  const plaintext = loadEngine('pg-ha', PLAINTEXT_ENGINES);
  const withTls = loadEngine('pg-ha');
  const ms: Record<'tls' | 'plain', number[]> = { tls: [], plain: [] };
  for (let r = 1; r <= rounds; r++) {
    const order: ('tls' | 'plain')[] = r % 2 ? ['tls', 'plain'] : ['plain', 'tls'];
    for (const variant of order) {
      const root = mkdtempSync('/tmp/tls-bench-');
      chmodSync(root, 0o711);
      try {
        const plan = planFromSpec({
          name: `tlsb${r}${variant[0]}`,
          dispatchers: [{ id: 'b1', endpoint: 'https://127.0.0.1:18599', fingerprint: Array(32).fill('AB').join(':'), addresses: ['127.0.0.1'] }],
          agents: 3,
          dbservers: 3,
          coordinators: 1,
          // Off every default and test port range.
          ports: { 'agent.client': 24811, 'agent.peer': 24812, 'dbserver.postgres': 24433, 'dbserver.rest': 24008, 'coordinator.client': 24000, 'coordinator.readonly': 24001, 'coordinator.stats': 24700 },
        });
        const engine = variant === 'tls' ? withTls : plaintext;
        const t0 = performance.now();
        const pki = variant === 'tls' ? await issuePlanPki(plan) : undefined;
        const c = await plainLaunch(plan, { dataDirOf: () => root, binaries: PG_HA_DEBIAN_BINARIES, secrets: generateSecrets(engine), runAs, engine, healthGates: false, ...(pki ? { pki } : {}) });
        ms[variant].push(performance.now() - t0);
        await c.stop();
      } finally {
        rmSync(root, { recursive: true, force: true });
      }
    }
  }
  const spread = (xs: number[]) => [Math.round(Math.min(...xs)), Math.round(Math.max(...xs))];
  const result = {
    rounds,
    tlsMs: ms.tls.map(Math.round),
    plainMs: ms.plain.map(Math.round),
    medianTlsMs: Math.round(median(ms.tls)),
    medianPlainMs: Math.round(median(ms.plain)),
    spreadTlsMs: spread(ms.tls),
    spreadPlainMs: spread(ms.plain),
    ratio: Number((median(ms.tls) / median(ms.plain)).toFixed(3)),
    target: 1.1,
  };
  console.log(JSON.stringify(result, null, 2));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
