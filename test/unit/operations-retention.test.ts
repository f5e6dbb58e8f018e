/** Operation records are bounded by age and count, on disk and in memory; a running one is kept. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { OperationStore } from '../../server/cluster/operations.js';

test('finished operations beyond maxCount or older than maxAge are dropped; a running one stays', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ops-retention-'));
  try {
    const store = new OperationStore(dir, { maxAgeMs: 3_600_000, maxCount: 3 });
    await store.load();
    for (let i = 0; i < 6; i++) {
      const v = await store.start('shutdown', `c${i}`, async () => ({ i }));
      await store.wait(v.id);
    }
    let release!: () => void;
    const running = await store.start('launch', 'long', () => new Promise<void>((r) => (release = r)));
    await store.prune();
    assert.equal(store.list().filter((o) => o.state !== 'running').length, 3);
    assert.deepEqual(store.list().filter((o) => o.state !== 'running').map((o) => o.cluster), ['c3', 'c4', 'c5']);
    assert.ok(store.list().some((o) => o.id === running.id));
    const records = () => readdirSync(join(dir, 'operations')).filter((f) => f.endsWith('.json') && !f.startsWith('.'));
    assert.equal(records().length, 4);
    // Age: everything finished is older than maxAge an hour later.
    const dropped = await store.prune(Date.now() + 2 * 3_600_000);
    assert.equal(dropped.length, 3);
    assert.deepEqual(store.list().map((o) => o.id), [running.id]);
    release();
    await store.wait(running.id);
    await store.prune();
    assert.deepEqual(records(), [`${running.id}.json`]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
