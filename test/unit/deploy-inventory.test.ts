/** Inventory validation and resolution (deploy/inventory.ts). */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { DispatcherError } from '../../api/errors.js';
import { defaultHostId, parseInventory, resolveHosts } from '../../deploy/inventory.js';

const FP = 'SHA256:' + 'A'.repeat(43);

function problemsOf(text: string): { path: string; message: string }[] {
  try {
    parseInventory(text);
  } catch (e) {
    assert.ok(e instanceof DispatcherError);
    assert.equal(e.code, 'validation_failed');
    return e.problems;
  }
  assert.fail('expected a validation error');
}

describe('inventory', () => {
  test('a minimal inventory gets every default', () => {
    const inv = parseInventory(`name: prod\nhosts:\n  - address: 10.0.0.1\n    keyFile: id_ed25519\n    hostKeyFingerprint: ${FP}\n    addresses: [10.0.0.1, "fd00::1"]\n`);
    assert.equal(inv.prefix, '/opt/cluster-dispatcher');
    assert.equal(inv.dataDir, '/var/lib/cluster-dispatcher');
    assert.equal(inv.port, 8528);
    assert.equal(inv.runAs, 'dispatcher');
    assert.equal(inv.parallelism, 4);
    const [h] = resolveHosts(inv, '/home/op/inv', {});
    assert.equal(h.id, 'h-10-0-0-1');
    assert.equal(h.keyFile, '/home/op/inv/id_ed25519');
    assert.equal(h.endpoint, 'https://10.0.0.1:8528');
    assert.equal(h.sshPort, 22);
    assert.equal(h.user, 'root');
  });

  test('IPv6 endpoints are bracketed; host overrides win over cluster defaults', () => {
    const inv = parseInventory(
      `name: c\nport: 9000\nhosts:\n  - {address: db1, agent: /run/agent.sock, hostKeyFingerprint: ${FP}, addresses: ["fd00::5"], port: 9443, dataDir: /srv/d1, id: db-1}\n`,
    );
    const [h] = resolveHosts(inv, '/x', {});
    assert.equal(h.endpoint, 'https://[fd00::5]:9443');
    assert.equal(h.dataDir, '/srv/d1');
    assert.equal(h.agent, '/run/agent.sock');
    assert.equal(h.id, 'db-1');
  });

  test('every problem is reported with its path', () => {
    const problems = problemsOf(
      [
        'name: Bad Name',
        'prefix: relative/path',
        'dataDir: /var/lib',
        'runAs: "root; rm -rf /"',
        'bogus: 1',
        'hosts:',
        '  - address: "10.0.0.1; id"',
        '    hostKeyFingerprint: MD5:aa',
        '    addresses: [db1.example]',
        '  - address: 10.0.0.2',
        '    keyFile: k',
        '    addresses: []',
        '    configDir: /etc/../etc/x',
      ].join('\n'),
    );
    const paths = problems.map((p) => p.path);
    for (const p of ['name', 'prefix', 'dataDir', 'runAs', 'hosts[0].address', 'hosts[0].hostKeyFingerprint', 'hosts[0].addresses[0]', 'hosts[0].keyFile', 'hosts[1].addresses', 'hosts[1].configDir']) {
      assert.ok(paths.includes(p), `missing problem at ${p}; got ${JSON.stringify(problems)}`);
    }
    assert.ok(problems.some((p) => /bogus/.test(p.message) || p.path === 'bogus' || /unrecognized/i.test(p.message)));
  });

  test('duplicate ids and colliding targets are refused', () => {
    const host = (id: string) => `  - {address: 10.0.0.1, keyFile: k, hostKeyFingerprint: ${FP}, addresses: [10.0.0.1], id: ${id}}\n`;
    assert.ok(problemsOf(`name: c\nhosts:\n${host('a')}${host('a')}`).some((p) => p.path === 'hosts[1].id'));
    assert.ok(problemsOf(`name: c\nhosts:\n${host('a')}${host('b')}`).some((p) => p.path === 'hosts[1]' && /same SSH target/.test(p.message)));
  });

  test('not YAML at all', () => {
    assert.ok(problemsOf('name: [unclosed').length >= 1);
  });

  test('agent: true needs SSH_AUTH_SOCK', () => {
    const inv = parseInventory(`name: c\nhosts:\n  - {address: h, agent: true, hostKeyFingerprint: ${FP}, addresses: [10.1.1.1]}\n`);
    assert.throws(() => resolveHosts(inv, '/', {}), /inventory is invalid/);
    assert.equal(resolveHosts(inv, '/', { SSH_AUTH_SOCK: '/s' })[0].agent, '/s');
  });

  test('default ids are valid names', () => {
    assert.equal(defaultHostId('DB1.Example.COM'), 'db1-example-com');
    assert.equal(defaultHostId('fd00::1'), 'fd00-1');
    assert.equal(defaultHostId('10.0.0.1'), 'h-10-0-0-1');
  });
});
