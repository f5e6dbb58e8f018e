/**
 * Parsing of etcd's member API answers (server/engines/pg-ha/etcd-members.ts): the shapes etcd 3.4's gRPC
 * gateway answers (uint64 ids as strings), refusals mapped to 409 when they are about quorum. The calls
 * themselves run against a real etcd in test/cluster/plan-versions.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DispatcherError } from '../../api/errors.js';
import { agentPeerUrl, agencyEndpoints, membershipError, parseMembers } from '../../server/engines/pg-ha/etcd-members.js';
import { guardPlan } from '../golden/firewall/plan.js';

test('a member list keeps uint64 ids exact and marks unstarted members by their empty name', () => {
  const body = JSON.stringify({
    header: { cluster_id: '14841639068965178418', member_id: '10276657743932975437', raft_term: '2' },
    members: [
      { ID: '10276657743932975437', name: 'agent-1', peerURLs: ['https://10.0.0.1:2380'], clientURLs: ['https://10.0.0.1:2379'] },
      { ID: '18446744073709551615', peerURLs: ['https://10.0.0.4:2380'], isLearner: true },
    ],
  });
  assert.deepEqual(parseMembers(body), [
    { id: '10276657743932975437', name: 'agent-1', peerURLs: ['https://10.0.0.1:2380'], clientURLs: ['https://10.0.0.1:2379'], learner: false },
    { id: '18446744073709551615', name: '', peerURLs: ['https://10.0.0.4:2380'], clientURLs: [], learner: true },
  ]);
});

test('answers that are not a member list are refused with peer_invalid_answer', () => {
  for (const bad of ['not json', '{}', '{"members":[{"ID":12}]}', '{"members":[{"ID":"-1"}]}']) {
    assert.throws(() => parseMembers(bad), (e: unknown) => e instanceof DispatcherError && e.code === 'peer_invalid_answer', bad);
  }
});

test('a quorum refusal is a 409 naming it; other refusals are operation failures', () => {
  const q = membershipError('add member https://10.0.0.4:2380', 503, JSON.stringify({ error: 'etcdserver: unhealthy cluster', code: 14, message: 'etcdserver: unhealthy cluster' }));
  assert.equal(q.status, 409);
  assert.match(q.message, /etcd refused to add member https:\/\/10\.0\.0\.4:2380: etcdserver: unhealthy cluster/);
  const other = membershipError('remove member x', 400, JSON.stringify({ message: 'etcdserver: member not found' }));
  assert.equal(other.code, 'operation_failed');
});

test('peer and client URLs come from the plan', () => {
  const agent = guardPlan.processes.find((p) => p.id === 'agent-2')!;
  assert.equal(agentPeerUrl(agent), 'https://10.0.0.2:2380');
  assert.deepEqual(agencyEndpoints(guardPlan, ['agent-1']), ['https://10.0.0.2:2379', 'https://10.0.0.3:2379']);
});
