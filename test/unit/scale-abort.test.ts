/**
 * Abort of a scale change whose runner died (ClusterService.abortOperation; docs/DESIGN.md, "Executing a
 * scale change"): while the runner's lease lives another dispatcher gets 409 naming it; once the lease is
 * gone the abort records, under the cluster lock and so in the agency, how far the change got and which
 * step may be half done, and changes nothing else (each step's plan version is already stored everywhere).
 * Resume is refused with what to do instead. OperationStore + AgencyOperationLock over a fake agency.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AgencyOperationLock } from '../../server/cluster/operation-lock.js';
import { OperationStore } from '../../server/cluster/operations.js';
import { ClusterService } from '../../server/cluster/service.js';
import type { ScaleProgress } from '../../server/cluster/scale.js';
import { fakeClock } from '../helpers/fake-cluster.js';
import { fakeAgency } from '../helpers/fake-agency.js';

const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

test('a scale whose runner died: 409 while its lease lives, then aborted through another dispatcher with where it stopped; resume says what to do', async () => {
  const kv = fakeAgency();
  const cluster = 'c1';
  const [d1, d2] = await Promise.all(
    ['d1', 'd2'].map(async (self) => {
      const dir = mkdtempSync(join(tmpdir(), 'cd-scale-abort-'));
      dirs.push(dir);
      const operations = new OperationStore(dir, undefined, fakeClock());
      await operations.load();
      operations.useClusterLock(new AgencyOperationLock({ self, ttlSeconds: 2, agency: () => ({ kv, cluster }) }), self);
      // abortOperation uses only the node's id and the operations: the rest of the cluster side is not reached.
      const service = new ClusterService({ id: self } as never, {} as never, operations, {} as never, {} as never, (() => undefined) as never, {} as never);
      return { operations, service };
    }),
  );
  let release!: () => void;
  const hung = new Promise<void>((r) => (release = r));
  const progress: ScaleProgress = {
    steps: [
      { kind: 'adopt-dispatcher', host: 'd4' },
      { kind: 'add-agent', process: 'agent-4', host: 'd4' },
    ],
    done: 1,
    version: { number: 3, hash: 'a'.repeat(16) },
  };
  // d1 runs a scale that stops answering in its second step (a runner whose machine froze).
  const op = await d1.operations.start('scale', cluster, async (h) => {
    await h.setProgress(progress);
    await hung;
  }, { lock: 'required' });
  const published = () => kv.keys.get(`/cluster-dispatcher/${cluster}/operations/${op.id}`)?.value ?? '';
  for (let i = 0; i < 200 && !published().includes('add-agent'); i++) await new Promise((r) => setTimeout(r, 5));

  await assert.rejects(d2.service.abortOperation(op.id), /still running on dispatcher d1/);
  await assert.rejects(d2.service.resumeOperation(op.id), /a scale does not resume: abort it .*then run dispatch scale/);
  kv.expire([...kv.leases][0]);

  const abort = await d2.service.abortOperation(op.id);
  const ended = await d2.operations.wait(abort.id);
  assert.equal(ended.state, 'succeeded', JSON.stringify(ended.error));
  assert.deepEqual(ended.result, { abortOf: op.id, planVersion: progress.version });
  const record = JSON.parse(kv.keys.get(`/cluster-dispatcher/${cluster}/operations/${op.id}`)!.value);
  assert.equal(record.state, 'aborted', 'the aborted record reached the agency');
  const last = record.events.at(-1).message as string;
  assert.match(last, /1 of 2 step\(s\) done; every dispatcher stores plan version 3; step 2 \(add-agent\) may be half done/);
  // Aborting again is a 409: nothing is running any more.
  await assert.rejects(d2.service.abortOperation(op.id), /is aborted; nothing to resume or abort/);
  release();
  await d1.operations.wait(op.id);
});
