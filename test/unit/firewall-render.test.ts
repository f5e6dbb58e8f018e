/**
 * Golden tests for every firewall rendering, from the fixed plans in test/golden/firewall/plan.ts.
 * After an intended change, `npm run golden:update` shows the diff and updates the goldens.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { guardPolicyFromPlan } from '../../server/core/firewall-policy.js';
import { renderIpset, renderIptables, renderNft, renderNftRemove } from '../../server/core/firewall-render.js';
import { EXPORT_FORMATS, exportPolicy } from '../../server/core/firewall-export.js';
import { denyPlan, guardPlan } from '../golden/firewall/plan.js';
import { expectGolden } from '../helpers/golden.js';

const golden = (name: string, actual: string) => expectGolden(`firewall/${name}`, actual);

describe('firewall renderers (golden)', () => {
  const g1 = guardPolicyFromPlan(guardPlan, 'd1');
  const d2 = guardPolicyFromPlan(denyPlan, 'd2');

  test('nft guard mode', () => golden('nft-guard-d1.nft', renderNft(g1)));
  test('nft deny mode with outbound allowlist', () => golden('nft-deny-d2.nft', renderNft(d2)));
  test('nft remove', () => golden('nft-remove.nft', renderNftRemove()));
  test('iptables IPv4 and IPv6', () => {
    golden('iptables4-guard-d1.rules', renderIptables(g1, 4));
    golden('iptables6-guard-d1.rules', renderIptables(g1, 6));
    golden('iptables4-deny-d2.rules', renderIptables(d2, 4, { jumpInput: false, jumpOutput: true }));
    golden('ip6tables-deny-d2.rules', renderIptables(d2, 6));
  });
  test('ipset', () => {
    golden('ipset-guard-d1.txt', renderIpset(g1));
    golden('ipset-deny-d2.txt', renderIpset(d2));
  });
  for (const format of EXPORT_FORMATS) {
    test(`export ${format} (every host)`, () => golden(`export-${format}.txt`, exportPolicy(guardPlan, format)));
    test(`export ${format} (--host d2, deny plan)`, () => golden(`export-${format}-deny-d2.txt`, exportPolicy(denyPlan, format, { host: 'd2', awsGroupId: 'sg-0123456789abcdef0' })));
  }

  test('no empty elements list anywhere (nft 1.0.6 rejects `elements = { }`)', () => {
    for (const text of [renderNft(g1), renderNft(d2)]) assert.doesNotMatch(text, /elements = \{\s*\}/);
    assert.match(renderNft(g1), /set client_v4 \{\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\tauto-merge\n\t\}/);
  });

  test('one transaction: create-if-missing, delete, full definition, in that order', () => {
    const lines = renderNft(g1).split('\n').filter((l) => l.startsWith('table') || l.startsWith('delete'));
    assert.deepEqual(lines.slice(0, 3), ['table inet dispatcher_guard {}', 'delete table inet dispatcher_guard', 'table inet dispatcher_guard {']);
  });

  test('guard rules come before any established accept; ICMPv6 before the invalid drop (deny mode)', () => {
    const t = renderNft(d2);
    const idx = (s: string): number => t.indexOf(s);
    assert.ok(idx('counter drop comment "guard cluster"') < idx('ct state established,related accept'));
    assert.ok(idx('meta l4proto ipv6-icmp accept') < idx('ct state invalid counter drop'));
    assert.ok(idx('tcp dport 2222 accept') > 0, 'ssh port kept open');
    assert.match(t, /policy drop;/);
  });

  test('drops, never rejects, and every drop has a counter', () => {
    for (const t of [renderNft(g1), renderNft(d2)]) {
      assert.doesNotMatch(t, /reject/);
      for (const l of t.split('\n').filter((x) => /\bdrop\b/.test(x) && !x.includes('policy drop'))) assert.match(l, /counter/, l);
    }
  });

  test('multiport rules are split at 15 ports', () => {
    const many = { ...g1, ports: Array.from({ length: 20 }, (_, i) => ({ port: 7000 + i, exposure: 'cluster' as const, names: [`p${i}`] })) };
    const text = renderIptables(many, 4);
    const drops = text.split('\n').filter((l) => l.includes('-j DROP'));
    assert.equal(drops.length, 2);
    assert.match(drops[0], /--dports 7000,7001,.*,7014 /);
  });

  test('cloud exports are valid JSON with the expected shapes', () => {
    const aws = JSON.parse(exportPolicy(guardPlan, 'aws')) as { GroupId: string; IpPermissions: { FromPort: number; IpRanges: { CidrIp: string }[] }[] };
    assert.ok(aws.GroupId.startsWith('sg-'));
    const p2379 = aws.IpPermissions.find((p) => p.FromPort === 2379);
    assert.deepEqual(p2379?.IpRanges.map((r) => r.CidrIp), ['10.0.0.1/32', '10.0.0.2/32', '10.0.0.3/32']);
    const p5000 = aws.IpPermissions.find((p) => p.FromPort === 5000);
    assert.deepEqual(p5000?.IpRanges.map((r) => r.CidrIp), ['0.0.0.0/0']);
    const hz = JSON.parse(exportPolicy(guardPlan, 'hetzner')) as { rules: { port: string; source_ips: string[] }[] };
    assert.deepEqual(hz.rules.find((r) => r.port === '8528')?.source_ips, ['10.0.0.1/32', '10.0.0.2/32', '10.0.0.3/32', '203.0.113.10/32', 'fd00:10::1/128', 'fd00:10::2/128', 'fd00:10::3/128', '2001:db8:1::/48']);
    const doc = JSON.parse(exportPolicy(guardPlan, 'digitalocean')) as { inbound_rules: { ports: string }[] };
    assert.ok(doc.inbound_rules.every((r) => /^\d+$/.test(r.ports)));
  });
});
