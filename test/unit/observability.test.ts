/**
 * Unit tier: the pure parts of observability — Patroni's /cluster answer, the audit trail's bound and its
 * persistence, metrics over plain-data sources (operations counted once, states as one-hot gauges), and the
 * engine health cache.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parsePatroniCluster, cachedEngineHealth, type EngineHealthView } from '../../server/observability/engine-health.js';
import { AuditTrail } from '../../server/observability/audit-trail.js';
import { createMetrics, type MetricSources } from '../../server/observability/metrics.js';
import type { OperationView } from '../../api/rest.js';
import type { ProcessStatus } from '../../server/supervisor/types.js';

test('parsePatroniCluster: roles, lag in bytes, unknown lag, garbage', () => {
  const body = JSON.stringify({
    members: [
      { name: 'dbserver-1', role: 'leader', state: 'running', timeline: 3, lag: 0 },
      { name: 'dbserver-2', role: 'replica', state: 'streaming', timeline: 3, lag: 4096 },
      { name: 'dbserver-3', role: 'replica', state: 'stopped', lag: 'unknown' },
      { role: 'replica' },
    ],
  });
  assert.deepEqual(parsePatroniCluster(body), [
    { id: 'dbserver-1', role: 'leader', state: 'running', lagBytes: 0, timeline: 3 },
    { id: 'dbserver-2', role: 'replica', state: 'streaming', lagBytes: 4096, timeline: 3 },
    { id: 'dbserver-3', role: 'replica', state: 'stopped', lagBytes: null },
  ]);
  assert.deepEqual(parsePatroniCluster('not json'), []);
  assert.deepEqual(parsePatroniCluster('{"members": 5}'), []);
});

test('AuditTrail keeps the newest entries only, persists them 0600 and reads them back', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'audit-'));
  try {
    const file = join(dir, 'audit.json');
    const t = await AuditTrail.open(file, { maxEntries: 5 });
    for (let i = 1; i <= 12; i++) t.record({ user: i % 2 ? 'ann' : 'bob', source: '10.0.0.1', action: `POST /v1/x${i}`, path: `/v1/x${i}`, outcome: i === 12 ? 'failure' : 'success' });
    assert.equal(t.size, 5);
    assert.deepEqual(t.query({ limit: 100 }).map((e) => e.seq), [12, 11, 10, 9, 8], 'newest first, oldest dropped');
    assert.deepEqual(t.query({ limit: 2 }).map((e) => e.seq), [12, 11]);
    assert.deepEqual(t.query({ limit: 100, user: 'bob' }).map((e) => e.seq), [12, 10, 8]);
    assert.deepEqual(t.query({ limit: 100, outcome: 'failure' }).map((e) => e.seq), [12]);
    assert.deepEqual(t.query({ limit: 100, after: 10 }).map((e) => e.seq), [12, 11]);
    await t.flush();
    assert.equal(statSync(file).mode & 0o777, 0o600);
    const again = await AuditTrail.open(file, { maxEntries: 5 });
    assert.deepEqual(again.query({ limit: 100 }).map((e) => e.seq), [12, 11, 10, 9, 8]);
    assert.equal(again.record({ user: null, source: 'unix-socket', action: 'POST /v1/y', path: '/v1/y', outcome: 'success' }).seq, 13, 'sequence numbers go on');
    // A damaged file is kept aside, reported, and the trail starts over.
    writeFileSync(file, '{"version":1,"entries":[{"seq":"x"}]}');
    const errors: string[] = [];
    const fresh = await AuditTrail.open(file, { onWriteError: (e) => errors.push(e.message) });
    assert.equal(fresh.size, 0);
    assert.ok(existsSync(`${file}.damaged`));
    assert.match(errors[0], /damaged/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

function op(id: string, kind: OperationView['kind'], state: OperationView['state'], seconds: number): OperationView {
  const start = Date.parse('2026-01-01T00:00:00Z');
  return { id, kind, cluster: 'c', state, startedAt: new Date(start).toISOString(), ...(state === 'running' ? {} : { endedAt: new Date(start + seconds * 1000).toISOString() }), events: [] };
}

test('metrics over plain sources: one-hot process state, operations counted once with their duration', async () => {
  const procs: ProcessStatus[] = [{ id: 'agent-1', role: 'agent', state: 'backoff', restarts: 3, command: [], lastExit: { code: 1, signal: null, at: '2026-01-01T00:00:00Z' } }];
  const ops: OperationView[] = [op('a', 'launch', 'succeeded', 42), op('b', 'restart', 'failed', 7), op('c', 'shutdown', 'running', 0)];
  const health: EngineHealthView = {
    cluster: 'c',
    engine: 'pg-ha',
    checkedAt: '',
    checked: true,
    agency: { leader: 'agent-1', members: [{ id: 'agent-1', reachable: true }] },
    dbservers: { leader: 'dbserver-1', answeredBy: 'dbserver-1', members: [{ id: 'dbserver-1', role: 'leader', state: 'running', lagBytes: 0 }, { id: 'dbserver-2', role: 'replica', state: 'streaming', lagBytes: null }] },
  };
  const src: MetricSources = {
    dispatcher: 'd1',
    processes: () => procs,
    guard: async () => ({ backend: 'nftables', inSync: true, driftRepairs: 2, warnings: [], lastApplyMs: 250, pendingConfirmUntil: '2026-01-01T00:01:00.000Z' }),
    operations: () => ops,
    engineHealth: async () => health,
    certificate: () => undefined,
  };
  const m = createMetrics(src, { selfMetrics: false });
  const first = (await m.scrape()).body;
  const second = (await m.scrape()).body;
  for (const text of [first, second]) {
    assert.match(text, /cluster_dispatcher_process_state\{process="agent-1",role="agent",state="backoff",dispatcher="d1"\} 1/);
    assert.match(text, /cluster_dispatcher_process_state\{process="agent-1",role="agent",state="ready",dispatcher="d1"\} 0/);
    assert.match(text, /cluster_dispatcher_process_restarts_total\{process="agent-1",role="agent",dispatcher="d1"\} 3/);
    assert.match(text, /cluster_dispatcher_process_last_exit_code\{process="agent-1",role="agent",dispatcher="d1"\} 1/);
    assert.match(text, /cluster_dispatcher_operations_total\{kind="launch",outcome="succeeded",dispatcher="d1"\} 1\n/, 'counted once over two scrapes');
    assert.match(text, /cluster_dispatcher_operation_duration_seconds_sum\{[^}]*kind="launch",outcome="succeeded"[^}]*\} 42\n/);
    assert.match(text, /cluster_dispatcher_operations_running\{kind="shutdown",dispatcher="d1"\} 1/);
    assert.match(text, /cluster_dispatcher_operations_running\{kind="restart",dispatcher="d1"\} 0/);
    assert.match(text, /cluster_dispatcher_guard_drift_repairs_total\{backend="nftables",dispatcher="d1"\} 2/);
    assert.match(text, /cluster_dispatcher_guard_last_apply_duration_seconds\{backend="nftables",dispatcher="d1"\} 0.25/);
    assert.match(text, /cluster_dispatcher_guard_pending_confirm_deadline_seconds\{backend="nftables",dispatcher="d1"\} 1767225660/);
    assert.match(text, /cluster_dispatcher_agency_leader\{member="agent-1",dispatcher="d1"\} 1/);
    assert.match(text, /cluster_dispatcher_db_replication_lag_bytes\{member="dbserver-1",dispatcher="d1"\} 0/);
    assert.doesNotMatch(text, /db_replication_lag_bytes\{member="dbserver-2"/, 'unknown lag is absent, not 0');
  }
  // The running operation ends: it is counted at the next scrape.
  ops[2] = op('c', 'shutdown', 'succeeded', 3);
  assert.match((await m.scrape()).body, /cluster_dispatcher_operations_total\{kind="shutdown",outcome="succeeded",dispatcher="d1"\} 1/);
});

test('cachedEngineHealth: one probe round per period, a new one when the plan changes', async () => {
  let probes = 0;
  let plan: { name: string; processes: unknown[] } | undefined = { name: 'a', processes: [] };
  const probe = async () => {
    probes++;
    return { checked: false } as EngineHealthView;
  };
  const get = cachedEngineHealth(() => plan as never, () => undefined, 60_000, probe);
  await Promise.all([get(), get(), get()]);
  assert.equal(probes, 1);
  plan = { name: 'b', processes: [] };
  await get();
  assert.equal(probes, 2);
  plan = undefined;
  await get();
  assert.equal(probes, 3);
});
