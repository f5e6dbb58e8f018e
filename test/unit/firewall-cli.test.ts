/** `dispatch firewall export|verify|show` in-process (commander), with injected output, scan and status. */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { registerFirewallCommands, type FirewallCommandDeps } from '../../launcher/commands/firewall.js';
import { exportPolicy } from '../../server/core/firewall-export.js';
import { guardPlan } from '../golden/firewall/plan.js';

async function run(args: string[], deps: FirewallCommandDeps = {}): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const program = new Command().exitOverride();
  registerFirewallCommands(program, { ...deps, out: (t) => (out += t), err: (t) => (err += t) });
  process.exitCode = undefined;
  await program.parseAsync(['node', 'dispatch', ...args]);
  const code = Number(process.exitCode ?? 0);
  process.exitCode = undefined;
  return { code, out, err };
}

describe('dispatch firewall', () => {
  let dir: string;
  let planFile: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'cd-fwcli-'));
    planFile = join(dir, 'plan.json');
    writeFileSync(planFile, JSON.stringify(guardPlan));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('export renders the same text as the library', async () => {
    const r = await run(['firewall', 'export', '--plan', planFile, '--format', 'ufw', '--host', 'd2']);
    assert.equal(r.code, 0, r.err);
    assert.equal(r.out, exportPolicy(guardPlan, 'ufw', { host: 'd2' }));
  });

  test('export refuses an unknown format, an unknown host and a bad plan with exit 2', async () => {
    assert.equal((await run(['firewall', 'export', '--plan', planFile, '--format', 'pf'])).code, 2);
    assert.equal((await run(['firewall', 'export', '--plan', planFile, '--format', 'nft', '--host', 'zz'])).code, 2);
    writeFileSync(join(dir, 'bad.json'), JSON.stringify({ ...guardPlan, processes: [] }));
    const r = await run(['firewall', 'export', '--plan', join(dir, 'bad.json'), '--format', 'nft']);
    assert.equal(r.code, 2);
    assert.match(r.err, /processes/);
  });

  test('verify: exit 1 and a table row when a cluster port is open from a client; 0 otherwise', async () => {
    const open = await run(['firewall', 'verify', '--plan', planFile], {
      scan: async (t) => t.map((x) => ({ ...x, state: x.port === 2380 ? 'open' : 'filtered' })),
    });
    assert.equal(open.code, 1);
    assert.match(open.out, /d1\s+10\.0\.0\.1\s+2380\s+cluster.*VIOLATION/);
    const fine = await run(['firewall', 'verify', '--plan', planFile, '--from-role', 'operator'], {
      scan: async (t) => t.map((x) => ({ ...x, state: x.port === 8528 || x.port === 5000 || x.port === 5001 ? 'open' : 'filtered' })),
    });
    assert.equal(fine.code, 0, fine.err);
  });

  test('show prints each dispatcher\'s guard and fails when one is out of sync', async () => {
    const r = await run(['firewall', 'show'], {
      fetchGuardStatus: async () => [
        { id: 'd1', guard: { backend: 'nftables', inSync: true, driftRepairs: 2, warnings: ['table inet filter drops'], lastAppliedAt: '2026-01-01T00:00:00.000Z' } },
        { id: 'd2', guard: { backend: 'nftables', inSync: false, driftRepairs: 0, warnings: [] } },
      ],
    });
    assert.equal(r.code, 1);
    assert.match(r.out, /d1\s+nftables\s+true\s+2026-01-01T00:00:00.000Z\s+2\s+1/);
    assert.match(r.out, /warning d1: table inet filter drops/);
    assert.equal((await run(['firewall', 'show'])).code, 1, 'no daemon connection wired');
  });
});
