/**
 * A database writer on the outside host for the network tier: numbered INSERTs through one coordinator,
 * one psql call each (sslmode=verify-full against the cluster CA, password from a 0600 pgpass file), each
 * retried until acknowledged, until it is stopped. Its result says which numbers were acknowledged, how
 * many attempts failed and the longest time between two acknowledged writes — so a test can prove that
 * no acknowledged write was lost across an operation.
 */
import type { ChildProcess } from 'node:child_process';
import type { TestNet } from './netns.js';

const WRITER = `
const { execFile } = require('child_process');
const [psql, conninfo, table] = process.argv.slice(1);
let stop = false; process.stdin.on('data', () => {}); process.stdin.on('end', () => { stop = true; });
const res = { acked: [], failedAttempts: 0, longestGapMs: 0, errors: [] };
const run = (sql) => new Promise((ok, no) => execFile(psql, [conninfo, '-XtAq', '-v', 'ON_ERROR_STOP=1', '-c', sql], { timeout: 15000, env: process.env }, (e, out, err) => e ? no(new Error(String(err).trim() || e.message)) : ok(String(out).trim())));
(async () => {
  let last = Date.now(); const end = Date.now() + 900000;
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

export interface WriterResult {
  acked: number[];
  failedAttempts: number;
  longestGapMs: number;
  errors: string[];
}

export interface RunningWriter {
  /** Acknowledged writes so far are not known until the end: stops the writer and returns its result. */
  finish(): Promise<WriterResult>;
  kill(): void;
}

/** Starts the writer in `ns` (env: PGPASSFILE, PGSSLROOTCERT, ... as `env` argv) and resolves once it runs. */
export async function startOutsideWriter(net: TestNet, ns: string, env: string[], psql: string, conninfo: string, table: string): Promise<RunningWriter> {
  const child: ChildProcess = net.spawnIn(ns, [...env, process.execPath, '-e', WRITER, psql, conninfo, table], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.setEncoding('utf8').on('data', (c: string) => (out += c));
  for (let i = 0; i < 200 && !out.includes('READY'); i++) await new Promise((r) => setTimeout(r, 50));
  if (!out.includes('READY')) throw new Error('the outside writer did not start');
  return {
    async finish() {
      child.stdin!.end();
      await new Promise<void>((r) => (child.exitCode !== null ? r() : child.once('exit', () => r())));
      const line = out.split('\n').find((l) => l.startsWith('{'));
      return line ? (JSON.parse(line) as WriterResult) : { acked: [], failedAttempts: -1, longestGapMs: -1, errors: ['no writer result'] };
    },
    kill() {
      if (child.exitCode === null) child.kill('SIGKILL');
    },
  };
}
