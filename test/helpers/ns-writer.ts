/**
 * A database writer on a namespace host (the outside host of the network tier): numbered INSERTs, one psql
 * call each through a coordinator (sslmode=verify-full against the cluster CA), each retried until
 * acknowledged, until stopped. What it reports — every acknowledged number, failed attempts and the longest
 * time between two acknowledged writes — is the client's view of an operation (no write lost, write gap).
 */
import type { ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { TestNet } from './netns.js';

export interface NsWriterResult {
  acked: number[];
  failedAttempts: number;
  /** Longest time between two acknowledged writes (ms). */
  longestGapMs: number;
  /** The first few errors psql printed. */
  errors: string[];
}

const WRITER = `
const { execFile } = require('child_process');
const [psql, conninfo, table] = process.argv.slice(1);
let stop = false; process.stdin.on('data', () => {}); process.stdin.on('end', () => { stop = true; });
const res = { acked: [], failedAttempts: 0, longestGapMs: 0, errors: [] };
const run = (sql) => new Promise((ok, no) => execFile(psql, [conninfo, '-XtAq', '-v', 'ON_ERROR_STOP=1', '-c', sql], { timeout: 15000, env: process.env }, (e, out, err) => e ? no(new Error(String(err).trim() || e.message)) : ok(String(out).trim())));
(async () => {
  let last = Date.now(); const end = Date.now() + 600000;
  process.stdout.write('READY\\n');
  for (let n = 1; !stop && Date.now() < end; n++) {
    for (;;) {
      if (stop || Date.now() > end) break;
      try { await run('INSERT INTO ' + table + ' (n) VALUES (' + n + ') ON CONFLICT DO NOTHING'); const now = Date.now(); res.longestGapMs = Math.max(res.longestGapMs, now - last); last = now; res.acked.push(n); break; }
      catch (e) { res.failedAttempts++; if (res.errors.length < 10) res.errors.push(e.message); await new Promise((r) => setTimeout(r, 50)); }
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  process.stdout.write(JSON.stringify(res) + '\\n');
})();
`;

/** psql through a coordinator from namespace `ns`: the files it needs (0600, under `dir`) and its argv prefix. */
export function psqlClient(dir: string, conn: { password: string; caCertificate: string }, psql: string) {
  const ca = join(dir, 'cluster-ca.crt');
  const pgpass = join(dir, 'pgpass');
  writeFileSync(ca, conn.caCertificate, { mode: 0o600 });
  writeFileSync(pgpass, `*:*:*:postgres:${conn.password}\n`, { mode: 0o600 });
  const env = ['env', `PGPASSFILE=${pgpass}`, `PGSSLROOTCERT=${ca}`, 'PGSSLMODE=verify-full', 'PGCONNECT_TIMEOUT=5'];
  return { env, psql };
}

/** Starts the writer in `ns` (table `table (n int PRIMARY KEY)` must exist); resolves once it runs. */
export async function startNsWriter(net: TestNet, ns: string, client: { env: string[]; psql: string }, conninfo: string, table: string): Promise<{ stop(): Promise<NsWriterResult>; kill(): void }> {
  const child: ChildProcess = net.spawnIn(ns, [...client.env, process.execPath, '-e', WRITER, client.psql, conninfo, table], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.setEncoding('utf8').on('data', (c: string) => (out += c));
  for (let i = 0; i < 200 && !out.includes('READY') && child.exitCode === null; i++) await new Promise((r) => setTimeout(r, 50));
  if (!out.includes('READY')) throw new Error('the writer did not start');
  return {
    async stop() {
      child.stdin!.end();
      await new Promise<void>((r) => (child.exitCode !== null ? r() : child.once('exit', () => r())));
      const line = out.split('\n').find((l) => l.startsWith('{'));
      if (!line) throw new Error('the writer gave no result');
      return JSON.parse(line) as NsWriterResult;
    },
    kill: () => void child.kill('SIGKILL'),
  };
}
