/**
 * Cluster tier: the process user attacks the files the daemon writes during a RELAUNCH and a ROLLING
 * RESTART of a real pg-ha cluster (docs/SECURITY.md, "Process user"; the supervised restart, the logs API
 * and cleanup are attacked in test/process/file-attacks.test.ts). One dispatcher: one agent, two DB servers
 * (a rolling restart needs a replica to switch over to), one coordinator, processes as the unprivileged
 * user. As that user (setpriv, argv only), at every path the daemon writes in each process dir (the
 * engine's rendered files and the tls-* files) the test plants a symlink to a root-only file, a hardlink
 * to it (or asserts the kernel's refusal) or a FIFO; then a shutdown + relaunch, then (planted again,
 * processes running — see daemonWrittenPaths for the files left alone there) a rolling restart.
 * Afterwards: the root file kept owner, mode, link count and content; every operation ended in bounded
 * time (no FIFO blocked the daemon); every process is ready and each planted path is a regular file of
 * the process user again (replaced, not followed); the logs API served nothing of the root file.
 *
 * Needs root, the pg-ha Debian packages and the cluster-dispatcher user (deploy/install-deps.sh).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Plan } from '../../api/plan.js';
import { loadEngine } from '../../server/engines/loader.js';
import { processDir, TLS_FILES } from '../../server/engines/render.js';
import { DEFAULT_RUN_AS } from '../../launcher/local.js';
import { startTestCluster, TEST_ROOT, type TestCluster } from '../helpers/cluster.js';

const VICTIM_TEXT = 'ROOT-ONLY-CLUSTER-SECRET\n';
/** Every operation must end well within this (a FIFO opened for writing without O_NONBLOCK would block forever). */
const OP_BOUND_MS = 180_000;

let tc: TestCluster;
let plan: Plan;
let victimDir: string;
let victim: string;
let owner: { uid: number; gid: number };

const victimState = () => {
  const st = statSync(victim);
  return { uid: st.uid, gid: st.gid, mode: st.mode & 0o7777, nlink: st.nlink, text: readFileSync(victim, 'utf8') };
};
let victimBefore: ReturnType<typeof victimState>;

const asUser = (argv: string[]) =>
  spawnSync('setpriv', [`--reuid=${owner.uid}`, `--regid=${owner.gid}`, '--clear-groups', '--', ...argv], { encoding: 'utf8', cwd: '/', timeout: 10_000 });

/**
 * Every path the daemon writes into each process dir: the role's rendered files and the TLS files.
 * `whileRunning`: leaves out the TLS files of the roles whose RUNNING program rereads them (etcd on every
 * handshake, Patroni's etcd client on every connection) — a link there breaks only the attacker's own
 * process, not the daemon, and the cluster-health gate of the rolling restart would refuse to start.
 * The relaunch phase plants at those paths too.
 */
function daemonWrittenPaths(whileRunning = false): string[] {
  const engine = loadEngine('pg-ha');
  const d = tc.dispatchers[0];
  const paths: string[] = [];
  for (const p of plan.processes) {
    const dir = processDir(d.dataDir, p.dataDir);
    const rereadsTls = whileRunning && (p.role === 'agent' || p.role === 'dbserver');
    const names = [...engine.manifest.roles[p.role].files.map((f) => f.path), ...(rereadsTls ? [] : Object.values(TLS_FILES))];
    for (const n of names) paths.push(join(dir, n));
  }
  return paths;
}

type Kind = 'symlink' | 'hardlink' | 'fifo';

/** Plants, as the process user, a symlink / hardlink / FIFO at each path (kinds rotated by `shift`). */
function plant(paths: string[], shift: number): Map<string, Kind | 'hardlink-refused'> {
  const kinds: Kind[] = ['symlink', 'hardlink', 'fifo'];
  const planted = new Map<string, Kind | 'hardlink-refused'>();
  paths.forEach((path, i) => {
    const kind = kinds[(i + shift) % kinds.length];
    const rm = asUser(['rm', '-f', path]);
    assert.equal(rm.status, 0, `the process user removes ${path}: ${rm.stderr}`);
    if (kind === 'symlink') {
      const r = asUser(['ln', '-s', victim, path]);
      assert.equal(r.status, 0, r.stderr);
      planted.set(path, kind);
    } else if (kind === 'fifo') {
      const r = asUser(['mkfifo', path]);
      assert.equal(r.status, 0, r.stderr);
      planted.set(path, kind);
    } else {
      const r = asUser(['ln', victim, path]);
      if (r.status === 0) {
        planted.set(path, kind);
      } else {
        // fs.protected_hardlinks: the kernel refuses a link to a file the user can neither read nor write.
        assert.equal(readFileSync('/proc/sys/fs/protected_hardlinks', 'utf8').trim(), '1', `hardlink refused without protected_hardlinks: ${r.stderr}`);
        assert.match(r.stderr, /Operation not permitted/);
        // The path stays taken by something of the process user's: a FIFO.
        assert.equal(asUser(['mkfifo', path]).status, 0);
        planted.set(path, 'hardlink-refused');
      }
    }
  });
  return planted;
}

/** Each planted path is a regular file of the process user with one link: replaced, never followed. */
function assertReplaced(planted: Map<string, string>): void {
  for (const [path, kind] of planted) {
    const ls = lstatSync(path);
    assert.ok(ls.isFile() && !ls.isSymbolicLink(), `${path} (planted ${kind}) is a regular file again`);
    assert.equal(ls.uid, owner.uid, `${path} is owned by the process user`);
    assert.equal(ls.nlink, 1, `${path} has one link`);
    assert.ok(!readFileSync(path, 'utf8').includes('ROOT-ONLY'), `${path} holds the root file's content`);
  }
}

async function assertAllReady(): Promise<void> {
  const view = await tc.client(0).get<{ processes: { id: string; state: string }[] }>('/v1/cluster');
  assert.ok(view.processes.length === plan.processes.length && view.processes.every((p) => p.state === 'ready'), JSON.stringify(view.processes));
}

async function assertLogsServeNothingOfRoot(): Promise<void> {
  for (const p of plan.processes) {
    const { lines } = await tc.client(0).get<{ lines: string[] }>(`/v1/processes/${p.id}/log?lines=500`);
    assert.ok(!lines.join('\n').includes('ROOT-ONLY'), `the log of ${p.id} served the root file`);
  }
}

async function timed(what: string, i: number, path: string, body: unknown) {
  const t0 = Date.now();
  const op = await tc.run(i, path, body, OP_BOUND_MS);
  const ms = Date.now() - t0;
  assert.ok(ms < OP_BOUND_MS, `${what} took ${ms} ms`);
  assert.equal(op.state, 'succeeded', `${what}: ${JSON.stringify(op.error)}\n${op.events.slice(-8).map((e) => `${e.process ?? ''} ${e.message}`).join('\n')}`);
  return op;
}

before(async () => {
  const id = (flag: string) => Number(spawnSync('id', [flag, DEFAULT_RUN_AS], { encoding: 'utf8' }).stdout);
  owner = { uid: id('-u'), gid: id('-g') };
  assert.ok(owner.uid > 0, `user ${DEFAULT_RUN_AS} exists (deploy/install-deps.sh)`);
  // The root file lives outside the cluster tree (cleanup must not be what removes it), same filesystem
  // as the process dirs so a hardlink is possible where the kernel allows it.
  mkdirSync(TEST_ROOT, { recursive: true, mode: 0o711 });
  victimDir = mkdtempSync(join(TEST_ROOT, 'victim-'));
  chmodSync(victimDir, 0o711); // searchable, not listable: the user can name the file, not read it
  victim = join(victimDir, 'secret');
  writeFileSync(victim, VICTIM_TEXT, { mode: 0o600 });
  victimBefore = victimState();
  tc = await startTestCluster({ n: 1, label: 'fattack' });
  plan = tc.plan({ name: 'fattack', agents: 1, dbservers: 2, coordinators: 1 });
  await timed('launch', 0, '/v1/cluster/launch', { plan, readyTimeoutMs: 120_000 });
  await tc.psql(plan.processes.find((p) => p.role === 'coordinator')!.ports.find((x) => x.name === 'client')!.port, 'CREATE TABLE t (v text); INSERT INTO t VALUES (\'kept\')');
});

after(async () => {
  try {
    if (tc) {
      const { leaked } = await tc.teardown();
      assert.deepEqual(leaked, [], `processes left after teardown: ${leaked.join('\n')}`);
    }
    if (victim) assert.deepEqual(victimState(), victimBefore, 'cleanup changed the root file');
  } finally {
    if (victimDir) rmSync(victimDir, { recursive: true, force: true });
  }
});

test('shutdown, plant links and FIFOs at every file the daemon writes, relaunch: replaced, not followed; the data is kept', async () => {
  await timed('shutdown', 0, '/v1/cluster/shutdown', {});
  const planted = plant(daemonWrittenPaths(), 0);
  assert.ok(planted.size >= plan.processes.length * 5, `planted ${planted.size} paths`);
  await timed('relaunch', 0, '/v1/cluster/relaunch', { readyTimeoutMs: 120_000 });
  assert.deepEqual(victimState(), victimBefore);
  assertReplaced(planted);
  await assertAllReady();
  await assertLogsServeNothingOfRoot();
  const rw = plan.processes.find((p) => p.role === 'coordinator')!.ports.find((x) => x.name === 'client')!.port;
  assert.equal(await tc.psql(rw, 'SELECT v FROM t'), 'kept');
});

test('plant links and FIFOs while the processes run, rolling restart: replaced, not followed; every process ready', async () => {
  const planted = plant(daemonWrittenPaths(true), 1);
  assert.ok(planted.size >= 6, `planted ${planted.size} paths`);
  await timed('rolling restart', 0, '/v1/cluster/restart', { readyTimeoutMs: 60_000 });
  assert.deepEqual(victimState(), victimBefore);
  assertReplaced(planted);
  await assertAllReady();
  await assertLogsServeNothingOfRoot();
});
