/**
 * A real OpenSSH server for the SSH test tier, started inside a test network namespace (needs root and
 * the openssh-server package).
 *
 * Measured pitfalls (docs/DESIGN.md, "Facts about the toolchain here"): sshd needs /run/sshd (privilege separation dir); StrictModes
 * refuses keys whose directory or any parent is group/world-writable — the system temp dir is — so
 * keys and config live in a private 0700 directory under /run (root-owned, not world-writable).
 */
import { execFile, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { TestHost, TestNet } from './netns.js';

const PRIVATE_ROOT = '/run/cluster-dispatcher-test';

function run(argv: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(argv[0], argv.slice(1), { encoding: 'utf8' }, (err, stdout, stderr) => (err ? reject(new Error(`${argv.join(' ')}: ${stderr || err.message}`)) : resolve(stdout)));
  });
}

/** A private 0700 directory for keys (under /run, whose parents are not world-writable). */
export async function privateDir(label: string): Promise<string> {
  await mkdir(PRIVATE_ROOT, { recursive: true, mode: 0o700 });
  return mkdtemp(path.join(PRIVATE_ROOT, `${label}-`));
}

export interface KeyPair {
  privateKeyFile: string;
  publicKey: string;
  /** OpenSSH SHA256:... fingerprint of the public key. */
  fingerprint: string;
}

/** Fingerprint of an OpenSSH public key line (`type base64 [comment]`). */
export function publicKeyFingerprint(line: string): string {
  const blob = Buffer.from(line.trim().split(/\s+/)[1], 'base64');
  return 'SHA256:' + createHash('sha256').update(blob).digest('base64').replace(/=+$/, '');
}

export async function makeKeyPair(dir: string, name: string): Promise<KeyPair> {
  const file = path.join(dir, name);
  await run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', name, '-f', file]);
  const publicKey = (await readFile(`${file}.pub`, 'utf8')).trim();
  return { privateKeyFile: file, publicKey, fingerprint: publicKeyFingerprint(publicKey) };
}

export interface TestSshd {
  host: TestHost;
  address: string;
  port: number;
  /** The server's host key fingerprint (what an inventory pins). */
  hostKeyFingerprint: string;
  dir: string;
  pid: number;
  /** Stops this sshd by its pid and removes its directory. Safe to call twice. */
  stop(): Promise<void>;
}

let runSshdUsers = 0;
let createdRunSshd = false;

export async function startSshd(net: TestNet, host: TestHost, opts: { authorizedKeys: string[]; port?: number }): Promise<TestSshd> {
  const port = opts.port ?? 22;
  if (!existsSync('/run/sshd')) {
    await mkdir('/run/sshd', { mode: 0o755 });
    createdRunSshd = true;
  }
  runSshdUsers++;
  const dir = await privateDir(`sshd-${host.name}`);
  const hostKey = await makeKeyPair(dir, 'ssh_host_ed25519_key');
  await writeFile(path.join(dir, 'authorized_keys'), opts.authorizedKeys.join('\n') + '\n', { mode: 0o600 });
  const config = [
    `Port ${port}`,
    `ListenAddress ${host.ipv4}`,
    `ListenAddress ${host.ipv6}`,
    `HostKey ${hostKey.privateKeyFile}`,
    `PidFile ${path.join(dir, 'sshd.pid')}`,
    `AuthorizedKeysFile ${path.join(dir, 'authorized_keys')}`,
    'PermitRootLogin prohibit-password',
    'PasswordAuthentication no',
    'KbdInteractiveAuthentication no',
    'UsePAM no',
    'StrictModes yes',
    'Subsystem sftp internal-sftp',
    'LogLevel VERBOSE',
    'MaxStartups 50',
  ].join('\n');
  const cfgFile = path.join(dir, 'sshd_config');
  await writeFile(cfgFile, config + '\n', { mode: 0o600 });
  await run(['/usr/sbin/sshd', '-t', '-f', cfgFile]);

  const child: ChildProcess = net.spawnIn(host.ns, ['/usr/sbin/sshd', '-D', '-e', '-f', cfgFile], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  let stopped = false;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 3000))]);
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
    await rm(dir, { recursive: true, force: true });
    runSshdUsers--;
    if (runSshdUsers === 0 && createdRunSshd) {
      await rm('/run/sshd', { recursive: true, force: true });
      createdRunSshd = false;
    }
  };
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`sshd in ${host.ns} did not start: ${log}`)), 10_000);
      child.stderr!.on('data', (d: Buffer) => {
        log += d.toString();
        // One "Server listening" line per ListenAddress: wait for both.
        if ((log.match(/Server listening on/g) ?? []).length >= 2) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`sshd in ${host.ns} exited (${code}): ${log}`));
      });
    });
  } catch (e) {
    await stop();
    throw e;
  }
  // Keep draining stderr so sshd never blocks on a full pipe.
  return { host, address: host.ipv4, port, hostKeyFingerprint: hostKey.fingerprint, dir, pid: child.pid!, stop };
}
