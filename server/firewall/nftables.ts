/**
 * nftables backend (default): our own `inet dispatcher_guard` table, replaced atomically by one
 * `nft -f -` transaction. Reading back lists only our table; counters are stripped before comparing.
 */
import { policyHash, type GuardPolicy } from '../core/firewall-policy.js';
import { NFT_FAMILY, NFT_TABLE, renderNft, renderNftRemove } from '../core/firewall-render.js';
import { conntrackWarnings, mustRun, runner, type BackendOptions, type ExecFn, type FirewallBackend } from './backend.js';

/** Counters change with traffic; everything else must match what we loaded. */
export function normalizeNftListing(text: string): string {
  return text
    .replace(/counter packets \d+ bytes \d+/g, 'counter')
    .split('\n')
    .map((l) => l.trimEnd())
    .filter((l) => l.trim() !== '')
    .join('\n');
}

export class NftablesBackend implements FirewallBackend {
  readonly name = 'nftables' as const;
  private readonly exec: ExecFn;
  /** What the kernel listed right after our last apply, by policy hash. */
  private snapshot: { hash: string; text: string } | null = null;

  readonly netns?: string;

  constructor(opts: BackendOptions = {}) {
    this.exec = runner(opts);
    if (opts.netns) this.netns = opts.netns;
  }

  async available(): Promise<{ ok: boolean; reason?: string }> {
    const v = await this.exec(['nft', '--version']);
    if (v.code !== 0) return { ok: false, reason: `nft not usable: ${(v.stderr || 'not installed').trim()}` };
    const l = await this.exec(['nft', 'list', 'tables']);
    if (l.code !== 0) return { ok: false, reason: `nft cannot read the ruleset (needs CAP_NET_ADMIN): ${l.stderr.trim()}` };
    return { ok: true };
  }

  async apply(policy: GuardPolicy): Promise<void> {
    await mustRun(this.exec, ['nft', '-f', '-'], renderNft(policy));
    const text = await this.read();
    this.snapshot = text === null ? null : { hash: policyHash(policy), text };
  }

  async read(): Promise<string | null> {
    const r = await this.exec(['nft', 'list', 'table', NFT_FAMILY, NFT_TABLE]);
    if (r.code !== 0) return null;
    return normalizeNftListing(r.stdout);
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
    await mustRun(this.exec, ['nft', '-f', '-'], renderNftRemove());
    this.snapshot = null;
  }

  async foreignDrops(policy: GuardPolicy): Promise<string[]> {
    const r = await this.exec(['nft', 'list', 'ruleset']);
    if (r.code !== 0) return [];
    return findForeignDrops(r.stdout, policy);
  }
}

/**
 * Scans another tool's nft ruleset for input chains that would drop what we accept. A heuristic (nft has
 * no "would this packet pass" query): a base input chain with policy drop, or a drop/reject rule that names
 * one of our ports or matches no port at all.
 */
export function findForeignDrops(ruleset: string, policy: GuardPolicy): string[] {
  const warnings: string[] = [];
  const ours = new Set(policy.ports.map((p) => p.port));
  let table = '';
  let chain = '';
  let inputHook = false;
  for (const raw of ruleset.split('\n')) {
    const line = raw.trim();
    let m: RegExpExecArray | null;
    if ((m = /^table (\S+) (\S+) \{/.exec(line))) { table = `${m[1]} ${m[2]}`; chain = ''; inputHook = false; continue; }
    if ((m = /^chain (\S+) \{/.exec(line))) { chain = m[1]; inputHook = false; continue; }
    if (table === `${NFT_FAMILY} ${NFT_TABLE}` || !chain) continue;
    if (/type filter hook input/.test(line)) {
      inputHook = true;
      if (/policy drop/.test(line)) warnings.push(`table ${table} chain ${chain} drops by default (policy drop): our allowed ports may be dropped there`);
      continue;
    }
    if (!inputHook || !/\b(drop|reject)\b/.test(line) || /ct state invalid/.test(line)) continue;
    const ports = [...line.matchAll(/\b(\d{1,5})\b/g)].map((x) => Number(x[1]));
    const named = /dport/.test(line);
    if (!named || ports.some((p) => ours.has(p))) warnings.push(`table ${table} chain ${chain} has a rule that may drop our allowed ports: ${line}`);
  }
  return warnings;
}

export { renderNft };
