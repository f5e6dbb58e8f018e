/**
 * Exports of the guard policy for people who run other firewall tools (the HeroCtl seed's renderings):
 * nft and iptables scripts, ufw and firewalld commands, and cloud firewalls (AWS security group ingress,
 * Hetzner Cloud firewall, DigitalOcean cloud firewall). Pure: text in, text out.
 *
 * Host firewalls (nft, iptables, ufw, firewalld) are rendered per host, because each host has its own
 * ports. Cloud firewalls are usually one rule set attached to every node, so without a host they get the
 * plan-wide union of ports (exposures are plan-wide, so the union is consistent).
 *
 * SSH is never closed by us: exports whose model is default-deny (firewalld zones, cloud firewalls, ufw
 * with deny mode) keep the SSH port open from anywhere.
 */
import type { Plan } from '../../api/plan.js';
import { DispatcherError } from '../../api/errors.js';
import { guardPoliciesFromPlan, guardPolicyFromPlan, planWidePolicy, type AddressSet, type GuardPolicy, type GuardPort } from './firewall-policy.js';
import { IPT_CHAIN, renderIpset, renderIptables, renderNft } from './firewall-render.js';

export const EXPORT_FORMATS = ['nft', 'iptables', 'ufw', 'firewalld', 'aws', 'hetzner', 'digitalocean'] as const;
export type ExportFormat = (typeof EXPORT_FORMATS)[number];

export interface ExportOptions {
  /** Only this dispatcher's host. */
  host?: string;
  /** AWS: the security group to add the rules to (default: a placeholder that the AWS CLI refuses). */
  awsGroupId?: string;
}

function cidr4(a: string): string {
  return a.includes('/') ? a : `${a}/32`;
}
function cidr6(a: string): string {
  return a.includes('/') ? a : `${a}/128`;
}

/** Address lists with prefixes (cloud APIs want CIDRs), including the "any" networks. */
function cidrs(set: AddressSet): { v4: string[]; v6: string[] } {
  return { v4: set.any4 ? ['0.0.0.0/0'] : set.v4.map(cidr4), v6: set.any6 ? ['::/0'] : set.v6.map(cidr6) };
}

function merge(...sets: { v4: string[]; v6: string[] }[]): { v4: string[]; v6: string[] } {
  const v4 = [...new Set(sets.flatMap((s) => s.v4))];
  const v6 = [...new Set(sets.flatMap((s) => s.v6))];
  // "Any" swallows everything else of its family.
  return { v4: v4.includes('0.0.0.0/0') ? ['0.0.0.0/0'] : v4, v6: v6.includes('::/0') ? ['::/0'] : v6 };
}

/** Who may reach a port: the cluster, plus clients (public) or operators (operator). */
function sourcesFor(policy: GuardPolicy, port: GuardPort): { v4: string[]; v6: string[] } {
  const cluster = cidrs(policy.sources.cluster);
  if (port.exposure === 'public') return merge(cluster, cidrs(policy.sources.client));
  if (port.exposure === 'operator') return merge(cluster, cidrs(policy.sources.operator));
  return cluster;
}

/** Bare address for ufw/firewalld/iptables (they accept both forms; keep host addresses short). */
function plain(list: { v4: string[]; v6: string[] }): string[] {
  return [...list.v4, ...list.v6].map((a) => a.replace(/\/(32|128)$/, ''));
}

function describe(port: GuardPort): string {
  return `${port.exposure} ${port.names.join(' ')}`.replace(/[^A-Za-z0-9 ._:/()#,@+=-]/g, '_').slice(0, 200);
}

function sq(s: string): string {
  // Shell single-quoting for the commands we print (the user runs them; we never do).
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

function hostHeader(plan: Plan, policy: GuardPolicy): string {
  const d = plan.dispatchers.find((x) => x.id === policy.host);
  return `# host ${policy.host}${d ? ` (${d.addresses.join(', ')})` : ''}, cluster ${policy.cluster}, mode ${policy.mode}`;
}

function hostPolicies(plan: Plan, opts: ExportOptions): GuardPolicy[] {
  if (opts.host !== undefined) {
    if (!plan.dispatchers.some((d) => d.id === opts.host)) {
      throw new DispatcherError('bad_request', `no dispatcher "${opts.host}" in the plan`, { details: { hosts: plan.dispatchers.map((d) => d.id) } });
    }
    return [guardPolicyFromPlan(plan, opts.host)];
  }
  return guardPoliciesFromPlan(plan);
}

// ------------------------------------------------------------------------------------- host firewalls

export function exportNft(plan: Plan, opts: ExportOptions = {}): string {
  const pols = hostPolicies(plan, opts);
  const parts = pols.map((p) => `${pols.length > 1 ? `${hostHeader(plan, p)}\n# --- load this part on ${p.host} only: nft -f FILE\n` : '#!/usr/sbin/nft -f\n'}${renderNft(p)}`);
  return parts.join('\n');
}

/** A bash script per host: ipsets, then our chain for IPv4 and IPv6, applied with --noflush. */
export function exportIptables(plan: Plan, opts: ExportOptions = {}): string {
  const pols = hostPolicies(plan, opts);
  const out: string[] = ['#!/bin/bash', '# cluster-dispatcher guard as an iptables + ipset script. Run as root on the host named below.', 'set -euo pipefail'];
  for (const p of pols) {
    out.push('', hostHeader(plan, p));
    if (pols.length > 1) out.push(`# --- run this part on ${p.host} only`);
    // Remove an earlier jump so re-running the script does not stack jumps.
    out.push(`for t in iptables ip6tables; do while "$t" -w 5 -D INPUT -j ${IPT_CHAIN} 2>/dev/null; do :; done; done`);
    out.push("ipset restore <<'EOF'", renderIpset(p).trimEnd(), 'EOF');
    out.push("iptables-restore -w 5 --noflush <<'EOF'", renderIptables(p, 4).trimEnd(), 'EOF');
    out.push("ip6tables-restore -w 5 --noflush <<'EOF'", renderIptables(p, 6).trimEnd(), 'EOF');
  }
  return out.join('\n') + '\n';
}

/** ufw commands (HeroCtl seed). ufw matches the first rule: allows go before the port's deny. */
export function exportUfw(plan: Plan, opts: ExportOptions = {}): string {
  const pols = hostPolicies(plan, opts);
  const out: string[] = ['# cluster-dispatcher guard as ufw commands. Run as root on the host named in each section.'];
  for (const p of pols) {
    out.push('', hostHeader(plan, p));
    if (p.mode === 'deny') {
      out.push('ufw default deny incoming');
      out.push(p.outboundAllow ? 'ufw default deny outgoing' : 'ufw default allow outgoing');
    } else {
      out.push('# guard mode: ufw defaults are left as they are; only our ports are restricted');
    }
    out.push(`ufw allow ${p.sshPort}/tcp comment 'ssh (never closed by the guard)'`);
    for (const port of p.ports) {
      const src = sourcesFor(p, port);
      const any4 = src.v4.includes('0.0.0.0/0');
      const any6 = src.v6.includes('::/0');
      if (any4 && any6) {
        out.push(`ufw allow ${port.port}/tcp comment ${sq(describe(port))}`);
        continue;
      }
      for (const a of plain(src)) out.push(`ufw allow proto tcp from ${a} to any port ${port.port} comment ${sq(describe(port))}`);
      out.push(`ufw deny proto tcp from any to any port ${port.port} comment ${sq(`guard ${port.exposure}`)}`);
    }
    if (p.mode === 'deny') {
      for (const a of plain(cidrs(p.sources.cluster))) out.push(`ufw allow from ${a} comment 'cluster host'`);
      if (p.outboundAllow) {
        for (const a of plain(cidrs(p.sources.cluster))) out.push(`ufw allow out to ${a} comment 'cluster host'`);
        out.push("ufw allow out 25,80,443/tcp comment 'smtp http https'", "ufw allow out 53 comment 'dns'", "ufw allow out 123/udp comment 'ntp'");
      }
    }
    out.push('ufw --force enable', 'ufw status numbered');
  }
  return out.join('\n') + '\n';
}

/**
 * firewalld commands: rich rules in the default zone. firewalld zones reject what they do not allow,
 * so even in guard mode the host ends up default-deny for what the zone does not list (said in a comment).
 */
export function exportFirewalld(plan: Plan, opts: ExportOptions = {}): string {
  const pols = hostPolicies(plan, opts);
  const fc = 'firewall-cmd --permanent --zone=public';
  const out: string[] = ['# cluster-dispatcher guard as firewalld commands (zone "public"). Run as root on the host named in each section.'];
  for (const p of pols) {
    out.push('', hostHeader(plan, p));
    if (p.mode === 'guard') out.push('# note: a firewalld zone rejects what it does not allow; review the zone for your other services');
    out.push(`${fc} --add-port=${p.sshPort}/tcp`);
    for (const port of p.ports) {
      const src = sourcesFor(p, port);
      if (src.v4.includes('0.0.0.0/0') && src.v6.includes('::/0')) {
        out.push(`${fc} --add-port=${port.port}/tcp`);
        continue;
      }
      for (const a of src.v4) out.push(`${fc} --add-rich-rule=${sq(`rule family="ipv4" source address="${a}" port port="${port.port}" protocol="tcp" accept`)}`);
      for (const a of src.v6) out.push(`${fc} --add-rich-rule=${sq(`rule family="ipv6" source address="${a}" port port="${port.port}" protocol="tcp" accept`)}`);
    }
    if (p.mode === 'deny') {
      const c = cidrs(p.sources.cluster);
      for (const a of c.v4) out.push(`${fc} --add-rich-rule=${sq(`rule family="ipv4" source address="${a}" accept`)}`);
      for (const a of c.v6) out.push(`${fc} --add-rich-rule=${sq(`rule family="ipv6" source address="${a}" accept`)}`);
    }
    out.push('firewall-cmd --reload', 'firewall-cmd --zone=public --list-all');
  }
  return out.join('\n') + '\n';
}

// ------------------------------------------------------------------------------------ cloud firewalls

function cloudPolicy(plan: Plan, opts: ExportOptions): GuardPolicy {
  return opts.host !== undefined ? hostPolicies(plan, opts)[0] : planWidePolicy(plan);
}

/** Ports with identical sources, merged (cloud rule lists stay short). */
function cloudRules(policy: GuardPolicy): { ports: number[]; exposure: string; v4: string[]; v6: string[]; description: string }[] {
  const rules: { ports: number[]; exposure: string; v4: string[]; v6: string[]; description: string }[] = [];
  rules.push({ ports: [policy.sshPort], exposure: 'ssh', v4: ['0.0.0.0/0'], v6: ['::/0'], description: 'ssh (never closed by the guard)' });
  for (const port of policy.ports) {
    const src = sourcesFor(policy, port);
    const same = rules.find((r) => r.exposure === port.exposure && r.v4.join() === src.v4.join() && r.v6.join() === src.v6.join());
    if (same) {
      same.ports.push(port.port);
      same.description = `${same.description}, ${port.names.join(' ')}`;
    } else {
      rules.push({ ports: [port.port], exposure: port.exposure, v4: src.v4, v6: src.v6, description: describe(port) });
    }
  }
  return rules;
}

/** AWS: input for `aws ec2 authorize-security-group-ingress --cli-input-json file://FILE`. */
export function exportAws(plan: Plan, opts: ExportOptions = {}): string {
  const policy = cloudPolicy(plan, opts);
  const perms = [];
  for (const r of cloudRules(policy)) {
    for (const port of r.ports) {
      // AWS descriptions allow a limited alphabet and 255 characters.
      const desc = r.description.replace(/[^A-Za-z0-9 ._:/()#,@+=-]/g, ' ').slice(0, 255);
      perms.push({
        IpProtocol: 'tcp',
        FromPort: port,
        ToPort: port,
        IpRanges: r.v4.map((c) => ({ CidrIp: c, Description: desc })),
        Ipv6Ranges: r.v6.map((c) => ({ CidrIpv6: c, Description: desc })),
      });
    }
  }
  return JSON.stringify({ GroupId: opts.awsGroupId ?? 'sg-REPLACE-ME', IpPermissions: perms }, null, 2) + '\n';
}

/** Hetzner Cloud: body for POST /v1/firewalls (its "rules" array also works with `hcloud firewall replace-rules --rules-file`). */
export function exportHetzner(plan: Plan, opts: ExportOptions = {}): string {
  const policy = cloudPolicy(plan, opts);
  const rules = [];
  for (const r of cloudRules(policy)) {
    for (const port of r.ports) {
      rules.push({ direction: 'in', protocol: 'tcp', port: String(port), source_ips: [...r.v4, ...r.v6], description: r.description.slice(0, 255) });
    }
  }
  if (policy.outboundAllow) rules.push(...outboundRulesHetzner(policy));
  const name = `${policy.cluster}${policy.host === '*' ? '' : `-${policy.host}`}-guard`;
  return JSON.stringify({ name, labels: { 'cluster-dispatcher': policy.cluster }, rules }, null, 2) + '\n';
}

function outboundRulesHetzner(policy: GuardPolicy): Record<string, unknown>[] {
  const any = ['0.0.0.0/0', '::/0'];
  const cluster = cidrs(policy.sources.cluster);
  return [
    ...[25, 53, 80, 443].map((p) => ({ direction: 'out', protocol: 'tcp', port: String(p), destination_ips: any, description: 'outbound allowlist' })),
    ...[53, 123].map((p) => ({ direction: 'out', protocol: 'udp', port: String(p), destination_ips: any, description: 'outbound allowlist' })),
    { direction: 'out', protocol: 'tcp', port: 'any', destination_ips: [...cluster.v4, ...cluster.v6], description: 'cluster hosts' },
    { direction: 'out', protocol: 'udp', port: 'any', destination_ips: [...cluster.v4, ...cluster.v6], description: 'cluster hosts' },
    { direction: 'out', protocol: 'icmp', destination_ips: any, description: 'icmp' },
  ];
}

/** DigitalOcean: body for POST /v2/firewalls (droplet_ids / tags to be filled in). */
export function exportDigitalOcean(plan: Plan, opts: ExportOptions = {}): string {
  const policy = cloudPolicy(plan, opts);
  const inbound = cloudRules(policy).map((r) => ({ protocol: 'tcp', ports: r.ports.join(','), sources: { addresses: [...r.v4, ...r.v6] } }));
  // DigitalOcean takes one port or a range per rule: split lists.
  const inbound_rules = inbound.flatMap((r) => r.ports.split(',').map((p) => ({ ...r, ports: p })));
  const any = { addresses: ['0.0.0.0/0', '::/0'] };
  const cluster = cidrs(policy.sources.cluster);
  const outbound_rules = policy.outboundAllow
    ? [
        ...['25', '53', '80', '443'].map((p) => ({ protocol: 'tcp', ports: p, destinations: any })),
        ...['53', '123'].map((p) => ({ protocol: 'udp', ports: p, destinations: any })),
        { protocol: 'tcp', ports: 'all', destinations: { addresses: [...cluster.v4, ...cluster.v6] } },
        { protocol: 'udp', ports: 'all', destinations: { addresses: [...cluster.v4, ...cluster.v6] } },
        { protocol: 'icmp', destinations: any },
      ]
    : [
        { protocol: 'tcp', ports: 'all', destinations: any },
        { protocol: 'udp', ports: 'all', destinations: any },
        { protocol: 'icmp', destinations: any },
      ];
  const name = `${policy.cluster}${policy.host === '*' ? '' : `-${policy.host}`}-guard`;
  return JSON.stringify({ name, inbound_rules, outbound_rules, droplet_ids: [], tags: [] }, null, 2) + '\n';
}

export function exportPolicy(plan: Plan, format: ExportFormat, opts: ExportOptions = {}): string {
  switch (format) {
    case 'nft':
      return exportNft(plan, opts);
    case 'iptables':
      return exportIptables(plan, opts);
    case 'ufw':
      return exportUfw(plan, opts);
    case 'firewalld':
      return exportFirewalld(plan, opts);
    case 'aws':
      return exportAws(plan, opts);
    case 'hetzner':
      return exportHetzner(plan, opts);
    case 'digitalocean':
      return exportDigitalOcean(plan, opts);
    default:
      throw new DispatcherError('bad_request', `unknown export format "${String(format)}" (one of ${EXPORT_FORMATS.join(', ')})`);
  }
}
