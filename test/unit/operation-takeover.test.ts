/**
 * A rolling restart taken over by another dispatcher when its runner is cut off (RestartService +
 * OperationStore + AgencyOperationLock over a fake agency and fake nodes): the runner hangs mid-restart,
 * its lease expires, a second dispatcher resumes from the stored step under the same id, and the first,
 * when it wakes up, stops at its next step without writing over the record. Milliseconds to a second.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NodeApi } from '../../server/cluster/node-api.js';
import { AgencyOperationLock } from '../../server/cluster/operation-lock.js';
import { OperationStore } from '../../server/cluster/operations.js';
import { RestartService, type UpgradeNode } from '../../server/cluster/restart.js';
import { loadEngine } from '../../server/engines/loader.js';
import { planHash } from '../../server/core/plan-version.js';
import { fakeActions, fakeClock, fakeNodes, scriptedHealth, threeHostPlan } from '../helpers/fake-cluster.js';
import { fakeAgency } from '../helpers/fake-agency.js';

const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
const noUpgrade: UpgradeNode = { preflightPlan: async () => [], adoptPlan: async () => {} };

test('runner cut off mid-restart: another dispatcher resumes from the stored step; the old one cannot write any more', async () => {
  const plan = threeHostPlan();
  const { journal, nodes } = fakeNodes(plan);
  const kv = fakeAgency();
  let release!: () => void;
  const hung = new Promise<void>((r) => (release = r));
  const services = await Promise.all(
    ['d1', 'd2'].map(async (self) => {
      const dir = mkdtempSync(join(tmpdir(), 'cd-takeover-'));
      dirs.push(dir);
      const operations = new OperationStore(dir, undefined, fakeClock());
      await operations.load();
      operations.useClusterLock(new AgencyOperationLock({ self, ttlSeconds: 2, agency: () => ({ kv, cluster: plan.name }) }), self);
      // d1 hangs when it starts agent-3 (a runner whose machine froze); d2's view of the nodes is healthy.
      const view = (n: NodeApi): NodeApi =>
        self === 'd1' ? new Proxy(n, { get: (t, k) => (k === 'startProcess' ? async (id: string, ms: number) => (id === 'agent-3' ? hung.then(() => t.startProcess(id, ms)) : t.startProcess(id, ms)) : Reflect.get(t, k)) }) : n;
      const service = new RestartService({
        self: view(nodes.get(self)!),
        store: { get: () => ({ plan, state: 'running', secrets: {} }), version: () => ({ number: 1, hash: planHash(plan) }) },
        operations,
        health: scriptedHealth(),
        engine: (name) => loadEngine(name),
        peer: (d) => view(nodes.get(d.id)!),
        localUpgrade: noUpgrade,
        peerUpgrade: () => noUpgrade,
        actions: fakeActions(journal, { agency: 'agent-1', db: 'dbserver-1' }),
        pollMs: 1,
        clock: fakeClock(),
      });
      return { service, operations };
    }),
  );
  const [d1, d2] = services;
  const op = await d1.service.start({ processes: { roles: ['agent'] } });
  // d1 restarted agent-2 (followers first), stopped agent-3 and hangs starting it.
  for (let i = 0; i < 100 && !journal.some((e) => e.endsWith('stopProcess:agent-3')); i++) await new Promise((r) => setTimeout(r, 5));
  const progressed = (await d2.operations.find(op.id)).view.progress as { current?: string; stopped: string[] };
  assert.equal(progressed.current, 'agent-3');
  // While d1's lease lives, d2 may neither resume nor abort it: 409 naming d1.
  await assert.rejects(d2.service.resumeStale(op.id), /still running on dispatcher d1/);
  await assert.rejects(d2.service.abort(op.id), /runs on dispatcher d1/);
  kv.expire([...kv.leases][0]);
  const resumed = await d2.service.resumeStale(op.id);
  assert.equal(resumed.id, op.id);
  const done = await d2.operations.wait(op.id);
  assert.equal(done.state, 'succeeded', JSON.stringify(done.error));
  assert.equal(done.runner, 'd2');
  const stops = journal.filter((e) => e.includes(':stopProcess:')).map((e) => e.split(':')[2]);
  // agent-2 was done before: not again; agent-3 again (it was in flight), then the leader agent-1.
  assert.deepEqual(stops, ['agent-2', 'agent-3', 'agent-3', 'agent-1']);
  // d1 wakes up after its keep-alive saw the lease gone: it stops at its next step and writes nothing.
  await new Promise((r) => setTimeout(r, 900));
  release();
  const old = await d1.operations.wait(op.id);
  assert.equal(old.state, 'failed');
  assert.equal(journal.filter((e) => e.includes(':stopProcess:')).length, 4, 'the cut-off runner restarted nothing more');
  const record = JSON.parse(kv.keys.get(`/cluster-dispatcher/${plan.name}/operations/${op.id}`)!.value);
  assert.equal(record.state, 'succeeded');
  assert.equal(record.runner, 'd2');
  // The old runner, asked at its next start, learns it ended elsewhere.
  assert.match((await d1.operations.takenOver(old))!, /ended elsewhere: succeeded/);
});
