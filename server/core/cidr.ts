/**
 * Address arithmetic for the firewall policy (pure): canonical IPv4/IPv6 networks, RFC 5952 text, masks
 * and a stable sort order. Canonical forms are what make a policy's hash and a rendered rule set stable.
 */
import { isIP } from 'node:net';

/** Parses an IPv4/IPv6 address or CIDR into its canonical network form; null when it is not one. */
export function canonicalCidr(input: string): { family: 4 | 6; cidr: string; prefix: number } | null {
  const s = input.trim();
  const slash = s.indexOf('/');
  const addr = slash < 0 ? s : s.slice(0, slash);
  const fam = isIP(addr);
  if (fam === 0) return null;
  const max = fam === 4 ? 32 : 128;
  let prefix = max;
  if (slash >= 0) {
    const p = s.slice(slash + 1);
    if (!/^\d{1,3}$/.test(p)) return null;
    prefix = Number(p);
    if (prefix > max) return null;
  }
  if (fam === 4) {
    const n = addr.split('.').reduce((acc, o) => (acc << 8n) | BigInt(Number(o)), 0n);
    const net = maskBig(n, prefix, 32);
    const text = [24n, 16n, 8n, 0n].map((sh) => String((net >> sh) & 255n)).join('.');
    return { family: 4, prefix, cidr: prefix === 32 ? text : `${text}/${prefix}` };
  }
  const net = maskBig(parseV6(addr), prefix, 128);
  const text = formatV6(net);
  return { family: 6, prefix, cidr: prefix === 128 ? text : `${text}/${prefix}` };
}

export function maskBig(n: bigint, prefix: number, bits: number): bigint {
  if (prefix === 0) return 0n;
  const all = (1n << BigInt(bits)) - 1n;
  const mask = (all >> BigInt(bits - prefix)) << BigInt(bits - prefix);
  return n & mask;
}

export function parseV6(addr: string): bigint {
  let a = addr.toLowerCase();
  // An embedded IPv4 tail (::ffff:1.2.3.4) becomes two hex groups.
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(a);
  if (v4) {
    const [, o1, o2, o3, o4] = v4.map(Number);
    a = a.slice(0, v4.index) + ((o1 << 8) | o2).toString(16) + ':' + ((o3 << 8) | o4).toString(16);
  }
  const [head, tail] = a.includes('::') ? a.split('::') : [a, undefined];
  const h = head ? head.split(':') : [];
  const t = tail !== undefined && tail !== '' ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array(8 - h.length - t.length).fill('0'), ...t];
  return groups.reduce((acc, g) => (acc << 16n) | BigInt(parseInt(g, 16)), 0n);
}

/** RFC 5952 text: lower case, longest run (>= 2) of zero groups compressed. */
function formatV6(n: bigint): string {
  const g: number[] = [];
  for (let i = 7; i >= 0; i--) g.push(Number((n >> BigInt(i * 16)) & 0xffffn));
  let best = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) { best = i; bestLen = j - i; }
    i = j;
  }
  const hex = g.map((x) => x.toString(16));
  if (best < 0) return hex.join(':');
  return `${hex.slice(0, best).join(':')}::${hex.slice(best + bestLen).join(':')}`;
}

export function compareCidr(a: string, b: string): number {
  const pa = canonicalKey(a);
  const pb = canonicalKey(b);
  return pa < pb ? -1 : pa > pb ? 1 : 0;
}

function canonicalKey(c: string): string {
  const [addr, prefix = ''] = c.split('/');
  const n = isIP(addr) === 4 ? addr.split('.').reduce((acc, o) => (acc << 8n) | BigInt(Number(o)), 0n) : parseV6(addr);
  return `${n.toString(16).padStart(32, '0')}/${prefix.padStart(3, '0')}`;
}

export function v4Big(a: string): bigint {
  return a.split('.').reduce((acc, o) => (acc << 8n) | BigInt(Number(o)), 0n);
}
