/**
 * PostgreSQL's own pgbench as the outside judge of what a client sees (issue 17): runs it through a
 * coordinator with sslmode=verify-full against the cluster CA, keeps its per-transaction log, and reads the
 * counts from its summary. Used by test/cluster/pause-restart.test.ts and bench/pause-restart.ts.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';

export const PGBENCH = '/usr/lib/postgresql/15/bin/pgbench';

export interface PgbenchResult {
  exitCode: number;
  /** "number of transactions actually processed" */
  processed: number;
  /** "number of failed transactions" */
  failed: number;
  /** Clients that aborted ("client N aborted" lines). */
  abortedClients: number;
  /** Longest latency of one transaction in the per-transaction log (ms). */
  maxLatencyMs: number;
  /** When that transaction ended (epoch ms), to tell which step of a restart it waited for. */
  maxLatencyEndMs: number;
  output: string;
}

export interface PgbenchTarget {
  port: number;
  pgpass: string;
  /** The cluster CA (PEM). */
  ca: string;
}

function env(t: PgbenchTarget, dir: string): NodeJS.ProcessEnv {
  const caFile = join(dir, 'ca.crt');
  writeFileSync(caFile, t.ca, { mode: 0o600 });
  return { PATH: '/usr/bin:/bin', PGPASSFILE: t.pgpass, PGSSLMODE: 'verify-full', PGSSLROOTCERT: caFile, PGCONNECT_TIMEOUT: '5' };
}

function run(args: string[], e: NodeJS.ProcessEnv, cwd: string, timeoutMs: number): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    const child = spawn(PGBENCH, args, { env: e, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, out });
    });
  });
}

const base = (t: PgbenchTarget) => ['-h', '127.0.0.1', '-p', String(t.port), '-U', 'postgres'];

/** pgbench -i (scale 1) through the coordinator. */
export async function pgbenchInit(t: PgbenchTarget): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'pgbench-'));
  try {
    const r = await run([...base(t), '-i', '-s', '1', '-q', 'postgres'], env(t, dir), dir, 60_000);
    if (r.code !== 0) throw new Error(`pgbench -i failed (${r.code}):\n${r.out}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** pgbench -c 4 -j 2 -T seconds (-C: a new connection per transaction), with a per-transaction log. */
export async function pgbenchRun(t: PgbenchTarget, opts: { seconds: number; connectPerTransaction: boolean }): Promise<PgbenchResult> {
  const dir = mkdtempSync(join(tmpdir(), 'pgbench-'));
  try {
    const args = [...base(t), '-c', '4', '-j', '2', '-T', String(opts.seconds), '-n', '-l', '--log-prefix', join(dir, 'tx'), ...(opts.connectPerTransaction ? ['-C'] : []), 'postgres'];
    const r = await run(args, env(t, dir), dir, (opts.seconds + 120) * 1000);
    let maxUs = 0;
    let endMs = 0;
    for (const f of readdirSync(dir).filter((n) => n.startsWith('tx'))) {
      for (const line of readFileSync(join(dir, f), 'utf8').split('\n')) {
        // client_id transaction_no time script_no time_epoch time_us: time is the latency in µs, the
        // transaction ended at time_epoch s + time_us µs.
        const f6 = line.split(' ');
        const us = Number(f6[2]);
        if (Number.isFinite(us) && us > maxUs) {
          maxUs = us;
          endMs = Number(f6[4]) * 1000 + Math.round(Number(f6[5]) / 1000);
        }
      }
    }
    const num = (re: RegExp) => Number(re.exec(r.out)?.[1] ?? NaN);
    return {
      exitCode: r.code,
      processed: num(/number of transactions actually processed: (\d+)/),
      failed: num(/number of failed transactions: (\d+)/),
      abortedClients: (r.out.match(/client \d+ aborted/g) ?? []).length,
      maxLatencyMs: Math.round(maxUs / 1000),
      maxLatencyEndMs: endMs,
      output: r.out,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
