import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { backoffDelay, decideRestart, describeExit, INITIAL_HISTORY, type RestartHistory } from '../../server/core/restart-policy.js';
import type { RestartPolicyConfig } from '../../server/supervisor/types.js';
import { DEFAULT_RESTART_POLICY } from '../../server/supervisor/types.js';

const policy: RestartPolicyConfig = { enabled: true, initialDelayMs: 100, maxDelayMs: 1_000, quickFailureWindowMs: 5_000, maxQuickFailures: 6 };
const quickExit = (code: number | null = 1, signal: string | null = null) => ({ code, signal, startedAt: 10_000, at: 10_500 });

describe('restart policy', () => {
  test('the first crash restarts at once; repeated quick failures back off exponentially up to the cap', () => {
    let h: RestartHistory = INITIAL_HISTORY;
    const delays: number[] = [];
    for (let i = 0; i < 5; i++) {
      const d = decideRestart(policy, h, quickExit());
      assert.equal(d.state, 'backoff');
      delays.push(d.delayMs);
      h = d.history;
    }
    assert.deepEqual(delays, [0, 100, 200, 400, 800]);
    assert.equal(h.quickFailures, 5);
  });

  test('gives up after maxQuickFailures quick failures, naming the exit code', () => {
    const d = decideRestart(policy, { quickFailures: 5 }, quickExit(3));
    assert.equal(d.state, 'failed');
    assert.equal(d.delayMs, 0);
    assert.match(d.reason, /gave up after 6 quick failures/);
    assert.match(d.reason, /exit code 3/);
  });

  test('giving up names the signal when killed by one', () => {
    const d = decideRestart(policy, { quickFailures: 5 }, quickExit(null, 'SIGSEGV'));
    assert.equal(d.state, 'failed');
    assert.match(d.reason, /signal SIGSEGV/);
  });

  test('a quick clean exit (code 0) still counts: giving up is never success', () => {
    const d = decideRestart(policy, { quickFailures: 5 }, quickExit(0));
    assert.equal(d.state, 'failed');
    assert.match(d.reason, /exit code 0/);
  });

  test('a crash after a long healthy run (kill -9 of a serving process) restarts at once and resets the count', () => {
    const d = decideRestart(policy, { quickFailures: 5 }, { code: null, signal: 'SIGKILL', startedAt: 0, at: 5_000 });
    assert.equal(d.state, 'backoff');
    assert.equal(d.delayMs, 0);
    assert.match(d.reason, /restarting now/);
    assert.deepEqual(d.history, { quickFailures: 0 });
    // the next quick failure is again a first one; the one after it backs off
    const next = decideRestart(policy, d.history, quickExit());
    assert.equal(next.delayMs, 0);
    assert.equal(next.history.quickFailures, 1);
    const third = decideRestart(policy, next.history, quickExit());
    assert.equal(third.delayMs, 100);
    assert.match(third.reason, /restarting in 100 ms/);
  });

  test('the first restart is immediate whatever the configured delays', () => {
    const slow = { ...policy, initialDelayMs: 30_000, maxDelayMs: 60_000 };
    assert.equal(decideRestart(slow, INITIAL_HISTORY, quickExit(null, 'SIGKILL')).delayMs, 0);
    assert.equal(decideRestart(slow, INITIAL_HISTORY, { code: 1, signal: null, startedAt: 0, at: 1e9 }).delayMs, 0);
    assert.equal(decideRestart(DEFAULT_RESTART_POLICY, INITIAL_HISTORY, quickExit(null, 'SIGKILL')).delayMs, 0);
  });

  test('the window boundary: just under is quick, exactly the window is healthy', () => {
    assert.equal(decideRestart(policy, { quickFailures: 2 }, { code: 1, signal: null, startedAt: 0, at: 4_999 }).history.quickFailures, 3);
    assert.equal(decideRestart(policy, { quickFailures: 2 }, { code: 1, signal: null, startedAt: 0, at: 5_000 }).history.quickFailures, 0);
  });

  test('restart disabled: clean exit is stopped, any other exit is failed', () => {
    const off = { ...policy, enabled: false };
    const ok = decideRestart(off, INITIAL_HISTORY, quickExit(0));
    assert.equal(ok.state, 'stopped');
    const bad = decideRestart(off, INITIAL_HISTORY, quickExit(2));
    assert.equal(bad.state, 'failed');
    assert.match(bad.reason, /exit code 2/);
    assert.match(bad.reason, /restart is disabled/);
    assert.equal(decideRestart(off, INITIAL_HISTORY, quickExit(null, 'SIGKILL')).state, 'failed');
  });

  test('maxQuickFailures of 1 gives up at the first quick failure', () => {
    assert.equal(decideRestart({ ...policy, maxQuickFailures: 1 }, INITIAL_HISTORY, quickExit()).state, 'failed');
  });

  test('an unknown exit status (adopted process) is named as such', () => {
    const d = decideRestart(policy, INITIAL_HISTORY, quickExit(null, null));
    assert.equal(d.state, 'backoff');
    assert.match(d.reason, /unknown exit status/);
  });

  test('a clock going backwards counts as a zero-length run, not a crash of the tracker', () => {
    const d = decideRestart(policy, INITIAL_HISTORY, { code: 1, signal: null, startedAt: 10_000, at: 9_000 });
    assert.equal(d.state, 'backoff');
    assert.equal(d.history.quickFailures, 1);
  });

  test('backoffDelay stays capped for huge counts and the defaults are sane', () => {
    assert.equal(backoffDelay(policy, 10_000), 1_000);
    assert.equal(backoffDelay(policy, 1), 0);
    assert.equal(backoffDelay(policy, 2), 100);
    assert.equal(backoffDelay(policy, 3), 200);
    assert.equal(backoffDelay(DEFAULT_RESTART_POLICY, 2), DEFAULT_RESTART_POLICY.initialDelayMs);
    assert.ok(DEFAULT_RESTART_POLICY.maxQuickFailures > 1);
  });

  test('describeExit', () => {
    assert.equal(describeExit(3, null), 'exit code 3');
    assert.equal(describeExit(null, 'SIGTERM'), 'signal SIGTERM');
    assert.equal(describeExit(null, null), 'an unknown exit status');
  });
});
