/**
 * Host-key trust, pure: fingerprints, known_hosts parsing and the accept/refuse decision. The SSH
 * transport calls `decideHostKey` from ssh2's hostVerifier, i.e. during the key exchange, before
 * authentication and before any command or upload.
 */
import { createHash, createHmac } from 'node:crypto';

/** OpenSSH's SHA-256 fingerprint: `SHA256:` + unpadded base64 of sha256(key blob). */
export function sshFingerprint(keyBlob: Buffer): string {
  return 'SHA256:' + createHash('sha256').update(keyBlob).digest('base64').replace(/=+$/, '');
}

/** The key type named inside an SSH public key blob (uint32 length + name), e.g. ssh-ed25519. */
export function keyType(keyBlob: Buffer): string {
  if (keyBlob.length < 4) return 'unknown';
  const n = keyBlob.readUInt32BE(0);
  return keyBlob.subarray(4, 4 + n).toString('latin1');
}

export interface KnownHostEntry {
  marker?: '@revoked' | '@cert-authority';
  /** Comma-separated patterns, or one hashed `|1|salt|hash` entry. */
  hosts: string;
  keyBlob: Buffer;
}

export function parseKnownHosts(text: string): KnownHostEntry[] {
  const out: KnownHostEntry[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const f = line.split(/\s+/);
    let marker: KnownHostEntry['marker'];
    if (f[0] === '@revoked' || f[0] === '@cert-authority') marker = f.shift() as KnownHostEntry['marker'];
    if (f.length < 3) continue;
    const keyBlob = Buffer.from(f[2], 'base64');
    if (keyBlob.length === 0) continue;
    out.push({ marker, hosts: f[0], keyBlob });
  }
  return out;
}

/** The name known_hosts uses for host:port (`host` for 22, `[host]:port` otherwise). */
export function knownHostsName(host: string, port: number): string {
  return port === 22 ? host : `[${host}]:${port}`;
}

function globMatch(pattern: string, name: string): boolean {
  const re = new RegExp('^' + pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.') + '$', 'i');
  return re.test(name);
}

function entryMatches(e: KnownHostEntry, name: string): boolean {
  if (e.hosts.startsWith('|1|')) {
    const [, , salt, hash] = e.hosts.split('|');
    if (!salt || !hash) return false;
    const h = createHmac('sha1', Buffer.from(salt, 'base64')).update(name).digest('base64');
    return h === hash;
  }
  let matched = false;
  for (const p of e.hosts.split(',')) {
    if (p.startsWith('!')) {
      if (globMatch(p.slice(1), name)) return false;
    } else if (globMatch(p, name)) matched = true;
  }
  return matched;
}

/** The line to append to known_hosts when a new key is accepted. */
export function knownHostsLine(host: string, port: number, keyBlob: Buffer): string {
  return `${knownHostsName(host, port)} ${keyType(keyBlob)} ${keyBlob.toString('base64')}`;
}

export interface HostKeyPolicy {
  /** Pinned `SHA256:...` fingerprint: the key must match it. */
  fingerprint?: string;
  /** known_hosts file content (the caller reads the file), if one is configured. */
  knownHosts?: string;
  /** Accept a key for a host with no pin and no known_hosts entry (never a changed key). */
  acceptNew: boolean;
}

export type HostKeyDecision =
  | { ok: true; fingerprint: string; how: 'pinned' | 'known_hosts' | 'accepted-new' }
  | { ok: false; fingerprint: string; reason: string };

export function decideHostKey(keyBlob: Buffer, host: string, port: number, policy: HostKeyPolicy): HostKeyDecision {
  const fingerprint = sshFingerprint(keyBlob);
  if (policy.fingerprint !== undefined) {
    return fingerprint === policy.fingerprint
      ? { ok: true, fingerprint, how: 'pinned' }
      : { ok: false, fingerprint, reason: `host key ${fingerprint} does not match the pinned ${policy.fingerprint} (changed key or wrong host): refusing` };
  }
  if (policy.knownHosts !== undefined) {
    const name = knownHostsName(host, port);
    const entries = parseKnownHosts(policy.knownHosts).filter((e) => entryMatches(e, name));
    if (entries.some((e) => e.marker === '@revoked' && e.keyBlob.equals(keyBlob))) {
      return { ok: false, fingerprint, reason: `host key ${fingerprint} is marked @revoked in known_hosts: refusing` };
    }
    const plain = entries.filter((e) => e.marker === undefined);
    if (plain.some((e) => e.keyBlob.equals(keyBlob))) return { ok: true, fingerprint, how: 'known_hosts' };
    if (plain.length > 0) {
      return { ok: false, fingerprint, reason: `host key ${fingerprint} differs from the key known_hosts has for ${name} (CHANGED host key): refusing` };
    }
  }
  if (policy.acceptNew) return { ok: true, fingerprint, how: 'accepted-new' };
  return {
    ok: false,
    fingerprint,
    reason: `host key ${fingerprint} is unknown (no hostKeyFingerprint pin, no known_hosts entry): refusing; pin it in the inventory or pass --accept-new-host-keys`,
  };
}
