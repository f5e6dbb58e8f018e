/**
 * The small interface every firewall backend implements, and the command runner they share. Rule text
 * comes from the pure renderers (server/core/firewall-render.ts); a backend only feeds it to the tool and
 * reads the result back. Every command can run inside a network namespace (`ip netns exec NS ...`) so the
 * same code is exercised by the net-tier tests, and the runner is injectable (a real default, no shell:
 * argv arrays, rule text on stdin).
 */
import { execFile } from 'node:child_process';
import { DispatcherError } from '../../api/errors.js';
import type { GuardPolicy } from '../core/firewall-policy.js';

export interface ExecResult {
  stdout: string;
  stderr: string;
  code: number;
}

export type ExecFn = (argv: string[], opts?: { input?: string; timeoutMs?: number }) => Promise<ExecResult>;

export interface FirewallBackend {
  readonly name: 'nftables' | 'iptables' | 'none';
  /** The network namespace its tools run in, if any (the rollback watchdog recreates the backend with it). */
  readonly netns?: string;
  /** Whether the tools are present and usable with our privileges (CAP_NET_ADMIN). */
  available(): Promise<{ ok: boolean; reason?: string }>;
  /** Installs the policy atomically, replacing our previous rules (and only ours). */
  apply(policy: GuardPolicy): Promise<void>;
  /** Our rules as the kernel has them now (normalized text), or null when none are installed. */
  read(): Promise<string | null>;
  /** Whether the installed rules are exactly what apply(policy) installed. */
  inSync(policy: GuardPolicy): Promise<boolean>;
  /** Removes our rules (and only ours); harmless when none are installed. */
  remove(): Promise<void>;
  /** Other tables/chains that would drop ports we allow: warnings (another table's drop wins over our accept). */
  foreignDrops?(policy: GuardPolicy): Promise<string[]>;
  /** Deny mode: a conntrack established-timeout too short for long idle sessions (docs/FIREWALL.md, Modes). */
  sessionWarnings?(policy: GuardPolicy): Promise<string[]>;
}

export interface BackendOptions {
  /** Run every command inside this network namespace. */
  netns?: string;
  /** Command runner; default runs the program directly (no shell). */
  exec?: ExecFn;
}

/** The real runner: execFile without a shell; never throws for a non-zero exit. */
export const defaultExec: ExecFn = (argv, opts = {}) =>
  new Promise((resolve) => {
    const child = execFile(argv[0], argv.slice(1), { timeout: opts.timeoutMs ?? 20_000, maxBuffer: 32 * 1024 * 1024, encoding: 'utf8' }, (err, stdout, stderr) => {
      let code = 0;
      if (err) {
        const e = err as NodeJS.ErrnoException & { killed?: boolean };
        code = typeof e.code === 'number' ? e.code : e.killed ? 124 : 127;
        if (typeof e.code === 'string') stderr = `${String(stderr)}${e.message}`;
      }
      resolve({ stdout: String(stdout), stderr: String(stderr), code });
    });
    // A tool that exits without reading stdin makes the write fail with EPIPE: not an error of ours.
    child.stdin?.on('error', () => undefined);
    child.stdin?.end(opts.input ?? '');
  });

/** A runner that prefixes every command with `ip netns exec NS` when a namespace is given. */
export function runner(opts: BackendOptions): ExecFn {
  const exec = opts.exec ?? defaultExec;
  if (!opts.netns) return exec;
  const ns = opts.netns;
  return (argv, o) => exec(['ip', 'netns', 'exec', ns, ...argv], o);
}

/**
 * In deny mode an idle connection lives only as long as its conntrack entry: after that, its next packet is
 * "new" and the default drop takes it (replies to outbound sessions in particular). The Cumulocity seed
 * asks for 14,400 s sessions; the kernel default (432,000 s) covers that, a host that lowered it does not.
 */
export const DENY_MIN_ESTABLISHED_TIMEOUT_S = 14_400;

export async function conntrackWarnings(exec: ExecFn, policy: GuardPolicy): Promise<string[]> {
  if (policy.mode !== 'deny') return [];
  const r = await exec(['sysctl', '-n', 'net.netfilter.nf_conntrack_tcp_timeout_established']);
  const s = Number(r.stdout.trim());
  if (r.code !== 0 || !Number.isFinite(s)) return [];
  return s < DENY_MIN_ESTABLISHED_TIMEOUT_S
    ? [`net.netfilter.nf_conntrack_tcp_timeout_established is ${s} s: in deny mode idle TCP sessions are cut after that (set it to at least ${DENY_MIN_ESTABLISHED_TIMEOUT_S} s)`]
    : [];
}

/** Runs a command and throws a readable Error on failure (the Guard turns it into a DispatcherError). */
export async function mustRun(exec: ExecFn, argv: string[], input?: string): Promise<string> {
  const r = await exec(argv, { input });
  if (r.code !== 0) throw new DispatcherError('operation_failed', `${argv.join(' ')} failed (exit ${r.code}): ${r.stderr.trim().slice(0, 2000)}`);
  return r.stdout;
}
