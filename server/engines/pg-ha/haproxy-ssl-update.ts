/**
 * HAProxy's certificate reload (templates/pg-ha/engine.yaml, coordinator `certificateReload`): HAProxy
 * loads its check certificate (crt) and CA (ca-file) once, so after renewal the runtime API replaces both
 * in memory — `set ssl cert` + `commit ssl cert`, `set ssl ca-file` + `commit ssl ca-file` (HAProxy 2.6).
 * The process keeps running, its server states and connections stay (docs/DESIGN.md, "Certificate renewal").
 *
 * The admin socket lives in the process dir, which the process user owns and could swap for a link to
 * another socket; so the socket is opened by a child running AS the process user (docs/SECURITY.md,
 * "Process user"): it reaches only what that user could reach, and it carries only that user's own key.
 */
import { spawn } from 'node:child_process';
import { DispatcherError } from '../../../api/errors.js';

export interface HaproxySslUpdateTarget {
  processId: string;
  socket: string;
  /** Absolute paths as HAProxy loaded them (its config names them) and their new content. */
  pemFile: { path: string; content: string };
  caFile: { path: string; content: string };
  /** False when only the leaves were renewed: HAProxy's CA stays as it is. */
  caChanged: boolean;
  runAs?: { uid: number; gid: number };
}

/** The child: one admin-socket connection per command (HAProxy answers and closes), answers as JSON. */
const CHILD = `
const net = require('node:net');
let input = '';
process.stdin.on('data', (d) => (input += d));
process.stdin.on('end', async () => {
  const { socket, commands } = JSON.parse(input);
  const answers = [];
  for (const c of commands) {
    answers.push(await new Promise((resolve) => {
      let out = '';
      // write, not end: HAProxy drops a command that yields (a commit rebuilding SSL contexts) when the
      // client has already shut its side; it closes the connection itself after answering.
      const s = net.connect(socket, () => s.write(c));
      s.setTimeout(15000, () => s.destroy(new Error('timeout')));
      s.on('data', (d) => (out += d));
      s.on('close', () => resolve(out));
      s.on('error', (e) => resolve('ERROR ' + e.message));
    }));
  }
  process.stdout.write(JSON.stringify(answers));
});
`;

function runAsUser(target: HaproxySslUpdateTarget, commands: string[]): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', CHILD], {
      cwd: '/',
      env: { PATH: '/usr/bin:/bin' },
      stdio: ['pipe', 'pipe', 'pipe'],
      timeout: 30_000,
      ...(target.runAs ? { uid: target.runAs.uid, gid: target.runAs.gid } : {}),
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) return reject(new DispatcherError('operation_failed', `${target.processId}: the HAProxy admin socket client failed: ${err.trim().split('\n')[0]}`, { details: { process: target.processId } }));
      try {
        resolve(JSON.parse(out) as string[]);
      } catch {
        reject(new DispatcherError('operation_failed', `${target.processId}: unreadable answer from the HAProxy admin socket client`, { details: { process: target.processId } }));
      }
    });
    child.stdin.end(JSON.stringify({ socket: target.socket, commands }));
  });
}

/** The runtime API's payload ends at the first empty line: PEM never needs one. */
function payload(pem: string): string {
  return pem
    .split('\n')
    .filter((l) => l.trim() !== '')
    .join('\n');
}

async function setAndCommit(target: HaproxySslUpdateTarget, kind: 'cert' | 'ca-file', file: { path: string; content: string }): Promise<void> {
  const [set] = await runAsUser(target, [`set ssl ${kind} ${file.path} <<\n${payload(file.content)}\n\n`]);
  // HAProxy 2.6 at times closes a commit's connection without an answer; the transaction stays open, so
  // the commit is asked again (bounded) before the change counts as refused.
  let commit = '';
  for (let attempt = 0; attempt < 5; attempt++) {
    [commit] = await runAsUser(target, [`commit ssl ${kind} ${file.path}\n`]);
    if (/Success!/.test(commit)) return;
    if (commit.trim() !== '') break;
    await new Promise((r) => setTimeout(r, 200));
  }
  await runAsUser(target, [`abort ssl ${kind} ${file.path}\n`]).catch(() => undefined);
  const said = `${set.trim()} / ${commit.trim()}`.replace(/\s+/g, ' ').slice(0, 300);
  throw new DispatcherError('operation_failed', `${target.processId}: HAProxy did not take the new ${kind === 'cert' ? 'certificate' : 'CA file'} ${file.path}: ${said}`, { details: { process: target.processId } });
}

// The CA file is NOT replaced: on HAProxy 2.6.12 (Debian 12) `commit ssl ca-file` for a CA that server
// lines use leaves the admin socket unanswered and then refusing connections (seen in
// test/cluster/rotate-certs.test.ts). HAProxy keeps the CA it loaded at start and, like etcd, verifies the
// new leaves through the cross certificate they carry (server/cluster/ca-rotation.ts); its next start
// reads the new CA file.
export async function haproxySslUpdate(target: HaproxySslUpdateTarget): Promise<string> {
  await setAndCommit(target, 'cert', target.pemFile);
  return `HAProxy took the new check certificate through its admin socket${target.caChanged ? ' (its CA stays in memory until its next start; the new leaves carry the cross certificate)' : ''}`;
}
