/** The Planner: golden plans, placement, ports and offsets, exposures, spec problems, the `plan` command. */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { DispatcherError } from '../../api/errors.js';
import type { Plan } from '../../api/plan.js';
import { planFromRequestBody } from '../../server/core/planner.js';
import { installedEngines, parseSpecText, planFromSpec, planFromSpecText } from '../../launcher/planner.js';
import { planSummary } from '../../launcher/summary.js';
import { EXIT_INVALID, registerPlanCommand, type PlanCommandIO } from '../../launcher/commands/plan.js';
import { validatePlan } from '../../server/core/validate-plan.js';
import { expectGolden } from '../helpers/golden.js';

const ENGINES = installedEngines();

const ROOT = (() => {
  let d = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(d, 'package.json'))) d = dirname(d);
  return d;
})();
const FP = Array(32).fill('AB').join(':');
const example = (n: string) => readFileSync(join(ROOT, 'examples', `${n}.yaml`), 'utf8');

const golden = expectGolden;

function problemsOf(fn: () => unknown): { path: string; message: string }[] {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof DispatcherError, `expected DispatcherError, got ${err}`);
    assert.equal(err.code, 'validation_failed');
    assert.ok(err.problems.length > 0);
    return err.problems;
  }
  assert.fail('expected a validation error');
}

const disp = (id: string, addr: string, port = 8528, extra: object = {}) => ({ id, endpoint: `https://${addr}:${port}`, fingerprint: FP, addresses: [addr], ...extra });

describe('planFromSpec: golden plans of the examples', () => {
  for (const name of ['local', 'three-hosts', 'arangodb']) {
    test(name, () => {
      const plan = planFromSpecText(example(name), `${name}.yaml`);
      assert.deepEqual(validatePlan(plan, ENGINES), []);
      golden(`${name}.plan.json`, JSON.stringify(plan, null, 2) + '\n');
      golden(`${name}.summary.txt`, planSummary(plan));
    });
  }
});

describe('placement and ports', () => {
  test('same spec, same plan', () => {
    assert.deepEqual(planFromSpecText(example('local')), planFromSpecText(example('local')));
  });

  test('local cluster: dispatchers sharing an address get a port offset each (pg-ha step 10)', () => {
    const plan = planFromSpecText(example('local'));
    const port = (id: string, name: string) => plan.processes.find((p) => p.id === id)!.ports.find((x) => x.name === name)!.port;
    assert.deepEqual(['agent-1', 'agent-2', 'agent-3'].map((a) => port(a, 'client')), [2381, 2391, 2401]);
    assert.deepEqual(['agent-1', 'agent-2', 'agent-3'].map((a) => port(a, 'peer')), [2382, 2392, 2402]);
    assert.deepEqual(['dbserver-1', 'dbserver-2', 'dbserver-3'].map((a) => port(a, 'postgres')), [5433, 5443, 5453]);
    assert.deepEqual(plan.processes.filter((p) => p.role === 'agent').map((p) => p.dispatcher), ['d1', 'd2', 'd3']);
  });

  test('agents spread over distinct hosts first; disallowed roles are skipped', () => {
    const plan = planFromSpec({
      name: 'spread',
      dispatchers: [disp('a1', '10.0.0.1'), disp('a2', '10.0.0.1', 8533), disp('b', '10.0.0.2'), disp('c', '10.0.0.3', 8528, { allowAgents: false })],
      agents: 3,
      dbservers: 4,
      coordinators: 1,
    });
    const where = (role: string) => plan.processes.filter((p) => p.role === role).map((p) => p.dispatcher);
    assert.deepEqual(where('agent'), ['a1', 'b', 'a2']);
    assert.deepEqual(where('dbserver'), ['a1', 'b', 'c', 'a2']);
    // a1 and a2 share 10.0.0.1: a2's ports are offset; nothing collides.
    assert.deepEqual(plan.processes.find((p) => p.id === 'agent-3')!.ports.map((p) => p.port), [2391, 2392]);
    assert.deepEqual(validatePlan(plan, ENGINES), []);
  });

  test('several processes of one role on one dispatcher get distinct ports; the dispatcher port is avoided', () => {
    const plan = planFromSpec({ name: 'solo', dispatchers: [disp('d', '10.1.1.1', 5000)], agents: 3, dbservers: 2, coordinators: 2 });
    const all = plan.processes.flatMap((p) => p.ports.map((x) => x.port));
    assert.equal(new Set(all).size, all.length);
    assert.ok(!all.includes(5000));
    assert.deepEqual(plan.processes.filter((p) => p.role === 'coordinator').map((p) => p.ports[0].port), [5010, 5020]);
  });

  test('exposures: agency cluster, coordinator clients public, Patroni/PostgreSQL cluster, stats operator', () => {
    const plan = planFromSpecText(example('three-hosts'));
    const exp = (role: string) => [...new Set(plan.processes.filter((p) => p.role === role).flatMap((p) => p.ports.map((x) => `${x.name}:${x.exposure}`)))];
    assert.deepEqual(exp('agent'), ['client:cluster', 'peer:cluster']);
    assert.deepEqual(exp('dbserver'), ['postgres:cluster', 'rest:cluster']);
    assert.deepEqual(exp('coordinator'), ['client:public', 'readonly:public', 'stats:operator', 'router:cluster']);
    const ara = planFromSpecText(example('arangodb'));
    assert.deepEqual(ara.processes.map((p) => `${p.role}:${p.ports[0].port}:${p.ports[0].exposure}`).filter((v, i, a) => a.indexOf(v) === i), [
      'agent:8531:cluster',
      'dbserver:8530:cluster',
      'coordinator:8529:public',
    ]);
  });

  test('port overrides and data dirs', () => {
    const plan = planFromSpec({ name: 'ov', dispatchers: [disp('d', '10.1.1.1')], agents: 1, dbservers: 1, coordinators: 0, ports: { 'agent.client': 12379 }, dataRoot: 'x/y' });
    assert.equal(plan.processes[0].ports[0].port, 12379);
    assert.equal(plan.processes[0].dataDir, 'x/y/ov/agent-1');
  });
});

describe('spec problems are listed with their paths', () => {
  test('every problem at once', () => {
    const problems = problemsOf(() =>
      planFromSpec({
        name: 'bad',
        engine: 'pg-ha',
        dispatchers: [disp('d1', '10.0.0.1'), { ...disp('d2', '10.0.0.2'), addresses: ['db2.example.com'] }],
        agents: 2,
        ports: { 'agent.nope': 1 },
        extraArgs: { agent: ['--data-dir=/etc'], dbserver: ['--anything'], coordinator: ['-f', '/x'] },
        firewall: { clientSources: ['clients.example.com'] },
      }),
    );
    const paths = problems.map((p) => p.path);
    for (const p of ['agents', 'dispatchers[1].addresses[0]', 'firewall.clientSources[0]', 'ports.agent.nope', 'extraArgs.agent[0]', 'extraArgs.dbserver[0]', 'extraArgs.coordinator[0]']) {
      assert.ok(paths.includes(p), `missing ${p} in ${JSON.stringify(problems)}`);
    }
  });

  test('zero agents, unknown engine, no dispatcher allowing a role, schema errors', () => {
    assert.deepEqual(problemsOf(() => planFromSpec({ name: 'z', dispatchers: [disp('d', '10.0.0.1')], agents: 0 })).map((p) => p.path), ['agents']);
    assert.deepEqual(problemsOf(() => planFromSpec({ name: 'z', engine: 'mysql', dispatchers: [disp('d', '10.0.0.1')] })).map((p) => p.path), ['engine']);
    assert.deepEqual(
      problemsOf(() => planFromSpec({ name: 'z', dispatchers: [disp('d', '10.0.0.1', 8528, { allowCoordinators: false })] })).map((p) => p.path),
      ['coordinators'],
    );
    const paths = problemsOf(() => planFromSpec({ name: 'Bad Name', dispatchers: [{ id: 'd' }], agents: 'three' })).map((p) => p.path);
    assert.ok(paths.includes('name') && paths.includes('agents') && paths.includes('dispatchers[0].endpoint'), JSON.stringify(paths));
  });

  test('parseSpecText names line and column of a syntax error', () => {
    const problems = problemsOf(() => parseSpecText('name: x\ndispatchers:\n  - id: [unclosed\n', 'c.yaml'));
    assert.match(problems[0].path, /^c\.yaml:\d+:\d+$/);
    assert.deepEqual(parseSpecText('{"name": "j"}', 'j.json'), { name: 'j' });
    problemsOf(() => parseSpecText('a: 1\na: 2\n'));
  });
});

describe('dispatch plan command and POST /v1/plans handler', () => {
  function run(args: string[], files: Record<string, string>) {
    const out: string[] = [];
    const err: string[] = [];
    let code = 0;
    const written: Record<string, string> = {};
    const io: PlanCommandIO = {
      readFile: (p) => {
        if (!(p in files)) throw Object.assign(new Error('ENOENT'), { code: 'ENOENT' });
        return files[p];
      },
      writeFile: (p, c) => (written[p] = c),
      out: (t) => out.push(t),
      err: (t) => err.push(t),
      setExitCode: (c) => (code = c),
    };
    const program = new Command().exitOverride();
    registerPlanCommand(program, io);
    program.parse(['node', 'dispatch', 'plan', ...args]);
    return { out: out.join(''), err: err.join(''), code, written };
  }

  test('prints the table, writes -o, prints JSON with --json', () => {
    const r = run(['--spec', 's.yaml', '-o', 'plan.json'], { 's.yaml': example('local') });
    assert.equal(r.code, 0);
    assert.match(r.out, /DISPATCHER\s+ADDRESS\s+PROCESS/);
    assert.match(r.out, /agent-1\s+agent\s+2381\s+client\s+cluster/);
    assert.equal((JSON.parse(r.written['plan.json']) as Plan).processes.length, 7);
    const j = run(['--spec', 's.yaml', '--json'], { 's.yaml': example('local') });
    assert.equal((JSON.parse(j.out) as Plan).name, 'local');
  });

  test('an invalid spec prints every problem with its path and exits 2', () => {
    const r = run(['--spec', 's.yaml'], { 's.yaml': 'name: x\nagents: 2\ndispatchers: []\n' });
    assert.equal(r.code, EXIT_INVALID);
    assert.match(r.err, /dispatchers/);
    assert.equal(run(['--spec', 'missing.yaml'], {}).code, EXIT_INVALID);
  });

  test('planFromRequestBody takes a spec object or text', () => {
    assert.deepEqual(planFromRequestBody(parseSpecText(example('local')), ENGINES), planFromSpecText(example('local')));
    assert.equal(planFromRequestBody(example('arangodb'), ENGINES).engine, 'arangodb');
    problemsOf(() => planFromRequestBody(undefined, ENGINES));
    problemsOf(() => planFromRequestBody({ name: 'x' }, ENGINES));
  });
});
