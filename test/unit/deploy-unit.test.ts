/** Rendering of the systemd unit, the daemon config and the dispatchers file (deploy/render.ts). */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { SpecDispatcherSchema } from '../../api/plan.js';
import { ConfigFileSchema } from '../../server/config.js';
import { parseInventory, resolveHosts } from '../../deploy/inventory.js';
import { packageRoot, renderConfig, renderDispatchersFile, renderUnit } from '../../deploy/render.js';

const FP = 'SHA256:' + 'A'.repeat(43);
const params = { id: 'db1', prefix: '/opt/cluster-dispatcher', dataDir: '/var/lib/cluster-dispatcher', configFile: '/etc/cluster-dispatcher/dispatcherd.yaml', runAs: 'dispatcher', port: 8528 };

function directives(unit: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of unit.split('\n')) {
    const r = /^([A-Za-z]+)=(.*)$/.exec(line);
    if (r) m.set(r[1], r[2]);
  }
  return m;
}

describe('systemd unit', () => {
  test('hardening and lifecycle directives', () => {
    const d = directives(renderUnit(params));
    assert.equal(d.get('ExecStart'), '/opt/cluster-dispatcher/current/bin/dispatcherd start --config /etc/cluster-dispatcher/dispatcherd.yaml');
    assert.equal(d.get('KillMode'), 'process', 'supervised processes outlive a daemon restart');
    assert.equal(d.get('Restart'), 'on-failure');
    assert.equal(d.get('NoNewPrivileges'), 'yes');
    assert.equal(d.get('ProtectSystem'), 'strict');
    assert.equal(d.get('ReadWritePaths'), '/var/lib/cluster-dispatcher');
    assert.equal(d.get('ProtectHome'), 'yes');
    assert.equal(d.get('PrivateTmp'), 'yes');
    const caps = d.get('CapabilityBoundingSet')!.split(' ');
    for (const c of ['CAP_NET_ADMIN', 'CAP_SETUID', 'CAP_SETGID', 'CAP_KILL']) assert.ok(caps.includes(c), c);
    for (const c of ['CAP_SYS_ADMIN', 'CAP_SYS_MODULE', 'CAP_SYS_PTRACE', 'CAP_NET_BIND_SERVICE']) assert.ok(!caps.includes(c), c);
    assert.equal(d.get('AmbientCapabilities'), '');
    assert.equal(d.get('WantedBy'), 'multi-user.target');
  });
  test('a port below 1024 adds CAP_NET_BIND_SERVICE', () => {
    assert.ok(directives(renderUnit({ ...params, port: 443 })).get('CapabilityBoundingSet')!.includes('CAP_NET_BIND_SERVICE'));
  });
  test('a template variable that is missing fails instead of rendering empty', () => {
    assert.throws(() => renderUnit(params, 'ExecStart={{nope}}\n'));
  });
  test('systemd-analyze verify accepts the rendered unit', async () => {
    // ExecStart must exist for verify: point the prefix at a tree whose current/bin/dispatcherd is this
    // checkout's bin/dispatcherd.
    const dir = await mkdtemp(path.join(os.tmpdir(), 'deploy-unit-'));
    try {
      const prefix = path.join(dir, 'prefix');
      await import('node:fs/promises').then(async (fs) => {
        await fs.mkdir(prefix);
        await fs.symlink(packageRoot(), path.join(prefix, 'current'));
        await fs.mkdir(path.join(dir, 'data'));
        await fs.writeFile(path.join(dir, 'dispatcherd.yaml'), 'dataDir: /x\n');
      });
      const unitFile = path.join(dir, 'cdtdeploy-verify.service');
      await writeFile(unitFile, renderUnit({ ...params, prefix, dataDir: path.join(dir, 'data'), configFile: path.join(dir, 'dispatcherd.yaml') }));
      const r = await new Promise<{ code: number; out: string }>((resolve) =>
        execFile('systemd-analyze', ['verify', unitFile], { encoding: 'utf8' }, (err, stdout, stderr) =>
          resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, out: stdout + stderr }),
        ),
      );
      assert.equal(r.code, 0, r.out);
      // verify prints warnings for unknown/invalid directives without failing: refuse those too.
      const mine = r.out.split('\n').filter((l) => l.includes(unitFile) || /Unknown (key|section)|Failed to parse/i.test(l));
      assert.deepEqual(mine, [], r.out);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('config and dispatchers file', () => {
  const inv = parseInventory(
    `name: c\nrunAs: pg\nengines: {pg-ha: {binaries: {etcd: /usr/bin/etcd}}}\nhosts:\n  - {address: 10.0.0.1, keyFile: k, hostKeyFingerprint: ${FP}, addresses: [10.0.0.1, "fd00::1"], id: d1}\n`,
  );
  const [h] = resolveHosts(inv, '/', {});
  test('the rendered config is valid for the daemon', () => {
    const cfg = ConfigFileSchema.parse(parseYaml(renderConfig(inv, h)));
    assert.equal(cfg.id, 'd1');
    assert.equal(cfg.listen, '::');
    assert.equal(cfg.endpoint, 'https://10.0.0.1:8528');
    assert.equal(cfg.runAs, 'pg');
    assert.equal(cfg.engines['pg-ha'].binaries.etcd, '/usr/bin/etcd');
  });
  test('the dispatchers file parses as spec dispatchers', () => {
    const fp = Array.from({ length: 32 }, () => 'AB').join(':');
    const doc = parseYaml(renderDispatchersFile('c', [{ id: 'd1', endpoint: h.endpoint, fingerprint: fp, addresses: h.addresses }])) as { dispatchers: unknown[] };
    const d = SpecDispatcherSchema.parse(doc.dispatchers[0]);
    assert.equal(d.fingerprint, fp);
  });
});
