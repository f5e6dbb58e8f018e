/**
 * Process tier: the state file. A writer killed with SIGKILL in the middle of its writes leaves the old or
 * the new state, never a broken file; a damaged state.json stops start-up and is kept unchanged.
 */
import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { once } from 'node:events';
import { createSupervisor } from '../../server/supervisor/supervisor.js';
import { createStateStore, parseState } from '../../server/supervisor/state-store.js';
import { isDispatcherError } from '../../api/errors.js';
import { withLeakCheck } from '../helpers/leak-check.js';
import { STATE_WRITER, tempDir } from './fixture-spec.js';

const tmp = tempDir('cd-state-');
after(() => tmp.cleanup());

describe('state file', () => {
  test('kill -9 during state writes (30 times) always leaves the old or the new state', async () => {
    const dir = join(tmp.path, 'writes');
    mkdirSync(dir, { recursive: true });
    const file = join(dir, 'state.json');
    await withLeakCheck(async (leaks) => {
      let last = 0;
      let advanced = 0;
      for (let i = 0; i < 30; i++) {
        const w = leaks.spawn(process.execPath, [STATE_WRITER, dir], { stdio: ['ignore', 'pipe', 'inherit'] });
        const exit = once(w, 'exit');
        const lines = createInterface({ input: w.stdout! });
        await once(lines, 'line'); // first write of this run has landed
        await new Promise((r) => setTimeout(r, Math.floor(Math.random() * 40)));
        w.kill('SIGKILL');
        const [code, signal] = await exit;
        assert.equal(signal, 'SIGKILL', `writer ${i} was killed, not finished (code ${code})`);
        const text = readFileSync(file, 'utf8');
        const st = parseState(text, file); // throws state_damaged on a torn file
        const n = Number(st.processes.w.spec.env.COUNTER);
        assert.ok(n >= last, `state went backwards: ${n} after ${last}`);
        if (n > last) advanced++;
        last = n;
      }
      assert.ok(advanced >= 25, `writers made progress (${advanced} of 30 runs)`);
      // and the real loader accepts what is left
      assert.ok((await createStateStore(dir).load()).processes.w);
    });
  });

  test('bad JSON in state.json → createSupervisor rejects with state_damaged; the file is kept unchanged', async () => {
    const dir = join(tmp.path, 'badjson');
    mkdirSync(dir, { recursive: true });
    const file = join(dir, 'state.json');
    const broken = '{"version": 1, "processes": {"p0": {"spec": ';
    writeFileSync(file, broken);
    await assert.rejects(createSupervisor({ stateDir: dir }), (e: unknown) => {
      assert.ok(isDispatcherError(e));
      assert.equal(e.code, 'state_damaged');
      assert.ok(e.message.includes(file), 'names the file');
      assert.match(e.message, /kept unchanged/);
      return true;
    });
    assert.equal(readFileSync(file, 'utf8'), broken);
  });

  test('valid JSON failing the schema → state_damaged listing the problem; the file is kept unchanged', async () => {
    const dir = join(tmp.path, 'badschema');
    mkdirSync(dir, { recursive: true });
    const file = join(dir, 'state.json');
    const wrong = JSON.stringify({ version: 1, processes: { p0: { spec: { id: 'p0' }, desired: 'maybe' } } });
    writeFileSync(file, wrong);
    await assert.rejects(createSupervisor({ stateDir: dir }), (e: unknown) => {
      assert.ok(isDispatcherError(e));
      assert.equal(e.code, 'state_damaged');
      assert.ok(e.message.includes(file));
      assert.ok(e.problems.some((p) => p.path.startsWith('processes.p0.desired')), JSON.stringify(e.problems));
      return true;
    });
    assert.equal(readFileSync(file, 'utf8'), wrong);
  });

  test('no state file → an empty supervisor', async () => {
    const sup = await createSupervisor({ stateDir: join(tmp.path, 'fresh') });
    try {
      assert.deepEqual(sup.list(), []);
      await sup.recover();
    } finally {
      await sup.close();
    }
  });
});
