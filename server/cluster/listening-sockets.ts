/**
 * The edge half of "is this port free?": reads the kernel's TCP socket table and this machine's interface
 * addresses; server/core/listening-sockets.ts decides. Opens no socket: the preflight can never make a
 * plan port reachable (docs/FIREWALL.md, "Why no port is ever reachable before the guard").
 *
 * /proc/net is /proc/self/net: the table of the network namespace this daemon runs in, the same one its
 * processes will bind in.
 */
import { readFile } from 'node:fs/promises';
import { endianness, networkInterfaces } from 'node:os';
import { parseProcNetTcp, portProblem, type ListeningSocket } from '../core/listening-sockets.js';

/** Every TCP socket in LISTEN state in this network namespace (IPv6 table optional: IPv6 may be off). */
export async function listeningSockets(): Promise<ListeningSocket[]> {
  const le = endianness() === 'LE';
  const v4 = await readFile('/proc/net/tcp', 'utf8');
  const v6 = await readFile('/proc/net/tcp6', 'utf8').catch(() => '');
  return [...parseProcNetTcp(v4, 4, le), ...parseProcNetTcp(v6, 6, le)];
}

/** Every address configured on this machine's interfaces (this namespace). */
export function localAddresses(): string[] {
  return Object.values(networkInterfaces()).flatMap((list) => (list ?? []).map((i) => i.address.replace(/%.*$/, '')));
}

/** Why address:port cannot be bound here, or undefined when it can — without binding it. */
export async function portBusy(address: string, port: number): Promise<string | undefined> {
  return portProblem(await listeningSockets(), localAddresses(), address, port);
}
