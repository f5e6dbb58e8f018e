/**
 * A TCP connect scan (no raw sockets, no root): what `dispatch firewall verify` uses to see, from where it
 * runs, which ports answer. open = connected; closed = refused (RST: reachable, nothing listening or a
 * reject rule); filtered = no answer within the timeout (a drop) or unreachable.
 */
import net from 'node:net';

export type PortState = 'open' | 'closed' | 'filtered';

export interface ScanTarget {
  host: string;
  port: number;
}

export interface ScanResult extends ScanTarget {
  state: PortState;
}

export interface ScanOptions {
  /** Per connection attempt; default 1500 ms. */
  timeoutMs?: number;
  /** Attempts in flight at once; default 64. */
  concurrency?: number;
}

export function probe(target: ScanTarget, timeoutMs = 1500): Promise<PortState> {
  return new Promise((resolve) => {
    const s = net.connect({ host: target.host, port: target.port });
    let done = false;
    const finish = (st: PortState): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.destroy();
      resolve(st);
    };
    const timer = setTimeout(() => finish('filtered'), timeoutMs);
    s.once('connect', () => finish('open'));
    s.once('error', (e: NodeJS.ErrnoException) => finish(e.code === 'ECONNREFUSED' ? 'closed' : 'filtered'));
  });
}

export async function tcpConnectScan(targets: readonly ScanTarget[], opts: ScanOptions = {}): Promise<ScanResult[]> {
  const results: ScanResult[] = new Array(targets.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < targets.length) {
      const i = next++;
      results[i] = { ...targets[i], state: await probe(targets[i], opts.timeoutMs) };
    }
  };
  await Promise.all(Array.from({ length: Math.min(opts.concurrency ?? 64, targets.length) }, worker));
  return results;
}
