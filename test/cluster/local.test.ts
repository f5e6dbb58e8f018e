/**
 * Cluster tier: `dispatch local` from a clean state gives a working pg-ha cluster (psql through the printed
 * coordinator with the printed password file), the CLI is left pointing at it, and `dispatch local --down
 * --purge` leaves nothing running (no etcd/patroni/postgres/haproxy/dispatcherd of it) and removes its dir.
 *
 * Runs the real CLI (bin/dispatch) with its own DISPATCH_CONFIG_DIR and DISPATCH_LOCAL_DIR, a private
 * dispatcher port range (--base-port) and engine port range (--engine-port-offset), so it never touches a
 * developer's own local cluster. Needs root, the pg-ha Debian packages and the cluster-dispatcher user.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { dispatchRunner, pickPorts } from '../helpers/local-cluster.js';
import { PSQL, TEST_ROOT, cmdlineOf, killMatching, pidAlive, pidsMatching } from '../helpers/cluster.js';

mkdirSync(TEST_ROOT, { recursive: true, mode: 0o711 });
chmodSync(TEST_ROOT, 0o711);
const parent = mkdtempSync(join(TEST_ROOT, 'lo-'));
chmodSync(parent, 0o711);
const localDir = join(parent, 'local');
const configDir = mkdtempSync(join(tmpdir(), 'dispatch-config-'));

after(async () => {
  // Last resort only: the test itself brings everything down through `--down --purge`.
  const leftovers = await killMatching(parent);
  rmSync(parent, { recursive: true, force: true });
  rmSync(configDir, { recursive: true, force: true });
  assert.deepEqual(leftovers, []);
});

const dispatch = dispatchRunner({ configDir, localDir });

test('dispatch local gives a working cluster; --down --purge leaves nothing running', async () => {
  const { basePort, offset } = await pickPorts();
  const common = ['--base-port', String(basePort), '--engine-port-offset', String(offset)];
  const t0 = Date.now();
  const up = await dispatch(['local', ...common, '--json']);
  assert.equal(up.code, 0, `dispatch local failed:\n${up.stderr}\n${up.stdout}`);
  console.log(`# dispatch local up in ${Date.now() - t0} ms`);
  const out = JSON.parse(up.stdout.trim().split('\n').pop()!);
  assert.equal(out.cluster, 'local');
  assert.equal(out.state, 'running');
  const c = out.coordinators[0];
  assert.equal(c.port, 5000 + offset);
  assert.match(out.url, new RegExp(`^postgresql://postgres@127\\.0\\.0\\.1:${c.port}/postgres\\?sslmode=verify-full&sslrootcert=`));
  assert.ok(out.pgpassFile && existsSync(out.pgpassFile), 'a password file for psql is written');
  assert.ok(out.caFile && existsSync(out.caFile), 'the cluster CA file is written and named in --json');

  // psql with the printed URL (verify-full against the cluster CA, through the coordinator) and password file.
  const psql = (port: number, sql: string) =>
    new Promise<string>((resolve, reject) =>
      execFile(PSQL, [out.url.replace(`:${c.port}/`, `:${port}/`), '-XtAq', '-c', sql], { env: { PGPASSFILE: out.pgpassFile, PATH: '/usr/bin:/bin' }, timeout: 20_000 }, (err, so, se) =>
        err ? reject(new Error(String(se) || err.message)) : resolve(String(so).trim()),
      ),
    );
  await psql(c.port, "CREATE TABLE hello (x text); INSERT INTO hello VALUES ('local')");
  assert.equal(await psql(c.port, 'SELECT x FROM hello'), 'local');

  // The CLI is left pointing at the cluster (saved context), no options needed.
  const st = await dispatch(['status', '--json'], 30_000);
  assert.equal(st.code, 0, st.stderr);
  const view = JSON.parse(st.stdout);
  assert.equal(view.name, 'local');
  assert.ok(view.processes.every((p: { state: string }) => p.state === 'ready'), st.stdout);
  // Certificate expiry is part of the status: the CA, every process and every dispatcher.
  assert.equal(view.certificates.filter((x: { name: string }) => x.name !== '@ca').length, view.processes.length + view.dispatchers.length, 'a certificate per process and dispatcher');
  assert.ok(view.certificates.every((x: { notAfter: string }) => Date.parse(x.notAfter) > Date.now() + 300 * 86_400_000), 'expiry shown and far enough');

  // `dispatch connect`: CA file, 0600 pgpass and a verify-full URL — the password never on screen.
  const connDir = mkdtempSync(join(tmpdir(), 'dispatch-connect-'));
  const conn = await dispatch(['connect', '--json', '--dir', connDir], 30_000);
  assert.equal(conn.code, 0, conn.stderr);
  const password = JSON.parse(readFileSync(join(localDir, 'local-1', 'cluster', 'secrets.json'), 'utf8')).secrets['superuser-password'];
  assert.ok(!conn.stdout.includes(password) && !conn.stderr.includes(password), 'no password on screen');
  const cj = JSON.parse(conn.stdout);
  assert.equal(statSync(cj.pgpassFile).mode & 0o777, 0o600);
  assert.match(cj.url, /sslmode=verify-full&sslrootcert=/);
  const viaConnect = await new Promise<string>((resolve, reject) =>
    execFile(PSQL, [cj.url, '-XtAq', '-c', "SELECT x || (SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()) FROM hello"], { env: { PGPASSFILE: cj.pgpassFile, PATH: '/usr/bin:/bin' }, timeout: 20_000 }, (err, so, se) =>
      err ? reject(new Error(String(se) || err.message)) : resolve(String(so).trim()),
    ),
  );
  assert.equal(viaConnect, 'localtrue', 'dispatch connect gives a working verify-full connection');
  rmSync(connDir, { recursive: true, force: true });

  // Every process of it, by pid: 3 dispatchers, 3 etcd, 3 patroni, 3 postmasters, 1 haproxy, 1 pgbouncer.
  const pids = pidsMatching(localDir);
  const kinds = pids.map((p) => cmdlineOf(p));
  for (const [what, n] of [['dispatcherd', 3], ['etcd', 3], ['patroni', 3], ['bin/postgres', 3], ['haproxy', 1], ['pgbouncer', 1]] as const) {
    assert.equal(kinds.filter((k) => k.includes(what)).length, n, `${n} ${what} running:\n${kinds.join('\n')}`);
  }

  // The row above is on every member before the crash (replicas flushed all of the leader's WAL); then a
  // writer keeps inserting while everything is killed, so WAL is in flight and a member may diverge. The
  // reboot must still bring every member back streaming: Patroni reads each member's own timeline over
  // the process dir's socket and rewinds a diverged one (templates/pg-ha/patroni.yml.hbs,
  // use_unix_socket_repl). Writes in flight may be lost (asynchronous replication); "hello" may not.
  let caughtUp = '';
  for (let k = 0; k < 150 && caughtUp !== '2'; k++) {
    caughtUp = await psql(c.port, "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming' AND flush_lsn = pg_current_wal_lsn()").catch(() => '');
    if (caughtUp !== '2') await new Promise((r) => setTimeout(r, 200));
  }
  assert.equal(caughtUp, '2', 'both replicas caught up with the leader before the reboot');
  await psql(c.port, 'CREATE TABLE inflight (i int)');
  let writing = true;
  const writer = (async () => {
    for (let k = 0; writing && k < 10_000; k++) await psql(c.port, 'INSERT INTO inflight SELECT generate_series(1, 500)').catch(() => undefined);
  })();
  await new Promise((r) => setTimeout(r, 1500));

  // A "reboot": every daemon and cluster process SIGKILLed. The README's command again brings the cluster
  // back with its data (init never changes the existing tree's modes; success only when healthy).
  for (const p of pids) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  writing = false;
  await writer;
  for (let k = 0; k < 50 && pids.some(pidAlive); k++) await new Promise((r) => setTimeout(r, 200));
  assert.deepEqual(pids.filter(pidAlive), [], 'everything was killed');
  const again = await dispatch(['local', ...common, '--json']);
  if (again.code !== 0) {
    // Say why: the log tail of every process that is not ready.
    const view2 = JSON.parse((await dispatch(['status', '--json'], 30_000)).stdout || '{"processes":[]}');
    const tails: string[] = [];
    for (const p of view2.processes.filter((x: { state: string }) => x.state !== 'ready')) tails.push(`--- ${p.id} (${p.state})\n${(await dispatch(['logs', p.id, '-n', '40'], 30_000)).stdout}`);
    assert.fail(`dispatch local after a reboot failed:\n${again.stderr}\n${again.stdout}\n${tails.join('\n')}`);
  }
  const st2 = await dispatch(['status', '--json'], 30_000);
  assert.ok(JSON.parse(st2.stdout).processes.every((p: { state: string }) => p.state === 'ready'), st2.stdout);
  assert.equal(await psql(c.port, 'SELECT x FROM hello'), 'local', 'the rows written before the reboot are served');
  pids.push(...pidsMatching(localDir).filter((p) => !pids.includes(p)));

  const down = await dispatch(['local', ...common, '--down', '--purge', '--json']);
  assert.equal(down.code, 0, `dispatch local --down --purge failed:\n${down.stderr}\n${down.stdout}`);
  for (let k = 0; k < 50 && pids.some(pidAlive); k++) await new Promise((r) => setTimeout(r, 200));
  assert.deepEqual(pids.filter(pidAlive).map((p) => `${p} ${cmdlineOf(p)}`), [], 'nothing of the local cluster runs');
  assert.deepEqual(pidsMatching(localDir), []);
  assert.equal(existsSync(localDir), false, 'the local dir is removed');
});
