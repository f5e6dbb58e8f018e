/**
 * Plan versions and the plan diff (docs/DESIGN.md, "Plan versions"): pure functions of server/core, the
 * cluster store's history on a temporary directory, and the `dispatch plan --diff` text (golden). The REST
 * side against a running cluster is in test/cluster/plan-diff.test.ts.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DispatcherError } from '../../api/errors.js';
import type { Plan } from '../../api/plan.js';
import type { RuleLineChange } from '../../api/plan-version.js';
import { assertBaseVersion, canonicalJson, nextHistory, planHash, PLAN_HISTORY_LIMIT } from '../../server/core/plan-version.js';
import { lineDiff, LCS_CELL_LIMIT } from '../../server/core/line-diff.js';
import { diffPlans } from '../../server/core/plan-diff.js';
import { planScale } from '../../server/core/scale-plan.js';
import { guardPolicyFromPlan } from '../../server/core/firewall-policy.js';
import { renderNft } from '../../server/core/firewall-render.js';
import { ClusterStore } from '../../server/cluster/store.js';
import { formatPlanDiff } from '../../launcher/plan-diff-view.js';
import { planVersionArg } from '../../launcher/args.js';
import { planFromSpec } from '../../launcher/planner.js';
import { guardPlan } from '../golden/firewall/plan.js';
import { expectGolden } from '../helpers/golden.js';

const AT = '2026-01-01T00:00:00.000Z';

/** The golden plan grown by a fourth host d4 with a DB server (what a scale out proposes). */
function scaledOut(): Plan {
  const p = structuredClone(guardPlan);
  p.dispatchers.push({ ...p.dispatchers[2], id: 'd4', endpoint: 'https://10.0.0.4:8528', addresses: ['10.0.0.4', 'fd00:10::4'] });
  p.processes.push({
    id: 'db-4',
    role: 'dbserver',
    dispatcher: 'd4',
    address: '10.0.0.4',
    ports: [
      { name: 'postgres', port: 5432, exposure: 'cluster' },
      { name: 'rest', port: 8008, exposure: 'cluster' },
    ],
    dataDir: 'clusters/demo/db-4',
    args: [],
  });
  return p;
}

/** Applies a line diff to the text it was computed from: must give the other text exactly. */
function patch(before: string, changes: RuleLineChange[]): string {
  const a = before === '' ? [] : before.split('\n');
  const removed = new Set(changes.filter((c) => c.op === '-').map((c) => c.line));
  const kept = a.filter((_, i) => !removed.has(i + 1));
  const out: string[] = [];
  const added = changes.filter((c) => c.op === '+').sort((x, y) => x.line - y.line);
  let k = 0;
  for (const c of added) {
    while (out.length < c.line - 1) out.push(kept[k++]);
    out.push(c.text);
  }
  while (k < kept.length) out.push(kept[k++]);
  return out.join('\n');
}

describe('plan versions (pure)', () => {
  test('the hash is the content: key order does not matter, any value does', () => {
    const reordered = Object.fromEntries(Object.entries(guardPlan).reverse()) as Plan;
    assert.equal(planHash(reordered), planHash(guardPlan));
    assert.match(planHash(guardPlan), /^[0-9a-f]{16}$/);
    const changed = structuredClone(guardPlan);
    changed.processes[0].ports[0].port = 2479;
    assert.notEqual(planHash(changed), planHash(guardPlan));
    assert.equal(canonicalJson({ b: 1, a: [{ d: 2, c: undefined }] }), '{"a":[{"d":2}],"b":1}');
  });

  test('the launched plan is version 1; a change is the next number; the same content keeps its version', () => {
    const v1 = nextHistory(undefined, guardPlan, AT);
    assert.deepEqual(v1, [{ number: 1, hash: planHash(guardPlan), at: AT }]);
    assert.deepEqual(nextHistory({ plan: guardPlan, history: v1, cleaned: false }, structuredClone(guardPlan), 'later'), v1);
    const v2 = nextHistory({ plan: guardPlan, history: v1, cleaned: false }, scaledOut(), 'later');
    assert.deepEqual(v2.at(-1), { number: 2, hash: planHash(scaledOut()), at: 'later' });
    // Back to the old content is still a change: version 3, not version 1 again.
    assert.equal(nextHistory({ plan: scaledOut(), history: v2, cleaned: false }, guardPlan, AT).at(-1)!.number, 3);
  });

  test('a new cluster (another name, or after cleanup) starts at version 1 again', () => {
    const v2 = nextHistory({ plan: guardPlan, history: nextHistory(undefined, guardPlan, AT), cleaned: false }, scaledOut(), AT);
    const other = { ...guardPlan, name: 'other' };
    assert.deepEqual(nextHistory({ plan: scaledOut(), history: v2, cleaned: false }, other, AT).map((v) => v.number), [1]);
    assert.deepEqual(nextHistory({ plan: scaledOut(), history: v2, cleaned: true }, guardPlan, AT).map((v) => v.number), [1]);
  });

  test('the history is bounded; numbers keep counting', () => {
    let history = nextHistory(undefined, guardPlan, AT);
    let plan = guardPlan;
    for (let i = 0; i < PLAN_HISTORY_LIMIT + 10; i++) {
      const next = structuredClone(plan);
      next.firewall.sshPort = 1000 + i;
      history = nextHistory({ plan, history, cleaned: false }, next, AT);
      plan = next;
    }
    assert.equal(history.length, PLAN_HISTORY_LIMIT);
    assert.equal(history.at(-1)!.number, PLAN_HISTORY_LIMIT + 11);
  });

  test('a change computed against another version is refused with 409 naming both', () => {
    const running = { number: 4, hash: 'aaaaaaaaaaaaaaaa' };
    assert.doesNotThrow(() => assertBaseVersion(running, undefined));
    assert.doesNotThrow(() => assertBaseVersion(running, { ...running }));
    for (const base of [{ number: 3, hash: 'bbbbbbbbbbbbbbbb' }, { number: 4, hash: 'bbbbbbbbbbbbbbbb' }]) {
      assert.throws(
        () => assertBaseVersion(running, base),
        (e: unknown) => e instanceof DispatcherError && e.status === 409 && /version 4 \(aaaaaaaaaaaaaaaa\)/.test(e.message) && e.message.includes(`version ${base.number} (bbbbbbbbbbbbbbbb)`),
      );
    }
  });

  test('--base-version takes VERSION:HASH and nothing else', () => {
    assert.deepEqual(planVersionArg('3:0123456789abcdef'), { number: 3, hash: '0123456789abcdef' });
    for (const bad of ['3', '0:0123456789abcdef', '3:0123456789ABCDEF', '3:0123', 'x:0123456789abcdef', '3:0123456789abcdef0']) assert.throws(() => planVersionArg(bad), /VERSION:HASH/);
  });
});

describe('line diff', () => {
  test('small cases', () => {
    assert.deepEqual(lineDiff('a\nb\nc', 'a\nb\nc'), []);
    assert.deepEqual(lineDiff('a\nb\nc', 'a\nx\nc'), [
      { op: '-', line: 2, text: 'b' },
      { op: '+', line: 2, text: 'x' },
    ]);
    assert.deepEqual(lineDiff('', 'a\nb'), [
      { op: '+', line: 1, text: 'a' },
      { op: '+', line: 2, text: 'b' },
    ]);
    assert.deepEqual(lineDiff('a\nb', ''), [
      { op: '-', line: 1, text: 'a' },
      { op: '-', line: 2, text: 'b' },
    ]);
    assert.deepEqual(lineDiff('a\nb\nc\nd', 'a\nc\nd\ne'), [
      { op: '-', line: 2, text: 'b' },
      { op: '+', line: 4, text: 'e' },
    ]);
  });

  test('patching the old text with the diff gives the new text (random texts), and the diff is minimal for one edit', () => {
    let seed = 7;
    const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) % n);
    for (let round = 0; round < 300; round++) {
      const a = Array.from({ length: rnd(12) }, () => 'abcde'[rnd(5)]).join('\n');
      const b = Array.from({ length: rnd(12) }, () => 'abcde'[rnd(5)]).join('\n');
      assert.equal(patch(a, lineDiff(a, b)), b, `a=${JSON.stringify(a)} b=${JSON.stringify(b)}`);
    }
    const lines = Array.from({ length: 200 }, (_, i) => `line ${i}`);
    const edited = [...lines];
    edited[100] = 'changed';
    assert.equal(lineDiff(lines.join('\n'), edited.join('\n')).length, 2);
  });

  test('past the cell limit the middle is reported wholesale, still correct', () => {
    const n = Math.ceil(Math.sqrt(LCS_CELL_LIMIT)) + 10;
    const a = Array.from({ length: n }, (_, i) => `a${i}`).join('\n');
    const b = Array.from({ length: n }, (_, i) => `b${i}`).join('\n');
    const d = lineDiff(a, b);
    assert.equal(d.length, 2 * n);
    assert.equal(patch(a, d), b);
  });
});

describe('plan diff', () => {
  test('a plan against itself: nothing changed, every host unchanged', () => {
    const d = diffPlans(guardPlan, structuredClone(guardPlan));
    assert.equal(d.changed, false);
    assert.deepEqual(d.settings, []);
    assert.deepEqual(d.processes, { added: [], removed: [], changed: [] });
    assert.deepEqual(d.firewall.map((f) => [f.host, f.change]), [['d1', 'unchanged'], ['d2', 'unchanged'], ['d3', 'unchanged']]);
  });

  test('scale out: the new host and its process are added; every old host lets the new address in', () => {
    const after = scaledOut();
    const d = diffPlans(guardPlan, after);
    assert.equal(d.changed, true);
    assert.deepEqual(d.dispatchers, { added: ['d4'], removed: [], changed: [] });
    assert.deepEqual(d.processes.added.map((p) => [p.id, p.host, p.ports.map((x) => x.port)]), [['db-4', 'd4', [5432, 8008]]]);
    assert.deepEqual(d.processes.removed, []);
    assert.deepEqual(d.firewall.map((f) => [f.host, f.change]), [['d1', 'changed'], ['d2', 'changed'], ['d3', 'changed'], ['d4', 'added']]);
    for (const f of d.firewall) {
      // The diff is exactly the renderer's difference: patching the running rules gives the proposed ones.
      const before = f.change === 'added' ? '' : renderNft(guardPolicyFromPlan(guardPlan, f.host));
      assert.equal(patch(before, f.lines), renderNft(guardPolicyFromPlan(after, f.host)));
      if (f.change === 'changed') assert.ok(f.lines.some((l) => l.op === '+' && /cluster_v4|elements = \{[^}]*10\.0\.0\.4/.test(l.text) && l.text.includes('10.0.0.4')), `${f.host} gains 10.0.0.4`);
    }
    // And the reverse is a scale in: the host and process removed, the address leaves every set.
    const back = diffPlans(after, guardPlan);
    assert.deepEqual(back.dispatchers.removed, ['d4']);
    assert.deepEqual(back.processes.removed.map((p) => p.id), ['db-4']);
    assert.equal(back.firewall.find((f) => f.host === 'd4')!.change, 'removed');
    assert.ok(back.firewall.find((f) => f.host === 'd1')!.lines.some((l) => l.op === '-' && l.text.includes('10.0.0.4')));
  });

  test('a moved port, a new binary and a firewall policy change are named by path; only the affected host changes its rules', () => {
    const after = structuredClone(guardPlan);
    const db2 = after.processes.find((p) => p.id === 'db-2')!;
    db2.ports[0] = { name: 'postgres', port: 5433, exposure: 'cluster' };
    after.binaries = { etcd: '/opt/etcd-3.5/etcd' };
    const d = diffPlans(guardPlan, after);
    assert.deepEqual(d.processes.changed, [{ id: 'db-2', changes: [{ path: 'ports.postgres', from: { port: 5432, exposure: 'cluster' }, to: { port: 5433, exposure: 'cluster' } }] }]);
    assert.deepEqual(d.settings, [{ path: 'binaries.etcd', to: '/opt/etcd-3.5/etcd' }]);
    assert.deepEqual(d.firewall.map((f) => f.change), ['unchanged', 'changed', 'unchanged']);
    assert.ok(d.firewall[1].lines.some((l) => l.op === '+' && /5433/.test(l.text)));

    const fw = structuredClone(guardPlan);
    fw.firewall.clientSources = ['198.51.100.0/24'];
    const f = diffPlans(guardPlan, fw);
    assert.deepEqual(f.settings, [{ path: 'firewall.clientSources', from: ['0.0.0.0/0', '::/0'], to: ['198.51.100.0/24'] }]);
    // Clients reach only d1 (the coordinator's host); the other hosts' rules change only in their client sets.
    assert.ok(f.firewall.every((h) => h.change === 'changed'));
    assert.ok(f.firewall[0].lines.some((l) => l.op === '+' && l.text.includes('198.51.100.0/24')));
  });

  test('`dispatch plan --diff` text (golden)', () => {
    const view = { base: { number: 2, hash: planHash(guardPlan) }, proposed: { hash: planHash(scaledOut()) }, diff: diffPlans(guardPlan, scaledOut()), behind: [], scale: planScale(guardPlan, scaledOut()) };
    const text = formatPlanDiff(view);
    expectGolden('plan-diff/scale-out.txt', text);
    assert.match(text, /--base-version 2:[0-9a-f]{16}/);
    assert.match(text, /scale steps, in order:\n   1\. adopt-dispatcher d4\n   2\. widen the firewall on d1, d2, d3, d4 to let in 10\.0\.0\.4, fd00:10::4\n   3\. add-dbserver db-4 on d4/);
    assert.match(formatPlanDiff({ ...view, diff: diffPlans(guardPlan, guardPlan), scale: { steps: [], problems: [] } }), /no changes/);
    const behind = formatPlanDiff({ ...view, behind: [{ id: 'd2', reachable: true, version: { number: 1, hash: '0123456789abcdef' } }, { id: 'd3', reachable: false }] });
    assert.match(behind, /! dispatcher d2 stores version 1 \(0123456789abcdef\): it missed a change\n! dispatcher d3 did not answer/);
    const refused = formatPlanDiff({ ...view, scale: planScale(guardPlan, scaledOut(), { downProcesses: new Set(['agent-1', 'agent-2']) }) });
    assert.match(refused, /would be REFUSED:\n  - processes: the agency has lost quorum \(1 live of 3 members, a majority needs 2\)/);
    const moved = structuredClone(guardPlan);
    moved.processes[0].ports[0].port = 2479;
    assert.match(formatPlanDiff({ ...view, diff: diffPlans(guardPlan, moved), scale: planScale(guardPlan, moved) }), /would be REFUSED:\n  - processes\[0\]: process agent-1 stays but changes/);
  });
});

describe('cluster store keeps the versions', () => {
  test('launch is 1, a plan change is 2, a state change keeps it; a record from before versions loads as 1; forget resets', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cd-plan-versions-'));
    // The store persists only valid plans: planned ones, the second with a changed firewall policy.
    const FP = Array(32).fill('AB').join(':');
    const launched = planFromSpec({ name: 'v', dispatchers: [1, 2, 3].map((i) => ({ id: `d${i}`, endpoint: `https://10.0.0.${i}:8528`, fingerprint: FP, addresses: [`10.0.0.${i}`] })) });
    const changed = { ...launched, firewall: { ...launched.firewall, clientSources: ['198.51.100.0/24'] } };
    try {
      const store = new ClusterStore(dir);
      await store.save({ plan: launched, state: 'launching', secrets: {} });
      assert.deepEqual(store.version(), { number: 1, hash: planHash(launched) });
      await store.setState('running');
      assert.equal(store.version().number, 1);
      await store.save({ ...store.get()!, plan: changed });
      assert.deepEqual(store.version(), { number: 2, hash: planHash(changed) });
      assert.deepEqual(store.history().map((v) => v.number), [1, 2]);
      // A restarted daemon reads the same versions back.
      const again = new ClusterStore(dir);
      await again.load();
      assert.deepEqual(again.version(), { number: 2, hash: planHash(changed) });
      const file = join(dir, 'cluster', 'cluster.json');
      assert.equal((await stat(file)).mode & 0o777, 0o600);
      // A record written before versions existed: its plan is version 1.
      const { writeFile } = await import('node:fs/promises');
      const record = JSON.parse(await readFile(file, 'utf8'));
      delete record.versions;
      await writeFile(file, JSON.stringify(record));
      const old = new ClusterStore(dir);
      await old.load();
      assert.deepEqual(old.version(), { number: 1, hash: planHash(changed) });
      await old.forget();
      assert.throws(() => old.version(), (e: unknown) => e instanceof DispatcherError && e.status === 404);
      assert.deepEqual(old.history(), []);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
