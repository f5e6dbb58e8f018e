/**
 * iptables backend (fallback when nft is missing): our own chain DISPATCHER-GUARD jumped from INPUT
 * (and DISPATCHER-GUARD-OUT from OUTPUT for the outbound allowlist), addresses in ipsets, for IPv4
 * (iptables) and IPv6 (ip6tables). Each family's chain is refilled in one `*-restore --noflush` commit;
 * sets are filled under a temporary name and swapped in. Nothing outside our chains and sets is touched.
 */
import { policyHash, type GuardPolicy } from '../core/firewall-policy.js';
import { IPT_CHAIN, IPT_CHAIN_OUT, ipsetNames, renderIpset, renderIptables, type IpFamily } from '../core/firewall-render.js';
import { conntrackWarnings, mustRun, runner, type BackendOptions, type ExecFn, type FirewallBackend } from './backend.js';

const TOOLS: Record<IpFamily, { cmd: string; restore: string }> = {
  4: { cmd: 'iptables', restore: 'iptables-restore' },
  6: { cmd: 'ip6tables', restore: 'ip6tables-restore' },
};

export class IptablesBackend implements FirewallBackend {
  readonly name = 'iptables' as const;
  private readonly exec: ExecFn;
  private snapshot: { hash: string; text: string } | null = null;

  readonly netns?: string;

  constructor(opts: BackendOptions = {}) {
    this.exec = runner(opts);
    if (opts.netns) this.netns = opts.netns;
  }

  async available(): Promise<{ ok: boolean; reason?: string }> {
    for (const argv of [['iptables', '-V'], ['ip6tables', '-V'], ['ipset', 'version']]) {
      const r = await this.exec(argv);
      if (r.code !== 0) return { ok: false, reason: `${argv[0]} not usable: ${(r.stderr || 'not installed').trim()}` };
    }
    const r = await this.exec(['iptables', '-w', '5', '-S', 'INPUT']);
    if (r.code !== 0) return { ok: false, reason: `iptables cannot read the filter table (needs CAP_NET_ADMIN): ${r.stderr.trim()}` };
    return { ok: true };
  }

  private async hasJump(family: IpFamily, from: 'INPUT' | 'OUTPUT', chain: string): Promise<boolean> {
    const r = await this.exec([TOOLS[family].cmd, '-w', '5', '-C', from, '-j', chain]);
    return r.code === 0;
  }

  private async dropChain(family: IpFamily, from: 'INPUT' | 'OUTPUT', chain: string): Promise<void> {
    const cmd = TOOLS[family].cmd;
    // Bounded: a jump inserted twice by someone else is removed too, but never loop forever.
    for (let i = 0; i < 10; i++) {
      const r = await this.exec([cmd, '-w', '5', '-D', from, '-j', chain]);
      if (r.code !== 0) break;
    }
    await this.exec([cmd, '-w', '5', '-F', chain]);
    await this.exec([cmd, '-w', '5', '-X', chain]);
  }

  async apply(policy: GuardPolicy): Promise<void> {
    await mustRun(this.exec, ['ipset', 'restore'], renderIpset(policy));
    const outbound = policy.mode === 'deny' && policy.outboundAllow;
    for (const family of [4, 6] as const) {
      const jumpInput = !(await this.hasJump(family, 'INPUT', IPT_CHAIN));
      const jumpOutput = outbound && !(await this.hasJump(family, 'OUTPUT', IPT_CHAIN_OUT));
      await mustRun(this.exec, [TOOLS[family].restore, '-w', '5', '--noflush'], renderIptables(policy, family, { jumpInput, jumpOutput }));
      if (!outbound) await this.dropChain(family, 'OUTPUT', IPT_CHAIN_OUT);
    }
    const text = await this.read();
    this.snapshot = text === null ? null : { hash: policyHash(policy), text };
  }

  async read(): Promise<string | null> {
    const parts: string[] = [];
    for (const family of [4, 6] as const) {
      const cmd = TOOLS[family].cmd;
      const chain = await this.exec([cmd, '-w', '5', '-S', IPT_CHAIN]);
      if (chain.code !== 0) return null;
      const input = await this.exec([cmd, '-w', '5', '-S', 'INPUT']);
      const output = await this.exec([cmd, '-w', '5', '-S', 'OUTPUT']);
      const out = await this.exec([cmd, '-w', '5', '-S', IPT_CHAIN_OUT]);
      parts.push(`# ${cmd}`);
      // Only our jumps, and where they sit: a jump pushed below someone's ACCEPT counts as drift.
      parts.push(...input.stdout.split('\n').filter((l) => l.startsWith('-A INPUT')).map((l, i) => (l.includes(`-j ${IPT_CHAIN}`) ? `INPUT#${i} ${l}` : '')).filter(Boolean));
      parts.push(...output.stdout.split('\n').filter((l) => l.startsWith('-A OUTPUT')).map((l, i) => (l.includes(`-j ${IPT_CHAIN_OUT}`) ? `OUTPUT#${i} ${l}` : '')).filter(Boolean));
      parts.push(chain.stdout.trim());
      if (out.code === 0) parts.push(out.stdout.trim());
    }
    for (const name of ipsetNames()) {
      const r = await this.exec(['ipset', 'save', name]);
      if (r.code !== 0) return null;
      // initval is random per set and changes with each swap: not part of what we compare.
      parts.push(r.stdout.replace(/ initval 0x[0-9a-f]+/g, '').split('\n').filter(Boolean).sort().join('\n'));
    }
    return parts.join('\n');
  }

  async inSync(policy: GuardPolicy): Promise<boolean> {
    const text = await this.read();
    if (text === null || !text.includes(`policy ${policyHash(policy)}`)) return false;
    return this.snapshot !== null && this.snapshot.hash === policyHash(policy) && this.snapshot.text === text;
  }

  sessionWarnings(policy: GuardPolicy): Promise<string[]> {
    return conntrackWarnings(this.exec, policy);
  }

  async remove(): Promise<void> {
    for (const family of [4, 6] as const) {
      await this.dropChain(family, 'INPUT', IPT_CHAIN);
      await this.dropChain(family, 'OUTPUT', IPT_CHAIN_OUT);
    }
    for (const name of ipsetNames()) await this.exec(['ipset', 'destroy', name]);
    this.snapshot = null;
  }

  async foreignDrops(policy: GuardPolicy): Promise<string[]> {
    const warnings: string[] = [];
    const ours = new Set(policy.ports.map((p) => p.port));
    for (const family of [4, 6] as const) {
      const r = await this.exec([TOOLS[family].cmd, '-w', '5', '-S', 'INPUT']);
      if (r.code !== 0) continue;
      for (const line of r.stdout.split('\n')) {
        if (/^-P INPUT DROP/.test(line)) warnings.push(`${TOOLS[family].cmd}: INPUT drops by default: ports we allow may be dropped after our chain returns`);
        if (!/^-A INPUT/.test(line) || !/-j (DROP|REJECT)/.test(line)) continue;
        const ports = [...line.matchAll(/\b(\d{1,5})\b/g)].map((x) => Number(x[1]));
        if (!/--dports? /.test(line) || ports.some((p) => ours.has(p))) warnings.push(`${TOOLS[family].cmd}: a rule in INPUT may drop our allowed ports: ${line}`);
      }
    }
    return warnings;
  }
}
