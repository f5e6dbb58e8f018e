/**
 * Cluster tier: plan versions and the dry run on a REAL pg-ha cluster (three dispatchers on loopback;
 * docs/DESIGN.md, "Plan versions"). The launched plan is version 1 on every dispatcher; `dispatch plan
 * --diff` (the real CLI) and POST /v1/cluster/plan/diff show a moved port and the one host whose rules
 * change; a bad plan is a 400 naming every problem; a firewall change is version 2 everywhere once
 * confirmed; changes computed against another version are refused with 409 naming both, before anything
 * runs. Last, the engine's agency membership steps (etcd member add/remove) against the real etcd.
 *
 * Needs root, the pg-ha Debian packages and the cluster-dispatcher user (deploy/install-deps.sh).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Plan } from '../../api/plan.js';
import type { PlanDiffView, RunningPlanView } from '../../api/plan-version.js';
import type { OperationView } from '../../api/rest.js';
import { isDispatcherError, type DispatcherError } from '../../api/errors.js';
import { DispatcherClient } from '../../client/dispatcher-client.js';
import { startTestCluster, type TestCluster } from '../helpers/cluster.js';
import { REPO_ROOT, addUser } from '../helpers/daemon.js';
import { dispatcherClientTls } from '../helpers/pg-cluster.js';
import { addMember, agencyEndpoints, listMembers, removeMember } from '../../server/engines/pg-ha/etcd-members.js';
import { agencyStatus } from '../../server/engines/pg-ha-health.js';

let tc: TestCluster;
let plan: Plan;
const VIEWER = 'viewer';
const VIEWER_PASSWORD = `viewer-${Math.random().toString(36).slice(2)}`;

before(async () => {
  // A read-only account (docs/SECURITY.md, metrics and console) may run the dry run, nothing that changes.
  tc = await startTestCluster({ n: 3, label: 'planver', config: { readOnlyUsers: [VIEWER] } });
  await addUser(tc.dispatchers[1].dataDir, VIEWER, VIEWER_PASSWORD);
  plan = tc.plan({ name: 'planver' });
  const op = await tc.run(0, '/v1/cluster/launch', { plan, readyTimeoutMs: 120_000 });
  assert.equal(op.state, 'succeeded', `launch failed: ${JSON.stringify(op.error)}`);
});

after(async () => {
  if (!tc) return;
  const { leaked } = await tc.teardown();
  assert.deepEqual(leaked, [], `processes left after teardown: ${leaked.join('\n')}`);
});

async function refusal(p: Promise<unknown>): Promise<DispatcherError> {
  try {
    await p;
  } catch (e) {
    if (isDispatcherError(e)) return e;
    throw e;
  }
  assert.fail('expected a refusal');
}

function running(i: number): Promise<RunningPlanView> {
  return tc.client(i).get<RunningPlanView>('/v1/cluster/plan');
}

function dispatch(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const d = tc.dispatchers[0];
  const passwordFile = join(tc.root, 'operator.password');
  writeFileSync(passwordFile, tc.password + '\n', { mode: 0o600 });
  const global = ['--endpoint', d.url, '--fingerprint', d.fingerprint, '--user', tc.user, '--password-file', passwordFile];
  return new Promise((resolve) => {
    execFile(process.execPath, [join(REPO_ROOT, 'bin', 'dispatch'), ...global, ...args], { env: { PATH: '/usr/bin:/bin', DISPATCH_CONFIG_DIR: tc.root }, timeout: 60_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : 1) : 0, stdout: String(stdout), stderr: String(stderr) }),
    );
  });
}

test('the launched plan is version 1, with the same hash on every dispatcher', async () => {
  const views = await Promise.all([0, 1, 2].map(running));
  for (const v of views) {
    assert.equal(v.version.number, 1);
    assert.equal(v.version.hash, views[0].version.hash);
    assert.deepEqual(v.history.map((h) => h.number), [1]);
    assert.equal(v.cluster, 'planver');
    // Each dispatcher also reports what its peers store (GET /v1/node/status carries the version).
    assert.deepEqual(v.dispatchers, plan.dispatchers.map((d) => ({ id: d.id, reachable: true, version: views[0].version })));
  }
});

test('dry run: the same plan changes nothing; a moved coordinator port changes that process and only its host rules', async () => {
  const base = (await running(0)).version;
  const same = await tc.client(1).post<PlanDiffView>('/v1/cluster/plan/diff', { plan });
  assert.equal(same.diff.changed, false);
  assert.deepEqual(same.base, base);
  assert.deepEqual(same.behind, []);
  assert.deepEqual(same.scale, { steps: [], problems: [] });

  const moved = structuredClone(plan);
  const coord = moved.processes.find((p) => p.role === 'coordinator')!;
  const client = coord.ports.find((p) => p.name === 'client')!;
  const oldPort = client.port;
  const newPort = tc.portBase + 29; // inside this cluster's free block, used by no process
  client.port = newPort;
  const file = join(tc.root, 'moved-plan.json');
  writeFileSync(file, JSON.stringify(moved));
  const r = await dispatch(['plan', '--diff', file]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`against the running plan, version 1 \\(${base.hash}\\)`));
  assert.match(r.stdout, new RegExp(`~ process ${coord.id}\\n\\s+ports\\.client: \\{"port":${oldPort},"exposure":"public"\\} => \\{"port":${newPort},"exposure":"public"\\}`));
  assert.match(r.stdout, new RegExp(`~ ${coord.dispatcher} \\(changed\\)`));
  assert.match(r.stdout, new RegExp(`\\+\\s+\\d+\\s+.*tcp dport .*${newPort}`));
  assert.match(r.stdout, new RegExp(`--base-version 1:${base.hash}`));
  const unchanged = plan.dispatchers.map((d) => d.id).filter((id) => id !== coord.dispatcher);
  assert.match(r.stdout, new RegExp(`firewall rules unchanged on: ${unchanged.join(', ')}`));

  const j = await dispatch(['--json', 'plan', '--diff', file]);
  assert.equal(j.code, 0, j.stderr);
  const view = JSON.parse(j.stdout) as PlanDiffView;
  assert.deepEqual(view.diff.processes.changed.map((c) => c.id), [coord.id]);
  assert.deepEqual(view.diff.firewall.filter((f) => f.change !== 'unchanged').map((f) => f.host), [coord.dispatcher]);
  // A moved port is not a scale change: the dry run says so, naming the process.
  assert.match(view.scale.problems.map((p) => p.message).join('\n'), new RegExp(`process ${coord.id} stays but changes`));
  assert.match(r.stdout, /as a scale operation it would be REFUSED/);
  // A dry run stores nothing.
  assert.deepEqual((await running(0)).version, base);
});

test('a read-only user runs the dry run (the same answer as an operator) and is refused the change itself', async () => {
  const d = tc.dispatchers[1];
  const viewer = new DispatcherClient({ endpoint: d.url, fingerprint: d.fingerprint, credential: { user: VIEWER, password: VIEWER_PASSWORD }, timeoutMs: 30_000 });
  try {
    const moved = structuredClone(plan);
    moved.processes.find((p) => p.role === 'coordinator')!.ports.find((p) => p.name === 'client')!.port = tc.portBase + 29;
    const asViewer = await viewer.post<PlanDiffView>('/v1/cluster/plan/diff', { plan: moved });
    const asOperator = await tc.client(1).post<PlanDiffView>('/v1/cluster/plan/diff', { plan: moved });
    assert.equal(asViewer.diff.changed, true);
    assert.deepEqual(asViewer.diff, asOperator.diff);
    assert.deepEqual(asViewer.base, asOperator.base);
    // Applying a change is not a read: 403, and the running version stays.
    const refused = await refusal(viewer.post('/v1/cluster/firewall', { firewall: plan.firewall, baseVersion: asViewer.base }));
    assert.equal(refused.status, 403);
    assert.equal(refused.code, 'forbidden');
    assert.deepEqual((await running(1)).version, asViewer.base);
  } finally {
    viewer.close();
  }
});

test('a bad proposed plan is a 400 naming every problem; the CLI exits 2', async () => {
  const bad = structuredClone(plan);
  bad.processes = bad.processes.filter((p) => p.id !== 'agent-3');
  bad.processes[0].ports[0].port = 70000;
  const e = await refusal(tc.client(0).post('/v1/cluster/plan/diff', { plan: bad }));
  assert.equal(e.status, 400);
  assert.ok(e.problems.some((p) => p.path.startsWith('plan.processes[0].ports[0].port')), JSON.stringify(e.problems));
  const valid = structuredClone(plan);
  valid.processes = valid.processes.filter((p) => p.id !== 'agent-3');
  const even = await refusal(tc.client(0).post('/v1/cluster/plan/diff', { plan: valid }));
  assert.equal(even.status, 400);
  assert.ok(even.problems.some((p) => /even/.test(p.message)), JSON.stringify(even.problems));
  const file = join(tc.root, 'bad-plan.json');
  writeFileSync(file, JSON.stringify(bad));
  const r = await dispatch(['plan', '--diff', file]);
  assert.equal(r.code, 2, r.stdout + r.stderr);
  assert.match(r.stderr, /processes\[0\]\.ports\[0\]\.port/);
});

test('the dry run with a dispatcher down: named as not answering; removing its host removes its dead members first, asks it nothing', async () => {
  const i = 2;
  const gone = plan.dispatchers[i].id;
  await tc.dispatchers[i].kill9();
  try {
    const shrunk = structuredClone(plan);
    shrunk.dispatchers = shrunk.dispatchers.filter((d) => d.id !== gone);
    const movedAway = shrunk.processes.filter((p) => p.dispatcher === gone);
    shrunk.processes = shrunk.processes.filter((p) => p.dispatcher !== gone);
    // Keep the agency odd: one more live agent goes too (3 → 1), after the dead one.
    const secondAgent = shrunk.processes.filter((p) => p.role === 'agent').at(-1)!;
    shrunk.processes = shrunk.processes.filter((p) => p.id !== secondAgent.id);
    movedAway.push(secondAgent);
    const view = await tc.client(0).post<PlanDiffView>('/v1/cluster/plan/diff', { plan: shrunk });
    assert.deepEqual(view.behind, [{ id: gone, reachable: false }]);
    assert.deepEqual(view.diff.dispatchers.removed, [gone]);
    assert.deepEqual(view.diff.processes.removed.map((p) => p.id).sort(), movedAway.map((p) => p.id).sort());
    assert.equal(view.diff.firewall.find((f) => f.host === gone)!.change, 'removed');
    // Its processes count as down: the dead agent leaves first, its DB server goes without a switchover,
    // the host is not asked to release anything, and loopback (shared by every host) stays in the sets.
    const agentGone = movedAway.find((p) => p.role === 'agent' && p.dispatcher === gone)!;
    const dbGone = movedAway.find((p) => p.role === 'dbserver')!;
    assert.deepEqual(view.scale, {
      problems: [],
      steps: [
        { kind: 'remove-dead-agent', process: agentGone.id, host: gone },
        { kind: 'remove-dbserver', process: dbGone.id, host: gone },
        { kind: 'reconfigure-coordinators', processes: shrunk.processes.filter((p) => p.role === 'coordinator').map((p) => p.id) },
        { kind: 'remove-agent', process: secondAgent.id, host: secondAgent.dispatcher },
      ],
    });
  } finally {
    await tc.restart(i);
  }
  const back = await running(0);
  assert.ok(back.dispatchers.every((d) => d.reachable), JSON.stringify(back.dispatchers));
});

test('a firewall change is version 2 everywhere once confirmed; changes against version 1 are then refused with 409 naming both', async () => {
  const v1 = (await running(0)).version;
  const firewall = { ...plan.firewall, operatorSources: ['192.0.2.10'] };
  const stale = await refusal(tc.client(0).post('/v1/cluster/firewall', { firewall, confirmWithinSeconds: 60, baseVersion: { number: 1, hash: '0000000000000000' } }));
  assert.equal(stale.status, 409);
  assert.match(stale.message, new RegExp(`version 1 \\(0000000000000000\\).*version 1 \\(${v1.hash}\\)`));
  assert.deepEqual((await running(0)).version, v1, 'a refused change stores nothing');

  const applied = await tc.client(0).post<{ token: string }>('/v1/cluster/firewall', { firewall, confirmWithinSeconds: 120, baseVersion: v1 });
  // Confirm over a new connection (docs/FIREWALL.md, "Commit-confirmed").
  const fresh = new DispatcherClient({ endpoint: tc.dispatchers[0].url, fingerprint: tc.dispatchers[0].fingerprint, credential: { user: tc.user, password: tc.password }, timeoutMs: 60_000 });
  try {
    await fresh.post('/v1/cluster/firewall/confirm', { token: applied.token });
  } finally {
    fresh.close();
  }
  const views = await Promise.all([0, 1, 2].map(running));
  for (const v of views) {
    assert.equal(v.version.number, 2, `${JSON.stringify(v.history)}`);
    assert.equal(v.version.hash, views[0].version.hash);
    assert.deepEqual(v.plan.firewall.operatorSources, ['192.0.2.10']);
  }
  const v2 = views[0].version;
  const diff = await tc.client(2).post<PlanDiffView>('/v1/cluster/plan/diff', { plan });
  assert.deepEqual(diff.base, v2);
  assert.deepEqual(diff.diff.settings, [{ path: 'firewall.operatorSources', from: ['192.0.2.10'], to: [] }]);

  // Both plan-changing requests refuse version 1 now, before anything runs.
  const opsBefore = (await tc.client(0).get<{ operations: OperationView[] }>('/v1/operations')).operations.length;
  for (const [path, body] of [
    ['/v1/cluster/firewall', { firewall: plan.firewall, baseVersion: v1 }],
    ['/v1/cluster/restart', { baseVersion: v1 }],
  ] as const) {
    const e = await refusal(tc.client(1).post(path, body));
    assert.equal(e.status, 409, `${path}: ${e.message}`);
    assert.match(e.message, new RegExp(`version 1 \\(${v1.hash}\\).*running plan is version 2 \\(${v2.hash}\\)`));
    assert.deepEqual(e.details.runningVersion, v2);
  }
  assert.equal((await tc.client(0).get<{ operations: OperationView[] }>('/v1/operations')).operations.length, opsBefore, 'no operation started');
  const cli = await dispatch(['restart', '--base-version', `1:${v1.hash}`]);
  assert.equal(cli.code, 1, cli.stdout + cli.stderr);
  assert.match(cli.stderr, /running plan is version 2/);
});

test('etcd membership steps on the real agency: add is idempotent, a second add before the first member runs is a 409, remove restores it', async () => {
  const tls = dispatcherClientTls(tc.dispatchers[0].dir.dataDir);
  const endpoints = agencyEndpoints(plan);
  const opts = { tls, timeoutMs: 5000 };
  const before = await listMembers(endpoints, opts);
  assert.deepEqual(before.map((m) => m.name).sort(), plan.processes.filter((p) => p.role === 'agent').map((p) => p.id).sort());
  // Peer URLs nobody listens on: members that never start (what a new host is between `member add` and its start).
  const urls = [27, 28].map((k) => `https://127.0.0.1:${tc.portBase + k}`);
  try {
    const a = await addMember(endpoints, urls[0], opts);
    assert.equal(a.name, '', 'an added member is unstarted');
    assert.equal((await addMember(endpoints, urls[0], opts)).id, a.id, 'adding the same peer URL again answers the same member');
    // 3 started of 4: still a majority, the agency keeps its leader.
    assert.ok((await agencyStatus(plan, { tls })).hasLeader);
    // A second add before the first member runs: etcd refuses (one member at a time), and so do we, with 409.
    const refused = await refusal(addMember(endpoints, urls[1], opts));
    assert.equal(refused.status, 409, refused.message);
    assert.match(refused.message, /etcd refused to add member .*unhealthy cluster/);
    assert.equal((await listMembers(endpoints, opts)).length, 4);
  } finally {
    for (const u of urls) await removeMember(endpoints, u, opts);
  }
  assert.deepEqual((await listMembers(endpoints, opts)).map((m) => m.id).sort(), before.map((m) => m.id).sort());
  assert.equal(await removeMember(endpoints, urls[0], opts), false, 'removing a removed member is a no-op');
  assert.ok((await agencyStatus(plan, { tls })).hasLeader);
});
