import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { ROLE_ORDER, type Plan, type PlanProcess, type Role } from '../../api/plan.js';
import { isDispatcherError } from '../../api/errors.js';
import { loadEngine } from '../../server/engines/index.js';
import { rollingRestartSteps } from '../../server/engines/render.js';
import {
  allAtOncePlan,
  describeRestartPlan,
  rollingRestartPlan,
  sameExceptBinaries,
  selectProcesses,
  upgradeBinaries,
  type RoleSteps,
} from '../../server/core/restart-plan.js';

function proc(id: string, role: Role, dispatcher: string): PlanProcess {
  return { id, role, dispatcher, address: '127.0.0.1', ports: [{ name: 'p', port: 1000 + id.length, exposure: 'cluster' }], dataDir: `c/${id}`, args: [] };
}

function plan(engine: string): Plan {
  const hosts = ['d1', 'd2', 'd3'];
  return {
    apiVersion: 'dispatcher/v1',
    name: 'x',
    engine,
    binaries: {},
    dataRoot: 'clusters',
    dispatchers: hosts.map((h) => ({ id: h, endpoint: `https://127.0.0.1:1`, fingerprint: 'AA:'.repeat(31) + 'AA', addresses: ['127.0.0.1'], allowAgents: true, allowDBservers: true, allowCoordinators: true })),
    processes: [
      ...hosts.map((h, i) => proc(`agent-${i + 1}`, 'agent', h)),
      ...hosts.map((h, i) => proc(`dbserver-${i + 1}`, 'dbserver', h)),
      proc('coordinator-1', 'coordinator', 'd1'),
      proc('coordinator-2', 'coordinator', 'd2'),
    ],
    firewall: { mode: 'guard', backend: 'none', clientSources: [], operatorSources: [], sshPort: 22, outboundAllow: false },
  };
}

function steps(engine: string): Record<Role, RoleSteps> {
  const e = loadEngine(engine);
  return Object.fromEntries(ROLE_ORDER.map((r) => [r, rollingRestartSteps(e, r)])) as Record<Role, RoleSteps>;
}

const order = (b: ReturnType<typeof rollingRestartPlan>) => b.flatMap((x) => x.processes.map((e) => e.process));

describe('rolling restart plan (pg-ha)', () => {
  const p = plan('pg-ha');
  const s = steps('pg-ha');

  test('agents followers first, DB replicas first, leader last with the switchover before it, coordinators one at a time', () => {
    const b = rollingRestartPlan(p, {}, s, { agencyLeader: 'agent-1', dbLeader: 'dbserver-2' });
    assert.deepEqual(order(b), ['agent-2', 'agent-3', 'agent-1', 'dbserver-1', 'dbserver-3', 'dbserver-2', 'coordinator-1', 'coordinator-2']);
    const dbs = b.find((x) => x.role === 'dbserver')!.processes;
    assert.deepEqual(dbs.map((e) => e.before.map((st) => st.action)), [[], [], ['switchover']]);
    assert.equal(dbs[2].leader, true);
    for (const e of dbs) assert.ok(e.after.some((st) => st.action === 'wait-replica-streaming'));
    assert.ok(b[0].processes.every((e) => e.after.some((st) => st.action === 'wait-agency-leader')));
  });

  test('without a known DB leader every DB server keeps the (live-checked) switchover step', () => {
    const b = rollingRestartPlan(p, { roles: ['dbserver'] }, s, {});
    assert.deepEqual(order(b), ['dbserver-1', 'dbserver-2', 'dbserver-3']);
    assert.ok(b[0].processes.every((e) => e.before.some((st) => st.action === 'switchover')));
  });

  test('done processes are skipped (retry / resume)', () => {
    const b = rollingRestartPlan(p, {}, s, { agencyLeader: 'agent-3', dbLeader: 'dbserver-1' }, ['agent-1', 'agent-2', 'agent-3', 'dbserver-2']);
    assert.deepEqual(order(b), ['dbserver-3', 'dbserver-1', 'coordinator-1', 'coordinator-2']);
    assert.equal(b[0].role, 'dbserver');
  });

  test('selection: roles AND hosts AND ids; unknown names and empty results are refused', () => {
    assert.deepEqual(selectProcesses(p, { roles: ['dbserver'], hosts: ['d2'] }).map((x) => x.id), ['dbserver-2']);
    assert.deepEqual(selectProcesses(p, { ids: ['coordinator-2', 'agent-1'] }).map((x) => x.id), ['agent-1', 'coordinator-2']);
    assert.deepEqual(selectProcesses(p, { hosts: ['d3'] }).map((x) => x.id), ['agent-3', 'dbserver-3']);
    for (const sel of [{ ids: ['nope'] }, { hosts: ['d9'] }, { roles: ['coordinator' as Role], hosts: ['d3'] }]) {
      assert.throws(() => selectProcesses(p, sel), (e) => isDispatcherError(e) && e.code === 'validation_failed');
    }
  });

  test('all-at-once: stop in shutdown order, start in launch order', () => {
    const { stop, start } = allAtOncePlan(p, { roles: ['agent', 'coordinator'] });
    assert.deepEqual(stop.map((g) => g.map((x) => x.id)), [['coordinator-1', 'coordinator-2'], ['agent-1', 'agent-2', 'agent-3']]);
    assert.deepEqual(start.map((g) => g[0].role), ['agent', 'coordinator']);
  });

  test('upgrade: a program or a role (its program) maps to plan.binaries by program; unknown programs are refused', () => {
    const programs = { agent: 'etcd', dbserver: 'python3', coordinator: 'haproxy' } as const;
    assert.deepEqual(upgradeBinaries(programs, {}, { etcd: '/opt/etcd', dbserver: '/opt/py' }), { etcd: '/opt/etcd', python3: '/opt/py' });
    assert.deepEqual(upgradeBinaries(programs, {}, { patroni: '/opt/patroni' }, ['etcd', 'python3', 'haproxy', 'patroni']), { patroni: '/opt/patroni' });
    assert.throws(() => upgradeBinaries(programs, {}, { sh: '/bin/sh' }), (e) => isDispatcherError(e) && /sh/.test(e.problems[0].message + e.problems[0].path));
    assert.throws(() => upgradeBinaries(programs, {}, { constructor: '/bin/sh' }), (e) => isDispatcherError(e) && e.code === 'validation_failed');
    assert.throws(() => upgradeBinaries(programs, {}, { etcd: 'relative' }), (e) => isDispatcherError(e) && e.code === 'validation_failed');
    assert.ok(sameExceptBinaries(p, { ...p, binaries: { etcd: '/x' } }));
    assert.ok(!sameExceptBinaries(p, { ...p, name: 'y' }));
  });
});

describe('rolling restart plan (arangodb: the Starter steps)', () => {
  test('maintenance mode around the DB servers, resign leadership before each, shards in sync after each', () => {
    const p = plan('arangodb');
    const b = rollingRestartPlan(p, {}, steps('arangodb'), { agencyLeader: 'agent-2' });
    assert.deepEqual(order(b), ['agent-1', 'agent-3', 'agent-2', 'dbserver-1', 'dbserver-2', 'dbserver-3', 'coordinator-1', 'coordinator-2']);
    const lines = describeRestartPlan(b);
    const at = (re: RegExp) => lines.findIndex((l) => re.test(l));
    const on = at(/supervision-maintenance-on/);
    const off = at(/supervision-maintenance-off/);
    assert.ok(on > at(/restart agent-2/) && on < at(/restart dbserver-1/), lines.join('\n'));
    assert.ok(off > at(/restart dbserver-3/) && off < at(/restart coordinator-1/), lines.join('\n'));
    for (const id of ['dbserver-1', 'dbserver-2', 'dbserver-3']) {
      assert.ok(at(new RegExp(`resign-leadership ${id}`)) === at(new RegExp(`restart ${id}`)) - 1, `resign before ${id}`);
      assert.ok(at(new RegExp(`wait-shards-in-sync ${id}`)) > at(new RegExp(`restart ${id}`)));
    }
    assert.match(lines[0], /^1\. /);
  });
});
