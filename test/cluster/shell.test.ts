/**
 * Cluster tier: `dispatch shell`, driven through a real terminal (tmux), connected to one of three real
 * dispatchers, plans a pg-ha cluster from a spec file, launches it with the Kickstarter, checks it, and
 * shuts it down — what an operator types. The output on the terminal and the cluster's state are checked.
 *
 * Needs root, tmux, the pg-ha Debian packages and the cluster-dispatcher user (deploy/install-deps.sh).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT } from '../helpers/daemon.js';
import { startTestCluster, type TestCluster } from '../helpers/cluster.js';

let tc: TestCluster;
const session = `dispatch-shell-test-${process.pid}`;
const work = mkdtempSync(join(tmpdir(), 'dispatch-shell-'));

function tmux(...args: string[]): string {
  return execFileSync('tmux', args, { encoding: 'utf8', timeout: 10_000 });
}

function screen(): string {
  // -J joins wrapped lines; -S - takes the whole history.
  return tmux('capture-pane', '-p', '-J', '-S', '-', '-t', session);
}

async function typeLine(line: string): Promise<void> {
  tmux('send-keys', '-t', session, '-l', line);
  tmux('send-keys', '-t', session, 'Enter');
}

/** Waits until the screen matches `re` after position `from` of the captured text. */
async function waitScreen(re: RegExp, timeoutMs: number, from = 0): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const s = screen();
    if (re.test(s.slice(from))) return s;
    if (Date.now() > deadline) throw new Error(`terminal did not show ${re} within ${timeoutMs} ms; it shows:\n${s.slice(-3000)}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

before(async () => {
  tc = await startTestCluster({ n: 3, label: 'sh' });
});

after(async () => {
  try {
    tmux('kill-session', '-t', session);
  } catch {
    /* already gone */
  }
  rmSync(work, { recursive: true, force: true });
  if (!tc) return;
  const { leaked } = await tc.teardown();
  assert.deepEqual(leaked, [], `processes left after teardown: ${leaked.join('\n')}`);
});

test('dispatch shell launches and shuts down a cluster with Planner and Kickstarter', async () => {
  const specFile = join(work, 'spec.json');
  writeFileSync(specFile, JSON.stringify(tc.spec({ name: 'shell-test' })));
  const pwFile = join(work, 'password');
  writeFileSync(pwFile, tc.password + '\n', { mode: 0o600 });
  const d = tc.dispatchers[1]; // not the first dispatcher: any one can be contacted
  const cmd = [
    `DISPATCH_CONFIG_DIR=${join(work, 'config')}`,
    process.execPath,
    join(REPO_ROOT, 'bin', 'dispatch'),
    'shell',
    '--endpoint',
    d.url,
    '--fingerprint',
    d.fingerprint,
    '--password-file',
    pwFile,
  ].join(' ');
  tmux('new-session', '-d', '-s', session, '-x', '250', '-y', '50', `env ${cmd}`);
  await waitScreen(/connected to https:\/\/127\.0\.0\.1:\d+[\s\S]*dispatch> $/m, 20_000);

  await typeLine(`const plan = await Planner.fromSpecFile(${JSON.stringify(specFile)})`);
  await typeLine('plan.processes.length');
  await waitScreen(/^7$/m, 10_000);

  const mark = screen().length;
  await typeLine('const k = new Kickstarter(plan); const op = await k.launch(); op.state');
  // Progress events print live, then the operation's state.
  const afterLaunch = await waitScreen(/'succeeded'|Uncaught/, 180_000, mark);
  const launchOut = afterLaunch.slice(mark);
  assert.doesNotMatch(launchOut, /Uncaught/, launchOut);
  assert.match(launchOut, /propagate \[d1\]: plan accepted/);
  assert.match(launchOut, /ready \[d\d\/coordinator-1\]: coordinator-1 ready/);
  assert.match(launchOut, /cluster shell-test ready/);

  let st = await tc.status(0);
  assert.equal(st.name, 'shell-test');
  assert.equal(st.state, 'running');
  assert.ok(st.processes.every((p) => p.state === 'ready'));

  const m2 = screen().length;
  await typeLine('await k.isHealthy()');
  await waitScreen(/^true$/m, 20_000, m2);

  const m3 = screen().length;
  await typeLine("(await k.shutdown()).state");
  const afterShutdown = (await waitScreen(/'succeeded'|Uncaught/, 120_000, m3)).slice(m3);
  assert.doesNotMatch(afterShutdown, /Uncaught/, afterShutdown);
  assert.match(afterShutdown, /stop \[d\d\/agent-1\]: agent-1 stopped/);

  st = await tc.status(2);
  assert.equal(st.state, 'shutdown');
  assert.deepEqual(tc.enginePids(), [], 'nothing runs after the shell shut the cluster down');

  const m4 = screen().length;
  await typeLine('help(k)');
  await waitScreen(/cleanup, .*launch, .*relaunch, .*shutdown/, 10_000, m4);
  await typeLine('.exit');
  for (let k = 0; k < 40; k++) {
    try {
      tmux('has-session', '-t', session);
    } catch {
      break; // the shell exited, so did the session
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  assert.throws(() => tmux('has-session', '-t', session), 'the shell exits on .exit');
});
