/** Engines: profiles load, rendering is golden, arangod argv equals the Starter's, errors name what is missing. */
import { PG_HA_DEBIAN_BINARIES } from '../../server/engines/debian.js';
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DispatcherError } from '../../api/errors.js';
import { planFromSpecText } from '../../launcher/planner.js';
import { planSchemaText } from '../../launcher/export-schema.js';
import { engineSecrets, generateSecrets, listEngines, loadEngine, renderProcess, type RenderContext } from '../../server/engines/index.js';
import { agencyVerdict, parseHaproxyCsv, parsePatroniStatus } from '../../server/engines/pg-ha-health.js';
import { expectGolden } from '../helpers/golden.js';

const ROOT = (() => {
  let d = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(d, 'package.json'))) d = dirname(d);
  return d;
})();
const example = (n: string) => planFromSpecText(readFileSync(join(ROOT, 'examples', `${n}.yaml`), 'utf8'));
const golden = expectGolden;

const BIN: Record<string, string> = { ...PG_HA_DEBIAN_BINARIES, arangod: '/usr/sbin/arangod' };
const ctxFor = (engine: string): RenderContext => ({
  dispatcherDataDir: '/var/lib/dispatcher',
  binaries: BIN,
  secrets: Object.fromEntries(engineSecrets(loadEngine(engine)).map((s) => [s, `SECRET-${s}`])),
  runAs: { uid: 999, gid: 999, user: 'dispatch' },
  // Fixed stand-ins: the goldens show where TLS files go and which options name them.
  tls: { ca: 'CA-CERTIFICATE-PEM\n', cert: 'PROCESS-CERTIFICATE-PEM\n', key: 'PROCESS-KEY-PEM\n' },
});

function renderAll(name: string) {
  const plan = example(name);
  const engine = loadEngine(plan.engine);
  return Object.fromEntries(plan.processes.map((p) => [p.id, renderProcess(engine, plan, p.id, ctxFor(plan.engine))]));
}

describe('engine profiles', () => {
  test('both engines load; secrets are declared and generated fresh', () => {
    assert.deepEqual(listEngines(), ['arangodb', 'pg-ha']);
    const pg = loadEngine('pg-ha');
    assert.deepEqual(engineSecrets(pg), ['superuser-password', 'replication-password', 'rewind-password', 'rest-password', 'pooler-admin-password']);
    const a = generateSecrets(pg);
    const b = generateSecrets(pg);
    assert.notEqual(a['superuser-password'], b['superuser-password']);
    assert.match(a['superuser-password'], /^[0-9a-f]{48}$/);
    assert.throws(() => loadEngine('nope'), (e: unknown) => e instanceof DispatcherError && e.problems[0].path === 'engine');
  });

  test('docs/plan.schema.json is up to date (node dist/launcher/export-schema.js rewrites it)', () => {
    assert.equal(readFileSync(join(ROOT, 'docs', 'plan.schema.json'), 'utf8'), planSchemaText());
  });
});

describe('pg-ha rendering', () => {
  test('golden: argv, probes and config files of a three-host cluster', () => {
    const r = renderAll('three-hosts');
    const view = Object.fromEntries(Object.entries(r).map(([id, x]) => [id, { spec: x.spec, files: x.files.map((f) => ({ ...f, mode: f.mode.toString(8) })), leftoverPidFile: x.leftoverPidFile, ...(x.companion ? { companion: { spec: x.companion.spec, files: x.companion.files.map((f) => ({ ...f, mode: f.mode.toString(8) })) } } : {}) }]));
    golden('pg-ha-three-hosts.render.json', JSON.stringify(view, null, 2) + '\n');
  });

  test('etcd: static initial cluster on the process address, token = cluster name', () => {
    const argv = renderAll('local')['agent-2'].spec.argv;
    assert.equal(argv[0], '/usr/bin/etcd');
    assert.ok(argv.includes('--initial-cluster=agent-1=https://127.0.0.1:2382,agent-2=https://127.0.0.1:2392,agent-3=https://127.0.0.1:2402'));
    assert.ok(argv.includes('--listen-client-urls=https://127.0.0.1:2391'));
    // Only holders of a cluster certificate may talk to etcd, as clients or as peers.
    assert.ok(argv.includes('--client-cert-auth') && argv.includes('--peer-client-cert-auth'));
    assert.ok(argv.includes('--initial-cluster-token=local'));
  });

  test('Patroni runs on /usr/bin/python3, its config and probe file are 0600 inside the process dir', () => {
    const r = renderAll('local')['dbserver-1'];
    assert.deepEqual(r.spec.argv, ['/usr/bin/python3', '/usr/bin/patroni', '/var/lib/dispatcher/clusters/local/dbserver-1/patroni.yml']);
    assert.deepEqual(r.spec.runAs, { uid: 999, gid: 999, user: 'dispatch' });
    for (const f of r.files) {
      assert.equal(f.mode, 0o600);
      assert.ok(f.path.startsWith('/var/lib/dispatcher/clusters/local/dbserver-1/'));
    }
    const yml = r.files.find((f) => f.path.endsWith('patroni.yml'))!.content;
    for (const want of ['ttl: 10', 'primary_start_timeout: 0', '"127.0.0.1:2391"', 'bin_dir: "/usr/lib/postgresql/15/bin"', 'password: "SECRET-superuser-password"', 'unix_socket_directories: "/var/lib/dispatcher/clusters/local/dbserver-1"']) {
      assert.ok(yml.includes(want), want);
    }
    assert.equal(r.spec.stopSignal, 'SIGTERM');
    assert.equal(r.leftoverPidFile, '/var/lib/dispatcher/clusters/local/dbserver-1/pgdata/postmaster.pid');
    // Secrets never appear in argv (command.txt, ps).
    assert.ok(!JSON.stringify(r.spec).includes('SECRET-'));
  });

  test('HAProxy: foreground, checks with the measured timings against every Patroni REST port', () => {
    const r = renderAll('local')['coordinator-1'];
    assert.deepEqual(r.spec.argv.slice(0, 3), ['/usr/sbin/haproxy', '-db', '-f']);
    const cfg = r.files[0].content;
    assert.ok(cfg.includes('option httpchk OPTIONS /primary') && cfg.includes('option httpchk OPTIONS /replica'));
    assert.ok(cfg.includes('inter 500ms fastinter 250ms fall 2 rise 1 on-marked-down shutdown-sessions'));
    assert.ok(cfg.includes('server dbserver-3 127.0.0.1:5453 maxconn 200 check port 8028'));
  });

  test('a program without a configured binary is refused, naming program and engine', () => {
    const plan = example('local');
    const { psql: _omit, ...bins } = BIN;
    assert.throws(
      () => renderProcess(loadEngine('pg-ha'), plan, 'dbserver-1', { ...ctxFor('pg-ha'), binaries: bins }),
      (e: unknown) => e instanceof DispatcherError && /"psql"/.test(e.message) && /pg-ha/.test(e.message),
    );
    assert.throws(
      () => renderProcess(loadEngine('pg-ha'), { ...plan, binaries: { etcd: '/tmp/evil' } }, 'agent-1', ctxFor('pg-ha')),
      (e: unknown) => e instanceof DispatcherError && e.code === 'forbidden',
    );
    assert.equal(renderProcess(loadEngine('pg-ha'), { ...plan, binaries: { etcd: '/usr/bin/etcd' } }, 'agent-1', ctxFor('pg-ha')).spec.argv[0], '/usr/bin/etcd');
    assert.throws(() => renderProcess(loadEngine('pg-ha'), plan, 'agent-1', { ...ctxFor('pg-ha'), secrets: {} }), /secret/);
    // Cluster TLS is not optional: without the process's certificates nothing renders, and the error says why.
    const { tls: _none, ...noTls } = ctxFor('pg-ha');
    for (const id of ['agent-1', 'dbserver-1', 'coordinator-1']) assert.throws(() => renderProcess(loadEngine('pg-ha'), plan, id, noTls), /TLS certificates/);
    assert.throws(() => renderProcess(loadEngine('pg-ha'), { ...plan, processes: plan.processes.map((p) => ({ ...p, dataDir: '../../etc' })) }, 'agent-1', ctxFor('pg-ha')), /escapes/);
  });
});

describe('arangodb rendering', () => {
  /** The Starter's createArangodArgs (service/arangod_config_builder.go) with --ssl.keyfile set (scheme ssl), for one process. */
  function starterArgs(role: 'agent' | 'dbserver' | 'coordinator', dir: string, me: string, agents: string[]): string[] {
    const args = ['/usr/sbin/arangod', '-c', `${dir}/arangod.conf`];
    const opts: [string, string][] = [
      ['--database.directory', `${dir}/data`],
      ['--log.file', `${dir}/arangod.log`],
      ['--log.force-direct', 'false'],
      ['--javascript.startup-directory', '/usr/share/arangodb3/js'],
      ['--javascript.app-path', `${dir}/apps`],
      ['--server.jwt-secret-keyfile', `${dir}/jwt-secret`],
      ['--javascript.copy-installation', 'true'],
    ];
    if (role === 'agent') {
      opts.push(['--agency.activate', 'true'], ['--agency.my-address', `ssl://${me}`], ['--agency.size', String(agents.length)], ['--agency.supervision', 'true'], ['--foxx.queues', 'false']);
      for (const a of agents) if (a !== me) opts.push(['--agency.endpoint', `ssl://${a}`]);
    } else {
      opts.push(['--cluster.my-address', `ssl://${me}`], ['--cluster.my-role', role === 'dbserver' ? 'PRIMARY' : 'COORDINATOR'], ['--foxx.queues', role === 'dbserver' ? 'false' : 'true']);
      for (const a of agents) opts.push(['--cluster.agency-endpoint', `ssl://${a}`]);
    }
    return [...args, ...opts.flat()];
  }

  test('argv equals the Starter list for every role', () => {
    const plan = example('arangodb');
    const r = renderAll('arangodb');
    const agents = plan.processes.filter((p) => p.role === 'agent').map((p) => `${p.address}:${p.ports[0].port}`);
    for (const p of plan.processes) {
      const want = starterArgs(p.role, `/var/lib/dispatcher/${p.dataDir}`, `${p.address}:${p.ports[0].port}`, agents);
      assert.deepEqual(r[p.id].spec.argv, [...want, ...p.args], p.id);
    }
  });

  test('golden: arangod.conf, JWT secret file 0600, readiness', () => {
    const r = renderAll('arangodb');
    const view = Object.fromEntries(['agent-1', 'dbserver-1', 'coordinator-1'].map((id) => [id, { spec: r[id].spec, files: r[id].files.map((f) => ({ ...f, mode: f.mode.toString(8) })) }]));
    golden('arangodb.render.json', JSON.stringify(view, null, 2) + '\n');
    const jwt = r['agent-1'].files.find((f) => f.path.endsWith('/jwt-secret'))!;
    assert.equal(jwt.mode, 0o600);
    assert.equal(jwt.content, 'SECRET-jwt-secret');
    // TLS as the Starter renders it: ssl:// endpoint and the [ssl] keyfile (certificate + key, 0600).
    const conf = r['agent-1'].files.find((f) => f.path.endsWith('/arangod.conf'))!.content;
    assert.match(conf, /^endpoint = ssl:\/\/10\.0\.1\.1:8531$/m);
    assert.match(conf, /^\[ssl\]\nkeyfile = \/var\/lib\/dispatcher\/clusters\/arango\/agent-1\/tls-server\.pem$/m);
    const pem = r['agent-1'].files.find((f) => f.path.endsWith('/tls-server.pem'))!;
    assert.equal(pem.mode, 0o600);
    assert.equal(pem.content, 'PROCESS-CERTIFICATE-PEM\nPROCESS-KEY-PEM\n');
  });
});

describe('pg-ha health parsers', () => {
  test('agency: a quorum must agree on a leader that is a plan agent', () => {
    const m = (id: string, memberId: string, leader: string, reachable = true) => ({ id, memberId, leader, reachable });
    assert.deepEqual(agencyVerdict([m('agent-1', '11', '22'), m('agent-2', '22', '22'), m('agent-3', '33', '0', false)]).leaderId, 'agent-2');
    assert.equal(agencyVerdict([m('agent-1', '11', '0'), m('agent-2', '22', '0'), m('agent-3', '33', '0')]).hasLeader, false);
    assert.equal(agencyVerdict([m('agent-1', '11', '99'), m('agent-2', '22', '99'), m('agent-3', '33', '99')]).hasLeader, false);
  });

  test('Patroni /patroni', () => {
    assert.equal(parsePatroniStatus('d', 200, '{"state": "running", "role": "master", "timeline": 2}').role, 'leader');
    const r = parsePatroniStatus('d', 503, '{"state": "creating replica", "role": "replica"}');
    assert.equal(r.role, 'replica');
    assert.equal(r.running, false);
  });

  test('HAProxy CSV: checks must have run and exactly one primary be up', () => {
    const head = '# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status\n';
    const row = (px: string, sv: string, status: string, check: string) => `${px},${sv},${Array(15).fill('0').join(',')},${status},${Array(18).fill('0').join(',')},${check}\n`;
    const ok = parseHaproxyCsv('c', head + row('primary', 'dbserver-1', 'UP', 'L7OK') + row('primary', 'dbserver-2', 'DOWN', 'L7STS') + row('replicas', 'dbserver-2', 'UP', 'L7OK'));
    assert.equal(ok.ok, true);
    assert.deepEqual(ok.replicasUp, ['dbserver-2']);
    assert.equal(parseHaproxyCsv('c', head + row('primary', 'dbserver-1', 'UP', 'INI') + row('primary', 'dbserver-2', 'UP', 'INI')).ok, false);
    assert.equal(parseHaproxyCsv('c', head + row('primary', 'dbserver-1', 'UP', 'L7OK') + row('primary', 'dbserver-2', 'UP', 'L7OK')).ok, false);
  });
});
