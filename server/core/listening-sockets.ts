/**
 * "Is this port free?" decided from the kernel's socket table, never by binding the port.
 *
 * Why not bind: a test bind() + listen() on a plan port is a real listening socket. Between "plan
 * accepted" and the guard step it completes the TCP handshake of any outside SYN — the launch window
 * described in docs/FIREWALL.md ("Why no port is ever reachable before the guard"). Reading
 * /proc/net/tcp{,6} opens no socket at all, so the preflight cannot expose a port, whatever order the
 * steps run in. This module is the pure half: it parses the table text and answers conflicts; the reader
 * (server/cluster/listening-sockets.ts) only reads the two files.
 */
import { canonicalCidr } from './cidr.js';

export interface ListeningSocket {
  /** Canonical address text (IPv4 dotted, IPv6 RFC 5952); IPv4-mapped IPv6 addresses become IPv4. */
  address: string;
  port: number;
  family: 4 | 6;
}

/** TCP_LISTEN in the kernel's tcp_states.h, as /proc/net/tcp prints it ("st" column, hex). */
const TCP_LISTEN = '0A';

/**
 * Parses /proc/net/tcp (family 4) or /proc/net/tcp6 (family 6): every LISTEN entry. The kernel prints each
 * 32-bit word of the address in host byte order; `littleEndian` says whether to reverse each word's bytes
 * (true on x86 and arm64: `os.endianness() === 'LE'`).
 */
export function parseProcNetTcp(text: string, family: 4 | 6, littleEndian = true): ListeningSocket[] {
  const out: ListeningSocket[] = [];
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 4 || f[3].toUpperCase() !== TCP_LISTEN) continue;
    const [hexAddr, hexPort] = f[1].split(':');
    if (!hexAddr || !hexPort) continue;
    const bytes = hexWordsToBytes(hexAddr, littleEndian);
    if (!bytes || bytes.length !== (family === 4 ? 4 : 16)) continue;
    const address = family === 4 ? bytes.join('.') : v6Text(bytes);
    const port = parseInt(hexPort, 16);
    if (!Number.isInteger(port)) continue;
    const canon = canonicalAddress(address);
    if (!canon) continue;
    out.push({ address: canon.address, port, family: canon.family });
  }
  return out;
}

function hexWordsToBytes(hex: string, littleEndian: boolean): number[] | null {
  if (!/^[0-9A-Fa-f]+$/.test(hex) || hex.length % 8 !== 0) return null;
  const bytes: number[] = [];
  for (let w = 0; w < hex.length; w += 8) {
    const word = [0, 2, 4, 6].map((i) => parseInt(hex.slice(w + i, w + i + 2), 16));
    bytes.push(...(littleEndian ? word.reverse() : word));
  }
  return bytes;
}

function v6Text(bytes: number[]): string {
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i] << 8) | bytes[i + 1]).toString(16));
  return groups.join(':');
}

/** Canonical form of an address; an IPv4-mapped IPv6 address (::ffff:a.b.c.d) is its IPv4 address. */
export function canonicalAddress(address: string): { address: string; family: 4 | 6 } | null {
  const c = canonicalCidr(address.replace(/^\[|\]$/g, ''));
  if (!c || c.prefix !== (c.family === 4 ? 32 : 128)) return null;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(c.cidr) ?? /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(c.cidr);
  if (mapped && c.family === 6) {
    if (mapped.length === 2) return { address: mapped[1], family: 4 };
    const hi = parseInt(mapped[1], 16);
    const lo = parseInt(mapped[2], 16);
    return { address: [hi >> 8, hi & 255, lo >> 8, lo & 255].join('.'), family: 4 };
  }
  return { address: c.cidr, family: c.family };
}

const WILDCARD = new Set(['0.0.0.0', '::']);

/**
 * The listener that keeps `address:port` from being bound, or undefined when none does. A wildcard on
 * either side conflicts with every address of its family; `::` may be dual-stack (IPV6_V6ONLY is not in
 * the table), so it conflicts with IPv4 addresses too — the safe answer.
 */
export function conflictingListener(listeners: readonly ListeningSocket[], address: string, port: number): ListeningSocket | undefined {
  const want = canonicalAddress(address);
  if (!want) return undefined;
  return listeners.find((l) => {
    if (l.port !== port) return false;
    if (l.address === want.address) return true;
    if (l.address === '::') return true;
    if (want.address === '::') return true;
    if (l.address === '0.0.0.0') return want.family === 4;
    if (want.address === '0.0.0.0') return l.family === 4;
    return false;
  });
}

/** Whether `address` is a wildcard (every address of its family). */
export function isWildcard(address: string): boolean {
  const c = canonicalAddress(address);
  return !!c && WILDCARD.has(c.address);
}

/** Why address:port cannot be used on a host whose interfaces carry `local`, or undefined when it can. */
export function portProblem(listeners: readonly ListeningSocket[], local: readonly string[], address: string, port: number): string | undefined {
  const want = canonicalAddress(address);
  if (!want) return `${address} is not an IP address`;
  // All of 127.0.0.0/8 is this machine's (the lo route), though interfaces list only 127.0.0.1.
  const loopback = (want.family === 4 && want.address.startsWith('127.')) || want.address === '::1';
  if (!isWildcard(address) && !loopback && !local.some((a) => canonicalAddress(a)?.address === want.address)) {
    return `${want.address} is not an address of this machine`;
  }
  const l = conflictingListener(listeners, address, port);
  return l ? `in use (a socket listens on ${l.family === 6 ? `[${l.address}]` : l.address}:${l.port})` : undefined;
}
