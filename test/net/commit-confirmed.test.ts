/**
 * Network tier (root; nft, nmap): commit-confirmed firewall changes that do not depend on the daemon.
 * Three namespace hosts run real dispatchers (nftables) with a cheap cluster (test engine guard-listen);
 * the operator sits in the outside namespace (an operator source). A change that drops the operator is
 * rolled back at its deadline by each dispatcher's detached watchdog process — also when the daemon was
 * killed with SIGKILL or frozen with SIGSTOP — and a restarted daemon knows a change still pending (and
 * its deadline). Confirm must come over a NEW connection (the one that carried the change is refused), so
 * an operator who cut themselves off cannot confirm; extend and cancel work through the CLI.
 * What the operator reaches is judged by nmap from outside on the coordinator's stats port (exposure
 * operator: open for the operator, filtered once the change drops them).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { TestNet } from '../helpers/netns.js';
import { guardListenTemplates, operatorOutsideFirewall, requireExecutables, startNsHosts, type TestEngineTemplates } from '../helpers/ns-setup.js';
import { socketClient, type NsCluster, type NsDispatcher } from '../helpers/ns-cluster.js';
import { REPO_ROOT } from '../helpers/daemon.js';
import { planFromSpec } from '../../launcher/planner.js';
import { Kickstarter } from '../../launcher/kickstarter.js';
import type { FirewallPolicy, Plan } from '../../api/plan.js';
import type { ClusterView, NodeStatusView, OperationView } from '../../api/rest.js';

const PYTHON = '/usr/bin/python3';
const DEADLINE_S = 5;

describe('commit-confirmed firewall changes outlive the daemon (root, nft, nmap)', () => {
  let net: TestNet | undefined;
  let cluster: NsCluster | undefined;
  let templates: TestEngineTemplates | undefined;
  let plan: Plan;
  let victim: NsDispatcher; // the coordinator's host: its stats port shows what the operator reaches
  let statsPort = 0;

  const d1 = () => cluster!.dispatchers[0];
  const outside = () => net!.outside!;
  const cut = (): FirewallPolicy => ({ ...plan.firewall, operatorSources: [] });

  const statsFromOutside = async (): Promise<string> => {
    const r = await net!.exec(outside().ns, ['nmap', '-Pn', '-n', '-sS', '-T4', '--max-retries', '1', '-p', String(statsPort), '-oG', '-', victim.host.ipv4], { timeoutMs: 30_000 });
    const m = new RegExp(`${statsPort}/([a-z|]+)/tcp`).exec(r.stdout);
    assert.ok(m, `nmap: ${r.stdout}${r.stderr}`);
    return m[1];
  };
  const waitStats = async (want: string, ms: number): Promise<number> => {
    const t0 = Date.now();
    while (Date.now() - t0 < ms) {
      if ((await statsFromOutside()) === want) return Date.now() - t0;
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.fail(`stats port not ${want} within ${ms} ms`);
  };
  const nodeStatus = async (d: NsDispatcher): Promise<NodeStatusView> => {
    const c = socketClient(d, 10_000);
    try {
      // Node routes answer peers only (by certificate); root on the socket reads its own guard from the cluster view.
      const view = await c.get<ClusterView>('/v1/cluster');
      const own = view.dispatchers.find((x) => x.id === d.id);
      return { dispatcher: d.id, processes: [], ...(own?.guard ? { guard: own.guard } : {}) };
    } finally {
      c.close();
    }
  };
  /** One request on a fresh connection to d1's control socket. */
  const post = async <T>(path: string, body: unknown, d = d1()): Promise<T> => {
    const c = socketClient(d, 30_000);
    try {
      return await c.post<T>(path, body);
    } finally {
      c.close();
    }
  };
  /** The CLI in the outside namespace (the operator's machine), over pinned HTTPS with a password file. */
  const cli = async (args: string[]): Promise<{ code: number; stdout: string; stderr: string }> => {
    const pw = join(cluster!.root, 'operator.pw');
    writeFileSync(pw, cluster!.password + '\n', { mode: 0o600 });
    const r = await net!.exec(
      outside().ns,
      ['env', `DISPATCH_CONFIG_DIR=${join(cluster!.root, 'cli-config')}`, process.execPath, join(REPO_ROOT, 'bin', 'dispatch'), '--endpoint', d1().endpoint, '--fingerprint', d1().fingerprint, '--user', cluster!.user, '--password-file', pw, '--json', ...args],
      { timeoutMs: 60_000 },
    );
    return r;
  };

  before(async () => {
    requireExecutables({ python3: PYTHON, nft: '/usr/sbin/nft', nmap: '/usr/bin/nmap' });
    templates = guardListenTemplates('cd-cc');
    ({ net, cluster } = await startNsHosts('cdcc', { engines: { 'guard-listen': { binaries: { python3: PYTHON } } }, env: templates.env }));
    plan = planFromSpec({
      name: 'cc',
      engine: 'guard-listen',
      dispatchers: cluster.specDispatchers(),
      agents: 3,
      dbservers: 3,
      coordinators: 1,
      firewall: operatorOutsideFirewall(net),
    });
    const coord = plan.processes.find((p) => p.role === 'coordinator')!;
    victim = cluster.dispatchers.find((d) => d.id === coord.dispatcher)!;
    statsPort = coord.ports.find((p) => p.name === 'stats')!.port;
    const c = socketClient(d1(), 60_000);
    try {
      const peerCredentials = Object.fromEntries(cluster.dispatchers.slice(1).map((d) => [d.id, { user: cluster!.user, password: cluster!.password }]));
      const { operation } = await c.post<{ operation: string }>('/v1/cluster/launch', { plan, peerCredentials, readyTimeoutMs: 20_000 });
      await new Kickstarter(undefined, c).waitFor(operation).catch(() => undefined);
      const op = await c.get<OperationView>(`/v1/operations/${operation}`);
      assert.equal(op.state, 'succeeded', JSON.stringify(op.error));
    } finally {
      c.close();
    }
  });

  after(async () => {
    if (victim?.pid) {
      try {
        process.kill(victim.pid, 'SIGCONT');
      } catch {
        /* gone */
      }
    }
    await cluster?.teardown().catch(() => undefined);
    await net?.destroy().catch(() => undefined);
    templates?.remove();
  });

  test('CLI: a change that cuts the operator off cannot be confirmed and rolls back; extend + confirm keeps a good one; cancel restores at once', { timeout: 120_000 }, async () => {
    assert.equal(await statsFromOutside(), 'open', 'the operator reaches the stats port before any change');
    const policyFile = join(cluster!.root, 'cut.yaml');
    writeFileSync(policyFile, JSON.stringify(cut()));
    const applied = await cli(['firewall', 'apply', '--policy', policyFile, '--confirm-within', String(DEADLINE_S)]);
    assert.equal(applied.code, 0, applied.stderr);
    const { token, confirmBy } = JSON.parse(applied.stdout) as { token: string; confirmBy: string };
    assert.match(token, /^[0-9a-f]{32}$/);
    assert.equal(await statsFromOutside(), 'filtered', 'the change cut the operator off');
    // The confirm is a new connection from the operator's side: under the new rules it cannot get in.
    const confirm = await cli(['firewall', 'confirm', '--token', token]);
    assert.notEqual(confirm.code, 0, 'an operator who cut themselves off cannot confirm');
    const waited = await waitStats('open', DEADLINE_S * 1000 + 8_000);
    process.stderr.write(`# rolled back ${Date.now() - Date.parse(confirmBy)} ms after the deadline (waited ${waited} ms)\n`);
    assert.ok(Date.now() >= Date.parse(confirmBy) - 200, 'not before the deadline');
    for (const d of cluster!.dispatchers) assert.equal((await nodeStatus(d)).guard?.pendingConfirmUntil, undefined, `${d.id}: nothing pending after the rollback`);

    // A change that keeps the operator: extend, then confirm over a new connection (each CLI run is one).
    const narrower = { ...plan.firewall, clientSources: [outside().ipv4, outside().ipv6] };
    writeFileSync(policyFile, JSON.stringify(narrower));
    const a2 = await cli(['firewall', 'apply', '--policy', policyFile, '--confirm-within', String(DEADLINE_S)]);
    assert.equal(a2.code, 0, a2.stderr);
    const t2 = JSON.parse(a2.stdout) as { token: string; confirmBy: string };
    const ext = await cli(['firewall', 'extend', '--token', t2.token, '--confirm-within', '60']);
    assert.equal(ext.code, 0, ext.stderr);
    assert.ok(Date.parse(JSON.parse(ext.stdout).confirmBy) > Date.parse(t2.confirmBy) + 30_000, 'the deadline moved');
    await new Promise((r) => setTimeout(r, DEADLINE_S * 1000 + 1_500));
    assert.ok((await nodeStatus(victim)).guard?.pendingConfirmUntil, 'still pending past the first deadline (extended)');
    const bad = await cli(['firewall', 'confirm', '--token', 'f'.repeat(32)]);
    assert.notEqual(bad.code, 0, 'a wrong token confirms nothing');
    const ok = await cli(['firewall', 'confirm', '--token', t2.token]);
    assert.equal(ok.code, 0, ok.stderr);
    for (const d of cluster!.dispatchers) {
      const stored = JSON.parse(readFileSync(join(d.dataDir, 'cluster', 'cluster.json'), 'utf8')).plan.firewall;
      assert.deepEqual(stored.clientSources, narrower.clientSources, `${d.id}: the confirmed policy is the plan now`);
    }
    plan = { ...plan, firewall: narrower };

    // Cancel: back to the previous rules at once.
    writeFileSync(policyFile, JSON.stringify(cut()));
    const a3 = JSON.parse((await cli(['firewall', 'apply', '--policy', policyFile, '--confirm-within', '60'])).stdout) as { token: string };
    assert.equal(await statsFromOutside(), 'filtered');
    // The operator is cut off, so the cancel comes over the control socket (root on the machine).
    await post('/v1/cluster/firewall/cancel', { token: a3.token });
    assert.equal(await statsFromOutside(), 'open', 'cancel restored the previous rules');
  });

  test('REST: confirm over the connection that carried the change is refused; a new connection confirms', { timeout: 60_000 }, async () => {
    const c = socketClient(d1(), 30_000);
    try {
      const r = await c.post<{ token: string }>('/v1/cluster/firewall', { firewall: plan.firewall, confirmWithinSeconds: 30 });
      await assert.rejects(c.post('/v1/cluster/firewall/confirm', { token: r.token }), /new connection/);
      await assert.rejects(post('/v1/cluster/firewall/confirm', { token: 'nothex' }), (e: { code?: string; problems?: unknown }) => e.code === 'validation_failed' && JSON.stringify(e.problems).includes('32 hex digits'));
      const done = await post<{ confirmed: boolean }>('/v1/cluster/firewall/confirm', { token: r.token });
      assert.equal(done.confirmed, true);
    } finally {
      c.close();
    }
  });

  for (const how of ['SIGKILL', 'SIGSTOP'] as const) {
    test(`${how} of the daemon with a pending change: its watchdog rolls the rules back on time`, { timeout: 90_000 }, async () => {
      assert.equal(await statsFromOutside(), 'open');
      const r = await post<{ token: string; confirmBy: string }>('/v1/cluster/firewall', { firewall: cut(), confirmWithinSeconds: DEADLINE_S });
      assert.equal(await statsFromOutside(), 'filtered');
      const st = JSON.parse(readFileSync(join(victim.dataDir, 'firewall', 'pending.json'), 'utf8')) as { token: string; deadline: string; watchdogPid: number };
      assert.equal(st.token, r.token, 'the pending change is persisted');
      assert.ok(st.watchdogPid > 0);
      process.kill(victim.pid!, how);
      if (how === 'SIGKILL') await new Promise<void>((res) => (victim.child!.exitCode !== null || victim.child!.signalCode !== null ? res() : victim.child!.once('exit', () => res())));
      await waitStats('open', DEADLINE_S * 1000 + 8_000);
      const late = Date.now() - Date.parse(r.confirmBy);
      process.stderr.write(`# ${how}: operator back ${late} ms after the deadline\n`);
      assert.ok(late > -200, 'not before the deadline');
      assert.ok(late < 3_000, `on time: ${late} ms after the deadline`);
      if (how === 'SIGSTOP') {
        process.kill(victim.pid!, 'SIGCONT');
      } else {
        await cluster!.start(victim);
      }
      // The daemon (resumed or restarted) learns the rollback: nothing pending, and its drift loop keeps
      // the previous rules (it does not re-install the change).
      await new Promise((res) => setTimeout(res, 2_500));
      const g = (await nodeStatus(victim)).guard;
      assert.equal(g?.pendingConfirmUntil, undefined, JSON.stringify(g));
      assert.equal(g?.inSync, true, JSON.stringify(g));
      assert.equal(await statsFromOutside(), 'open', 'still open after drift checks');
    });
  }

  test('a restarted daemon knows the pending change and its deadline; confirm after the restart keeps it', { timeout: 90_000 }, async () => {
    const narrower = { ...plan.firewall, clientSources: [outside().ipv4, outside().ipv6, '192.0.2.0/24'] };
    const r = await post<{ token: string; confirmBy: string }>('/v1/cluster/firewall', { firewall: narrower, confirmWithinSeconds: 60 });
    const deadline = (await nodeStatus(victim)).guard?.pendingConfirmUntil;
    assert.ok(deadline);
    await cluster!.stop(victim);
    await cluster!.start(victim);
    const g = (await nodeStatus(victim)).guard;
    assert.equal(g?.pendingConfirmUntil, deadline, 'the restarted daemon reports the same deadline');
    const done = await post<{ confirmed: boolean }>('/v1/cluster/firewall/confirm', { token: r.token });
    assert.equal(done.confirmed, true);
    assert.equal((await nodeStatus(victim)).guard?.pendingConfirmUntil, undefined);
    const stored = JSON.parse(readFileSync(join(victim.dataDir, 'cluster', 'cluster.json'), 'utf8')).plan.firewall;
    assert.deepEqual(stored.clientSources, narrower.clientSources);
  });
});
