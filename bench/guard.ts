/**
 * Guard latency on three network-namespace hosts (root, nft): how long from "guard requested" to "rules
 * verified" when the guard step installs a cluster's policy on 3 hosts at once, and how long a drift check
 * takes to notice a flushed ruleset and put the table back. Both are given as ratios against a baseline
 * measured in the same run: one bare `nft list tables` inside a host namespace (the cost of starting the
 * tool, which every guard operation pays at least once).
 *
 *   npx tsc -p . && node dist/bench/guard.js [--rounds 20]
 */
import { execFileSync } from 'node:child_process';
import { createTestNet } from '../test/helpers/netns.js';
import type { Plan } from '../api/plan.js';
import { guardPolicyFromPlan } from '../server/core/firewall-policy.js';
import { NftablesBackend } from '../server/firewall/nftables.js';
import { Guard } from '../server/firewall/guard.js';

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : def;
}
const sorted = (xs: number[]) => [...xs].sort((a, b) => a - b);
const median = (xs: number[]) => sorted(xs)[Math.floor(xs.length / 2)];
const spread = (xs: number[]) => {
  const s = sorted(xs);
  return { p10: s[Math.floor(s.length * 0.1)], p90: s[Math.min(s.length - 1, Math.floor(s.length * 0.9))] };
};
const ms = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e6;

async function main() {
  const rounds = Number(arg('rounds', '20'));
  const net = await createTestNet({ hosts: 3, outside: false, prefix: 'cdbg' });
  try {
    const plan: Plan = {
      apiVersion: 'dispatcher/v1',
      name: 'bench',
      engine: 'pg-ha',
      binaries: {},
      dataRoot: 'clusters',
      dispatchers: net.hosts.map((h, i) => ({ id: `d${i + 1}`, endpoint: `https://${h.ipv4}:8528`, fingerprint: Array(32).fill('CD').join(':'), addresses: [h.ipv4, h.ipv6], allowAgents: true, allowDBservers: true, allowCoordinators: true })),
      processes: net.hosts.flatMap((h, i) => [
        { id: `agent-${i + 1}`, role: 'agent' as const, dispatcher: `d${i + 1}`, address: h.ipv4, ports: [{ name: 'client', port: 2381, exposure: 'cluster' as const }, { name: 'peer', port: 2382, exposure: 'cluster' as const }], dataDir: `a${i}`, args: [] },
        { id: `db-${i + 1}`, role: 'dbserver' as const, dispatcher: `d${i + 1}`, address: h.ipv4, ports: [{ name: 'postgres', port: 5433, exposure: 'cluster' as const }, { name: 'rest', port: 8008, exposure: 'cluster' as const }], dataDir: `b${i}`, args: [] },
        { id: `coord-${i + 1}`, role: 'coordinator' as const, dispatcher: `d${i + 1}`, address: h.ipv4, ports: [{ name: 'client', port: 5000, exposure: 'public' as const }, { name: 'stats', port: 7000, exposure: 'operator' as const }], dataDir: `c${i}`, args: [] },
      ]),
      firewall: { mode: 'guard', backend: 'nftables', clientSources: ['0.0.0.0/0', '::/0'], operatorSources: ['192.0.2.10'], sshPort: 22, outboundAllow: false },
    };
    const guards = net.hosts.map((h) => new Guard({ backend: new NftablesBackend({ netns: h.ns }) }));
    const policies = net.hosts.map((_h, i) => guardPolicyFromPlan(plan, `d${i + 1}`));
    const baseline: number[] = [];
    const guard3: number[] = [];
    const repair: number[] = [];
    for (let r = 0; r < rounds; r++) {
      let t0 = process.hrtime.bigint();
      execFileSync('ip', ['netns', 'exec', net.hosts[0].ns, 'nft', 'list', 'tables']);
      baseline.push(ms(t0));
      // Guard requested on 3 hosts at once → every host's rules read back and compared.
      for (const g of guards) await g.remove();
      t0 = process.hrtime.bigint();
      await Promise.all(guards.map((g, i) => g.apply(policies[i])));
      const ok = await Promise.all(guards.map((g) => g.verify()));
      guard3.push(ms(t0));
      if (!ok.every(Boolean)) throw new Error('guard not verified');
      // Drift: the ruleset is flushed; one drift check notices and re-applies.
      execFileSync('ip', ['netns', 'exec', net.hosts[1].ns, 'nft', 'flush', 'ruleset']);
      t0 = process.hrtime.bigint();
      const repaired = await guards[1].checkDrift();
      repair.push(ms(t0));
      if (!repaired || !(await guards[1].verify())) throw new Error('drift not repaired');
    }
    for (const g of guards) await g.remove();
    const b = median(baseline);
    const row = (name: string, xs: number[]) => ({ name, medianMs: Number(median(xs).toFixed(1)), ...Object.fromEntries(Object.entries(spread(xs)).map(([k, v]) => [k + 'Ms', Number(v.toFixed(1))])), ratioToBaseline: Number((median(xs) / b).toFixed(2)) });
    console.log(JSON.stringify({ rounds, rows: [row('baseline: one `nft list tables` in a namespace', baseline), row('guard requested → rules verified, 3 hosts in parallel', guard3), row('drift check after `nft flush ruleset` → table back', repair)] }, null, 2));
  } finally {
    await net.destroy();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
