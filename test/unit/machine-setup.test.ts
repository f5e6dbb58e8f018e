/** A machine set up by `dispatcherd init`: engines at their Debian paths, an unprivileged runAs, a safe data tree. */
import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DispatcherError } from '../../api/errors.js';
import { machineEngines } from '../../server/machine-engines.js';
import { resolveUser } from '../../server/cluster/run-as-user.js';
import { checkDataTree, dataDirMode, withTraverse } from '../../server/data-tree.js';
import { PG_HA_DEBIAN_BINARIES } from '../../server/engines/debian.js';

const tmp = mkdtempSync(join(tmpdir(), 'cd-machine-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

describe('dispatcherd init: engines', () => {
  test('pg-ha gets every Debian path when all programs exist', () => {
    assert.deepEqual(machineEngines(['pg-ha'], () => true), { 'pg-ha': { binaries: { ...PG_HA_DEBIAN_BINARIES } } });
  });
  test('a missing program is refused, naming the program, its path and how to install it', () => {
    assert.throws(
      () => machineEngines(['pg-ha'], (p) => p !== PG_HA_DEBIAN_BINARIES.psql),
      (e: unknown) => e instanceof DispatcherError && /program psql is missing: \/usr\/lib\/postgresql\/15\/bin\/psql/.test(e.message) && /install-deps/.test(e.message),
    );
  });
  test('an unknown engine (or a prototype name) is refused', () => {
    for (const n of ['mysql', 'constructor', '__proto__']) assert.throws(() => machineEngines([n], () => true), (e: unknown) => e instanceof DispatcherError && /unknown engine/.test(e.message));
  });
});

describe('runAs: never uid 0', () => {
  const passwd = join(tmp, 'passwd');
  writeFileSync(passwd, 'root:x:0:0:root:/root:/bin/bash\ntoor:x:0:0:alias:/root:/bin/sh\ncd:x:998:997::/nonexistent:/usr/sbin/nologin\n');
  test('root and any alias with uid 0 are refused; an unprivileged user resolves', async () => {
    for (const n of ['root', 'toor']) await assert.rejects(resolveUser(n, passwd), /uid 0/);
    assert.deepEqual(await resolveUser('cd', passwd), { user: 'cd', uid: 998, gid: 997 });
    await assert.rejects(resolveUser('nobody-here', passwd), /no user named/);
  });
});

describe('the data tree', () => {
  const uid = process.getuid!();
  test('a new data dir is 0700, or 0711 when processes run as another user; traverse adds only o+x', () => {
    assert.equal(dataDirMode(false), 0o700);
    assert.equal(dataDirMode(true), 0o711);
    assert.equal(withTraverse(0o40700), 0o701);
  });
  test('the start-up check names a link, a foreign owner and group/other write', () => {
    const ok = join(tmp, 'ok');
    mkdirSync(ok, { mode: 0o711 });
    assert.deepEqual(checkDataTree(ok, uid), []);
    const open = join(tmp, 'open');
    mkdirSync(open);
    chmodSync(open, 0o777);
    assert.match(checkDataTree(open, uid)[0].message, /lets others write/);
    const link = join(tmp, 'link');
    symlinkSync(ok, link);
    assert.match(checkDataTree(link, uid)[0].message, /symbolic link/);
    assert.match(checkDataTree(ok, uid + 1)[0].message, /owned by uid/);
    assert.match(checkDataTree(join(tmp, 'missing'), uid)[0].message, /cannot inspect/);
  });
});
