/**
 * SSH tier: `dispatch deploy` into three network-namespace hosts, each running a real OpenSSH server
 * with its own host key (needs root, openssh-server, iproute2). The deployer runs inside the `outside`
 * namespace (the root namespace blackholes the test subnet), exactly as an operator's machine would.
 *
 * Hosts share this machine's filesystem, so each gets its own prefix, config dir and data dir under a
 * private test directory; each runs the daemon without systemd (direct start with a pid file).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml, stringify as toYaml } from 'yaml';
import { SpecDispatcherSchema } from '../../api/plan.js';
import type { ClusterView, OperationView } from '../../api/rest.js';
import { planFromSpec } from '../../launcher/planner.js';
import { PG_HA_DEBIAN_BINARIES } from '../../launcher/local.js';
import { clientIn, ndjson } from '../helpers/ns-cluster.js';
import { createTestNet, type TestNet } from '../helpers/netns.js';
import { makeKeyPair, privateDir, startSshd, type KeyPair, type TestSshd } from '../helpers/sshd.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const CLI = path.join(here, 'fixtures', 'deploy-cli.js');
const RUN_AS = 'cdtdeploy';
const CLUSTER = 'sshtest';

interface Line {
  type: string;
  host?: string;
  step?: string;
  status?: string;
  message?: string;
  ok?: boolean;
  results?: { id: string; ok: boolean; step?: string; error?: string }[];
  password?: string;
}

describe('dispatch deploy over SSH into three namespace hosts', () => {
  let net: TestNet | undefined;
  const sshds: TestSshd[] = [];
  let work = '';
  let key: KeyPair;
  let userExisted = true;
  /** The dispatchers file the deploy wrote: ready for a spec's `dispatchers:` (a launch test can use it). */
  let dispatchersFile = '';
  let firstFingerprints: Record<string, string> = {};

  const hostDirs = (i: number) => ({ prefix: `${work}/h${i}/opt`, configDir: `${work}/h${i}/etc`, dataDir: `${work}/h${i}/data` });

  const inventory = (over: { pins?: (string | undefined)[]; only?: number[] } = {}): string => {
    const n = net!;
    const hosts = n.hosts
      .map((h, i) => ({
        address: h.ipv4,
        keyFile: key.privateKeyFile,
        hostKeyFingerprint: over.pins ? over.pins[i] : sshds[i].hostKeyFingerprint,
        addresses: [h.ipv4, h.ipv6],
        id: `d${i + 1}`,
        serviceManager: 'direct',
        ...hostDirs(i + 1),
      }))
      .filter((_, i) => !over.only || over.only.includes(i));
    return toYaml({
      name: CLUSTER,
      runAs: RUN_AS,
      minFreeMB: 50,
      healthTimeoutSec: 60,
      parallelism: 3,
      firewall: { backend: 'nftables' },
      engines: {
        'pg-ha': {
          binaries: { etcd: '/usr/bin/etcd', python3: '/usr/bin/python3', patroni: '/usr/bin/patroni', psql: '/usr/bin/psql', haproxy: '/usr/sbin/haproxy' },
        },
      },
      password: { user: 'admin' },
      hosts,
    });
  };

  const deploy = async (inv: string, extra: string[] = []): Promise<{ code: number; lines: Line[]; stderr: string; stdout: string }> => {
    const file = path.join(work, `inventory-${Date.now()}.yaml`);
    await writeFile(file, inv, { mode: 0o600 });
    const r = await net!.exec(net!.outside!.ns, [process.execPath, CLI, 'deploy', '--inventory', file, '--json', '--no-build', '-o', dispatchersFile, ...extra], {
      timeoutMs: 300_000,
    });
    const lines = r.stdout
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Line);
    return { ...r, lines };
  };

  const summary = (r: { lines: Line[]; stdout: string; stderr: string }): Line => {
    const s = r.lines.filter((l) => l.type === 'summary');
    assert.equal(s.length, 1, `exactly one summary line; got:\n${r.stdout}\n${r.stderr}`);
    return s[0];
  };

  /** GET /v1/health from the outside namespace; returns the presented certificate's fingerprint. */
  const healthFromOutside = async (endpoint: string): Promise<{ status: number; fingerprint: string }> => {
    const script = `const https=require('node:https');https.get(new URL('/v1/health',process.argv[1]),{rejectUnauthorized:false,agent:false},(r)=>{const fp=r.socket.getPeerCertificate().fingerprint256;r.resume();r.on('end',()=>console.log(JSON.stringify({status:r.statusCode,fingerprint:fp})))}).on('error',(e)=>{console.log(JSON.stringify({status:0,fingerprint:'',error:e.message}))})`;
    const r = await net!.exec(net!.outside!.ns, [process.execPath, '-e', script, endpoint], { timeoutMs: 15_000 });
    return JSON.parse(r.stdout.trim()) as { status: number; fingerprint: string };
  };

  const daemonPid = (i: number): number | undefined => {
    const pf = `${hostDirs(i).dataDir}/dispatcherd.pid`;
    if (!existsSync(pf)) return undefined;
    const pid = Number(readFileSync(pf, 'utf8').trim());
    return existsSync(`/proc/${pid}`) ? pid : undefined;
  };

  before(async () => {
    try {
      execFileSync('id', ['-u', RUN_AS], { stdio: 'ignore' });
    } catch {
      userExisted = false;
    }
    work = await privateDir('deploy');
    dispatchersFile = path.join(work, 'dispatchers.yaml');
    key = await makeKeyPair(work, 'operator_key');
    net = await createTestNet({ hosts: 3, outside: true, prefix: 'cdd' });
    for (const h of net.hosts) sshds.push(await startSshd(net, h, { authorizedKeys: [key.publicKey] }));
  });

  after(async () => {
    // Daemons first, by their pid files only (they live in our namespaces; destroy() would kill them too).
    for (let i = 1; i <= 3; i++) {
      const pid = daemonPid(i);
      if (pid) {
        try {
          process.kill(pid, 'SIGTERM');
        } catch {
          /* gone */
        }
      }
    }
    for (const s of sshds) await s.stop();
    await net?.destroy();
    if (work) await rm(work, { recursive: true, force: true });
    if (!userExisted) {
      try {
        execFileSync('userdel', [RUN_AS], { stdio: 'ignore' });
      } catch {
        /* not created */
      }
    }
  });

  test('a wrong host-key pin is refused before anything is written on that host', async () => {
    const tmpBefore = readdirSync('/tmp').filter((f) => f.startsWith('dispatcher-deploy.')).length;
    // host 1 pinned to host 2's key: the key exchange must fail; host 2 is not in this run.
    const r = await deploy(inventory({ pins: [sshds[1].hostKeyFingerprint, undefined, undefined], only: [0] }));
    assert.equal(r.code, 1, r.stderr);
    const s = summary(r);
    assert.equal(s.ok, false);
    assert.equal(s.results![0].id, 'd1');
    assert.equal(s.results![0].step, 'connect');
    assert.match(s.results![0].error!, /host d1: step connect: host key SHA256:\S+ does not match the pinned/);
    // No step after connect ever started.
    assert.deepEqual(r.lines.filter((l) => l.type === 'step' && l.host === 'd1').map((l) => l.step).filter((x, i, a) => a.indexOf(x) === i), ['connect']);
    for (const dir of Object.values(hostDirs(1))) assert.equal(existsSync(dir), false, `${dir} must not exist`);
    assert.equal(readdirSync('/tmp').filter((f) => f.startsWith('dispatcher-deploy.')).length, tmpBefore, 'no upload staging dir was made');
  });

  test('an unknown host key is refused without a pin (no trust on first use)', async () => {
    const r = await deploy(inventory({ pins: [undefined, undefined, undefined], only: [0] }));
    assert.equal(r.code, 1, r.stderr);
    const s = summary(r);
    assert.match(s.results![0].error!, /step connect: host key SHA256:\S+ is unknown/);
    assert.equal(existsSync(hostDirs(1).prefix), false);
  });

  test('deploys to all three hosts; dispatchers answer over HTTPS with the fingerprint read on the host', async () => {
    const r = await deploy(inventory());
    assert.equal(r.code, 0, `${r.stderr}\n${r.stdout}`);
    const s = summary(r);
    assert.equal(s.ok, true);
    assert.deepEqual(s.results!.map((x) => [x.id, x.ok]), [['d1', true], ['d2', true], ['d3', true]]);
    // The generated password is printed exactly once, and only its hash is on the hosts.
    const pw = r.lines.filter((l) => l.type === 'password');
    assert.equal(pw.length, 1);
    const password = pw[0].password!;
    assert.ok(password.length >= 12 && !password.includes(':'));
    for (let i = 1; i <= 3; i++) {
      const users = readFileSync(`${hostDirs(i).dataDir}/users.json`, 'utf8');
      assert.ok(!users.includes(password), 'the password is never stored in clear');
      assert.ok((JSON.parse(users) as { users: Record<string, unknown> }).users.admin);
    }

    const doc = parseYaml(readFileSync(dispatchersFile, 'utf8')) as { dispatchers: unknown[] };
    assert.equal(doc.dispatchers.length, 3);
    firstFingerprints = {};
    for (const [i, raw] of doc.dispatchers.entries()) {
      const d = SpecDispatcherSchema.parse(raw);
      assert.equal(d.id, `d${i + 1}`);
      assert.equal(d.endpoint, `https://${net!.hosts[i].ipv4}:8528`);
      assert.deepEqual(d.addresses, [net!.hosts[i].ipv4, net!.hosts[i].ipv6]);
      const h = await healthFromOutside(d.endpoint);
      assert.equal(h.status, 200);
      assert.equal(h.fingerprint, d.fingerprint);
      firstFingerprints[d.id] = d.fingerprint;
      assert.ok(daemonPid(i + 1), `daemon ${d.id} runs (pid file)`);
    }
    // Each host got the cluster's config, root-only, in its own config dir.
    const cfg = readFileSync(`${hostDirs(2).configDir}/dispatcherd.yaml`, 'utf8');
    assert.match(cfg, /runAs: cdtdeploy/);
  });

  // The lead's launch test slots in here: `dispatchersFile` lists the three running dispatchers, and the
  // admin password is the one printed by the deploy above.

  test('launch a pg-ha cluster through one deployed dispatcher: healthy, then shut down and cleaned up', { timeout: 300_000 }, async () => {
    const n = net!;
    // The database processes run as RUN_AS: it must be able to walk from / to its process dirs, but the
    // test directories are 0700 root (private, for sshd's StrictModes). Grant the search bit (o+x: nothing
    // can be listed) for this test only; sshd only objects to group/world-WRITABLE parents.
    const parents = [path.dirname(work), work, ...[1, 2, 3].map((i) => path.dirname(hostDirs(i).dataDir))];
    const modes = parents.map((p) => statSync(p).mode & 0o7777);
    let launched = false;
    let cleaned = false;
    const cred = { user: 'launcher', password: randomBytes(18).toString('base64url') };
    let first: { endpoint: string; fingerprint: string } | undefined;
    const runOp = async (urlPath: string, body: unknown, timeoutMs: number) => {
      const bodyFile = path.join(work, `op-${Date.now()}.json`);
      await writeFile(bodyFile, JSON.stringify(body), { mode: 0o600 });
      const r = await clientIn(n, n.outside!.ns, first!, cred, ['run', urlPath, bodyFile], timeoutMs);
      const op = ndjson(r.stdout).find((l) => l.type === 'operation') as OperationView | undefined;
      assert.ok(op, `no operation view (exit ${r.code}): ${r.stderr}\n${r.stdout}`);
      return op;
    };
    try {
      parents.forEach((p, i) => chmodSync(p, modes[i] | 0o001));
      // Re-deploy through the product with what a launch needs and the first deploy left out: every pg-ha
      // program the engine requires (postgres too) and a second operator whose password this test knows
      // (the generated admin password is printed once, inside the deploy test). Idempotent otherwise.
      const pwFile = path.join(work, 'launcher.password');
      await writeFile(pwFile, cred.password + '\n', { mode: 0o600 });
      const inv = parseYaml(inventory()) as Record<string, any>;
      inv.engines = { 'pg-ha': { binaries: PG_HA_DEBIAN_BINARIES } };
      inv.password = { user: cred.user, file: pwFile };
      const t0 = Date.now();
      const r = await deploy(toYaml(inv));
      assert.equal(r.code, 0, `${r.stderr}\n${r.stdout}`);
      assert.equal(summary(r).ok, true);
      const redeployMs = Date.now() - t0;
      const doc = parseYaml(readFileSync(dispatchersFile, 'utf8')) as { dispatchers: unknown[] };
      const dispatchers = doc.dispatchers.map((d) => SpecDispatcherSchema.parse(d));
      first = dispatchers[0];
      const plan = planFromSpec({
        name: CLUSTER,
        engine: 'pg-ha',
        dispatchers,
        agents: 3,
        dbservers: 3,
        coordinators: 1,
        // The operator (this test, in the outside namespace) must keep reaching the dispatcher port.
        firewall: { backend: 'nftables', operatorSources: [n.outside!.ipv4, n.outside!.ipv6] },
      });
      const t1 = Date.now();
      launched = true;
      const op = await runOp('/v1/cluster/launch', { plan, peerCredentials: {}, readyTimeoutMs: 120_000 }, 200_000);
      const launchMs = Date.now() - t1;
      assert.equal(op.state, 'succeeded', `${JSON.stringify(op.error)}\n${op.events.map((e) => `${e.step} ${e.host ?? ''} ${e.message}`).join('\n')}`);
      process.stderr.write(`# re-deploy ${redeployMs} ms, launch through d1 ${launchMs} ms\n`);

      const st = await clientIn(n, n.outside!.ns, first, cred, ['get', '/v1/cluster']);
      assert.equal(st.code, 0, st.stderr);
      const view = JSON.parse(st.stdout.trim()) as ClusterView;
      assert.equal(view.name, CLUSTER);
      assert.equal(view.state, 'running');
      assert.equal(view.processes.length, plan.processes.length);
      for (const p of view.processes) assert.equal(p.state, 'ready', `${p.id}: ${JSON.stringify(p)}`);
      for (const d of view.dispatchers) {
        assert.equal(d.reachable, true, `${d.id}: ${d.error}`);
        assert.deepEqual([d.guard?.backend, d.guard?.inSync], ['nftables', true], `${d.id} guard`);
      }

      const sd = await runOp('/v1/cluster/shutdown', {}, 120_000);
      assert.equal(sd.state, 'succeeded', JSON.stringify(sd.error));
      const cl = await runOp('/v1/cluster/cleanup', { confirmName: CLUSTER }, 120_000);
      assert.equal(cl.state, 'succeeded', JSON.stringify(cl.error));
      cleaned = true;
      for (const h of n.hosts) {
        assert.notEqual((await n.exec(h.ns, ['nft', 'list', 'table', 'inet', 'dispatcher_guard'])).code, 0, `guard removed on ${h.name}`);
      }
    } finally {
      if (launched && !cleaned && first) {
        // Bounded best effort so the following tests start from a clean slate (the hard kill is in after()).
        await runOp('/v1/cluster/shutdown', {}, 120_000).catch(() => undefined);
        await runOp('/v1/cluster/cleanup', { confirmName: CLUSTER }, 60_000).catch(() => undefined);
      }
      parents.forEach((p, i) => {
        try {
          chmodSync(p, modes[i]);
        } catch {
          /* removed */
        }
      });
    }
  });

  test('re-deploy is idempotent: same fingerprints, daemon restarted and healthy, password kept', async () => {
    const pidsBefore = [1, 2, 3].map(daemonPid);
    const r = await deploy(inventory());
    assert.equal(r.code, 0, `${r.stderr}\n${r.stdout}`);
    assert.equal(summary(r).ok, true);
    assert.equal(r.lines.filter((l) => l.type === 'password').length, 0, 'an existing password is not replaced by a generated one');
    const uploads = r.lines.filter((l) => l.type === 'step' && l.step === 'upload' && l.status === 'ok');
    assert.equal(uploads.length, 3);
    for (const u of uploads) assert.match(u.message!, /already on the host/);
    const doc = parseYaml(readFileSync(dispatchersFile, 'utf8')) as { dispatchers: { id: string; fingerprint: string; endpoint: string }[] };
    assert.equal(doc.dispatchers.length, 3);
    for (const [i, d] of doc.dispatchers.entries()) {
      assert.equal(d.fingerprint, firstFingerprints[d.id]);
      const h = await healthFromOutside(d.endpoint);
      assert.equal(h.status, 200);
      assert.equal(h.fingerprint, d.fingerprint);
      const pid = daemonPid(i + 1);
      assert.ok(pid);
      assert.notEqual(pid, pidsBefore[i], 'the daemon was restarted onto the (same) release');
    }
  });

  test('--purge-data must repeat the cluster name', async () => {
    const r = await deploy(inventory(), ['--uninstall', '--purge-data', 'not-the-name']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /must repeat the cluster name "sshtest"/);
    assert.ok(daemonPid(1), 'nothing was stopped');
  });

  test('uninstall stops and removes the daemon but keeps the data dirs', async () => {
    const r = await deploy(inventory(), ['--uninstall']);
    assert.equal(r.code, 0, `${r.stderr}\n${r.stdout}`);
    assert.equal(summary(r).ok, true);
    for (let i = 1; i <= 3; i++) {
      const d = hostDirs(i);
      assert.equal(daemonPid(i), undefined, `daemon d${i} stopped`);
      assert.equal(existsSync(d.prefix), false);
      assert.equal(existsSync(d.configDir), false);
      assert.ok(existsSync(`${d.dataDir}/tls`), 'data dir (with its certificate) kept');
      assert.ok(existsSync(`${d.dataDir}/users.json`));
    }
    const h = await healthFromOutside(`https://${net!.hosts[0].ipv4}:8528`);
    assert.equal(h.status, 0, 'nothing answers any more');
  });
});
