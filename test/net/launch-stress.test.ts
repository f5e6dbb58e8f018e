/**
 * Network tier (root; nft): the guard holds for every packet of MANY launches. Three namespace hosts run
 * real dispatchers (nftables backend); a fourth, outside namespace probes every non-public port of every
 * host over IPv4 AND IPv6, each in its own tight connect loop, for the whole run, while the test launches,
 * shuts down and cleans up a cluster LAUNCHES times in a row (launch → shutdown → cleanup → launch ...).
 *
 * The engine is test/engines/guard-listen: a small Python listener per process that binds every port on
 * every plan address of its host, so each guarded port really listens (on both families) while a cluster
 * runs. Required: 0 open connects to any cluster/operator port over the whole run; AND the public
 * coordinator port connected at least once over each family (proof that processes listened and the probe
 * ran across launches), and guarded ports both timed out (guard in place) and were refused (no guard and
 * nothing listening: between cleanup and the next guard). The old preflight, which bound every plan port
 * to test it, opened exactly such a window (docs/FIREWALL.md, "Why no port is ever reachable before the
 * guard").
 *
 * A black-box probe can miss a window of microseconds, so the test also watches the mechanism itself:
 * strace attached to every thread of every dispatcher (not its children: the engine's processes bind
 * their ports, that is their job) records each bind(); none may name a plan port — a dispatcher never
 * opens a socket on a port the guard protects. The trace is shown to be live by the connect() calls it
 * records (peer HTTPS calls, readiness probes).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestNet } from '../helpers/netns.js';
import { socketClient, type NsCluster } from '../helpers/ns-cluster.js';
import { guardListenTemplates, requireExecutables, startNsHosts, type TestEngineTemplates } from '../helpers/ns-setup.js';
import { startOutsideProbe, type ProbeTarget } from '../helpers/outside-probe.js';
import { planFromSpec } from '../../launcher/planner.js';
import { Kickstarter } from '../../launcher/kickstarter.js';
import type { Plan } from '../../api/plan.js';
import type { OperationView } from '../../api/rest.js';

const LAUNCHES = 20;
const PYTHON = '/usr/bin/python3';
const STRACE = '/usr/bin/strace';

/** strace on every current thread of `pid` (no children), tracing bind and connect into `file`. */
async function traceBinds(pid: number, file: string): Promise<ChildProcess> {
  const tids = readdirSync(`/proc/${pid}/task`);
  const child = spawn(STRACE, ['-qq', '-e', 'trace=bind,connect', '-o', file, ...tids.flatMap((t) => ['-p', t])], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr!.setEncoding('utf8').on('data', (c: string) => (err += c));
  // strace has attached once it wrote the file (it opens it before attaching) and a beat has passed.
  for (let i = 0; i < 100 && !existsSync(file); i++) await new Promise((r) => setTimeout(r, 20));
  await new Promise((r) => setTimeout(r, 300));
  if (child.exitCode !== null) throw new Error(`strace exited at once: ${err}`);
  return child;
}

/** Ports named by bind() lines of an strace file (IPv4 and IPv6 socket addresses). */
function boundPorts(trace: string): number[] {
  return [...trace.matchAll(/bind\([^)]*sin6?_port=htons\((\d+)\)/g)].map((m) => Number(m[1]));
}

describe(`${LAUNCHES} launches under an outside probe of every non-public port, IPv4 and IPv6 (root, nft)`, () => {
  let net: TestNet | undefined;
  let cluster: NsCluster | undefined;
  let templates: TestEngineTemplates | undefined;

  before(async () => {
    requireExecutables({ python3: PYTHON, nft: '/usr/sbin/nft' });
    // The dispatchers (and the Planner here) find the test engine next to the real ones.
    templates = guardListenTemplates('cd-stress');
    ({ net, cluster } = await startNsHosts('cdls', { engines: { 'guard-listen': { binaries: { python3: PYTHON } } }, env: templates.env }));
  });

  after(async () => {
    await cluster?.teardown().catch(() => undefined);
    await net?.destroy().catch(() => undefined);
    templates?.remove();
  });

  test(`${LAUNCHES} consecutive launch/shutdown/cleanup cycles: 0 outside connects to any guarded port`, { timeout: 300_000 }, async () => {
    const c = cluster!;
    const planFor = (i: number): Plan =>
      planFromSpec({
        name: `stress${i}`,
        engine: 'guard-listen',
        dispatchers: c.specDispatchers(),
        agents: 3,
        dbservers: 3,
        coordinators: 1,
        // Outside is a client source but not an operator source: operator ports must stay shut to it.
        firewall: { backend: 'nftables', clientSources: ['0.0.0.0/0', '::/0'], operatorSources: [] },
      });
    const plan0 = planFor(0);
    const targets: ProbeTarget[] = c.dispatchers.flatMap((d) =>
      plan0.processes
        .filter((p) => p.dispatcher === d.id)
        .flatMap((p) => p.ports.map((x) => ({ p, x })))
        .flatMap(({ p, x }) =>
          [d.host.ipv4, d.host.ipv6].map((host) => ({
            host,
            port: x.port,
            expect: x.exposure === 'public' ? ('sometimes' as const) : ('never' as const),
            label: `${p.id}/${x.name} (${x.exposure}) ${host.includes(':') ? `[${host}]` : host}:${x.port}`,
          })),
        ),
    );
    assert.ok(targets.filter((t) => t.expect === 'never').length >= 24, 'every cluster/operator port of 3 hosts, both families');

    const client = socketClient(c.dispatchers[0], 60_000);
    const peerCredentials = Object.fromEntries(c.dispatchers.slice(1).map((d) => [d.id, { user: c.user, password: c.password }]));
    const run = async (path: string, body: unknown): Promise<OperationView> => {
      const { operation } = await client.post<{ operation: string }>(path, body);
      await new Kickstarter(undefined, client).waitFor(operation).catch(() => undefined);
      return client.get<OperationView>(`/v1/operations/${encodeURIComponent(operation)}`);
    };

    const traceDir = mkdtempSync(join(tmpdir(), 'cd-stress-trace-'));
    const tracers: ChildProcess[] = [];
    for (const d of c.dispatchers) tracers.push(await traceBinds(d.pid!, join(traceDir, `${d.id}.trace`)));
    const probe = await startOutsideProbe(net!, net!.outside!.ns, targets, { timeoutMs: 150 });
    const started = Date.now();
    let counts;
    let traces: string[] = [];
    try {
      for (let i = 0; i < LAUNCHES; i++) {
        const plan = i === 0 ? plan0 : planFor(i);
        const l = await run('/v1/cluster/launch', { plan, peerCredentials, readyTimeoutMs: 20_000 });
        assert.equal(l.state, 'succeeded', `launch ${i}: ${JSON.stringify(l.error)}\n${l.events.map((e) => `${e.step} ${e.host ?? ''} ${e.message}`).join('\n')}`);
        const s = await run('/v1/cluster/shutdown', {});
        assert.equal(s.state, 'succeeded', `shutdown ${i}: ${JSON.stringify(s.error)}`);
        const k = await run('/v1/cluster/cleanup', { confirmName: plan.name });
        assert.equal(k.state, 'succeeded', `cleanup ${i}: ${JSON.stringify(k.error)}`);
      }
    } finally {
      counts = await probe.finish();
      client.close();
      for (const t of tracers) {
        t.kill('SIGINT');
        await new Promise<void>((r) => (t.exitCode !== null || t.signalCode !== null ? r() : t.once('exit', () => r())));
      }
      traces = c.dispatchers.map((d) => readFileSync(join(traceDir, `${d.id}.trace`), 'utf8'));
      rmSync(traceDir, { recursive: true, force: true });
    }
    const ms = Date.now() - started;
    const sum = (pred: (t: ProbeTarget) => boolean, k: 'attempts' | 'open' | 'refused' | 'timeout') =>
      targets.reduce((a, t, i) => a + (pred(t) ? counts[i][k] : 0), 0);
    const guarded = (t: ProbeTarget) => t.expect === 'never';
    process.stderr.write(
      `# ${LAUNCHES} launch/shutdown/cleanup cycles in ${ms} ms; guarded ports: ${sum(guarded, 'attempts')} probes, ` +
        `${sum(guarded, 'open')} open, ${sum(guarded, 'refused')} refused, ${sum(guarded, 'timeout')} dropped\n`,
    );
    // The mechanism: no dispatcher bound a plan port, in any of the launches (trace live: it saw connects).
    const planPorts = new Set(targets.map((t) => t.port));
    c.dispatchers.forEach((d, i) => {
      assert.ok(/connect\(/.test(traces[i]), `the syscall trace of ${d.id} is live (it recorded connect calls)`);
      const bad = boundPorts(traces[i]).filter((p) => planPorts.has(p));
      assert.deepEqual(bad, [], `dispatcher ${d.id} bound plan ports itself (a listening socket before the guard)`);
    });
    const leaks = targets.flatMap((t, i) => (guarded(t) && counts[i].open > 0 ? [`${t.label}: ${counts[i].open} at ${counts[i].openAt.join(', ')}`] : []));
    assert.deepEqual(leaks, [], 'guarded ports reachable from outside');
    for (const fam of ['IPv4', 'IPv6']) {
      const isFam = (t: ProbeTarget) => (fam === 'IPv6') === t.host.includes(':');
      assert.ok(sum((t) => t.expect === 'sometimes' && isFam(t), 'open') > 0, `the public coordinator port answered over ${fam}: processes listened on it`);
      assert.ok(sum((t) => guarded(t) && isFam(t), 'timeout') > 0, `guarded ports were dropped over ${fam} (guard in place)`);
      assert.ok(sum((t) => guarded(t) && isFam(t), 'refused') > 0, `guarded ports were refused over ${fam} (between cycles: no guard, nothing listening)`);
    }
  });
});
