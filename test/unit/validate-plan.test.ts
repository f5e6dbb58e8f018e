/** validatePlan: every problem is refused with its path, and all of them are listed at once. */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { DispatcherError } from '../../api/errors.js';
import type { Plan } from '../../api/plan.js';
import { installedEngines, planFromSpec } from '../../launcher/planner.js';
import { assertValidPlan, isAddressOrCidr, validatePlan } from '../../server/core/validate-plan.js';

const ENGINES = installedEngines();

const FP = Array(32).fill('AB').join(':');
const base = (): Plan =>
  planFromSpec({
    name: 'v',
    dispatchers: [1, 2, 3].map((i) => ({ id: `d${i}`, endpoint: `https://10.0.0.${i}:8528`, fingerprint: FP, addresses: [`10.0.0.${i}`] })),
    agents: 3,
    dbservers: 2,
    coordinators: 1,
  });

function expectProblem(mutate: (p: Plan) => void, path: string, message: RegExp): void {
  const plan = structuredClone(base());
  mutate(plan);
  const problems = validatePlan(plan, ENGINES);
  assert.ok(
    problems.some((p) => p.path === path && message.test(p.message)),
    `expected ${path} ~ ${message}, got ${JSON.stringify(problems)}`,
  );
}

describe('validatePlan', () => {
  test('a planned cluster is valid', () => {
    assert.deepEqual(validatePlan(base(), ENGINES), []);
    assert.equal(assertValidPlan(base(), ENGINES).name, 'v');
  });

  test('even agency size', () => expectProblem((p) => (p.processes = p.processes.filter((x) => x.id !== 'agent-3')), 'processes', /even/));
  test('zero agents', () => expectProblem((p) => (p.processes = p.processes.filter((x) => x.role !== 'agent')), 'processes', /at least one agent/));
  test('a port used twice on a host', () =>
    expectProblem((p) => (p.processes[3].ports[0].port = p.processes[0].ports[0].port), 'processes[3].ports[0].port', /already used by agent-1/));
  test('a port clashing with the dispatcher port', () => expectProblem((p) => (p.processes[0].ports[0].port = 8528), 'processes[0].ports[0].port', /dispatcher d1/));
  test('unknown dispatcher', () => expectProblem((p) => (p.processes[1].dispatcher = 'nowhere'), 'processes[1].dispatcher', /unknown dispatcher/));
  test('unknown engine', () => expectProblem((p) => (p.engine = 'mysql'), 'engine', /unknown engine/));
  test('unknown role', () => expectProblem((p) => ((p.processes[0] as { role: string }).role = 'witness'), 'processes[0].role', /agent|dbserver|coordinator/));
  test('absolute data dir', () => expectProblem((p) => (p.processes[0].dataDir = '/etc/x'), 'processes[0].dataDir', /relative/));
  test('data dir with ..', () => expectProblem((p) => (p.processes[0].dataDir = "clusters/../../x"), "processes[0].dataDir", /plain segments/));
  test('data dir outside the data root', () => expectProblem((p) => (p.processes[0].dataDir = 'other/v/agent-1'), 'processes[0].dataDir', /data root/));
  test('data root escaping', () => expectProblem((p) => (p.dataRoot = '../up'), 'dataRoot', /relative/));
  test('extra args overriding a managed option (etcd)', () =>
    expectProblem((p) => (p.processes[0].args = ['--initial-cluster=x=http://1.2.3.4:1']), 'processes[0].args[0]', /initial-cluster.*managed/));
  test('extra args where the engine takes none (Patroni)', () => expectProblem((p) => (p.processes[3].args = ['--x']), 'processes[3].args[0]', /no extra arguments/));
  test('a newline in a data dir is refused', () => expectProblem((p) => (p.processes[0].dataDir = 'clusters/v/agent-1\nlisten x'), 'processes[0].dataDir', /plain segments/));
  test('hostname as dispatcher address', () => expectProblem((p) => (p.dispatchers[0].addresses = ['db1.example.com']), 'dispatchers[0].addresses[0]', /not an IP/));
  test('hostname as process address', () => expectProblem((p) => (p.processes[0].address = 'db1.example.com'), 'processes[0].address', /not an IP/));
  test('process address not of its dispatcher', () => expectProblem((p) => (p.processes[0].address = '10.9.9.9'), 'processes[0].address', /not an address of dispatcher/));
  test('hostname as firewall source', () => expectProblem((p) => (p.firewall.operatorSources = ['ops.example.com']), 'firewall.operatorSources[0]', /not an IP/));
  test('bad CIDR prefix', () => expectProblem((p) => (p.firewall.clientSources = ['10.0.0.0/33']), 'firewall.clientSources[0]', /CIDR/));
  test('agency port public', () => expectProblem((p) => (p.processes[0].ports[0].exposure = 'public'), 'processes[0].ports[0].exposure', /never public/));
  test('role not allowed on the dispatcher', () => expectProblem((p) => (p.dispatchers[0].allowAgents = false), 'processes[0].dispatcher', /does not allow role agent/));
  test('missing engine port', () => expectProblem((p) => (p.processes[0].ports = p.processes[0].ports.slice(0, 1)), 'processes[0].ports', /needs port "peer"/));
  test('duplicate process id', () => expectProblem((p) => (p.processes[1].id = 'agent-1'), 'processes[1].id', /used twice/));
  test('binary choice must be an absolute path', () => expectProblem((p) => (p.binaries = { etcd: 'etcd' }), 'binaries.etcd', /absolute/));
  test('binary choice must name a program of the engine, not a role or another program', () => {
    expectProblem((p) => (p.binaries = { agent: '/usr/bin/etcd' }), 'binaries.agent', /runs no program "agent"/);
    expectProblem((p) => (p.binaries = { sh: '/bin/sh' }), 'binaries.sh', /runs no program "sh"/);
  });
  test('schema problems carry paths', () => {
    const paths = validatePlan({ apiVersion: 'dispatcher/v1', name: 'x' }, ENGINES).map((p) => p.path);
    assert.ok(paths.includes('dispatchers') && paths.includes('processes'), JSON.stringify(paths));
  });

  test('every problem at once; assertValidPlan throws validation_failed with all of them', () => {
    const plan = structuredClone(base());
    plan.processes[0].ports[0].exposure = 'public';
    plan.processes[1].dispatcher = 'nowhere';
    plan.dispatchers[2].addresses = ['x.example.com'];
    assert.equal(validatePlan(plan, ENGINES).length >= 3, true);
    assert.throws(() => assertValidPlan(plan, ENGINES), (e: unknown) => e instanceof DispatcherError && e.code === 'validation_failed' && e.problems.length >= 3);
  });

  test('helpers', () => {
    assert.equal(isAddressOrCidr('10.0.0.0/8'), true);
    assert.equal(isAddressOrCidr('::/0'), true);
    assert.equal(isAddressOrCidr('fd00::1/129'), false);
    assert.equal(isAddressOrCidr('example.com'), false);
  });
});
