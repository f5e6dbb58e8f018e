/**
 * Test network made of Linux network namespaces (needs root, iproute2).
 *
 *   bridge namespace  <prefix><n>-br   : a bridge `br0`, one veth end per host
 *   host namespaces   <prefix><n>-h1.. : `eth0` with 10.213.<n>.(10+i)/24 and fd00:cd:<n>::(10+i)/64
 *   outside namespace <prefix><n>-out  : `eth0` with 10.213.<n>.200/24 and fd00:cd:<n>::200/64
 *
 * Every TestNet claims a unique <n> by creating its bridge namespace (`ip netns add` fails when the name
 * exists, so the claim is atomic even with several test processes running at once). The test subnets get
 * blackhole routes in the ROOT namespace, so a mistake never sends test traffic to the real gateway; the
 * namespaces themselves have no default route. `destroy()` removes everything (processes left inside our
 * namespaces are killed by pid, then namespaces and routes), is safe to call twice, and a process 'exit'
 * hook does the same best-effort when a test dies before calling it.
 *
 * Nothing here touches the root namespace's firewall or addresses; only the two blackhole routes.
 */
import { execFile, execFileSync, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';

export interface TestHost {
  /** Logical name: host1, host2, ... or outside. */
  name: string;
  /** Network namespace name (use with `ip netns exec`). */
  ns: string;
  ipv4: string;
  ipv6: string;
}

export interface ExecResult {
  stdout: string;
  stderr: string;
  code: number;
}

export interface TestNet {
  hosts: TestHost[];
  outside?: TestHost;
  bridgeNs: string;
  /** IPv4 subnet of this net, e.g. 10.213.7.0/24. */
  subnet4: string;
  /** IPv6 subnet of this net, e.g. fd00:cd:7::/64. */
  subnet6: string;
  /** Runs argv inside namespace ns (no shell). Never throws for a non-zero exit: look at `code`. */
  exec(ns: string, argv: string[], opts?: { input?: string; timeoutMs?: number }): Promise<ExecResult>;
  /** Spawns argv inside namespace ns; the child is killed (by pid) on destroy if still running. */
  spawnIn(ns: string, argv: string[], opts?: SpawnOptions): ChildProcess;
  destroy(): Promise<void>;
}

export interface CreateTestNetOptions {
  hosts: number;
  outside?: boolean;
  /** Namespace name prefix; default 'cdt'. Keep it short (a few letters). */
  prefix?: string;
}

const PROBE =
  "const s=require('net').connect({host:process.argv[1],port:1});" +
  "s.setTimeout(1000,()=>process.exit(1));" +
  "s.on('connect',()=>process.exit(0));" +
  "s.on('error',(e)=>process.exit(e.code==='ECONNREFUSED'?0:1));";

const live = new Set<() => void>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const cleanup of [...live]) {
      try {
        cleanup();
      } catch {
        /* best effort at exit */
      }
    }
  });
}

function run(argv: string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<ExecResult> {
  return new Promise((resolve) => {
    const child = execFile(
      argv[0],
      argv.slice(1),
      { timeout: opts.timeoutMs ?? 30_000, maxBuffer: 64 * 1024 * 1024, encoding: 'utf8' },
      (err, stdout, stderr) => {
        let code = 0;
        if (err) {
          const e = err as NodeJS.ErrnoException & { code?: unknown; killed?: boolean };
          code = typeof e.code === 'number' ? e.code : e.killed ? 124 : 127;
          if (typeof e.code === 'string') stderr = `${stderr}${e.message}`;
        }
        resolve({ stdout: String(stdout), stderr: String(stderr), code });
      },
    );
    // A program that exits without reading stdin makes the write fail with EPIPE: ignore it.
    child.stdin?.on('error', () => undefined);
    if (opts.input !== undefined) child.stdin?.end(opts.input);
    else child.stdin?.end();
  });
}

async function must(argv: string[], input?: string): Promise<string> {
  const r = await run(argv, { input });
  if (r.code !== 0) throw new Error(`${argv.join(' ')} failed (${r.code}): ${r.stderr.trim()}`);
  return r.stdout;
}

function syncQuiet(argv: string[]): void {
  try {
    execFileSync(argv[0], argv.slice(1), { stdio: 'ignore', timeout: 10_000 });
  } catch {
    /* best effort */
  }
}

/** Claims a free net number by creating its bridge namespace. */
async function claim(prefix: string): Promise<number> {
  const start = (process.pid * 37 + Math.floor(Math.random() * 250)) % 250;
  for (let k = 0; k < 250; k++) {
    const n = ((start + k) % 250) + 1;
    const r = await run(['ip', 'netns', 'add', `${prefix}${n}-br`]);
    if (r.code === 0) return n;
  }
  throw new Error('createTestNet: no free test net number (stale namespaces? see `ip netns list`)');
}

export async function createTestNet(opts: CreateTestNetOptions): Promise<TestNet> {
  if (!Number.isInteger(opts.hosts) || opts.hosts < 1 || opts.hosts > 50) throw new Error('createTestNet: hosts must be 1..50');
  const prefix = opts.prefix ?? 'cdt';
  if (!/^[a-z][a-z0-9]{0,7}$/.test(prefix)) throw new Error('createTestNet: prefix must be 1-8 lowercase letters/digits');
  installExitHook();

  const n = await claim(prefix);
  const bridgeNs = `${prefix}${n}-br`;
  const subnet4 = `10.213.${n}.0/24`;
  const subnet6 = `fd00:cd:${n.toString(16)}::/64`;
  const namespaces: string[] = [bridgeNs];
  const children = new Set<ChildProcess>();
  let routes4 = false;
  let routes6 = false;
  let destroyed = false;

  /** Pids of processes inside our namespaces (ours: we made the namespaces). */
  const pidsIn = (ns: string): number[] => {
    try {
      const out = execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8', timeout: 5_000 });
      return out.split(/\s+/).filter(Boolean).map(Number).filter((p) => Number.isInteger(p) && p > 1);
    } catch {
      return [];
    }
  };

  const cleanupSync = (): void => {
    for (const c of children) {
      if (c.pid !== undefined && c.exitCode === null && c.signalCode === null) {
        try {
          process.kill(c.pid, 'SIGKILL');
        } catch {
          /* already gone */
        }
      }
    }
    for (const ns of namespaces) {
      for (const pid of pidsIn(ns)) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* already gone */
        }
      }
    }
    for (const ns of [...namespaces].reverse()) syncQuiet(['ip', 'netns', 'delete', ns]);
    if (routes4) syncQuiet(['ip', 'route', 'del', 'blackhole', subnet4]);
    if (routes6) syncQuiet(['ip', '-6', 'route', 'del', 'blackhole', subnet6]);
  };
  live.add(cleanupSync);

  const destroy = async (): Promise<void> => {
    if (destroyed) return;
    destroyed = true;
    live.delete(cleanupSync);
    // Kill children first and give them a moment to go, so `ip netns delete` does not leave busy mounts.
    const waits: Promise<void>[] = [];
    for (const c of children) {
      if (c.pid !== undefined && c.exitCode === null && c.signalCode === null) {
        waits.push(new Promise((r) => { c.once('exit', () => r()); setTimeout(r, 2_000).unref(); }));
      }
    }
    cleanupSync();
    await Promise.all(waits);
  };

  const exec = (ns: string, argv: string[], o?: { input?: string; timeoutMs?: number }): Promise<ExecResult> =>
    run(['ip', 'netns', 'exec', ns, ...argv], o);

  const spawnIn = (ns: string, argv: string[], o?: SpawnOptions): ChildProcess => {
    const child = spawn('ip', ['netns', 'exec', ns, ...argv], o ?? {});
    children.add(child);
    child.once('exit', () => children.delete(child));
    return child;
  };

  try {
    // Root namespace: blackhole routes only (replace: a crashed run may have left the same route).
    await must(['ip', 'route', 'replace', 'blackhole', subnet4]);
    routes4 = true;
    await must(['ip', '-6', 'route', 'replace', 'blackhole', subnet6]);
    routes6 = true;

    await must(['ip', '-n', bridgeNs, 'link', 'set', 'lo', 'up']);
    await must(['ip', '-n', bridgeNs, 'link', 'add', 'br0', 'type', 'bridge']);
    await must(['ip', '-n', bridgeNs, 'link', 'set', 'br0', 'up']);

    const mk = async (name: string, suffix: string, hostPart: number, vethName: string): Promise<TestHost> => {
      const ns = `${prefix}${n}-${suffix}`;
      await must(['ip', 'netns', 'add', ns]);
      namespaces.push(ns);
      const ipv4 = `10.213.${n}.${hostPart}`;
      const ipv6 = `fd00:cd:${n.toString(16)}::${hostPart}`;
      // Addresses must be usable at once: no duplicate address detection in the test net.
      await must(['ip', 'netns', 'exec', ns, 'sysctl', '-q', '-w', 'net.ipv6.conf.all.accept_dad=0']);
      await must(['ip', 'netns', 'exec', ns, 'sysctl', '-q', '-w', 'net.ipv6.conf.default.accept_dad=0']);
      await must(['ip', '-n', ns, 'link', 'set', 'lo', 'up']);
      await must(['ip', '-n', bridgeNs, 'link', 'add', vethName, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
      await must(['ip', '-n', bridgeNs, 'link', 'set', vethName, 'master', 'br0']);
      await must(['ip', '-n', bridgeNs, 'link', 'set', vethName, 'up']);
      await must(['ip', '-n', ns, 'addr', 'add', `${ipv4}/24`, 'dev', 'eth0']);
      await must(['ip', '-n', ns, 'addr', 'add', `${ipv6}/64`, 'dev', 'eth0', 'nodad']);
      await must(['ip', '-n', ns, 'link', 'set', 'eth0', 'up']);
      return { name, ns, ipv4, ipv6 };
    };

    const hosts: TestHost[] = [];
    for (let i = 1; i <= opts.hosts; i++) hosts.push(await mk(`host${i}`, `h${i}`, 10 + i, `v${i}`));
    const outside = opts.outside ? await mk('outside', 'out', 200, 'vout') : undefined;

    // Wait (bounded) until every address answers from the first namespace, so tests start on a working net.
    const all = [...hosts, ...(outside ? [outside] : [])];
    const from = all[0];
    for (const h of all.slice(1)) {
      for (const addr of [h.ipv4, h.ipv6]) {
        let ok = false;
        for (let k = 0; k < 50 && !ok; k++) {
          // No ping on these machines: a TCP connect to port 1 answered by RST (ECONNREFUSED) proves the path.
          const r = await exec(from.ns, [process.execPath, '-e', PROBE, addr], { timeoutMs: 3_000 });
          ok = r.code === 0;
          if (!ok) await new Promise((r2) => setTimeout(r2, 100));
        }
        if (!ok) throw new Error(`createTestNet: ${addr} unreachable from ${from.ns}`);
      }
    }

    return { hosts, outside, bridgeNs, subnet4, subnet6, exec, spawnIn, destroy };
  } catch (e) {
    await destroy();
    throw e;
  }
}
