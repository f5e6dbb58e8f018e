/**
 * Config text (docs/SECURITY.md, "Operator account"): hostile strings fed into every user-controlled plan
 * field, and into the dispatcher's own data dir, are either refused at validation or rendered into configs
 * that the REAL parsers read with the same structure as a benign plan: `haproxy -c` accepts the file and it
 * has exactly the benign sections, binds and servers; `patroni --validate-config` reports exactly what it
 * reports for the benign file (it always complains about loopback and unreachable etcd; an injected key or
 * value would change that set); YAML parses to the same key tree; etcd's argv has the same options in order.
 * Needs haproxy and patroni (Debian packages); runs no server and opens no port.
 */
import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import { DispatcherError } from '../../api/errors.js';
import type { Plan } from '../../api/plan.js';
import { planFromSpecText } from '../../launcher/planner.js';
import { validatePlan } from '../../server/core/validate-plan.js';
import { defaultEngineCatalog } from '../../server/engines/loader.js';
import { PG_HA_DEBIAN_BINARIES } from '../../server/engines/debian.js';
import { loadEngine, renderProcess, type RenderedProcess } from '../../server/engines/index.js';
import { hostAddresses } from '../../server/core/listen-addresses.js';

const ROOT = (() => {
  let d = dirname(fileURLToPath(import.meta.url));
  while (!readdirHas(d, 'package.json')) d = dirname(d);
  return d;
})();
function readdirHas(d: string, f: string): boolean {
  try {
    readFileSync(join(d, f));
    return true;
  } catch {
    return false;
  }
}

const HOSTILE = [
  'a\nlisten evil\n    bind 0.0.0.0:4444',
  'a\rb',
  'a\u0000b',
  'a"b',
  "a'b",
  'a{{dir}}b',
  '{{#each agents}}x{{/each}}',
  '100%',
  '%[env(HOME)]',
  'a b',
  '-f',
  '--',
  '#x',
  'x'.repeat(5000),
  'ünïcödé',
  '\u2028x',
  'a\\b',
  'a:b',
  '$HOME',
  '__proto__',
  'constructor',
];

const BASE: Plan = planFromSpecText(readFileSync(join(ROOT, 'examples', 'local.yaml'), 'utf8'));
const engine = loadEngine('pg-ha');
const SECRETS = { 'superuser-password': 's1', 'replication-password': 's2', 'rewind-password': 's3', 'rest-password': 's4', 'pooler-admin-password': 's5' };
// Stand-ins: the configs name the TLS files; their content is never parsed here.
const TLS = { ca: 'CA-CERTIFICATE-PEM\n', cert: 'PROCESS-CERTIFICATE-PEM\n', key: 'PROCESS-KEY-PEM\n' };
const work = mkdtempSync(join(tmpdir(), 'cd-config-text-'));
after(() => rmSync(work, { recursive: true, force: true }));

/** Every user-controlled string field of a plan, as a setter. */
const FIELDS: Record<string, (p: Plan, v: string) => void> = {
  name: (p, v) => (p.name = v),
  engine: (p, v) => (p.engine = v),
  dataRoot: (p, v) => (p.dataRoot = v),
  'processes[].id': (p, v) => (p.processes[0].id = v),
  'processes[].dataDir': (p, v) => (p.processes.find((x) => x.role === 'coordinator')!.dataDir = v),
  'processes[].dataDir (suffix)': (p, v) => {
    const c = p.processes.find((x) => x.role === 'coordinator')!;
    c.dataDir = `${c.dataDir}${v}`;
  },
  'processes[].address': (p, v) => (p.processes[0].address = v),
  'processes[].args': (p, v) => (p.processes[0].args = [v]),
  'processes[].args value': (p, v) => (p.processes[0].args = ['--log-level', v]),
  'processes[].args inline value': (p, v) => (p.processes[0].args = [`--heartbeat-interval=${v}`]),
  'processes[].ports[].name': (p, v) => (p.processes[0].ports[0].name = v),
  'dispatchers[].id': (p, v) => (p.dispatchers[0].id = v),
  'dispatchers[].endpoint': (p, v) => (p.dispatchers[0].endpoint = `https://127.0.0.1:8528/${v}`),
  'dispatchers[].addresses[]': (p, v) => (p.dispatchers[0].addresses = [v]),
  'binaries value': (p, v) => (p.binaries = { etcd: v }),
  'binaries key': (p, v) => (p.binaries = JSON.parse(JSON.stringify({ [v]: '/usr/bin/etcd' }))),
  'firewall.clientSources[]': (p, v) => (p.firewall.clientSources = [v]),
  'firewall.operatorSources[]': (p, v) => (p.firewall.operatorSources = [v]),
};

function renderAll(plan: Plan, dispatcherDataDir: string): Map<string, RenderedProcess> {
  return new Map(plan.processes.map((p) => [p.id, renderProcess(engine, plan, p.id, { dispatcherDataDir, binaries: PG_HA_DEBIAN_BINARIES, secrets: SECRETS, tls: TLS })]));
}

/** A throwaway self-signed certificate and key for `haproxy -c` (made by openssl, in the work dir). */
const CHECK_PAIR = (() => {
  const key = join(work, 'check.key');
  const ca = join(work, 'check.crt');
  const r = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', ca, '-subj', '/CN=config-text', '-days', '1'], { encoding: 'utf8' });
  assert.equal(r.status, 0, `openssl: ${r.stderr}`);
  const pem = join(work, 'check.pem');
  writeFileSync(pem, readFileSync(ca, 'utf8') + readFileSync(key, 'utf8'), { mode: 0o600 });
  return { ca, pem };
})();

/** HAProxy's view: `haproxy -c` must accept the file; the structure is every non-comment line's first word plus bind/server targets. */
function haproxyStructure(cfg: string, dir: string): string[] {
  const file = join(work, 'haproxy.cfg');
  // haproxy -c loads the check's CA and certificate: point them at a real pair (the structure below still
  // reads the rendered paths).
  writeFileSync(file, cfg.replace(/ca-file ("(?:[^"\\]|\\.)*"|\S+) crt ("(?:[^"\\]|\\.)*"|\S+)/g, `ca-file ${CHECK_PAIR.ca} crt ${CHECK_PAIR.pem}`));
  const r = spawnSync('/usr/sbin/haproxy', ['-c', '-f', file], { encoding: 'utf8' });
  assert.equal(r.status, 0, `haproxy -c refused the rendered config:\n${r.stdout}${r.stderr}`);
  return cfg
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => {
      const w = l.split(/\s+/);
      // bind ADDRESS / server NAME ADDRESS: the address matters, the server's name is a process id.
      return (w[0] === 'bind' ? w.slice(0, 2) : w[0] === 'server' ? [w[0], w[2]] : w.slice(0, 1)).join(' ').replaceAll(dir, '<dir>');
    });
}

function keyTree(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(keyTree);
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, keyTree(x)]));
  return typeof v;
}

/** Patroni's view: the set of its validator's complaints (paths normalised), and the YAML key tree. */
function patroniStructure(yml: string, dir: string): { complaints: string[]; tree: unknown } {
  const file = join(work, 'patroni.yml');
  writeFileSync(file, yml);
  const r = spawnSync('/usr/bin/python3', ['/usr/bin/patroni', '--validate-config', file], { encoding: 'utf8' });
  const complaints = `${r.stdout}${r.stderr}`.split('\n').filter(Boolean).map((l) => l.replaceAll(dir, '<dir>')).sort();
  return { complaints, tree: keyTree(YAML.parse(yml)) };
}

function structure(rendered: Map<string, RenderedProcess>, dir: string) {
  const out: Record<string, unknown> = {};
  for (const [index, r] of [...rendered.values()].entries()) {
    const id = `${r.spec.role}#${index}`;
    const argvShape = r.spec.argv.slice(1).map((a) => (a.startsWith('--') ? a.split('=')[0] : '<value>'));
    out[`${id} argv`] = argvShape;
    for (const f of r.files) {
      const name = f.path.slice(f.path.lastIndexOf('/') + 1);
      if (name === 'haproxy.cfg') out[`${id} ${name}`] = haproxyStructure(f.content, dir);
      else if (name === 'patroni.yml' && id === 'dbserver#3') out[`${id} ${name}`] = patroniStructure(f.content, dir);
      else if (name === 'probe.pgpass') out[`${id} ${name}`] = f.content.split('\n').length;
    }
  }
  return out;
}

describe('config text: hostile strings are refused or rendered with the benign structure', () => {
  const baselineDir = '/var/lib/cluster-dispatcher';
  const baseline = structure(renderAll(BASE, baselineDir), baselineDir);

  test('every plan field × every hostile string', () => {
    let refused = 0;
    let rendered = 0;
    for (const [field, set] of Object.entries(FIELDS)) {
      for (const v of HOSTILE) {
        const plan = structuredClone(BASE);
        set(plan, v);
        const problems = validatePlan(plan, defaultEngineCatalog());
        if (problems.length > 0) {
          refused++;
          assert.ok(problems.every((p) => typeof p.path === 'string' && p.message.length > 0));
          assert.ok(!problems.some((p) => p.message.includes('\n')), `a problem message echoes a raw newline for ${field}`);
          continue;
        }
        rendered++;
        assert.deepEqual(structure(renderAll(plan, baselineDir), baselineDir), baseline, `${field} = ${JSON.stringify(v).slice(0, 80)}`);
      }
    }
    // Only "constructor" (a valid name) passes, as a cluster, process or dispatcher name.
    assert.ok(refused > 0 && rendered > 0, `refused ${refused}, rendered ${rendered}`);
  });

  test('the dispatcher data dir (machine config) with hostile text: refused with config_invalid, or the same structure', () => {
    let same = 0;
    let refused = 0;
    for (const v of [...HOSTILE.filter((h) => !h.includes('\u0000')), '-dir', 'a-b.c', 'x.y_z']) {
      // Short: a Unix socket path holds 107 bytes (preflight refuses longer data dirs, see server/cluster/preflight.ts).
      const dir = `/var/lib/cd-${v.slice(0, 40)}`;
      let rendered: Map<string, RenderedProcess>;
      try {
        rendered = renderAll(BASE, dir);
      } catch (e) {
        assert.ok(e instanceof DispatcherError && ['config_invalid', 'validation_failed'].includes(e.code), String(e));
        refused++;
        continue;
      }
      assert.deepEqual(structure(rendered, dir), baseline, `data dir ${JSON.stringify(dir).slice(0, 80)}`);
      same++;
    }
    assert.ok(same >= 3 && refused > 0, `same ${same}, refused ${refused}`);
  });
});

describe('Patroni REST on a host with IPv4 and IPv6 plan addresses (docs/FIREWALL.md, "Both address families")', () => {
  // "Port … already in use" depends on what else runs on this machine, not on the text: left out.
  const restComplaints = (yml: string): string[] =>
    patroniStructure(yml, '/var/lib/cluster-dispatcher').complaints.filter((l) => l.startsWith('restapi.listen') && !l.includes('already in use'));

  test('restapi.listen is one dual-stack socket patroni --validate-config accepts; the address list it refuses', () => {
    const plan = planFromSpecText(readFileSync(join(ROOT, 'examples', 'three-hosts.yaml'), 'utf8'));
    const dual = plan.processes.find((p) => p.role === 'dbserver' && hostAddresses(plan, p).length > 1);
    assert.ok(dual, 'examples/three-hosts.yaml has a DB server on a host with two plan addresses');
    const port = dual.ports.find((x) => x.name === 'rest')!.port;
    const r = renderProcess(engine, plan, dual.id, { dispatcherDataDir: '/var/lib/cluster-dispatcher', binaries: PG_HA_DEBIAN_BINARIES, secrets: SECRETS, tls: TLS });
    const yml = r.files.find((f) => f.path.endsWith('/patroni.yml'))!.content;
    assert.equal((YAML.parse(yml) as { restapi: { listen: string } }).restapi.listen, `[::]:${port}`);
    assert.deepEqual(restComplaints(yml), []);
    // Why not exact addresses: Patroni 3.0.2 binds one socket and cannot resolve a list.
    const list = yml.replace(JSON.stringify(`[::]:${port}`), JSON.stringify(`${hostAddresses(plan, dual).join(',')}:${port}`));
    assert.notEqual(list, yml);
    assert.ok(restComplaints(list).some((l) => l.includes('Name or service not known')), restComplaints(list).join('\n'));
  });
});
