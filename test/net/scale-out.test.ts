/**
 * Network tier (root; nft and the pg-ha Debian packages): scale out of a running cluster onto a FOURTH
 * host (docs/DESIGN.md, "Scaling"). Three namespace hosts run a launched pg-ha cluster (3 agents, 3 DB
 * servers, 1 coordinator); the fourth runs a started dispatcher that belongs to no cluster. Through d1,
 * from the outside host, `POST /v1/cluster/scale` adds d4 with two agents (the agency stays odd: 5), a DB
 * server and a coordinator. First, two refusals:
 *  - a change computed against another base version is a 409 before any operation exists;
 *  - with a port of agent-4 taken on d4, the scale fails at its first step (d4's preflight): d4 forgets
 *    the plan, d1..d3 store the plan without d4 again as the next version, nothing started.
 * Then the scale out itself, while a writer on the outside host INSERTs through coordinator-1 throughout
 * and an outside probe connects to every port of every host:
 *  - the operation runs the planner's steps in order: adopt d4, widen every firewall, agents one at a
 *    time (each healthy before the next), the DB server, the coordinator, coordinator-1 reconfigured;
 *  - every dispatcher stores the proposed plan as the same new version;
 *  - both new etcd members are voting members (etcd's member list, no learners), the new DB server
 *    streams from the leader (pg_stat_replication, seen through the coordinator);
 *  - no acknowledged write is lost; the new coordinator serves the data too;
 *  - from outside, cluster ports of all four hosts never opened, public ports of both coordinators did.
 * Everything (namespaces, dispatchers, processes, data dirs) is removed even when a test fails.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { operatorOutsideFirewall, requireExecutables, startNsHosts, tearDownNsTest } from '../helpers/ns-setup.js';
import type { TestNet } from '../helpers/netns.js';
import { clientIn, ndjson, socketClient, type NsCluster } from '../helpers/ns-cluster.js';
import { startOutsideProbe, type ProbeTarget } from '../helpers/outside-probe.js';
import { psqlClient, startNsWriter, type NsWriterResult } from '../helpers/ns-writer.js';
import { grownByHost } from '../helpers/scale-fixture.js';
import { planFromSpec } from '../../launcher/planner.js';
import { PG_HA_DEBIAN_BINARIES } from '../../launcher/local.js';
import type { Plan, PlanProcess } from '../../api/plan.js';
import type { OperationView } from '../../api/rest.js';
import type { DispatcherClient } from '../../client/dispatcher-client.js';
import type { PlanDiffView, RunningPlanView } from '../../api/plan-version.js';
import { planHash } from '../../server/core/plan-version.js';
import { dispatcherClientTls } from '../helpers/pg-cluster.js';

const NAME = 'nsscale';
const PSQL = PG_HA_DEBIAN_BINARIES.psql;

describe('scale out onto a fourth host (root, nft, pg-ha packages)', () => {
  let net: TestNet | undefined;
  let cluster: NsCluster | undefined;
  let running: Plan;
  let proposed: Plan;
  let launched = false;
  let writer: Awaited<ReturnType<typeof startNsWriter>> | undefined;
  let sock: DispatcherClient | undefined;

  const d1 = () => cluster!.dispatchers[0];
  const cred = () => ({ user: cluster!.user, password: cluster!.password });
  const port = (p: PlanProcess, name: string) => p.ports.find((x) => x.name === name)!.port;
  const logs = () => cluster!.dispatchers.map((d) => `--- ${d.id}\n${d.output().split('\n').slice(-25).join('\n')}`).join('\n');

  const runOp = async (path: string, body: unknown, timeoutMs: number): Promise<OperationView> => {
    const bodyFile = join(cluster!.root, `body-${Date.now()}.json`);
    writeFileSync(bodyFile, JSON.stringify(body), { mode: 0o600 });
    const r = await clientIn(net!, net!.outside!.ns, d1(), cred(), ['run', path, bodyFile], timeoutMs);
    const op = ndjson(r.stdout).find((l) => l.type === 'operation') as unknown as OperationView | undefined;
    assert.ok(op, `client exit ${r.code}: ${r.stderr}\n${logs()}`);
    return op;
  };
  const eventsText = (op: OperationView) => op.events.map((e) => `${e.step} ${e.host ?? ''} ${e.process ?? ''} ${e.message}`).join('\n');

  before(async () => {
    requireExecutables({ ...PG_HA_DEBIAN_BINARIES, nft: '/usr/sbin/nft' });
    ({ net, cluster } = await startNsHosts('cdso', { hosts: 4 }));
    running = planFromSpec({
      name: NAME,
      engine: 'pg-ha',
      dispatchers: cluster.specDispatchers().slice(0, 3),
      agents: 3,
      dbservers: 3,
      coordinators: 1,
      firewall: operatorOutsideFirewall(net),
    });
    proposed = grownByHost(running, cluster.specDispatchers()[3]);
  });

  after(async () => {
    writer?.kill();
    sock?.close();
    await tearDownNsTest({ launched, cluster, net, cleanupName: NAME, dispatcher: d1 });
  });

  test('launch on three hosts, then scale out onto the fourth while a writer runs: every write kept, new members vote and stream, the outside sees only public ports', { timeout: 420_000 }, async () => {
    launched = true;
    const launch = await runOp('/v1/cluster/launch', { plan: running, peerCredentials: {}, readyTimeoutMs: 120_000 }, 240_000);
    assert.equal(launch.state, 'succeeded', `launch: ${JSON.stringify(launch.error)}\n${eventsText(launch)}\n${logs()}`);

    // The database client on the outside host: verify-full against the cluster CA, through coordinator-1.
    sock = socketClient(d1(), 60_000);
    const conn = await sock.get<{ password: string; caCertificate: string }>('/v1/cluster/connection');
    const pg = psqlClient(cluster!.root, conn, PSQL);
    const coordinator = (plan: Plan, id: string) => plan.processes.find((p) => p.id === id)!;
    const conninfo = (c: PlanProcess) => `host=${c.address} port=${port(c, 'client')} user=postgres dbname=postgres`;
    const psqlOut = async (c: PlanProcess, statement: string) => {
      const r = await net!.exec(net!.outside!.ns, [...pg.env, PSQL, conninfo(c), '-XtAq', '-v', 'ON_ERROR_STOP=1', '-c', statement], { timeoutMs: 30_000 });
      assert.equal(r.code, 0, `psql via ${c.id}: ${r.stderr}`);
      return r.stdout.trim();
    };
    await psqlOut(coordinator(running, 'coordinator-1'), 'CREATE TABLE scale_writes (n int PRIMARY KEY)');

    // A change computed against another version: 409 before any operation exists.
    const staleFile = join(cluster!.root, 'stale.json');
    writeFileSync(staleFile, JSON.stringify({ plan: proposed, baseVersion: { number: 9, hash: planHash(proposed) } }), { mode: 0o600 });
    const stale = await clientIn(net!, net!.outside!.ns, d1(), cred(), ['run', '/v1/cluster/scale', staleFile], 60_000);
    assert.notEqual(stale.code, 0);
    assert.match(stale.stderr, /computed against plan version 9 .* but the running plan is version 1/, stale.stderr);

    // Failure half-way: d4 cannot run its part (a port of agent-4 is taken there), so the adoption fails at
    // preflight; d4 forgets the plan and d1..d3 store the plan without d4 again, as the next version.
    const host4 = cluster!.dispatchers[3];
    const agent4 = proposed.processes.find((p) => p.id === 'agent-4')!;
    const blocker = net!.spawnIn(host4.host.ns, [process.execPath, '-e', `require('net').createServer().listen(${port(agent4, 'client')}, '::', () => console.log('LISTENING'))`], { stdio: ['ignore', 'pipe', 'ignore'] });
    try {
      await new Promise<void>((r) => blocker.stdout!.once('data', () => r()));
      const failed = await runOp('/v1/cluster/scale', { plan: proposed, readyTimeoutMs: 60_000 }, 120_000);
      assert.equal(failed.state, 'failed', eventsText(failed));
      assert.match(failed.error!.message, /step 1\/7 \(adopt-dispatcher d4\) failed: preflight failed on 1 dispatcher/, failed.error!.message);
      assert.match(failed.error!.message, /not done: adopt-dispatcher d4; widen-firewall/);
      assert.ok(failed.events.some((e) => e.step === 'rollback' && /undone: adoption of the plan by d4/.test(e.message)), eventsText(failed));
    } finally {
      blocker.kill('SIGKILL');
    }
    const back = await sock.get<RunningPlanView>('/v1/cluster/plan');
    assert.deepEqual(back.version, { number: 3, hash: planHash(running) }, 'version 2 named d4; version 3 is the running plan again');
    assert.deepEqual(back.dispatchers.map((d) => [d.id, d.version?.number]), [['d1', 3], ['d2', 3], ['d3', 3]]);
    const d4sock = socketClient(host4, 10_000);
    try {
      assert.equal((await d4sock.get<{ state: string }>('/v1/cluster')).state, 'none', 'd4 forgot the plan');
    } finally {
      d4sock.close();
    }

    // The dry run names the steps the operation will run, against the running version.
    const diff = await sock.post<PlanDiffView>('/v1/cluster/plan/diff', { plan: proposed });
    const kinds = diff.scale.steps.map((s) => ('process' in s ? `${s.kind} ${s.process}` : 'host' in s ? `${s.kind} ${s.host}` : s.kind));
    assert.deepEqual(kinds, ['adopt-dispatcher d4', 'widen-firewall', 'add-agent agent-4', 'add-agent agent-5', 'add-dbserver dbserver-4', 'add-coordinator coordinator-2', 'reconfigure-coordinators'], JSON.stringify(diff.scale));

    // The outside view throughout: cluster ports of every host never open; public ports of both coordinators open.
    const targets: ProbeTarget[] = proposed.processes.flatMap((p) =>
      p.ports
        .filter((x) => x.exposure !== 'operator')
        .flatMap((x) =>
          proposed.dispatchers.find((d) => d.id === p.dispatcher)!.addresses.map((host) => ({ host, port: x.port, expect: x.exposure === 'public' ? ('sometimes' as const) : ('never' as const), label: `${p.id}/${x.name} ${host}:${x.port}` })),
        ),
    );
    const probe = await startOutsideProbe(net!, net!.outside!.ns, targets, { timeoutMs: 150 });
    writer = await startNsWriter(net!, net!.outside!.ns, pg, conninfo(coordinator(running, 'coordinator-1')), 'scale_writes');
    await new Promise((r) => setTimeout(r, 2000)); // writes before the change

    let scale: OperationView | undefined;
    let counts;
    let written: NsWriterResult;
    try {
      scale = await runOp('/v1/cluster/scale', { plan: proposed, baseVersion: diff.base, readyTimeoutMs: 120_000 }, 300_000);
      await new Promise((r) => setTimeout(r, 2000)); // writes after the change
    } finally {
      written = await writer.stop();
      writer = undefined;
      counts = await probe.finish();
    }
    assert.equal(scale.state, 'succeeded', `scale: ${JSON.stringify(scale.error)}\n${eventsText(scale)}\n${logs()}`);
    process.stderr.write(`# scale out: ${scale.events.at(-1)?.durationMs} ms; writer: ${written.acked.length} acknowledged, ${written.failedAttempts} failed attempts, longest gap ${written.longestGapMs} ms\n`);

    // Step order as run (one "step i/n" event per step, in order).
    const started = scale.events.filter((e) => /^step \d+\/\d+: /.test(e.message)).map((e) => e.message.replace(/^step \d+\/\d+: /, '').split(' (')[0]);
    assert.deepEqual(started.map((s) => s.replace(/ on d\d$/, '')), ['adopt-dispatcher d4', 'widen-firewall on d1, d2, d3, d4', 'add-agent agent-4', 'add-agent agent-5', 'add-dbserver dbserver-4', 'add-coordinator coordinator-2', 'reconfigure-coordinators coordinator-1']);

    // Every dispatcher stores the proposed plan as the same version.
    const view = await sock.get<RunningPlanView>('/v1/cluster/plan');
    assert.equal(view.version.hash, planHash(proposed));
    assert.deepEqual(view.dispatchers.map((d) => [d.id, d.reachable, d.version?.number, d.version?.hash]), proposed.dispatchers.map((d) => [d.id, true, view.version.number, view.version.hash]));

    // Five voting members (etcd 3.4: a learner would say isLearner).
    const tls = dispatcherClientTls(d1().dataDir);
    const agents = proposed.processes.filter((p) => p.role === 'agent');
    const members = await net!.exec(d1().host.ns, [process.execPath, '--input-type=module', '-e', `
      const { listMembers } = await import(${JSON.stringify(new URL('../../server/engines/pg-ha/etcd-members.js', import.meta.url).href)});
      const tls = JSON.parse(process.argv[1]);
      const r = await listMembers([${JSON.stringify(`https://${agents[0].address}:${port(agents[0], 'client')}`)}], { tls });
      process.stdout.write(JSON.stringify(r));
    `, JSON.stringify(tls)], { timeoutMs: 20_000 });
    assert.equal(members.code, 0, members.stderr);
    const list = JSON.parse(members.stdout) as { name: string; isLearner?: boolean }[];
    assert.deepEqual(list.map((m) => m.name).sort(), agents.map((a) => a.id).sort());
    assert.ok(list.every((m) => !m.isLearner), `no learner: ${members.stdout}`);

    // The new DB server streams from the leader.
    const d4 = proposed.dispatchers.find((d) => d.id === 'd4')!;
    const repl = await psqlOut(coordinator(proposed, 'coordinator-1'), "SELECT host(client_addr) || ' ' || state FROM pg_stat_replication");
    assert.ok(repl.split('\n').some((l) => l.startsWith(`${d4.addresses[0]} streaming`)), `dbserver-4 streams: ${repl}`);

    // No acknowledged write lost; the new coordinator serves the same data.
    assert.ok(written.acked.length > 20, `the writer wrote throughout: ${JSON.stringify({ ...written, acked: written.acked.length })}`);
    for (const via of ['coordinator-1', 'coordinator-2']) {
      const stored = new Set((await psqlOut(coordinator(proposed, via), 'SELECT n FROM scale_writes')).split('\n').map(Number));
      const lost = written.acked.filter((n) => !stored.has(n));
      assert.deepEqual(lost, [], `acknowledged writes missing through ${via}`);
    }

    // The outside probe: guarded ports never opened on any host; public ports of both coordinators did.
    const wrong = targets.map((t, i) => ({ t, c: counts![i] })).filter(({ t, c }) => (t.expect === 'never' ? c.open > 0 : c.open === 0));
    assert.deepEqual(wrong.map(({ t, c }) => `${t.label}: ${c.open} open of ${c.attempts}`), []);
  });
});
