/**
 * An outside probe for the network tier: a program run inside a namespace (the outside host) that connects
 * to each target in its OWN loop (a dropped SYN stalls only that target's loop, for `timeoutMs`; a refused
 * one loops again at once), until its stdin closes. It reports, per target, how many connects were open,
 * refused or timed out, and the time of every open connect — so a test can require "never open" for
 * guarded ports and "open at least once" for public ones (proof that the processes really listened).
 */
import type { ChildProcess } from 'node:child_process';
import type { TestNet } from './netns.js';

export interface ProbeTarget {
  host: string;
  port: number;
  /** What the test expects: `never` (guarded) or `sometimes` (public: must connect at least once). */
  expect: 'never' | 'sometimes';
  label: string;
}

export interface ProbeCounts {
  attempts: number;
  open: number;
  refused: number;
  timeout: number;
  other: number;
  /** ISO times of open connects (first 20). */
  openAt: string[];
}

const PROBE = `
const net = require('net');
const targets = JSON.parse(process.argv[1]); const timeoutMs = Number(process.argv[2]); const maxMs = Number(process.argv[3]);
const end = Date.now() + maxMs; let stop = false;
const res = targets.map(() => ({ attempts: 0, open: 0, refused: 0, timeout: 0, other: 0, openAt: [] }));
process.stdin.on('data', () => {}); process.stdin.on('end', () => { stop = true; });
function once(t, r) { return new Promise((done) => {
  const s = net.connect({ host: t.host, port: t.port }); let fin = false;
  const finish = (k) => { if (fin) return; fin = true; s.destroy(); r.attempts++; r[k]++;
    if (k === 'open' && r.openAt.length < 20) r.openAt.push(new Date().toISOString()); done(k); };
  s.setTimeout(timeoutMs, () => finish('timeout')); s.once('connect', () => finish('open'));
  s.once('error', (e) => finish(e.code === 'ECONNREFUSED' ? 'refused' : 'other'));
}); }
async function loop(t, r) {
  while (!stop && Date.now() < end) {
    const k = await once(t, r);
    // A refused connect returns at once: yield so every loop (and stdin) gets its turn.
    if (k !== 'timeout') await new Promise((y) => setImmediate(y));
  }
}
process.stdout.write('READY\\n');
Promise.all(targets.map((t, i) => loop(t, res[i]))).then(() => { process.stdout.write(JSON.stringify(res) + '\\n'); process.exit(0); });
`;

export interface RunningProbe {
  /** Ends the probe and returns its counts, in the order of the targets. */
  finish(): Promise<ProbeCounts[]>;
}

/** Starts the probe in `ns` and resolves once it runs. */
export async function startOutsideProbe(net: TestNet, ns: string, targets: ProbeTarget[], opts: { timeoutMs?: number; maxMs?: number } = {}): Promise<RunningProbe> {
  const child: ChildProcess = net.spawnIn(ns, [process.execPath, '-e', PROBE, JSON.stringify(targets), String(opts.timeoutMs ?? 200), String(opts.maxMs ?? 600_000)], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (c: string) => (out += c));
  child.stderr!.setEncoding('utf8').on('data', (c: string) => (err += c));
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`probe did not start: ${err}`)), 10_000);
    const check = () => (out.includes('READY') ? (clearTimeout(t), resolve()) : child.exitCode !== null ? reject(new Error(`probe exited: ${err}`)) : setTimeout(check, 20));
    check();
  });
  return {
    async finish() {
      child.stdin!.end();
      await new Promise<void>((r) => (child.exitCode !== null ? r() : child.once('exit', () => r())));
      const line = out.split('\n').filter((x) => x.startsWith('[')).pop();
      if (!line) throw new Error(`probe gave no result: ${err}`);
      return JSON.parse(line) as ProbeCounts[];
    },
  };
}
