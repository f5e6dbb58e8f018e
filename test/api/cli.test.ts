/**
 * API tier, the `dispatcherd` CLI and a real daemon child process: init (idempotent, EC P-256/sha256,
 * SANs), user add via stdin with its refusals, config validation and env overrides, start/stop.
 */
import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig, parseConfig } from '../../server/config.js';
import { DispatcherError } from '../../api/errors.js';
import { addUser, initDataDir, httpsGet, runDispatcherd, startDispatcherd, type DataDir } from '../helpers/daemon.js';

const dirs: DataDir[] = [];
after(() => {
  for (const d of dirs) d.remove();
});

describe('dispatcherd init', () => {
  test('makes a 0700 data dir and an EC P-256 sha256 certificate with every SAN; a second run keeps key and fingerprint', async () => {
    const d = await initDataDir({ id: 'node-a', addresses: ['10.20.30.40', 'db1.example.net'] });
    dirs.push(d);
    assert.equal(d.id, 'node-a');
    assert.match(d.fingerprint, /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
    assert.equal(statSync(d.dataDir).mode & 0o777, 0o700);
    const keyFile = join(d.dataDir, 'tls', 'key.pem');
    assert.equal(statSync(keyFile).mode & 0o777, 0o600);
    const key1 = readFileSync(keyFile, 'utf8');
    const x = new X509Certificate(d.cert);
    assert.equal(x.fingerprint256, d.fingerprint);
    const san = x.subjectAltName ?? '';
    for (const want of ['IP Address:10.20.30.40', 'DNS:db1.example.net', 'IP Address:127.0.0.1', 'IP Address:0:0:0:0:0:0:0:1', 'DNS:localhost']) assert.ok(san.includes(want), `SAN ${want} missing in ${san}`);
    const pub = x.publicKey;
    assert.equal(pub.asymmetricKeyType, 'ec');
    assert.equal(pub.asymmetricKeyDetails?.namedCurve, 'prime256v1');
    const der = x.raw.toString('hex');
    assert.ok(der.includes('06082a8648ce3d040302'), 'signed with ecdsa-with-SHA256');

    const again = await runDispatcherd(['init', '--data-dir', d.dataDir]);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, new RegExp(`fingerprint: ${d.fingerprint}`));
    assert.match(again.stdout, /id: node-a/);
    assert.equal(readFileSync(keyFile, 'utf8'), key1);
    const fp = await runDispatcherd(['fingerprint', '--data-dir', d.dataDir]);
    assert.equal(fp.stdout.trim(), d.fingerprint);
  });
});

describe('dispatcherd init makes a machine that works (README "by hand")', () => {
  test('--engine pg-ha --run-as USER: Debian paths and runAs in the config; uid 0 refused; an existing tree keeps its mode', async () => {
    const root = mkdtempSync(join(tmpdir(), 'cd-init-engine-'));
    try {
      const dir = join(root, 'data');
      const asRoot = await runDispatcherd(['init', '--data-dir', dir, '--engine', 'pg-ha', '--run-as', 'root']);
      assert.notEqual(asRoot.code, 0);
      assert.match(asRoot.stderr, /uid 0/);
      const noUser = await runDispatcherd(['init', '--data-dir', dir, '--engine', 'pg-ha']);
      assert.notEqual(noUser.code, 0);
      assert.match(noUser.stderr, /--run-as/);
      const unknown = await runDispatcherd(['init', '--data-dir', dir, '--engine', 'constructor', '--run-as', 'cluster-dispatcher']);
      assert.notEqual(unknown.code, 0);
      assert.match(unknown.stderr, /unknown engine/);
      assert.equal(existsSync(dir), false, 'a refused init leaves nothing behind');

      const ok = await runDispatcherd(['init', '--data-dir', dir, '--engine', 'pg-ha', '--run-as', 'cluster-dispatcher']);
      assert.equal(ok.code, 0, ok.stderr);
      const config = loadConfig(join(dir, 'config.yaml'), {});
      assert.equal(config.runAs, 'cluster-dispatcher');
      assert.equal(config.engines['pg-ha'].binaries.etcd, '/usr/bin/etcd');
      assert.equal(config.engines['pg-ha'].binaries.psql, '/usr/lib/postgresql/15/bin/psql');
      assert.equal(statSync(dir).mode & 0o777, 0o711, 'the process user may pass through the new data dir');

      // "Safe to run again": never loosens or tightens an existing tree.
      chmodSync(dir, 0o750);
      const again = await runDispatcherd(['init', '--data-dir', dir, '--engine', 'pg-ha', '--run-as', 'cluster-dispatcher']);
      assert.equal(again.code, 0, again.stderr);
      assert.equal(statSync(dir).mode & 0o777, 0o750);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});

describe('dispatcherd user', () => {
  test('add via stdin stores only a scrypt hash (0600); list shows names; refuses ":" and short passwords; remove', async () => {
    const d = await initDataDir({ id: 'node-u' });
    dirs.push(d);
    await addUser(d.dataDir, 'bob', 'long-enough-password');
    const usersFile = join(d.dataDir, 'users.json');
    assert.equal(statSync(usersFile).mode & 0o777, 0o600);
    const text = readFileSync(usersFile, 'utf8');
    assert.ok(!text.includes('long-enough-password'));
    assert.match(JSON.parse(text).users.bob.hash, /^scrypt\$/);

    const colon = await runDispatcherd(['user', 'add', 'carol', '--data-dir', d.dataDir], { input: 'has:a-colon-inside\n' });
    assert.notEqual(colon.code, 0);
    assert.match(colon.stderr, /must not contain ':'/);
    const short = await runDispatcherd(['user', 'add', 'carol', '--data-dir', d.dataDir], { input: 'short\n' });
    assert.notEqual(short.code, 0);
    assert.match(short.stderr, /at least 12 characters/);
    const pwFile = join(d.root, 'pw');
    writeFileSync(pwFile, 'password-from-a-file\n', { mode: 0o600 });
    const fromFile = await runDispatcherd(['user', 'add', 'dave', '--data-dir', d.dataDir, '--password-file', pwFile]);
    assert.equal(fromFile.code, 0, fromFile.stderr);
    const list = await runDispatcherd(['user', 'list', '--data-dir', d.dataDir]);
    assert.deepEqual(list.stdout.trim().split('\n').map((l) => l.split('\t')[0]), ['bob', 'dave']);
    assert.ok(!list.stdout.includes('scrypt'));
    const rm = await runDispatcherd(['user', 'remove', 'bob', '--data-dir', d.dataDir]);
    assert.equal(rm.code, 0, rm.stderr);
    const rm2 = await runDispatcherd(['user', 'remove', 'bob', '--data-dir', d.dataDir]);
    assert.notEqual(rm2.code, 0);
  });
});

describe('configuration', () => {
  test('an unknown key is refused naming the key (top level and nested)', () => {
    assert.throws(() => parseConfig({ dataDir: '/tmp/x', prot: 1 }, {}), (e: unknown) => e instanceof DispatcherError && e.code === 'config_invalid' && /prot/.test(e.message));
    assert.throws(() => parseConfig({ dataDir: '/tmp/x', log: { levle: 'info' } }, {}), (e: unknown) => e instanceof DispatcherError && e.problems.some((p) => p.path === 'log.levle'));
    assert.throws(() => parseConfig({ dataDir: '/tmp/x', port: 70000, runAs: 'root' }, {}), (e: unknown) => e instanceof DispatcherError && e.problems.length === 2);
  });

  test('environment overrides the file; a bad env value names the variable', () => {
    const c = parseConfig({ dataDir: '/tmp/x', port: 9000, log: { level: 'info' } }, { DISPATCHER_PORT: '9100', DISPATCHER_LOG_LEVEL: 'debug', DISPATCHER_LISTEN: '127.0.0.1' });
    assert.equal(c.port, 9100);
    assert.equal(c.log.level, 'debug');
    assert.equal(c.listen, '127.0.0.1');
    assert.equal(c.socketPath, '/tmp/x/control.sock');
    assert.equal(c.usersFile, '/tmp/x/users.json');
    assert.throws(() => parseConfig({ dataDir: '/tmp/x' }, { DISPATCHER_PORT: 'eighty' }), (e: unknown) => e instanceof DispatcherError && /DISPATCHER_PORT/.test(e.message));
  });

  test('YAML and JSON files load; `dispatcherd start` with an unknown key exits non-zero naming it', async () => {
    const d = await initDataDir({ id: 'node-c' });
    dirs.push(d);
    const json = join(d.root, 'c.json');
    writeFileSync(json, JSON.stringify({ dataDir: d.dataDir, port: 9999 }));
    assert.equal(loadConfig(json, {}).port, 9999);
    writeFileSync(d.configFile, readFileSync(d.configFile, 'utf8') + 'bogusKey: 1\n');
    const r = await runDispatcherd(['start', '--config', d.configFile], { timeoutMs: 15_000 });
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /bogusKey/);
  });
});

describe('dispatcherd start (child process)', () => {
  test('serves verified HTTPS with a password, stops on SIGTERM', async () => {
    const run = await startDispatcherd({ id: 'node-s' });
    dirs.push(run.dir);
    try {
      const unauth = await httpsGet(`${run.url}/v1/id`, run.cert);
      assert.equal(unauth.status, 401);
      const id = await httpsGet(`${run.url}/v1/id`, run.cert, { auth: `${run.user}:${run.password}` });
      assert.equal(id.status, 200, run.output());
      assert.equal(JSON.parse(id.body).fingerprint, run.fingerprint);
      assert.equal(statSync(run.socketPath).mode & 0o777, 0o600);
    } finally {
      const r = await run.stop();
      assert.equal(r.code, 0, run.output());
    }
    assert.ok(!run.output().includes(run.password));
  });
});
