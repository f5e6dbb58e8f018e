/**
 * The process user attacks the daemon's files (docs/SECURITY.md, "Process user"). Needs root and creates
 * the system user `cdtest` if missing. Every attack runs AS cdtest (setpriv, argv only): symlinks,
 * hardlinks and FIFOs planted at every path the daemon touches in the process dir, the process killed so
 * the supervisor restarts it, the rendered files written again, the log tail read, the leftover-postmaster
 * check pointed at foreign pids, and the process dir deleted with a link inside. Afterwards no root-owned
 * file changed owner, mode or content, nothing of it was served, and each refusal is a clear error.
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stopLeftover } from '../../server/cluster/leftover.js';
import { removeProcessDir } from '../../server/cluster/process-dir.js';
import { ensureDir, openOwnFileForRead, writeFileForOwner } from '../../server/safe-files.js';
import { pidAlive } from '../../shared/procfs.js';
import { processLogDir } from '../../server/supervisor/spawner.js';
import { createSupervisor } from '../../server/supervisor/supervisor.js';
import type { Supervisor } from '../../server/supervisor/types.js';
import { FIXTURE, fixtureSpec, waitFor } from './fixture-spec.js';

const USER = 'cdtest';
const VICTIM_TEXT = 'ROOT-ONLY-SECRET\n';

function ensureUser(): { uid: number; gid: number } {
  if (spawnSync('id', ['-u', USER]).status !== 0) execFileSync('useradd', ['--system', '--no-create-home', '--shell', '/usr/sbin/nologin', USER]);
  return { uid: Number(execFileSync('id', ['-u', USER], { encoding: 'utf8' })), gid: Number(execFileSync('id', ['-g', USER], { encoding: 'utf8' })) };
}

describe('the process user cannot make root follow, serve or delete anything of root', () => {
  const owner = ensureUser();
  const asUser = (argv: string[], opts: { cwd?: string } = {}) =>
    spawnSync('setpriv', [`--reuid=${owner.uid}`, `--regid=${owner.gid}`, '--clear-groups', '--', ...argv], { encoding: 'utf8', cwd: opts.cwd ?? '/' });
  let base: string;
  let stateDir: string;
  let victimDir: string;
  let victim: string;
  let sup: Supervisor;
  const children: ChildProcess[] = [];
  const victimState = () => {
    const st = statSync(victim);
    return { uid: st.uid, gid: st.gid, mode: st.mode & 0o7777, nlink: st.nlink, text: readFileSync(victim, 'utf8') };
  };
  let victimBefore: ReturnType<typeof victimState>;

  before(async () => {
    base = mkdtempSync(join(tmpdir(), 'cd-file-attacks-'));
    chmodSync(base, 0o711);
    stateDir = join(base, 'state');
    victimDir = join(base, 'victim');
    mkdirSync(victimDir, { mode: 0o711 });
    victim = join(victimDir, 'secret');
    writeFileSync(victim, VICTIM_TEXT, { mode: 0o600 });
    victimBefore = victimState();
    const pub = join(base, 'pub');
    mkdirSync(pub, { mode: 0o755 });
    copyFileSync(FIXTURE, join(pub, 'fixture-proc.js'));
    chmodSync(join(pub, 'fixture-proc.js'), 0o644);
    mkdirSync(join(base, 'procs'), { mode: 0o711 });
    sup = await createSupervisor({ stateDir, pollIntervalMs: 100 });
  });
  after(async () => {
    await sup?.stop('p1').catch(() => {});
    await sup?.close();
    for (const c of children) if (c.pid && pidAlive(c.pid)) c.kill('SIGKILL');
    rmSync(base, { recursive: true, force: true });
  });

  test('symlinks, hardlinks and FIFOs in the process dir, then a supervised restart: root files untouched, logs are the process output', async () => {
    const spec = fixtureSpec(base, 'p1', [], {
      argv: [process.execPath, join(base, 'pub', 'fixture-proc.js'), '--print', 'hello from p1'],
      cwd: join(base, 'pub'),
      runAs: { ...owner, user: USER },
      restart: { enabled: true, initialDelayMs: 100, maxDelayMs: 1000, quickFailureWindowMs: 100, maxQuickFailures: 50 },
    });
    const st = await sup.start(spec);
    await sup.waitReady('p1', 10_000);
    assert.equal(statSync(spec.dir).uid, owner.uid);

    // Every name the daemon used to write in the process dir, and the rendered config names.
    const planted: Record<string, string> = {};
    for (const name of ['stdout.log', 'stderr.log', 'command.txt', 'patroni.yml']) {
      const r = asUser(['ln', '-sf', victim, join(spec.dir, name)]);
      assert.equal(r.status, 0, r.stderr);
      planted[name] = 'symlink';
    }
    // A hardlink to a root file (refused by fs.protected_hardlinks on most kernels; planted when allowed).
    planted['haproxy.cfg'] = asUser(['ln', '-f', victim, join(spec.dir, 'haproxy.cfg')]).status === 0 ? 'hardlink' : 'none';
    assert.equal(asUser(['mkfifo', join(spec.dir, 'probe.pgpass')]).status, 0);
    planted['probe.pgpass'] = 'fifo';

    // The process user kills its process: the supervisor restarts it (and reopens its logs).
    assert.equal(asUser(['kill', '-9', String(st.pid)]).status, 0);
    await waitFor('restart', async () => {
      const s = sup.get('p1');
      return s && s.restarts >= 1 && s.state === 'ready' && s.pid !== st.pid ? s : undefined;
    }, 15_000);

    // The rendered files are written again through the ONE function LocalNode uses.
    for (const name of ['patroni.yml', 'haproxy.cfg', 'probe.pgpass']) {
      const path = await writeFileForOwner(spec.dir, name, `rendered ${name}\n`, 0o600, owner);
      const ls = lstatSync(path);
      assert.ok(ls.isFile() && !ls.isSymbolicLink(), `${name} (${planted[name]}) is a regular file now`);
      assert.equal(ls.uid, owner.uid);
      assert.equal(ls.nlink, 1);
      assert.equal(readFileSync(path, 'utf8'), `rendered ${name}\n`);
    }

    const tail = await sup.logTail('p1', 50);
    assert.ok(tail.includes('hello from p1'), tail.join(' | '));
    assert.ok(!tail.join('\n').includes('ROOT-ONLY'), 'a root file was served as a log');
    assert.deepEqual(victimState(), victimBefore);

    // The daemon's own files are out of the process user's reach.
    const logDir = processLogDir(stateDir, 'p1');
    assert.notEqual(asUser(['ls', logDir]).status, 0, 'the process user can list the log dir');
    assert.notEqual(asUser(['ln', '-s', victim, join(logDir, 'x')]).status, 0);
    assert.equal(statSync(join(logDir, 'stdout.log')).uid, 0);
  });

  test('a log file that is not the daemon\'s own is refused with a clear error, never read', async () => {
    const dir = join(base, 'own-file-checks');
    await ensureDir(dir, 0o700);
    const link = join(dir, 'link.log');
    execFileSync('ln', ['-s', victim, link]);
    await assert.rejects(openOwnFileForRead(link), /refusing .*link\.log: it is a symbolic link/);
    const fifo = join(dir, 'fifo.log');
    execFileSync('mkfifo', [fifo]);
    await assert.rejects(openOwnFileForRead(fifo), /not a regular file/);
    const hard = join(dir, 'hard.log');
    execFileSync('ln', [victim, hard]);
    await assert.rejects(openOwnFileForRead(hard), /2 hard links/);
    const foreign = join(base, 'procs', 'p1', 'foreign.log');
    assert.equal(asUser(['touch', foreign]).status, 0);
    await assert.rejects(openOwnFileForRead(foreign), /owned by uid/);
    assert.deepEqual(victimState(), { ...victimBefore, nlink: 2 });
    rmSync(hard);
  });

  test('the leftover-postmaster check signals only the process user\'s postmaster in this data dir', async () => {
    const procDir = join(base, 'procs', 'p1');
    const pgdata = join(procDir, 'pgdata');
    assert.equal(asUser(['mkdir', '-p', pgdata]).status, 0);
    const pidFile = join(pgdata, 'postmaster.pid');
    const plant = (pid: number) => {
      rmSync(pidFile, { force: true });
      assert.equal(asUser(['sh', '-c', 'printf "%s\\n" "$1" > "$2"', 'sh', String(pid), pidFile]).status, 0);
    };
    const logger = { warn: () => {} };
    const rootSleep = spawn('sleep', ['60'], { cwd: pgdata });
    const userElsewhere = spawn('sleep', ['60'], { uid: owner.uid, gid: owner.gid, cwd: '/' });
    const userHere = spawn('sleep', ['60'], { uid: owner.uid, gid: owner.gid, cwd: pgdata });
    children.push(rootSleep, userElsewhere, userHere);
    await new Promise((r) => setTimeout(r, 200));

    plant(rootSleep.pid!);
    assert.equal(await stopLeftover(pidFile, owner, logger), 'refused', 'a root process named by the pid file');
    plant(userElsewhere.pid!);
    assert.equal(await stopLeftover(pidFile, owner, logger), 'refused', 'a process of the user in another dir');
    plant(process.pid);
    assert.equal(await stopLeftover(pidFile, owner, logger), 'refused', 'the daemon itself');
    assert.ok(pidAlive(rootSleep.pid!) && pidAlive(userElsewhere.pid!) && pidAlive(process.pid));

    rmSync(pidFile, { force: true });
    assert.equal(asUser(['ln', '-s', '/proc/1/stat', pidFile]).status, 0);
    assert.equal(await stopLeftover(pidFile, owner, logger), 'none', 'a symlinked pid file is not read');

    plant(userHere.pid!);
    assert.equal(await stopLeftover(pidFile, owner, logger), 'stopped', 'the real leftover: the user\'s process in this data dir');
    await waitFor('stopped', async () => !pidAlive(userHere.pid!), 5_000);
  });

  test('cleanup deletes the process dir as the process user: a link inside never makes root delete root files', async () => {
    await sup.stop('p1');
    const procDir = join(base, 'procs', 'p1');
    assert.equal(asUser(['ln', '-s', victimDir, join(procDir, 'escape')]).status, 0);
    assert.equal(asUser(['mkdir', '-p', join(procDir, 'sub', 'deeper')]).status, 0);
    await removeProcessDir(procDir, owner);
    assert.equal(existsSync(procDir), false);
    assert.deepEqual(victimState(), victimBefore);
    assert.equal(statSync(victimDir).uid, 0);
  });
});
