/**
 * Cluster tier: the building blocks of scale in (docs/DESIGN.md, "Scaling") against a REAL pg-ha cluster
 * (three dispatchers on loopback): etcd's move-leader (server/engines/pg-ha/etcd-members.ts), Patroni's
 * switchover to a DB server that stays and the removal of a stopped member's DCS key
 * (server/engines/pg-ha/patroni-members.ts), and a dispatcher leaving the cluster (POST /v1/node/release:
 * processes stopped, guard removed, plan and pins forgotten, data dirs kept). The last test takes the third
 * host out by hand with these steps, in the order the scale planner gives, while the cluster keeps
 * answering writes through its coordinator.
 *
 * Needs root, the pg-ha Debian packages and the cluster-dispatcher user (deploy/install-deps.sh).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Plan, PlanProcess } from '../../api/plan.js';
import { isDispatcherError, type DispatcherError } from '../../api/errors.js';
import { startTestCluster, type Dispatcher, type TestCluster } from '../helpers/cluster.js';
import { dispatcherClientTls } from '../helpers/pg-cluster.js';
import { agencyEndpoints, agentPeerUrl, listMembers, moveLeaderAway, removeMember } from '../../server/engines/pg-ha/etcd-members.js';
import { patroniMemberKey, removePatroniMember, switchoverAway } from '../../server/engines/pg-ha/patroni-members.js';
import { agencyStatus, dbserverState } from '../../server/engines/pg-ha-health.js';
import { pgHaActions } from '../../server/engines/pg-ha/restart-actions.js';
import { PSQL } from '../helpers/cluster.js';
import { etcdAgency } from '../../server/engines/agency-kv.js';
import { RemoteNode } from '../../server/cluster/remote-node.js';

let tc: TestCluster;
let plan: Plan;
let secrets: Record<string, string>;

before(async () => {
  tc = await startTestCluster({ n: 3, label: 'scalein' });
  plan = tc.plan({ name: 'scalein' });
  const op = await tc.run(0, '/v1/cluster/launch', { plan, readyTimeoutMs: 120_000 });
  assert.equal(op.state, 'succeeded', `launch failed: ${JSON.stringify(op.error)}`);
  secrets = (JSON.parse(readFileSync(join(tc.dispatchers[0].dataDir, 'cluster', 'secrets.json'), 'utf8')) as { secrets: Record<string, string> }).secrets;
  await tc.psql(rwPort(), 'CREATE TABLE acked (n int primary key)');
});

after(async () => {
  if (!tc) return;
  const { leaked } = await tc.teardown();
  assert.deepEqual(leaked, [], `processes left after teardown: ${leaked.join('\n')}`);
});

const tls = () => ({ ...dispatcherClientTls(tc.dispatchers[0].dir.dataDir), caFile: join(tc.dispatchers[0].dir.dataDir, 'cluster', 'ca.crt') });
/** pg-ha's actions as a dispatcher has them (psql checks that a candidate's WAL receiver streams). */
const actions = () => pgHaActions({ psql: PSQL, tls });
const agents = () => plan.processes.filter((p) => p.role === 'agent');
const dbservers = () => plan.processes.filter((p) => p.role === 'dbserver');
const rwPort = () => plan.processes.find((p) => p.role === 'coordinator')!.ports.find((x) => x.name === 'client')!.port;
/** A node-route caller with dispatcher `from`'s identity (its certificate and key, as the daemon has them). */
const nodeAs = (from: Dispatcher, to: number) =>
  new RemoteNode(plan.dispatchers[to], { cert: from.cert, key: readFileSync(join(from.dataDir, 'tls', 'key.pem'), 'utf8') }, undefined, 120_000);

let written = 0;
/** Which DB server acknowledged each write, and the leader changes seen, for a failure message. */
const dbLog: string[] = [];
async function write(): Promise<void> {
  written++;
  const at = await tc.psql(rwPort(), `INSERT INTO acked VALUES (${written}); SELECT inet_server_port()`);
  dbLog.push(`write ${written} acknowledged by the postgres on port ${at}`);
}

async function refusal(p: Promise<unknown>): Promise<DispatcherError> {
  try {
    await p;
  } catch (e) {
    if (isDispatcherError(e)) return e;
    throw e;
  }
  assert.fail('expected a refusal');
}

test('etcd move-leader: the leader hands over to a member that stays; asked again, nothing moves', async () => {
  const opts = { tls: tls(), timeoutMs: 5000 };
  const before = await agencyStatus(plan, { tls: opts.tls });
  assert.ok(before.leaderId, JSON.stringify(before));
  const leader = agents().find((a) => a.id === before.leaderId)!;
  // The target must be one of the given members: the first other agent, not just any.
  const target = agents().filter((a) => a.id !== leader.id)[1];
  const moved = await moveLeaderAway(agencyEndpoints(plan), agentPeerUrl(leader), [agentPeerUrl(target)], opts);
  assert.ok(moved, 'the leader moved');
  const after = await agencyStatus(plan, { tls: opts.tls });
  assert.equal(after.leaderId, target.id);
  assert.equal(await moveLeaderAway(agencyEndpoints(plan), agentPeerUrl(leader), [agentPeerUrl(target)], opts), undefined, 'not the leader any more: nothing to do');
  // No member that stays can take over: refused with 409, the leader stays.
  const refused = await refusal(moveLeaderAway(agencyEndpoints(plan), agentPeerUrl(target), [agentPeerUrl(target)], opts));
  assert.equal(refused.status, 409, refused.message);
  assert.equal((await agencyStatus(plan, { tls: opts.tls })).leaderId, target.id);
  await write();
});

test('Patroni switchover-away: the leader moves to a DB server that stays, never to one that goes too', async () => {
  const states = await Promise.all(dbservers().map((p) => dbserverState(plan, p.id, { tls: tls() })));
  const leader = states.find((s) => s.role === 'leader')!.id;
  const others = dbservers().map((p) => p.id).filter((id) => id !== leader);
  // The leader and one replica go: only the other replica may take over.
  const going = [leader, others[0]];
  const taken = await switchoverAway(actions(), plan, secrets, going, 60_000);
  assert.equal(taken, others[1]);
  assert.equal((await dbserverState(plan, others[1], { tls: tls() })).role, 'leader');
  assert.equal(await switchoverAway(actions(), plan, secrets, going, 60_000), undefined, 'the leader stays already: nothing to do');
  // Every DB server going: refused (409), nothing moves.
  const all = await refusal(switchoverAway(actions(), plan, secrets, dbservers().map((p) => p.id), 60_000));
  assert.equal(all.status, 409);
  assert.match(all.message, /no DB server that stays can take over/);
  await write();
});

test('scale in of the third host by hand: leaders away, DB server stopped and its member removed, agent removed, the dispatcher released; writes go on', async () => {
  const gone = plan.dispatchers[2];
  const mine = (role: PlanProcess['role']) => plan.processes.filter((p) => p.dispatcher === gone.id && p.role === role);
  const [db] = mine('dbserver');
  const [agent] = mine('agent');
  const peer = nodeAs(tc.dispatchers[0], 2);
  const kv = etcdAgency(plan, tls);
  const opts = { tls: tls(), timeoutMs: 5000 };
  try {
    // switchover-away (a no-op if db is not the leader), then remove-dbserver: stop, then the member key.
    // Right after the previous test's switchover: the new leader's replicas may still be catching up; only
    // one whose WAL receiver streams may take over (found by this test: a lagging one lost a write).
    await switchoverAway(actions(), plan, secrets, [db.id], 60_000);
    await write();
    const running = await refusal(removePatroniMember(plan, db.id, kv, { tls: tls() }));
    assert.equal(running.status, 409, 'a member that still runs is not removed (it would write its key again)');
    assert.ok(await kv.get(patroniMemberKey(plan.name, db.id)), 'the member key exists while it runs');
    await peer.stopProcess(db.id);
    assert.equal(await removePatroniMember(plan, db.id, kv, { tls: tls() }), true);
    assert.equal(await kv.get(patroniMemberKey(plan.name, db.id)), undefined);
    assert.equal(await removePatroniMember(plan, db.id, kv, { tls: tls() }), false, 'removed already: a repeat is a no-op');
    const keys = (await kv.list(`/cluster-dispatcher/${plan.name}/members/`)).map((k) => k.key).sort();
    assert.deepEqual(keys, dbservers().filter((p) => p.id !== db.id).map((p) => patroniMemberKey(plan.name, p.id)).sort());
    await write();

    // remove-agent: leadership away, member remove (quorum 2 of 2 kept), then stop.
    const stay = agents().filter((a) => a.id !== agent.id);
    await moveLeaderAway(agencyEndpoints(plan), agentPeerUrl(agent), stay.map(agentPeerUrl), opts);
    assert.equal(await removeMember(agencyEndpoints(plan, [agent.id]), agentPeerUrl(agent), opts), true);
    assert.deepEqual((await listMembers(agencyEndpoints(plan, [agent.id]), opts)).map((m) => m.name).sort(), stay.map((a) => a.id).sort());
    await write();

    // release-dispatcher: whatever still runs there stops for good; the plan and its pins are forgotten;
    // data stays. (The removed etcd member exits by itself and its supervisor starts it again: the release
    // must end that too, and nothing may come back.)
    const onGoneHost = () => tc.enginePids().filter((pid) => readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(tc.dispatchers[2].dataDir));
    assert.ok((await peer.status()).processes.some((p) => p.id === agent.id), 'the agent is still supervised there before the release');
    const released = await peer.releasePlan(plan.name);
    assert.deepEqual(released.keptDataDirs.map((d) => d.split('/').at(-1)).sort(), plan.processes.filter((p) => p.dispatcher === gone.id).map((p) => p.id).sort());
    for (const dir of released.keptDataDirs) assert.ok(existsSync(dir), `data dir kept: ${dir}`);
    await new Promise((r) => setTimeout(r, 3000));
    assert.deepEqual(onGoneHost(), [], 'nothing of the cluster runs on the released host');
    const view = await tc.status(2);
    assert.equal(view.name ?? undefined, undefined, `the released dispatcher has no cluster: ${JSON.stringify(view).slice(0, 300)}`);
    // Its trust in the cluster is gone with the plan: a former peer's certificate no longer opens its node routes.
    const untrusted = await refusal(peer.status());
    assert.ok([401, 403].includes(untrusted.status), `${untrusted.status} ${untrusted.message}`);
    await write();
  } finally {
    peer.close();
  }
  // No acknowledged write was lost: every one is there, read through the coordinator (from the leader).
  const rows = (await tc.psql(rwPort(), 'SELECT n FROM acked ORDER BY n')).split('\n').filter(Boolean).map(Number);
  const missing = Array.from({ length: written }, (_, i) => i + 1).filter((n) => !rows.includes(n));
  const where = await tc.psql(rwPort(), "SELECT inet_server_port() || ' recovery=' || pg_is_in_recovery()");
  assert.deepEqual(missing, [], `acknowledged writes missing (read from postgres port ${where}); events of the DB servers:\n${dbLog.join('\n')}`);
  // The remaining agency has a leader; the remaining DB servers one leader.
  const remaining = { ...plan, processes: plan.processes.filter((p) => p.dispatcher !== gone.id) };
  assert.ok((await agencyStatus(remaining, { tls: tls() })).hasLeader);
});
