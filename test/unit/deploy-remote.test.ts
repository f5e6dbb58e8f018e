/** Remote command quoting and the fixed remote command set (deploy/quote.ts, deploy/remote.ts). */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { shJoin, shQuote } from '../../deploy/quote.js';
import { remote } from '../../deploy/remote.js';
import { decideHostKey, knownHostsLine, sshFingerprint } from '../../deploy/hostkeys.js';

/** What a real POSIX shell makes of a command line: each argument printed on its own NUL-terminated slot. */
function shellArgs(line: string): string[] {
  const out = execFileSync('sh', ['-c', `printf '%s\\0' ${line}`], { encoding: 'utf8' });
  return out.split('\0').slice(0, -1);
}

describe('shQuote / shJoin', () => {
  const nasty = ['plain', '', ' ', "it's", '$(touch /tmp/pwned)', '`id`', 'a;b|c&d', '"dq"', '\\back', 'new\nline', '*', '~root', '--opt=x y', "''", 'ü ñ', '$HOME', '!'];
  test('every argument survives a real shell unchanged, as exactly one argument', () => {
    assert.deepEqual(shellArgs(shJoin(nasty)), nasty);
  });
  test('safe words stay readable, everything else is single-quoted', () => {
    assert.equal(shQuote('/opt/cluster-dispatcher'), '/opt/cluster-dispatcher');
    assert.equal(shQuote(''), "''");
    assert.equal(shQuote("a'b"), `'a'\\''b'`);
    assert.equal(shQuote('a b'), `'a b'`);
  });
  test('a NUL byte is refused, never truncated', () => {
    assert.throws(() => shQuote('a\0b'), /NUL/);
  });
});

describe('remote commands', () => {
  test('values arrive as positional parameters of a constant script', () => {
    const evil = '/x/$(reboot)';
    const line = remote.installRelease('/tmp/s/bundle.tgz', evil, 'v1', false);
    const args = shellArgs(line);
    assert.equal(args[0], 'sh');
    assert.equal(args[1], '-c');
    assert.ok(!args[2].includes(evil), 'the value is not spliced into the script');
    assert.deepEqual(args.slice(3), ['sh', '/tmp/s/bundle.tgz', evil, 'v1']);
  });
  test('sudo wraps the whole command with sudo -n --', () => {
    assert.deepEqual(shellArgs(remote.removePaths(['/opt/x'], true)), ['sudo', '-n', '--', 'rm', '-rf', '--', '/opt/x']);
    assert.deepEqual(shellArgs(remote.removePaths(['/opt/x'], false)), ['rm', '-rf', '--', '/opt/x']);
  });
  test('the pid-file stop script ignores a pid file naming a process that is not dispatcherd', async () => {
    // A live process whose cmdline has no "dispatcherd": the script must not signal it.
    const bystander = spawn('sleep', ['30'], { stdio: 'ignore' });
    const exited = new Promise<string>((resolve) => bystander.once('exit', (code, signal) => resolve(`exited (${signal ?? code})`)));
    const dir = execFileSync('mktemp', ['-d'], { encoding: 'utf8' }).trim();
    try {
      execFileSync('sh', ['-c', `echo ${bystander.pid} > ${dir}/p`]);
      execFileSync('sh', ['-c', remote.directStop(`${dir}/p`, false)]);
      // A signal sent by the script would have ended `sleep` well within this window.
      const outcome = await Promise.race([exited, new Promise<string>((r) => setTimeout(() => r('alive'), 300))]);
      assert.equal(outcome, 'alive', 'the stop script signalled a process that is not dispatcherd');
      assert.equal(execFileSync('sh', ['-c', remote.directStatus(`${dir}/p`, false)], { encoding: 'utf8' }).trim(), 'stopped');
    } finally {
      bystander.kill('SIGKILL');
      execFileSync('rm', ['-rf', dir]);
    }
  });
});

describe('host keys', () => {
  const key = Buffer.concat([Buffer.from([0, 0, 0, 11]), Buffer.from('ssh-ed25519'), Buffer.from([0, 0, 0, 32]), Buffer.alloc(32, 7)]);
  const other = Buffer.concat([Buffer.from([0, 0, 0, 11]), Buffer.from('ssh-ed25519'), Buffer.from([0, 0, 0, 32]), Buffer.alloc(32, 9)]);
  const fp = sshFingerprint(key);
  test('fingerprint is SHA256: + unpadded base64', () => {
    assert.match(fp, /^SHA256:[A-Za-z0-9+/]{43}$/);
  });
  test('a pin must match; no pin and no known_hosts is refused unless accept-new', () => {
    assert.equal(decideHostKey(key, 'h', 22, { fingerprint: fp, acceptNew: false }).ok, true);
    const wrong = decideHostKey(other, 'h', 22, { fingerprint: fp, acceptNew: true });
    assert.equal(wrong.ok, false, 'accept-new never overrides a pin');
    assert.equal(decideHostKey(key, 'h', 22, { acceptNew: false }).ok, false);
    const d = decideHostKey(key, 'h', 22, { acceptNew: true });
    assert.ok(d.ok && d.how === 'accepted-new');
  });
  test('known_hosts: match, changed key refused even with accept-new, other host unknown', () => {
    const kh = knownHostsLine('10.0.0.1', 2222, key) + '\n';
    assert.equal(decideHostKey(key, '10.0.0.1', 2222, { knownHosts: kh, acceptNew: false }).ok, true);
    const changed = decideHostKey(other, '10.0.0.1', 2222, { knownHosts: kh, acceptNew: true });
    assert.ok(!changed.ok && /CHANGED/.test(changed.reason));
    assert.equal(decideHostKey(key, '10.0.0.1', 22, { knownHosts: kh, acceptNew: false }).ok, false, 'port is part of the name');
  });
  test('known_hosts: hashed entries (ssh-keygen -H) match', () => {
    const dir = execFileSync('mktemp', ['-d'], { encoding: 'utf8' }).trim();
    try {
      const f = `${dir}/kh`;
      execFileSync('sh', ['-c', `printf '%s\\n' "$1" > "$2" && ssh-keygen -H -f "$2" >/dev/null 2>&1`, 'sh', knownHostsLine('db1.example', 22, key), f]);
      const text = execFileSync('cat', [f], { encoding: 'utf8' });
      assert.match(text, /^\|1\|/);
      assert.equal(decideHostKey(key, 'db1.example', 22, { knownHosts: text, acceptNew: false }).ok, true);
    } finally {
      execFileSync('rm', ['-rf', dir]);
    }
  });
});
