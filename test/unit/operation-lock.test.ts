/**
 * The cluster-wide operation lock and its records (server/cluster/operation-lock.ts, operations.ts) over a
 * fake agency: an in-memory key-value store with leases that behaves as etcd's transactions do (create if
 * absent, put only while a key is bound to a lease, keys deleted with their lease). Milliseconds; the real
 * etcd runs in test/cluster/operation-lock.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AgencyKv } from '../../server/engines/agency-kv.js';
import { fakeAgency } from '../helpers/fake-agency.js';
import { AgencyOperationLock } from '../../server/cluster/operation-lock.js';
import { OperationStore } from '../../server/cluster/operations.js';
import { fakeClock } from '../helpers/fake-cluster.js';

function dispatcher(name: string, kv: AgencyKv, dir: string, clock = fakeClock()) {
  const store = new OperationStore(join(dir, name));
  store.useClusterLock(new AgencyOperationLock({ self: name, ttlSeconds: 5, clock, agency: () => ({ kv, cluster: 'c1' }) }), name);
  return store;
}

function gate() {
  let open!: () => void;
  const p = new Promise<void>((r) => (open = r));
  return { p, open };
}

test('a second operation through another dispatcher is refused with 409 naming the running one and its dispatcher', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'oplock-'));
  try {
    const kv = fakeAgency();
    const [a, b] = [dispatcher('d1', kv, dir), dispatcher('d2', kv, dir)];
    await Promise.all([a.load(), b.load()]);
    const g = gate();
    const first = await a.start('restart', 'c1', () => g.p, { lock: 'required' });
    await assert.rejects(b.start('restart', 'c1', async () => {}, { lock: 'required' }), (e: any) => {
      assert.equal(e.code, 'conflict');
      assert.equal(e.status, 409);
      assert.match(e.message, new RegExp(`operation ${first.id} \\(restart of c1\\) is running on dispatcher d1`));
      assert.equal(e.details.runner, 'd1');
      return true;
    });
    assert.equal(b.list().length, 0, 'the refused operation left no record');
    // Every dispatcher reads the running one, with its runner.
    const seen = await b.find(first.id);
    assert.equal(seen.view.runner, 'd1');
    assert.equal(seen.runnerAlive, true);
    g.open();
    await a.wait(first.id);
    assert.equal(kv.leases.size, 0, 'the lease is revoked when the operation ends');
    const second = await b.start('restart', 'c1', async () => ({ ok: true }), { lock: 'required' });
    assert.equal((await b.wait(second.id)).state, 'succeeded');
    const all = await a.listEverywhere();
    assert.deepEqual(all.map((o) => [o.id, o.state]).sort(), [[first.id, 'succeeded'], [second.id, 'succeeded']].sort());
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('when the runner dies its lease expires: the record is stale, another dispatcher takes it over under the same id, and the dead one can no longer write', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'oplock-'));
  try {
    const kv = fakeAgency();
    const [a, b] = [dispatcher('d1', kv, dir), dispatcher('d2', kv, dir)];
    await Promise.all([a.load(), b.load()]);
    const zombie = gate();
    const progressed = gate();
    const zombieWrote = gate();
    const op = await a.start('restart', 'c1', async (h) => {
      h.event({ level: 'info', step: 'stop', process: 'agent-1', message: 'stopping agent-1' });
      await h.setProgress({ done: ['agent-1'], current: 'agent-2' });
      progressed.open();
      await zombie.p;
      // A runner that was only cut off (not dead) and did not notice yet writes again.
      await h.setProgress({ done: ['agent-1', 'agent-2', 'zombie'] });
      zombieWrote.open();
      await new Promise(() => {});
    }, { lock: 'required' });
    await progressed.p;
    // kill -9 of d1: nobody keeps its lease alive; etcd drops it and the lock key with it.
    const [lease] = [...kv.leases];
    kv.expire(lease);
    const found = await b.find(op.id);
    assert.equal(found.runnerAlive, false);
    assert.equal(found.view.stale, true);
    assert.deepEqual(found.view.progress, { done: ['agent-1'], current: 'agent-2' });
    assert.ok((await b.listEverywhere()).some((o) => o.id === op.id && o.stale));

    const view = b.adopt(found.view);
    const resumed = gate();
    await b.start('restart', 'c1', async (h) => {
      h.event({ level: 'warn', step: 'resume', message: 'resumed' });
      await resumed.p;
    }, { resumeOf: view, lock: 'required' });
    const record = () => JSON.parse(kv.keys.get(`/cluster-dispatcher/c1/operations/${op.id}`)!.value);
    assert.equal(record().runner, 'd2', 'the record names the dispatcher that took over');
    assert.equal((await b.find(op.id)).runnerAlive, true);
    zombie.open();
    await zombieWrote.p;
    assert.equal(record().runner, 'd2', 'the zombie cannot overwrite the record');
    assert.deepEqual(record().progress, { done: ['agent-1'], current: 'agent-2' });
    resumed.open();
    assert.equal((await b.wait(op.id)).state, 'succeeded');
    assert.equal(record().state, 'succeeded');
    assert.ok(record().events.some((e: { step: string }) => e.step === 'resume'));
    // The dead runner, back, learns it was taken over instead of running it a second time.
    assert.match((await a.takenOver(a.get(op.id)))!, /ended elsewhere: succeeded/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('resuming the same operation waits for its old lease to run out (bounded); another operation does not wait', async () => {
  const kv = fakeAgency();
  const clock = fakeClock();
  const lock = new AgencyOperationLock({ self: 'd2', ttlSeconds: 5, clock, agency: () => ({ kv, cluster: 'c1' }) });
  const old = await kv.grantLease(5);
  await kv.createIfAbsent('/cluster-dispatcher/c1/operation-lock', JSON.stringify({ operation: 'op-1', kind: 'restart', cluster: 'c1', dispatcher: 'd1', since: '' }), old);
  const view = { id: 'op-1', kind: 'restart' as const, cluster: 'c1', state: 'running' as const, startedAt: '', events: [] };
  // Another operation: at once.
  const t0 = clock.now();
  await assert.rejects(lock.acquire({ ...view, id: 'op-2' }, { required: true }), /op-1 \(restart of c1\) is running on dispatcher d1/);
  assert.equal(clock.now(), t0);
  // The same one: polls; the old lease is gone after 2 s of (fake) time.
  const expireAt = clock.now() + 2000;
  const origSleep = clock.sleep;
  clock.sleep = async (ms) => {
    await origSleep(ms);
    if (clock.now() >= expireAt) kv.expire(old);
  };
  const keptAlive: string[] = [];
  const keepAlive = kv.keepAlive;
  kv.keepAlive = async (l) => (keptAlive.push(l), keepAlive(l));
  const held = await lock.acquire(view, { required: true });
  assert.ok(held);
  assert.ok(keptAlive.length >= 3, 'its own lease was kept alive while it waited');
  kv.keepAlive = keepAlive;
  assert.ok(clock.now() - t0 >= 2000 && clock.now() - t0 < 5000);
  await held!.release();
  // A lease that is never released: the wait is bounded by one lease time (+3 s).
  const stuck = await kv.grantLease(5);
  await kv.createIfAbsent('/cluster-dispatcher/c1/operation-lock', JSON.stringify({ operation: 'op-1', kind: 'restart', cluster: 'c1', dispatcher: 'd1', since: '' }), stuck);
  const t1 = clock.now();
  await assert.rejects(lock.acquire(view, { required: true }), (e: any) => e.code === 'conflict');
  assert.ok(clock.now() - t1 <= 9000);
  assert.equal(kv.leases.size, 1, 'the refused attempt revoked its own lease');
});

test('lockLost fires when the agency says the lease expired; no agency: local lock only unless required', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'oplock-'));
  try {
    const kv = fakeAgency();
    const store = new OperationStore(join(dir, 'x'));
    await store.load();
    store.useClusterLock(new AgencyOperationLock({ self: 'd1', ttlSeconds: 2, agency: () => ({ kv, cluster: 'c1' }) }), 'd1');
    const keepLoopAlive = setTimeout(() => {}, 10_000);
    let lost = false;
    const op = await store.start('restart', 'c1', (h) => new Promise<void>((resolve) => h.lockLost.addEventListener('abort', () => ((lost = true), resolve()))), { lock: 'required' });
    kv.expire([...kv.leases][0]);
    await store.wait(op.id); // the keep-alive (every ttl/3) notices
    assert.equal(lost, true);
    clearTimeout(keepLoopAlive);

    const none = new OperationStore(join(dir, 'y'));
    await none.load();
    none.useClusterLock(new AgencyOperationLock({ self: 'd1', ttlSeconds: 2, agency: () => undefined }), 'd1');
    await assert.rejects(none.start('restart', 'c1', async () => {}, { lock: 'required' }), /no agency/);
    const ok = await none.start('cleanup', 'c1', async () => {}, { lock: 'if-agency' });
    assert.equal((await none.wait(ok.id)).state, 'succeeded');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('an operation that has just ended still releasing its lock: the next one started at once waits for the release, no 409', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'oplock-'));
  try {
    const kv = fakeAgency();
    // The agency answers the release late (a loaded machine): the first operation's outcome is visible before.
    const release = gate();
    const revoke = kv.revoke.bind(kv);
    kv.revoke = async (lease) => {
      await release.p;
      return revoke(lease);
    };
    const a = dispatcher('d1', kv, dir);
    await a.load();
    const first = await a.start('launch', 'c1', async () => ({ ok: true }), { lock: 'required' });
    while (a.get(first.id).state === 'running') await new Promise((r) => setImmediate(r));
    assert.equal(kv.leases.size, 1, 'the first lease is still held while its outcome is already visible');
    setTimeout(release.open, 20);
    const second = await a.start('shutdown', 'c1', async () => ({ ok: true }), { lock: 'required' });
    assert.equal((await a.wait(second.id)).state, 'succeeded');
    assert.equal((await a.wait(first.id)).state, 'succeeded');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
