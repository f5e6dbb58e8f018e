/**
 * The plan boundary (docs/SECURITY.md, "Operator account"): a plan can only run the programs its engine
 * fixes, from paths the machine allows for that same program, with options from the engine's allow list;
 * names that exist on every JavaScript object are refused as data, never looked up on a prototype.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DispatcherError } from '../../api/errors.js';
import { ROLES, type Plan } from '../../api/plan.js';
import { planFromSpec, planFromSpecText } from '../../launcher/planner.js';
import { extraArgProblems, longOptionName } from '../../server/core/extra-args.js';
import { validatePlan } from '../../server/core/validate-plan.js';
import { defaultEngineCatalog } from '../../server/engines/loader.js';
import { engineDefaults, enginePrograms, engineSecrets, loadEngine, renderProcess, allowedPaths } from '../../server/engines/index.js';

const ROOT = (() => {
  let d = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(d, 'package.json'))) d = dirname(d);
  return d;
})();
const FP = Array(32).fill('AB').join(':');

/** A machine that allows EVERY program it could: each engine program at two paths, plus shells and clients. */
const EVERYTHING: Record<string, string[]> = {
  etcd: ['/usr/bin/etcd', '/opt/etcd-next/etcd'],
  python3: ['/usr/bin/python3', '/opt/py-next/python3'],
  patroni: ['/usr/bin/patroni'],
  postgres: ['/usr/lib/postgresql/15/bin/postgres'],
  psql: ['/usr/lib/postgresql/15/bin/psql'],
  haproxy: ['/usr/sbin/haproxy', '/opt/haproxy-next/haproxy'],
  arangod: ['/usr/sbin/arangod'],
  sh: ['/bin/sh'],
  etcdctl: ['/usr/bin/etcdctl'],
};
const ALL_PATHS = [...new Set(Object.values(EVERYTHING).flat())];

describe('programs: a role runs its engine program, from a path allowed for that program', () => {
  for (const engineName of ['pg-ha', 'arangodb']) {
    test(`${engineName}: every binaries choice of every key × every allowed path`, () => {
      const engine = loadEngine(engineName);
      const plan = planFromSpecText(readFileSync(join(ROOT, 'examples', engineName === 'pg-ha' ? 'local.yaml' : 'arangodb.yaml'), 'utf8'));
      const secrets = Object.fromEntries(engineSecrets(engine).map((s) => [s, 'x']));
      const keys = [...new Set([...Object.keys(EVERYTHING), ...ROLES, ...enginePrograms(engine), 'constructor', '__proto__', 'toString'])];
      let rendered = 0;
      let refused = 0;
      for (const key of keys) {
        for (const path of ALL_PATHS) {
          const choice: Plan = { ...plan, binaries: JSON.parse(JSON.stringify({ [key]: path })) };
          const valid = validatePlan(choice, defaultEngineCatalog()).length === 0;
          for (const role of ROLES) {
            const p = plan.processes.find((x) => x.role === role)!;
            const program = engine.manifest.roles[role].program;
            let argv0: string;
            try {
              argv0 = renderProcess(engine, choice, p.id, { dispatcherDataDir: '/var/lib/d', binaries: EVERYTHING, secrets, tls: { ca: 'x', cert: 'x', key: 'x' } }).spec.argv[0];
            } catch (e) {
              assert.ok(e instanceof DispatcherError, String(e));
              refused++;
              continue;
            }
            rendered++;
            assert.ok(allowedPaths(EVERYTHING, program).includes(argv0), `${engineName} ${role} with binaries ${key}=${path} runs ${argv0}, not ${program}`);
            if (valid && key === program) assert.equal(argv0, path);
          }
        }
      }
      assert.ok(rendered > 0 && refused > 0, `rendered ${rendered}, refused ${refused}`);
    });
  }

  test('a plan naming a role or a foreign program in binaries is refused at validation', () => {
    const plan = planFromSpecText(readFileSync(join(ROOT, 'examples', 'local.yaml'), 'utf8'));
    for (const key of ['coordinator', 'sh', 'etcdctl']) {
      const problems = validatePlan({ ...plan, binaries: { [key]: '/usr/lib/postgresql/15/bin/psql' } }, defaultEngineCatalog());
      assert.ok(problems.some((p) => p.path === `binaries.${key}`), JSON.stringify(problems));
    }
  });
});

describe('options: allow lists per engine role', () => {
  const pg = engineDefaults('pg-ha');
  const refused = (role: 'agent' | 'dbserver' | 'coordinator', args: string[]) => extraArgProblems(args, pg.roles[role].options, 'args', 'pg-ha', role);

  test('the attacks of issue 11 are refused, naming the option', () => {
    for (const args of [['--command=\\! id > file'], ['--'], ['-fX'], ['-L', 'x'], ['-f', '/etc/x'], ['/etc/haproxy.cfg']]) {
      const p = refused('coordinator', args);
      assert.ok(p.length > 0 && p[0].path === 'args[0]', JSON.stringify(args));
    }
    assert.match(refused('coordinator', ['--command=x'])[0].message, /no extra arguments/);
    for (const a of ['--log-outputs=/etc/passwd', '--listen-metrics-urls=http://0.0.0.0:1', '--enable-pprof', '--config-file=/x', '-name=x']) {
      const p = refused('agent', [a]);
      assert.equal(p.length, 1, a);
      if (a.startsWith('--')) assert.ok(p[0].message.includes(`"--${longOptionName(a)}"`), p[0].message);
    }
    assert.match(refused('agent', ['--data-dir=/etc'])[0].message, /managed/);
  });

  test('allowed options pass in both spellings; values must match their pattern', () => {
    assert.deepEqual(refused('agent', ['--heartbeat-interval=200', '--election-timeout', '2000', '--log-level=warn']), []);
    assert.match(refused('agent', ['--heartbeat-interval=1; rm -rf /'])[0].message, /does not match/);
    assert.match(refused('agent', ['--log-level', 'debug\n'])[0].message, /does not match/);
    assert.equal(refused('agent', ['--log-level', 'debug\n'])[0].path, 'args[1]');
    assert.match(refused('agent', ['--election-timeout'])[0].message, /needs a value/);
  });

  test('engine profiles never allow a managed option', () => {
    for (const e of ['pg-ha', 'arangodb']) {
      for (const r of ROLES) {
        const o = engineDefaults(e).roles[r].options;
        for (const a of o.allowed) assert.ok(!o.managed.includes(a.name), `${e} ${r} ${a.name}`);
      }
    }
  });
});

describe('names that exist on every JavaScript object are data', () => {
  const NAMES = ['constructor', '__proto__', 'toString', 'hasOwnProperty', 'valueOf', 'prototype'];
  const spec = (over: Record<string, unknown>) => ({
    name: 'x',
    dispatchers: [1, 2, 3].map((i) => ({ id: `d${i}`, endpoint: `https://10.0.0.${i}:8528`, fingerprint: FP, addresses: [`10.0.0.${i}`] })),
    ...over,
  });
  const plan = () => planFromSpec(spec({}));

  for (const n of NAMES) {
    test(`"${n}" as engine, port name, role, binaries key, ports key: validation_failed with problems, never a TypeError`, () => {
      const cases: unknown[] = [];
      const p1 = structuredClone(plan());
      p1.engine = n;
      cases.push(p1);
      const p2 = structuredClone(plan());
      p2.processes[0].ports[0].name = n;
      cases.push(p2);
      const p3 = JSON.parse(JSON.stringify(plan()));
      p3.processes[0].role = n;
      cases.push(p3);
      cases.push(JSON.parse(JSON.stringify({ ...plan(), binaries: { [n]: '/usr/bin/etcd' } })));
      const p5 = JSON.parse(JSON.stringify(plan()));
      p5.processes[0].ports = JSON.parse(`{"${n}": 1}`);
      cases.push(p5);
      for (const c of cases) {
        const problems = validatePlan(c, defaultEngineCatalog());
        assert.ok(problems.length > 0, `accepted ${JSON.stringify(c).slice(0, 200)}`);
      }
      for (const over of [{ engine: n }, { ports: JSON.parse(`{"${n}.client": 1}`) }, { ports: JSON.parse(`{"agent.${n}": 1}`) }, { extraArgs: { agent: [`--${n}=1`] } }]) {
        assert.throws(() => planFromSpec(spec(over)), (e: unknown) => e instanceof DispatcherError && e.code === 'validation_failed' && e.problems.length > 0, JSON.stringify(over));
      }
      assert.equal(Object.prototype.hasOwnProperty.call(Object.prototype, 'polluted'), false);
    });
  }
});
