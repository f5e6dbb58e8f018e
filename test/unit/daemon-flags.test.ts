/**
 * The daemon's V8 flags are set in two places that must agree: bin/dispatcherd's `#!` line (systemd and
 * `dispatch deploy` execute the file) and DAEMON_NODE_FLAGS (`dispatch local` starts it through node).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { DAEMON_NODE_FLAGS } from '../../launcher/local-dispatchers.js';
import { DISPATCHERD_BIN } from '../helpers/daemon.js';

test('bin/dispatcherd runs node with DAEMON_NODE_FLAGS, and the flags are ones node accepts', () => {
  const shebang = readFileSync(DISPATCHERD_BIN, 'utf8').split('\n')[0];
  const m = /^#!\/usr\/bin\/env -S node((?: --[a-z-]+=\S+)*)$/.exec(shebang);
  assert.ok(m, `shebang: ${shebang}`);
  assert.deepEqual(m[1].trim().split(/\s+/), DAEMON_NODE_FLAGS);
  // Executed directly, the file starts (a node that refused a flag would exit non-zero before --help).
  assert.match(execFileSync(DISPATCHERD_BIN, ['--help'], { encoding: 'utf8' }), /Usage: dispatcherd/);
  assert.equal(execFileSync(process.execPath, [...DAEMON_NODE_FLAGS, '-e', 'process.stdout.write("ok")'], { encoding: 'utf8' }), 'ok');
});
