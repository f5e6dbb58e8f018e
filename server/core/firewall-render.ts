/**
 * Rule text for the guard policy, for our own backends (nft, iptables-restore, ipset restore). Pure: the
 * backends feed this text to `nft -f -` / `iptables-restore --noflush` / `ipset restore` on stdin.
 * Exports for other tools (ufw, firewalld, cloud firewalls) live in firewall-export.ts.
 *
 * Facts that shape the text (docs/FIREWALL.md, measured on nft 1.0.6):
 * - the whole table is replaced in ONE transaction (`table X {}` + `delete table X` + definition): a
 *   delete-then-create in two steps let 2,723 of 3,907 flood connections through, one transaction let 0;
 * - `elements = { }` is a syntax error, so empty sets are declared without an elements line;
 * - nft resolves host names at load time, so only canonical addresses reach the text (policy refuses names);
 * - drops, not rejects: a drop shows as "filtered" in a scan, a reject would look like "closed" (nothing
 *   listening), which hides whether the guard or the absence of a process answered;
 * - the guard's port rules come before any established/related accept in our chain, and our chain runs at
 *   a priority before the usual filter chains, so a host removed from the cluster loses its open
 *   connections too.
 */
import type { AddressSet, GuardPolicy, GuardPort } from './firewall-policy.js';
import { policyHash } from './firewall-policy.js';

export const NFT_TABLE = 'dispatcher_guard';
export const NFT_FAMILY = 'inet';
/** Before the common `filter` (0) chains of other tables, after conntrack (-200) so ct state works. */
export const NFT_PRIORITY = 'filter - 10';
export const IPT_CHAIN = 'DISPATCHER-GUARD';
export const IPT_CHAIN_OUT = 'DISPATCHER-GUARD-OUT';
/** ipset names are limited to 31 characters. */
export const IPSET_PREFIX = 'dguard';

/** Outbound allowlist (deny mode + outboundAllow), after the Cumulocity seed's outgoing table. */
export const OUTBOUND_TCP = [25, 80, 443, 53] as const;
export const OUTBOUND_UDP = [53, 123] as const;

type Kind = 'cluster' | 'operator' | 'client';
const KINDS: Kind[] = ['cluster', 'operator', 'client'];

function portList(ports: readonly number[]): string {
  return ports.length === 1 ? String(ports[0]) : `{ ${ports.join(', ')} }`;
}

function label(p: GuardPort): string {
  return p.names.join(' ');
}

function sanitizeComment(s: string): string {
  // nft comments are quoted strings; keep them to a safe alphabet and within nft's 128-byte limit.
  return s.replace(/[^A-Za-z0-9 ,._:/*-]/g, '_').slice(0, 120);
}

function setFor(p: GuardPort): Kind | null {
  return p.exposure === 'public' ? 'client' : p.exposure === 'operator' ? 'operator' : null;
}

function groups(policy: GuardPolicy): { exposure: GuardPort['exposure']; ports: GuardPort[] }[] {
  const out: { exposure: GuardPort['exposure']; ports: GuardPort[] }[] = [];
  for (const exposure of ['cluster', 'operator', 'public'] as const) {
    const ports = policy.ports.filter((p) => p.exposure === exposure);
    if (ports.length) out.push({ exposure, ports });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------- nft

function nftSet(name: string, type: 'ipv4_addr' | 'ipv6_addr', elements: string[]): string[] {
  const lines = [`\tset ${name} {`, `\t\ttype ${type}`, '\t\tflags interval'];
  // auto-merge: overlapping entries (a host and its /24) would otherwise be a load error.
  lines.push('\t\tauto-merge');
  if (elements.length) lines.push(`\t\telements = { ${elements.join(', ')} }`);
  lines.push('\t}');
  return lines;
}

/** nft accept rules for a group of ports of one exposure. */
function nftAccepts(policy: GuardPolicy, ports: number[], kind: Kind | null): string[] {
  const pl = portList(ports);
  const lines = [`\t\ttcp dport ${pl} ip saddr @cluster_v4 accept`, `\t\ttcp dport ${pl} ip6 saddr @cluster_v6 accept`];
  if (kind) {
    const set: AddressSet = policy.sources[kind];
    if (set.any4) lines.push(`\t\tmeta nfproto ipv4 tcp dport ${pl} accept`);
    else lines.push(`\t\ttcp dport ${pl} ip saddr @${kind}_v4 accept`);
    if (set.any6) lines.push(`\t\tmeta nfproto ipv6 tcp dport ${pl} accept`);
    else lines.push(`\t\ttcp dport ${pl} ip6 saddr @${kind}_v6 accept`);
  }
  return lines;
}

/**
 * The full nft script for our table: one transaction that creates-if-missing, deletes and redefines it.
 * `nft -f -` applies it atomically: either the new table is in place, or the old one is untouched.
 */
export function renderNft(policy: GuardPolicy): string {
  const hash = policyHash(policy);
  const out: string[] = [
    `# cluster-dispatcher guard for cluster "${policy.cluster}", host ${policy.host}, mode ${policy.mode}`,
    `# policy ${hash}. Generated: do not edit; the dispatcher re-applies it when it drifts.`,
    `table ${NFT_FAMILY} ${NFT_TABLE} {}`,
    `delete table ${NFT_FAMILY} ${NFT_TABLE}`,
    `table ${NFT_FAMILY} ${NFT_TABLE} {`,
    `\tcomment "cluster-dispatcher ${sanitizeComment(policy.cluster)} ${sanitizeComment(policy.host)} policy ${hash}"`,
  ];
  for (const kind of KINDS) {
    const s = policy.sources[kind];
    out.push(...nftSet(`${kind}_v4`, 'ipv4_addr', s.v4));
    out.push(...nftSet(`${kind}_v6`, 'ipv6_addr', s.v6));
  }
  const deny = policy.mode === 'deny';
  out.push('', '\tchain input {', `\t\ttype filter hook input priority ${NFT_PRIORITY}; policy ${deny ? 'drop' : 'accept'};`);
  out.push('\t\tiif "lo" accept');
  // Our ports first, before any established accept: a revoked source loses its open connections too.
  for (const g of groups(policy)) {
    const ports = g.ports.map((p) => p.port);
    out.push(`\t\t# ${g.exposure}: ${sanitizeComment(g.ports.map(label).join(', '))}`);
    out.push(...nftAccepts(policy, ports, setFor(g.ports[0])));
    out.push(`\t\ttcp dport ${portList(ports)} counter drop comment "guard ${g.exposure}"`);
  }
  if (deny) {
    // ICMP before the invalid-state drop: neighbour discovery must always pass or IPv6 dies.
    out.push('\t\tmeta l4proto icmp accept');
    out.push('\t\tmeta l4proto ipv6-icmp accept');
    out.push('\t\tct state invalid counter drop');
    out.push('\t\tct state established,related accept');
    out.push(`\t\ttcp dport ${policy.sshPort} accept comment "ssh is never closed by us"`);
    out.push('\t\tip saddr @cluster_v4 accept comment "cluster hosts reach each other"');
    out.push('\t\tip6 saddr @cluster_v6 accept');
    out.push('\t\tcounter comment "default deny"');
  }
  out.push('\t}');
  if (deny && policy.outboundAllow) {
    out.push('', '\tchain output {', `\t\ttype filter hook output priority ${NFT_PRIORITY}; policy drop;`);
    out.push('\t\toif "lo" accept');
    out.push('\t\tmeta l4proto icmp accept');
    out.push('\t\tmeta l4proto ipv6-icmp accept');
    out.push('\t\tct state established,related accept');
    out.push('\t\tip daddr @cluster_v4 accept');
    out.push('\t\tip6 daddr @cluster_v6 accept');
    out.push(`\t\ttcp dport ${portList([...OUTBOUND_TCP].sort((a, b) => a - b))} accept comment "smtp http https dns"`);
    out.push(`\t\tudp dport ${portList([...OUTBOUND_UDP])} accept comment "dns ntp"`);
    out.push('\t\tcounter comment "outbound default deny"');
    out.push('\t}');
  }
  out.push('}', '');
  return out.join('\n');
}

/** Removes our table (and only it) in one transaction; harmless when it does not exist. */
export function renderNftRemove(): string {
  return `table ${NFT_FAMILY} ${NFT_TABLE} {}\ndelete table ${NFT_FAMILY} ${NFT_TABLE}\n`;
}

// ------------------------------------------------------------------------------------ ipset / iptables

export type IpFamily = 4 | 6;

export function ipsetName(kind: Kind, family: IpFamily, tmp = false): string {
  return `${IPSET_PREFIX}-${kind}${family}${tmp ? '-new' : ''}`;
}

/**
 * `ipset restore` text: every set is filled under a temporary name and swapped in, so a set is never seen
 * half-filled. Sets whose source is "any" (0.0.0.0/0: hash:net refuses /0) are still created, empty, so the
 * set of names stays fixed; the rules then match without a set.
 */
export function renderIpset(policy: GuardPolicy): string {
  const out: string[] = [];
  for (const kind of KINDS) {
    for (const family of [4, 6] as const) {
      const s = policy.sources[kind];
      const name = ipsetName(kind, family);
      const tmp = ipsetName(kind, family, true);
      const fam = family === 4 ? 'inet' : 'inet6';
      out.push(`create ${name} hash:net family ${fam} -exist`);
      out.push(`create ${tmp} hash:net family ${fam} -exist`);
      out.push(`flush ${tmp}`);
      for (const a of family === 4 ? s.v4 : s.v6) out.push(`add ${tmp} ${a} -exist`);
      out.push(`swap ${tmp} ${name}`);
      out.push(`destroy ${tmp}`);
    }
  }
  return out.join('\n') + '\n';
}

export function ipsetNames(): string[] {
  return KINDS.flatMap((k) => [ipsetName(k, 4), ipsetName(k, 6)]);
}

function chunk<T>(a: readonly T[], n: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < a.length; i += n) out.push(a.slice(i, i + n));
  return out;
}

function iptComment(s: string): string {
  return `-m comment --comment "${sanitizeComment(s)}"`;
}

export interface IptablesRenderOptions {
  /** Add the jump from INPUT — the backend adds it only when it is missing. Default true. */
  jumpInput?: boolean;
  /** Add the jump from OUTPUT (outbound allowlist only). Default true. */
  jumpOutput?: boolean;
}

/**
 * `iptables-restore --noflush` (or ip6tables-restore) text for our chain(s). Only our chains are flushed
 * and refilled, in one COMMIT; the rest of the filter table is left alone.
 */
export function renderIptables(policy: GuardPolicy, family: IpFamily, opts: IptablesRenderOptions = {}): string {
  const deny = policy.mode === 'deny';
  const out: string[] = [`# cluster-dispatcher guard (${family === 4 ? 'iptables' : 'ip6tables'}), cluster ${policy.cluster}, host ${policy.host}, policy ${policyHash(policy)}`, '*filter'];
  out.push(`:${IPT_CHAIN} - [0:0]`);
  const outbound = deny && policy.outboundAllow;
  if (outbound) out.push(`:${IPT_CHAIN_OUT} - [0:0]`);
  out.push(`-F ${IPT_CHAIN}`);
  if (outbound) out.push(`-F ${IPT_CHAIN_OUT}`);
  if (opts.jumpInput ?? true) out.push(`-I INPUT 1 -j ${IPT_CHAIN}`);
  if (outbound && (opts.jumpOutput ?? true)) out.push(`-I OUTPUT 1 -j ${IPT_CHAIN_OUT}`);
  const A = `-A ${IPT_CHAIN}`;
  // A no-op rule that carries the policy hash, so a reader can tell which policy is loaded.
  out.push(`${A} ${iptComment(`cluster-dispatcher ${policy.cluster} ${policy.host} policy ${policyHash(policy)}`)}`);
  out.push(`${A} -i lo -j ACCEPT`);
  for (const g of groups(policy)) {
    const kind = setFor(g.ports[0]);
    // multiport takes at most 15 ports per rule.
    for (const part of chunk(g.ports.map((p) => p.port), 15)) {
      const dp = part.length === 1 ? `--dport ${part[0]}` : `-m multiport --dports ${part.join(',')}`;
      out.push(`${A} -p tcp ${dp} -m set --match-set ${ipsetName('cluster', family)} src -j ACCEPT`);
      if (kind) {
        const s = policy.sources[kind];
        if (family === 4 ? s.any4 : s.any6) out.push(`${A} -p tcp ${dp} -j ACCEPT`);
        else out.push(`${A} -p tcp ${dp} -m set --match-set ${ipsetName(kind, family)} src -j ACCEPT`);
      }
      out.push(`${A} -p tcp ${dp} ${iptComment(`guard ${g.exposure}`)} -j DROP`);
    }
  }
  if (deny) {
    out.push(`${A} -p ${family === 4 ? 'icmp' : 'ipv6-icmp'} -j ACCEPT`);
    out.push(`${A} -m conntrack --ctstate INVALID -j DROP`);
    out.push(`${A} -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT`);
    out.push(`${A} -p tcp --dport ${policy.sshPort} ${iptComment('ssh is never closed by us')} -j ACCEPT`);
    out.push(`${A} -m set --match-set ${ipsetName('cluster', family)} src -j ACCEPT`);
    out.push(`${A} ${iptComment('default deny')} -j DROP`);
  } else {
    out.push(`${A} -j RETURN`);
  }
  if (outbound) {
    const O = `-A ${IPT_CHAIN_OUT}`;
    out.push(`${O} -o lo -j ACCEPT`);
    out.push(`${O} -p ${family === 4 ? 'icmp' : 'ipv6-icmp'} -j ACCEPT`);
    out.push(`${O} -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT`);
    out.push(`${O} -m set --match-set ${ipsetName('cluster', family)} dst -j ACCEPT`);
    out.push(`${O} -p tcp -m multiport --dports ${[...OUTBOUND_TCP].sort((a, b) => a - b).join(',')} -j ACCEPT`);
    out.push(`${O} -p udp -m multiport --dports ${OUTBOUND_UDP.join(',')} -j ACCEPT`);
    out.push(`${O} ${iptComment('outbound default deny')} -j DROP`);
  }
  out.push('COMMIT', '');
  return out.join('\n');
}
