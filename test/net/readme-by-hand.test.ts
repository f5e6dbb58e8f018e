/**
 * Network tier (root; nft and the pg-ha Debian packages): README.md "Running a dispatcher by hand", followed
 * word for word on three machines (three network-namespace hosts), launches a pg-ha cluster WITHOUT editing a
 * config file. Per host exactly the README's three commands run inside the host's namespace:
 *   dispatcherd init --data-dir D --address A --engine pg-ha --run-as cluster-dispatcher
 *   dispatcherd user add operator --data-dir D < password-file
 *   dispatcherd start --data-dir D
 * Substitutions, and only these: D is a per-test directory under /var/lib/cluster-dispatcher-test/ instead of
 * /var/lib/cluster-dispatcher; A is the host's namespace IPv4 address instead of 10.0.0.11. Each host gets
 * its own host name (a UTS namespace for `init`), as three real machines have: `init` takes the dispatcher id
 * from it. Then an operator in a fourth, outside namespace launches through ONE dispatcher over pinned HTTPS
 * with the operator password (the plan pins the fingerprints `init` printed), every process gets ready, psql
 * writes and reads through the coordinator, and shutdown + cleanup leave nothing running.
 * Everything (namespaces, dispatchers, cluster processes, data dirs) is removed even when a test fails.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { requireExecutables, stopThroughProduct } from '../helpers/ns-setup.js';
import { createTestNet, type ExecResult, type TestHost, type TestNet } from '../helpers/netns.js';
import { clientIn, ndjson, socketClient, type NsDispatcher } from '../helpers/ns-cluster.js';
import { DISPATCHERD_BIN, REPO_ROOT, cleanEnv } from '../helpers/daemon.js';
import { planFromSpec } from '../../launcher/planner.js';
import { PG_HA_DEBIAN_BINARIES } from '../../launcher/local.js';
import type { Plan } from '../../api/plan.js';
import type { ClusterView, OperationView } from '../../api/rest.js';

const NAME = 'byhand';
const DATA_PARENT = '/var/lib/cluster-dispatcher-test';
const PASSWORD = 'by-hand-correct-horse-battery';
/** The README's default port (init's --port default). */
const README_PORT = 8528;

interface Host {
  name: string;
  host: TestHost;
  dataDir: string;
  fingerprint: string;
  child?: ChildProcess;
  output: string;
}

describe("README 'Running a dispatcher by hand' on three namespace hosts launches pg-ha (root, nft, pg-ha packages)", () => {
  let net: TestNet | undefined;
  let root = '';
  const hosts: Host[] = [];
  let plan: Plan;
  let launched = false;
  let cleaned = false;

  const outsideNs = () => net!.outside!.ns;
  const d1 = () => ({ endpoint: `https://${hosts[0].host.ipv4}:${README_PORT}`, fingerprint: hosts[0].fingerprint });
  const cred = { user: 'operator', password: PASSWORD };
  const sock = (h: Host) => socketClient({ socketPath: join(h.dataDir, 'control.sock') } as NsDispatcher, 30_000);
  const dispatcherd = (args: string[]) => [process.execPath, DISPATCHERD_BIN, ...args];

  const runOp = async (path: string, body: unknown, timeoutMs = 200_000): Promise<OperationView> => {
    const bodyFile = join(root, `body-${Date.now()}.json`);
    writeFileSync(bodyFile, JSON.stringify(body), { mode: 0o600 });
    const r = await clientIn(net!, outsideNs(), d1(), cred, ['run', path, bodyFile], timeoutMs);
    const op = ndjson(r.stdout).find((l) => l.type === 'operation') as unknown as OperationView | undefined;
    const detail = `client exit ${r.code}: ${r.stderr}\n${hosts.map((h) => `--- ${h.name}\n${h.output.split('\n').slice(-20).join('\n')}`).join('\n')}`;
    assert.ok(op, detail);
    assert.equal(op.state, 'succeeded', `${path}: ${JSON.stringify(op.error)}\n${op.events.map((e) => `${e.step} ${e.host ?? ''} ${e.process ?? ''} ${e.message}`).join('\n')}\n${detail}`);
    return op;
  };

  before(async () => {
    requireExecutables({ ...PG_HA_DEBIAN_BINARIES, nft: '/usr/sbin/nft', unshare: '/usr/bin/unshare' }, 'root, nftables and the pg-ha packages: deploy/install-deps.sh');
    mkdirSync(DATA_PARENT, { recursive: true, mode: 0o711 });
    chmodSync(DATA_PARENT, 0o711);
    root = mkdtempSync(join(DATA_PARENT, 'bh-'));
    chmodSync(root, 0o711);
    net = await createTestNet({ hosts: 3, outside: true, prefix: 'cdbh' });
    const passwordFile = join(root, 'password-file');
    writeFileSync(passwordFile, PASSWORD + '\n', { mode: 0o600 });

    for (let i = 0; i < 3; i++) {
      const name = `bh-host${i + 1}`;
      const host = net.hosts[i];
      const dataDir = join(root, `d${i + 1}`); // short: the process dirs under it hold Unix sockets (107 bytes)
      // Three machines have three host names; `init` makes the dispatcher id of it (sh gets the name as $0).
      const init: ExecResult = await net!.exec(host.ns, [
        'unshare', '--uts', '--', 'sh', '-c', 'hostname "$0" && exec "$@"', name,
        ...dispatcherd(['init', '--data-dir', dataDir, '--address', host.ipv4, '--engine', 'pg-ha', '--run-as', 'cluster-dispatcher']),
      ]);
      assert.equal(init.code, 0, `init on ${name}: ${init.stderr}`);
      const fingerprint = /^fingerprint: (.+)$/m.exec(init.stdout)?.[1] ?? '';
      assert.match(fingerprint, /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/i, `init printed a fingerprint: ${init.stdout}`);
      assert.match(init.stdout, new RegExp(`^id: ${name}$`, 'm'), `init printed the id: ${init.stdout}`);
      // `< password-file`: the file's bytes on stdin.
      const add: ExecResult = await net.exec(host.ns, dispatcherd(['user', 'add', 'operator', '--data-dir', dataDir]), { input: readFileSync(passwordFile, 'utf8') });
      assert.equal(add.code, 0, `user add on ${name}: ${add.stderr}`);
      hosts.push({ name, host, dataDir, fingerprint, output: '' });
    }
    for (const h of hosts) {
      const child = net.spawnIn(h.host.ns, dispatcherd(['start', '--data-dir', h.dataDir]), { env: cleanEnv(), cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
      h.child = child;
      child.stdout!.setEncoding('utf8').on('data', (s: string) => (h.output += s));
      child.stderr!.setEncoding('utf8').on('data', (s: string) => (h.output += s));
    }
    const deadline = Date.now() + 30_000;
    for (const h of hosts) {
      const c = sock(h);
      try {
        for (;;) {
          assert.ok(h.child!.exitCode === null && h.child!.signalCode === null, `dispatcher ${h.name} exited early:\n${h.output}`);
          try {
            await c.get('/v1/health');
            break;
          } catch {
            /* not up yet */
          }
          assert.ok(Date.now() < deadline, `dispatcher ${h.name} not healthy:\n${h.output}`);
          await new Promise((r) => setTimeout(r, 150));
        }
      } finally {
        c.close();
      }
    }
    // The README's commands give a dispatcher nothing to complain about (e.g. the 0711 data dir init makes
    // for --run-as is the intended mode, not a warning).
    for (const h of hosts) assert.doesNotMatch(h.output, /"level":"(warn|error)"/, `${h.name} started with a warning:\n${h.output}`);
    plan = planFromSpec({
      name: NAME,
      engine: 'pg-ha',
      dispatchers: hosts.map((h) => ({ id: h.name, endpoint: `https://${h.host.ipv4}:${README_PORT}`, fingerprint: h.fingerprint, addresses: [h.host.ipv4] })),
      agents: 3,
      dbservers: 3,
      coordinators: 1,
      firewall: { clientSources: ['0.0.0.0/0'], operatorSources: [net.outside!.ipv4] },
    });
  });

  after(async () => {
    try {
      if (launched && !cleaned && hosts.length) {
        const c = sock(hosts[0]);
        try {
          await stopThroughProduct(c);
        } finally {
          c.close();
        }
      }
    } catch {
      /* fall through to the hard cleanup */
    }
    // Dispatchers by pid (`ip netns exec` execs the program: the child's pid is the daemon's), then the net
    // (its destroy kills what is left in the namespaces by pid), then the data root.
    for (const h of hosts) {
      const c = h.child;
      if (!c || c.exitCode !== null || c.signalCode !== null) continue;
      c.kill('SIGTERM');
      await new Promise<void>((r) => {
        const t = setTimeout(() => (c.kill('SIGKILL'), r()), 15_000);
        c.once('exit', () => (clearTimeout(t), r()));
      });
    }
    await net?.destroy();
    if (root) rmSync(root, { recursive: true, force: true });
  });

  test('launch through one dispatcher from outside: every process ready; psql writes and reads through the coordinator', { timeout: 240_000 }, async () => {
    launched = true;
    const op = await runOp('/v1/cluster/launch', { plan, peerCredentials: {}, readyTimeoutMs: 120_000 });
    assert.deepEqual([...new Set(op.events.filter((e) => e.step === 'start' && e.process).map((e) => e.process))].sort(), plan.processes.map((p) => p.id).sort());

    const c = sock(hosts[0]);
    try {
      const st = await c.get<ClusterView>('/v1/cluster');
      assert.equal(st.state, 'running');
      assert.equal(st.processes.length, plan.processes.length);
      for (const p of st.processes) assert.equal(p.state, 'ready', `${p.id}: ${JSON.stringify(p)}`);
    } finally {
      c.close();
    }

    const raw = JSON.parse(readFileSync(join(hosts[0].dataDir, 'cluster', 'secrets.json'), 'utf8')) as { secrets?: Record<string, string> } & Record<string, unknown>;
    const dbPassword = raw.secrets?.['superuser-password'] ?? (raw['superuser-password'] as string);
    assert.ok(dbPassword, 'superuser password in secrets.json');
    const coord = plan.processes.find((p) => p.role === 'coordinator')!;
    const rw = coord.ports.find((p) => p.name === 'client')!.port;
    const pgpass = join(root, 'pgpass');
    writeFileSync(pgpass, `*:${rw}:*:postgres:${dbPassword}\n`, { mode: 0o600 });
    const w = await net!.exec(outsideNs(), ['env', `PGPASSFILE=${pgpass}`, 'PGCONNECT_TIMEOUT=5', PG_HA_DEBIAN_BINARIES.psql, '-h', coord.address, '-p', String(rw), '-U', 'postgres', '-d', 'postgres', '-XtAq', '-v', 'ON_ERROR_STOP=1', '-c', "CREATE TABLE by_hand (x text); INSERT INTO by_hand VALUES ('word for word'); SELECT x FROM by_hand"], { timeoutMs: 20_000 });
    assert.equal(w.code, 0, w.stderr);
    assert.equal(w.stdout.trim(), 'word for word');
  });

  test('shutdown and cleanup through the same dispatcher leave no cluster process', { timeout: 200_000 }, async () => {
    assert.ok(launched, 'launched');
    await runOp('/v1/cluster/shutdown', {});
    await runOp('/v1/cluster/cleanup', { confirmName: NAME });
    cleaned = true;
    const dispatcherPids = new Set(hosts.map((h) => h.child!.pid));
    for (const h of hosts) {
      const pids = execFileSync('ip', ['netns', 'pids', h.host.ns], { encoding: 'utf8' }).split(/\s+/).filter(Boolean).map(Number);
      assert.deepEqual(pids.filter((p) => !dispatcherPids.has(p)), [], `processes left in ${h.host.ns}`);
    }
  });
});
