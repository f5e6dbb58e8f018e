/**
 * "Is this port free?" from the kernel's socket table (server/core/listening-sockets.ts): parsing real
 * /proc/net/tcp{,6} lines and the conflict rules — plus the reader against this machine's own table with a
 * socket this test opens, so the parser meets the kernel's real format.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { conflictingListener, parseProcNetTcp, portProblem } from '../../server/core/listening-sockets.js';
import { listeningSockets, localAddresses, portBusy } from '../../server/cluster/listening-sockets.js';
import { hostAddresses, singleSocketAddress } from '../../server/core/listen-addresses.js';

const TCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 621 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 622 1 0000000000000000 100 0 0 10 0
   2: 020200C0:A3FA 507100CB:0050 01 00000000:00000000 03:00000ABC 00000000     0        0 0 3 0000000000000000
   3: 0B00000A:094E 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 623 1 0000000000000000 100 0 0 10 0
`;
const TCP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:2150 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 700 1 0000000000000000 100 0 0 10 0
   1: 0000000000000000FFFF00000C00000A:1F91 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 701 1 0000000000000000 100 0 0 10 0
   2: B80D0120000000000000000001000000:1F92 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 702 1 0000000000000000 100 0 0 10 0
   3: B80D0120000000000000000002000000:1F93 B80D0120000000000000000003000000:D431 01 00000000:00000000 00:00000000 00000000     0        0 703 1 0000000000000000 100 0 0 10 0
`;

describe('listening sockets from /proc/net/tcp{,6}', () => {
  test('parses LISTEN entries only, little-endian words, IPv4-mapped IPv6 as IPv4', () => {
    assert.deepEqual(parseProcNetTcp(TCP, 4), [
      { address: '0.0.0.0', port: 2024, family: 4 },
      { address: '127.0.0.1', port: 8080, family: 4 },
      { address: '10.0.0.11', port: 2382, family: 4 },
    ]);
    assert.deepEqual(parseProcNetTcp(TCP6, 6), [
      { address: '::', port: 8528, family: 6 },
      { address: '10.0.0.12', port: 8081, family: 4 },
      { address: '2001:db8::1', port: 8082, family: 6 },
    ]);
  });

  test('conflicts: same address, wildcard of the family, and :: (may be dual-stack) for both families', () => {
    const l = [...parseProcNetTcp(TCP, 4), ...parseProcNetTcp(TCP6, 6)];
    assert.equal(conflictingListener(l, '10.0.0.11', 2382)?.address, '10.0.0.11');
    assert.equal(conflictingListener(l, '10.0.0.12', 2382), undefined, 'another address, same port: free');
    assert.equal(conflictingListener(l, '10.0.0.99', 2024)?.address, '0.0.0.0', 'IPv4 wildcard');
    assert.equal(conflictingListener(l, '2001:db8::9', 2024), undefined, 'an IPv4 wildcard leaves IPv6 free');
    assert.equal(conflictingListener(l, '10.0.0.11', 8528)?.address, '::', ':: blocks IPv4 too');
    assert.equal(conflictingListener(l, '2001:DB8:0::1', 8082)?.address, '2001:db8::1', 'IPv6 compared canonically');
    assert.equal(conflictingListener(l, '::ffff:10.0.0.12', 8081)?.address, '10.0.0.12');
    assert.equal(conflictingListener(l, '0.0.0.0', 8080)?.address, '127.0.0.1', 'a wildcard bind conflicts with any listener');
  });

  test('portProblem names an address this machine does not have, and the listener in the way', () => {
    const l = parseProcNetTcp(TCP, 4);
    assert.match(portProblem(l, ['127.0.0.1'], '10.0.0.11', 2382)!, /not an address of this machine/);
    assert.match(portProblem(l, ['10.0.0.11'], '10.0.0.11', 2382)!, /in use \(a socket listens on 10\.0\.0\.11:2382\)/);
    assert.equal(portProblem(l, ['10.0.0.11'], '10.0.0.11', 2383), undefined);
    assert.match(portProblem(l, [], 'db1.example', 1)!, /not an IP address/);
    assert.equal(portProblem(l, ['127.0.0.1'], '127.0.0.2', 2382), undefined, 'all of 127/8 is local');
  });

  test('the reader sees a socket this test listens on, and portBusy says so without binding', async () => {
    const srv = createServer();
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const port = (srv.address() as { port: number }).port;
    try {
      assert.ok((await listeningSockets()).some((s) => s.address === '127.0.0.1' && s.port === port));
      assert.ok(localAddresses().includes('127.0.0.1'));
      assert.match((await portBusy('127.0.0.1', port))!, /in use/);
    } finally {
      await new Promise((r) => srv.close(r));
    }
    assert.equal(await portBusy('127.0.0.1', port), undefined, 'free once closed');
  });
});

describe('hostAddresses: every plan address a process listens on', () => {
  const plan = (addresses: string[], address: string) =>
    ({ dispatchers: [{ id: 'd1', addresses }], processes: [] }) as unknown as Parameters<typeof hostAddresses>[0];
  const proc = (address: string) => ({ id: 'p', dispatcher: 'd1', address }) as unknown as Parameters<typeof hostAddresses>[1];

  test('the process address first, then the host\'s other plan addresses (both families)', () => {
    assert.deepEqual(hostAddresses(plan(['10.0.0.11', 'fd00::11'], '10.0.0.11'), proc('10.0.0.11')), ['10.0.0.11', 'fd00::11']);
    assert.deepEqual(hostAddresses(plan(['fd00::11', '10.0.0.11'], '10.0.0.11'), proc('10.0.0.11')), ['10.0.0.11', 'fd00::11']);
  });
  test('loopback stays loopback and a real address never adds loopback', () => {
    assert.deepEqual(hostAddresses(plan(['127.0.0.1', '10.0.0.11'], '127.0.0.1'), proc('127.0.0.1')), ['127.0.0.1']);
    assert.deepEqual(hostAddresses(plan(['10.0.0.11', '::1'], '10.0.0.11'), proc('10.0.0.11')), ['10.0.0.11']);
  });
});

describe('singleSocketAddress: the one bind address of a program that takes one (Patroni REST)', () => {
  test('one plan address: exactly it', () => {
    assert.equal(singleSocketAddress(['10.0.0.11']), '10.0.0.11');
    assert.equal(singleSocketAddress(['fd00::11']), 'fd00::11');
  });
  test('several plan addresses: one dual-stack socket', () => {
    assert.equal(singleSocketAddress(['10.0.0.11', 'fd00::11']), '::');
  });
  test('loopback never widens to the wildcard', () => {
    assert.equal(singleSocketAddress(['127.0.0.2', '127.0.0.3']), '127.0.0.2');
    assert.equal(singleSocketAddress(['::1', '127.0.0.2']), '::1');
  });
});
