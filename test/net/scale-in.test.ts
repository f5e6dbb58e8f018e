/**
 * Network tier (root; nft and the pg-ha Debian packages): scale in and replace a dead machine
 * (docs/DESIGN.md, "Scaling"). Five namespace hosts and an outside host: a pg-ha cluster is launched on
 * d1..d4 (agents on d1..d3 and two on d4, a DB server on each, coordinator-1 on d1, coordinator-2 on d4); d5 runs a
 * started dispatcher that belongs to no cluster. A writer on the outside host INSERTs through coordinator-1
 * throughout; every operation goes through d1 from the outside host (pinned HTTPS, password).
 *  1. scale in: d4 and its processes leave (`POST /v1/cluster/scale`; the DB leader is put on dbserver-4
 *     and the etcd leader on agent-4 first, so both moves have work): coordinator-2 stopped, the DB leader
 *     moved to a DB server that stays, dbserver-4 stopped and its Patroni member removed, coordinator-1
 *     reconfigured, etcd leadership handed over and agent-4, agent-5 removed one at a time (5 → 4 → 3),
 *     every firewall shrunk, d4 released (its data kept; its certificate no longer opens d1's node routes);
 *  2. replace: d3's dispatcher and processes are killed by pid and its NAMESPACE DELETED; `POST
 *     /v1/cluster/replace {dead: d3, with: d5}`: agent-3's member removed before agent-4 joins on d5,
 *     dbserver-4 re-created on d5 as a streaming replica, coordinators and firewalls updated.
 * After each operation: every dispatcher stores the proposed plan as the same version, the agency's and
 * Patroni's members are the plan's, and an outside scan matches the plan (public ports of the plan's
 * coordinators open, no cluster port open anywhere, the gone hosts' ports closed); during each, cluster
 * ports never open. At the end: no acknowledged write lost.
 *
 * Over 300 lines on purpose: one story (launch → scale in → a machine dies → replace) on one cluster, with
 * the in-namespace helpers it alone needs; split, each part would launch its own cluster (≈ 1 min each).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { operatorOutsideFirewall, requireExecutables, startNsHosts, tearDownNsTest } from '../helpers/ns-setup.js';
import type { TestNet } from '../helpers/netns.js';
import { clientIn, ndjson, socketClient, type NsCluster, type NsDispatcher } from '../helpers/ns-cluster.js';
import { startOutsideProbe, type ProbeTarget } from '../helpers/outside-probe.js';
import { psqlClient, startNsWriter, type NsWriterResult } from '../helpers/ns-writer.js';
import { dispatcherClientTls } from '../helpers/pg-cluster.js';
import { planFromSpec } from '../../launcher/planner.js';
import { PG_HA_DEBIAN_BINARIES } from '../../launcher/local.js';
import type { Plan, PlanProcess } from '../../api/plan.js';
import type { OperationView } from '../../api/rest.js';
import type { RunningPlanView } from '../../api/plan-version.js';
import { planHash } from '../../server/core/plan-version.js';
import { replacePlan } from '../../server/core/replace-plan.js';

const NAME = 'nsscalein';
const PSQL = PG_HA_DEBIAN_BINARIES.psql;
const DIST = new URL('../../', import.meta.url).href;

describe('scale in and replace a dead machine (root, nft, pg-ha packages)', () => {
  let net: TestNet | undefined;
  let cluster: NsCluster | undefined;
  let launched = false;
  let writer: Awaited<ReturnType<typeof startNsWriter>> | undefined;

  const d = (i: number) => cluster!.dispatchers[i];
  const cred = () => ({ user: cluster!.user, password: cluster!.password });
  const port = (p: PlanProcess, name: string) => p.ports.find((x) => x.name === name)!.port;
  const logs = () => cluster!.dispatchers.map((x) => `--- ${x.id}\n${x.output().split('\n').slice(-25).join('\n')}`).join('\n');
  const eventsText = (op: OperationView) => op.events.map((e) => `${e.step} ${e.host ?? ''} ${e.process ?? ''} ${e.message}`).join('\n');
  /** "kind: ms" of every step, from the "step i/n done" events (for the record, never asserted). */
  const stepTimes = (op: OperationView) => {
    const names = stepsRun(op);
    return op.events.filter((e) => /^step \d+\/\d+ done$/.test(e.message)).map((e, i) => `${names[i]?.split(' (')[0]}: ${e.durationMs} ms`).join('; ');
  };
  const stepsRun = (op: OperationView) => op.events.filter((e) => /^step \d+\/\d+: /.test(e.message)).map((e) => e.message.replace(/^step \d+\/\d+: /, ''));

  const runOp = async (path: string, body: unknown, timeoutMs: number): Promise<OperationView> => {
    const bodyFile = join(cluster!.root, `body-${Date.now()}.json`);
    writeFileSync(bodyFile, JSON.stringify(body), { mode: 0o600 });
    const r = await clientIn(net!, net!.outside!.ns, d(0), cred(), ['run', path, bodyFile], timeoutMs);
    const op = ndjson(r.stdout).find((l) => l.type === 'operation') as unknown as OperationView | undefined;
    assert.ok(op, `client exit ${r.code}: ${r.stderr}\n${logs()}`);
    return op;
  };

  /** Runs `code` (an async function body; `mod(path)` imports from dist/, `args` is `input`) inside namespace `ns`. */
  const engineIn = async <T>(ns: string, code: string, input: unknown): Promise<T> => {
    const script = `
      const mod = (p) => import(new URL(p, ${JSON.stringify(DIST)}).href);
      let raw = ''; for await (const c of process.stdin) raw += c;
      const args = JSON.parse(raw);
      const out = await (async () => { ${code} })();
      process.stdout.write(JSON.stringify(out ?? null));`;
    const r = await net!.exec(ns, [process.execPath, '--input-type=module', '-e', script], { input: JSON.stringify(input), timeoutMs: 120_000 });
    assert.equal(r.code, 0, `${r.stderr}\n${logs()}`);
    return JSON.parse(r.stdout) as T;
  };
  const tls = () => dispatcherClientTls(d(0).dataDir);
  const secrets = () => (JSON.parse(readFileSync(join(d(0).dataDir, 'cluster', 'secrets.json'), 'utf8')) as { secrets: Record<string, string> }).secrets;

  /** The agency's member names and the Patroni member keys, asked from d1's namespace. */
  const members = (plan: Plan) =>
    engineIn<{ etcd: { name: string; learner: boolean }[]; patroni: string[] }>(
      d(0).host.ns,
      `const { listMembers, agencyEndpoints } = await mod('server/engines/pg-ha/etcd-members.js');
       const { etcdAgency } = await mod('server/engines/agency-kv.js');
       const etcd = await listMembers(agencyEndpoints(args.plan), { tls: args.tls });
       const keys = await etcdAgency(args.plan, () => args.tls).list('/cluster-dispatcher/' + args.plan.name + '/members/');
       return { etcd: etcd.map((m) => ({ name: m.name, learner: m.learner })), patroni: keys.map((k) => k.key.split('/').pop()).sort() };`,
      { plan, tls: tls() },
    );

  /** What the outside sees of `plan`: public ports of its coordinators open, every cluster port closed; `gone` hosts' old ports closed. */
  const scanTargets = (plan: Plan, opts: { gone?: Plan[]; publicSometimes?: boolean } = {}): ProbeTarget[] => {
    const hostsOf = (p: Plan) => new Map(p.dispatchers.map((x) => [x.id, x.addresses]));
    const out: ProbeTarget[] = [];
    const add = (src: Plan, p: PlanProcess, stays: boolean) => {
      for (const x of p.ports.filter((y) => y.exposure !== 'operator')) {
        for (const host of hostsOf(src).get(p.dispatcher) ?? []) {
          const open = stays && x.exposure === 'public' && opts.publicSometimes !== false;
          out.push({ host, port: x.port, expect: open ? 'sometimes' : 'never', label: `${p.id}/${x.name} ${host}:${x.port}${stays ? '' : ' (gone)'}` });
        }
      }
    };
    for (const p of plan.processes) add(plan, p, true);
    for (const g of opts.gone ?? []) for (const p of g.processes.filter((q) => !plan.processes.some((r) => r.id === q.id && r.dispatcher === q.dispatcher))) add(g, p, false);
    return out;
  };
  const scan = async (targets: ProbeTarget[], ms: number) => {
    const probe = await startOutsideProbe(net!, net!.outside!.ns, targets, { timeoutMs: 150 });
    await new Promise((r) => setTimeout(r, ms));
    const counts = await probe.finish();
    return targets.map((t, i) => ({ t, c: counts[i] })).filter(({ t, c }) => (t.expect === 'never' ? c.open > 0 : c.open === 0)).map(({ t, c }) => `${t.label}: ${c.open} open of ${c.attempts}`);
  };

  const storedEverywhere = async (plan: Plan) => {
    const sock = socketClient(d(0), 60_000);
    try {
      const view = await sock.get<RunningPlanView>('/v1/cluster/plan');
      assert.equal(view.version.hash, planHash(plan), 'd1 stores the proposed plan');
      assert.deepEqual(view.dispatchers.map((x) => [x.id, x.reachable, x.version?.hash]), plan.dispatchers.map((x) => [x.id, true, view.version.hash]));
    } finally {
      sock.close();
    }
  };

  let launchPlan: Plan;
  let env: string[];
  const conninfo = (c: PlanProcess) => `host=${c.address} port=${port(c, 'client')} user=postgres dbname=postgres`;
  const psqlOut = async (c: PlanProcess, statement: string) => {
    const r = await net!.exec(net!.outside!.ns, [...env, PSQL, conninfo(c), '-XtAq', '-v', 'ON_ERROR_STOP=1', '-c', statement], { timeoutMs: 30_000 });
    assert.equal(r.code, 0, `psql via ${c.id}: ${r.stderr}`);
    return r.stdout.trim();
  };

  before(async () => {
    requireExecutables({ ...PG_HA_DEBIAN_BINARIES, nft: '/usr/sbin/nft' });
    ({ net, cluster } = await startNsHosts('cdsi', { hosts: 5 }));
    const p = planFromSpec({ name: NAME, engine: 'pg-ha', dispatchers: cluster.specDispatchers().slice(0, 4), agents: 5, dbservers: 4, coordinators: 2, firewall: operatorOutsideFirewall(net) });
    // coordinator-2 and agent-5 on d4 too (the planner spreads them onto d2 and d1; their ports are free on
    // d4): the host that leaves runs every role, and two agents, so the agency shrinks 5 → 4 → 3.
    for (const id of ['coordinator-2', 'agent-5']) Object.assign(p.processes.find((x) => x.id === id)!, { dispatcher: 'd4', address: p.dispatchers[3].addresses[0] });
    assert.deepEqual(p.processes.filter((x) => x.role === 'agent').map((x) => x.dispatcher), ['d1', 'd2', 'd3', 'd4', 'd4']);
    launchPlan = p;
  });

  after(async () => {
    writer?.kill();
    await tearDownNsTest({ launched, cluster, net, cleanupName: NAME, dispatcher: () => d(0) });
  });

  test('launch on four hosts; scale in the fourth; replace the third after its namespace is deleted — writes kept, scans match the plan', { timeout: 600_000 }, async () => {
    launched = true;
    const launch = await runOp('/v1/cluster/launch', { plan: launchPlan, peerCredentials: {}, readyTimeoutMs: 120_000 }, 240_000);
    assert.equal(launch.state, 'succeeded', `launch: ${JSON.stringify(launch.error)}\n${eventsText(launch)}\n${logs()}`);
    const c1 = launchPlan.processes.find((x) => x.id === 'coordinator-1')!;

    const sock = socketClient(d(0), 60_000);
    const conn = await sock.get<{ password: string; caCertificate: string }>('/v1/cluster/connection');
    sock.close();
    const client = psqlClient(cluster!.root, conn, PSQL);
    env = client.env;
    await psqlOut(c1, 'CREATE TABLE scalein_writes (n int PRIMARY KEY)');
    assert.deepEqual(await scan(scanTargets(launchPlan), 1500), [], 'after the launch the outside sees the plan');

    // The DB leader onto dbserver-4, so that scaling d4 in has a leader to move away.
    const onD4 = await engineIn<string | null>(
      d(0).host.ns,
      `const { switchoverAway } = await mod('server/engines/pg-ha/patroni-members.js');
       const { pgHaActions } = await mod('server/engines/pg-ha/restart-actions.js');
       const actions = pgHaActions({ psql: args.psql, tls: () => args.tls });
       return switchoverAway(actions, args.plan, args.secrets, ['dbserver-1', 'dbserver-2', 'dbserver-3'], 60000);`,
      { plan: launchPlan, secrets: secrets(), tls: { ...tls(), caFile: join(d(0).dataDir, 'cluster', 'ca.crt') }, psql: PSQL },
    );
    assert.ok(onD4 === 'dbserver-4' || onD4 === null, String(onD4));

    // The agency's leadership onto agent-4, so that its removal has a leader to hand over first.
    const agencyLeader = await engineIn<string | undefined>(
      d(0).host.ns,
      `const { agencyStatus } = await mod('server/engines/pg-ha-health.js');
       const { agencyEndpoints, agentPeerUrl, moveLeaderAway } = await mod('server/engines/pg-ha/etcd-members.js');
       const before = (await agencyStatus(args.plan, { tls: args.tls })).leaderId;
       const agent = (id) => args.plan.processes.find((p) => p.id === id);
       if (before !== 'agent-4') await moveLeaderAway(agencyEndpoints(args.plan), agentPeerUrl(agent(before)), [agentPeerUrl(agent('agent-4'))], { tls: args.tls });
       return (await agencyStatus(args.plan, { tls: args.tls })).leaderId;`,
      { plan: launchPlan, tls: tls() },
    );
    assert.equal(agencyLeader, 'agent-4');

    writer = await startNsWriter(net!, net!.outside!.ns, client, conninfo(c1), 'scalein_writes');
    await new Promise((r) => setTimeout(r, 2000));
    let written: NsWriterResult | undefined;
    try {
      // ---- 1. scale in: d4 and its processes leave.
      const shrunk: Plan = { ...structuredClone(launchPlan), dispatchers: launchPlan.dispatchers.filter((x) => x.id !== 'd4'), processes: launchPlan.processes.filter((x) => x.dispatcher !== 'd4') };
      const during1 = await startOutsideProbe(net!, net!.outside!.ns, scanTargets(shrunk, { gone: [launchPlan] }).filter((t) => t.expect === 'never' && !t.label.endsWith('(gone)')), { timeoutMs: 150 });
      const t0 = Date.now();
      const scaleIn = await runOp('/v1/cluster/scale', { plan: shrunk, readyTimeoutMs: 120_000 }, 300_000);
      const scaleInMs = Date.now() - t0;
      const closed1 = await during1.finish();
      assert.equal(scaleIn.state, 'succeeded', `scale in: ${JSON.stringify(scaleIn.error)}\n${eventsText(scaleIn)}\n${logs()}`);
      assert.deepEqual(stepsRun(scaleIn).map((s) => s.split(' (')[0]), [
        'remove-coordinator coordinator-2 on d4',
        'switchover-away from dbserver-4',
        'remove-dbserver dbserver-4 on d4',
        'reconfigure-coordinators coordinator-1',
        'remove-agent agent-4 on d4',
        'remove-agent agent-5 on d4',
        'shrink-firewall on d1, d2, d3',
        'release-dispatcher d4',
      ]);
      assert.match(eventsText(scaleIn), /the DB leader moved to dbserver-\d, which stays/);
      assert.match(eventsText(scaleIn), /etcd leadership moved from agent-4 to member \d+/);
      assert.deepEqual(closed1.filter((c) => c.open > 0), [], 'no cluster port of a staying host opened during the scale in');
      await storedEverywhere(shrunk);
      const m1 = await members(shrunk);
      assert.deepEqual(m1.etcd.map((m) => m.name).sort(), ['agent-1', 'agent-2', 'agent-3']);
      assert.deepEqual(m1.patroni, ['dbserver-1', 'dbserver-2', 'dbserver-3'], 'dbserver-4 left Patroni');
      assert.deepEqual(await scan(scanTargets(shrunk, { gone: [launchPlan] }), 1500), [], 'after the scale in the outside sees the shrunk plan');
      // d4 is released: no cluster, its data kept, and its certificate no longer opens d1's node routes.
      const d4 = socketClient(d(3), 30_000);
      try {
        const st = await d4.get<{ name?: string }>('/v1/cluster').catch((e: Error) => ({ error: e.message }));
        assert.ok(!('name' in st) || !st.name, `d4 has no cluster any more: ${JSON.stringify(st)}`);
      } finally {
        d4.close();
      }
      // From the outside host (an operator source: d1's firewall lets it in), d4's certificate is refused by
      // d1's node routes; from d4's own namespace d1's firewall no longer even lets it connect.
      const asD4 = { endpoint: d(0).endpoint, fingerprint: d(0).fingerprint, cert: readFileSync(join(d(3).dataDir, 'tls', 'cert.pem'), 'utf8'), key: readFileSync(join(d(3).dataDir, 'tls', 'key.pem'), 'utf8') };
      const callAsD4 = `const { DispatcherClient } = await mod('client/dispatcher-client.js');
         const c = new DispatcherClient({ endpoint: args.endpoint, fingerprint: args.fingerprint, clientCertificate: { cert: args.cert, key: args.key }, timeoutMs: 5000 });
         try { await c.get('/v1/node/status'); return { status: 200 }; } catch (e) { return { status: e.status, code: e.code, message: e.message }; } finally { c.close(); }`;
      const refused = await engineIn<{ status?: number; code?: string }>(net!.outside!.ns, callAsD4, asD4);
      assert.ok(refused.status === 401 || refused.status === 403, `the released d4's certificate on d1's node routes: ${JSON.stringify(refused)}`);
      const blocked = await engineIn<{ status?: number; code?: string }>(d(3).host.ns, callAsD4, asD4);
      assert.equal(blocked.code, 'peer_unreachable', `from d4's host, d1's dispatcher port is closed: ${JSON.stringify(blocked)}`);

      // ---- 2. d3 dies for good: its dispatcher and processes killed by pid, its namespace deleted.
      const leaderNow = await engineIn<string | undefined>(
        d(0).host.ns,
        `const { dbserverState } = await mod('server/engines/pg-ha-health.js');
         const s = await Promise.all(['dbserver-1', 'dbserver-2', 'dbserver-3'].map((id) => dbserverState(args.plan, id, { tls: args.tls })));
         return s.find((x) => x.role === 'leader')?.id;`,
        { plan: shrunk, tls: tls() },
      );
      // Replication is asynchronous: a dying leader may take its last acknowledged writes along (Patroni's
      // failover, not this product's). The machine that dies here holds no DB leader, so every write must stay.
      assert.notEqual(leaderNow, 'dbserver-3', 'the DB leader is not on the host that dies');
      await killHost(d(2));
      const d5 = cluster!.specDispatchers()[4];
      const replaced = replacePlan(shrunk, 'd3', { ...d5, allowAgents: true, allowDBservers: true, allowCoordinators: true });
      const during2 = await startOutsideProbe(net!, net!.outside!.ns, scanTargets(replaced).filter((t) => t.expect === 'never'), { timeoutMs: 150 });
      const t1 = Date.now();
      const replace = await runOp('/v1/cluster/replace', { dead: 'd3', with: d5, readyTimeoutMs: 180_000 }, 400_000);
      const replaceMs = Date.now() - t1;
      const closed2 = await during2.finish();
      assert.equal(replace.state, 'succeeded', `replace: ${JSON.stringify(replace.error)}\n${eventsText(replace)}\n${logs()}`);
      assert.deepEqual(stepsRun(replace).map((s) => s.split(' (')[0]), [
        'remove-dead-agent agent-3 on d3',
        'remove-dbserver dbserver-3 on d3',
        'adopt-dispatcher d5',
        'widen-firewall on d1, d2, d5',
        'add-agent agent-4 on d5',
        'add-dbserver dbserver-4 on d5',
        'reconfigure-coordinators coordinator-1',
        'shrink-firewall on d1, d2, d5',
      ]);
      assert.deepEqual(closed2.filter((c) => c.open > 0), [], 'no cluster port opened during the replace');
      await storedEverywhere(replaced);
      const m2 = await members(replaced);
      assert.deepEqual(m2.etcd.map((m) => m.name).sort(), ['agent-1', 'agent-2', 'agent-4']);
      assert.ok(m2.etcd.every((m) => !m.learner));
      assert.deepEqual(m2.patroni, ['dbserver-1', 'dbserver-2', 'dbserver-4']);
      const repl = await psqlOut(c1, "SELECT host(client_addr) || ' ' || state FROM pg_stat_replication");
      assert.ok(repl.split('\n').some((l) => l.startsWith(`${d5.addresses[0]} streaming`)), `dbserver-4 on d5 streams: ${repl}`);
      assert.deepEqual(await scan(scanTargets(replaced, { gone: [shrunk] }).filter((t) => !t.label.includes(net!.hosts[2].ipv4) && !t.label.includes(net!.hosts[2].ipv6)), 1500), [], 'after the replace the outside sees the new plan');
      process.stderr.write(`# scale in: ${scaleInMs} ms (${stepTimes(scaleIn)})\n# replace: ${replaceMs} ms (${stepTimes(replace)})\n`);
      await new Promise((r) => setTimeout(r, 2000));
    } finally {
      written = await writer.stop();
      writer = undefined;
    }
    process.stderr.write(`# writer: ${written.acked.length} acknowledged, ${written.failedAttempts} failed attempts, longest gap ${written.longestGapMs} ms\n`);
    assert.ok(written.acked.length > 20, `the writer wrote throughout: ${JSON.stringify({ ...written, acked: written.acked.length })}`);
    const stored = new Set((await psqlOut(c1, 'SELECT n FROM scalein_writes')).split('\n').map(Number));
    assert.deepEqual(written.acked.filter((n) => !stored.has(n)), [], 'no acknowledged write lost');
  });

  /** A machine gone for good: every process in its namespace killed by pid (ours: the test made the namespace), then the namespace deleted. */
  async function killHost(x: NsDispatcher): Promise<void> {
    const pidsIn = () => {
      try {
        return execFileSync('ip', ['netns', 'pids', x.host.ns], { encoding: 'utf8', timeout: 5000 }).split(/\s+/).filter(Boolean).map(Number);
      } catch {
        return [];
      }
    };
    for (const pid of pidsIn()) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone already */
      }
    }
    for (let i = 0; i < 50 && pidsIn().length; i++) await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(pidsIn(), [], `nothing runs in ${x.host.ns} any more`);
    execFileSync('ip', ['netns', 'delete', x.host.ns], { timeout: 10_000 });
  }
});
