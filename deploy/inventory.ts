/**
 * The deploy inventory: which machines get a dispatcher and how to reach them over SSH, plus the
 * cluster-wide settings every dispatcher gets. Pure: parsing, validation (every problem with its path) and
 * resolution into one flat record per host. No I/O here except what the caller hands in as text.
 *
 * Every value that later appears in a remote command is validated here with a strict pattern first, even
 * though deploy/quote.ts quotes it anyway: defence in depth, and a typo is reported with its path before
 * any machine is touched.
 */
import { isIP } from 'node:net';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { DispatcherError, type Problem } from '../api/errors.js';
import { FIREWALL_BACKENDS, NameSchema } from '../api/plan.js';

/** Absolute, normalised, no spaces or shell-special characters, and not a system directory we would wreck. */
const FORBIDDEN_DIRS = new Set(['/', '/bin', '/boot', '/dev', '/etc', '/home', '/lib', '/lib64', '/opt', '/proc', '/root', '/run', '/sbin', '/srv', '/sys', '/tmp', '/usr', '/usr/local', '/var', '/var/lib', '/var/log']);
export const RemotePathSchema = z
  .string()
  .regex(/^\/[A-Za-z0-9._/-]*$/, 'must be an absolute path of letters, digits and . _ - /')
  .refine((p) => path.posix.normalize(p) === p && !p.endsWith('/'), 'must be normalised (no //, ., .. or trailing /)')
  .refine((p) => !FORBIDDEN_DIRS.has(p), 'must not be a system directory (it may be removed on uninstall)');

const UnixUserSchema = z.string().regex(/^[a-z_][a-z0-9_-]{0,31}$/, 'must be a Unix user name (lowercase letters, digits, _ and -)');
const SshAddressSchema = z
  .string()
  .refine((s) => isIP(s) !== 0 || /^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$/.test(s), 'must be an IP address or a host name');
const ServeAddressSchema = z.string().refine((s) => isIP(s) !== 0, 'must be an IPv4 or IPv6 address (the certificate and firewall need addresses)');
export const SshFingerprintSchema = z.string().regex(/^SHA256:[A-Za-z0-9+/]{43}$/, 'must look like SHA256:<43 base64 characters> (as `ssh-keygen -lf` prints)');
const PortSchema = z.number().int().min(1).max(65535);
const ServiceManagerSchema = z.enum(['auto', 'systemd', 'direct']).describe('auto: systemd when /run/systemd/system exists, else start directly with a pid file');

/** Settings a host may override; cluster-wide values are the defaults. */
const OverridableShape = {
  port: PortSchema.optional(),
  prefix: RemotePathSchema.optional(),
  dataDir: RemotePathSchema.optional(),
  configDir: RemotePathSchema.optional(),
  serviceManager: ServiceManagerSchema.optional(),
  unitName: z.string().regex(/^[a-z][a-z0-9-]{0,62}$/, 'must be a plain unit name without .service').optional(),
};

const HostSchema = z
  .object({
    address: SshAddressSchema.describe('where to reach the machine over SSH'),
    sshPort: PortSchema.default(22),
    user: UnixUserSchema.default('root'),
    keyFile: z.string().min(1).optional(),
    agent: z.union([z.boolean(), z.string().min(1)]).optional().describe('true: $SSH_AUTH_SOCK; a string: that socket'),
    hostKeyFingerprint: SshFingerprintSchema.optional(),
    knownHostsFile: z.string().min(1).optional(),
    sudo: z.boolean().default(false).describe('run the install commands through `sudo -n` (for a non-root SSH user)'),
    addresses: z.array(ServeAddressSchema).min(1).describe('addresses the dispatcher serves on; the first is its endpoint'),
    id: NameSchema.optional(),
    ...OverridableShape,
  })
  .strict()
  .superRefine((h, ctx) => {
    if (h.keyFile === undefined && (h.agent === undefined || h.agent === false)) {
      ctx.addIssue({ code: 'custom', path: ['keyFile'], message: 'give keyFile or agent' });
    }
  });

const EngineSchema = z
  .object({ binaries: z.record(z.string().regex(/^[a-z0-9][a-z0-9_-]*$/, 'program names are lowercase words'), RemotePathSchema) })
  .strict();

const PasswordSchema = z
  .object({
    user: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, 'must be 1-64 letters, digits, _ . -').default('admin'),
    file: z.string().min(1).optional().describe('local file with the password (first line); else one is generated and printed once'),
  })
  .strict();

export const InventorySchema = z
  .object({
    name: NameSchema.describe('cluster name; `--purge-data` must repeat it'),
    port: PortSchema.default(8528),
    prefix: RemotePathSchema.default('/opt/cluster-dispatcher'),
    dataDir: RemotePathSchema.default('/var/lib/cluster-dispatcher'),
    configDir: RemotePathSchema.default('/etc/cluster-dispatcher'),
    serviceManager: ServiceManagerSchema.default('auto'),
    unitName: z.string().regex(/^[a-z][a-z0-9-]{0,62}$/).default('dispatcherd'),
    runAs: UnixUserSchema.default('dispatcher').describe('unprivileged system user the cluster processes run as (created)'),
    firewall: z.object({ backend: z.enum(FIREWALL_BACKENDS).default('nftables') }).strict().default({ backend: 'nftables' }),
    engines: z.record(NameSchema, EngineSchema).default({}),
    password: PasswordSchema.default({ user: 'admin' }),
    parallelism: z.number().int().min(1).max(256).default(4),
    minFreeMB: z.number().int().min(0).default(200),
    minNodeMajor: z.number().int().min(20).default(20),
    logLevel: z.enum(['error', 'warn', 'info', 'debug']).default('info'),
    healthTimeoutSec: z.number().int().min(1).max(3600).default(60),
    hosts: z.array(HostSchema).min(1),
  })
  .strict()
  .superRefine((inv, ctx) => {
    const seen = new Map<string, number>();
    inv.hosts.forEach((h, i) => {
      const id = h.id ?? defaultHostId(h.address);
      const prev = seen.get(id);
      if (prev !== undefined) ctx.addIssue({ code: 'custom', path: ['hosts', i, 'id'], message: `id "${id}" is also used by hosts[${prev}]` });
      else seen.set(id, i);
    });
  });

export type InventoryInput = z.input<typeof InventorySchema>;
export type Inventory = z.infer<typeof InventorySchema>;

/** Everything one host's deploy needs, with defaults applied and local paths made absolute. */
export interface ResolvedHost {
  index: number;
  id: string;
  /** SSH target. */
  address: string;
  sshPort: number;
  user: string;
  keyFile?: string;
  /** Agent socket path, if an agent is used. */
  agent?: string;
  hostKeyFingerprint?: string;
  knownHostsFile?: string;
  sudo: boolean;
  addresses: string[];
  port: number;
  prefix: string;
  dataDir: string;
  configDir: string;
  serviceManager: 'auto' | 'systemd' | 'direct';
  unitName: string;
  /** https://ADDRESS:PORT from the first serve address. */
  endpoint: string;
}

/** Stable default id from the SSH address: lowercase, dots/colons to dashes (10.0.0.1 → h-10-0-0-1). */
export function defaultHostId(address: string): string {
  const s = address.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-+|-+$/g, '');
  return (/^[a-z]/.test(s) ? s : `h-${s}`).slice(0, 63).replace(/-+$/, '');
}

export function endpointFor(address: string, port: number): string {
  return isIP(address) === 6 ? `https://[${address}]:${port}` : `https://${address}:${port}`;
}

function zodProblems(err: z.ZodError, prefix = ''): Problem[] {
  return err.issues.map((i) => ({
    path: prefix + i.path.map((p, k) => (typeof p === 'number' ? `[${p}]` : `${k === 0 ? '' : '.'}${String(p)}`)).join(''),
    message: i.message,
  }));
}

/** Validates an already-parsed object; throws validation_failed with every problem. */
export function validateInventory(data: unknown): Inventory {
  const r = InventorySchema.safeParse(data);
  if (!r.success) {
    const problems = zodProblems(r.error);
    throw new DispatcherError('validation_failed', `inventory is invalid:\n${problems.map((p) => `  - ${p.path || '(root)'}: ${p.message}`).join('\n')}`, { problems });
  }
  // Hosts sharing a machine is fine, but two hosts with the same SSH target and the same dirs would
  // overwrite each other: refuse.
  const problems: Problem[] = [];
  const targets = new Map<string, number>();
  r.data.hosts.forEach((h, i) => {
    const key = `${h.address}:${h.sshPort}:${h.prefix ?? r.data.prefix}:${h.dataDir ?? r.data.dataDir}`;
    const prev = targets.get(key);
    if (prev !== undefined) problems.push({ path: `hosts[${i}]`, message: `same SSH target and directories as hosts[${prev}]` });
    else targets.set(key, i);
  });
  if (problems.length) throw new DispatcherError('validation_failed', 'inventory is invalid', { problems });
  return r.data;
}

/** Parses YAML (or JSON) text. `source` names the file in messages. */
export function parseInventory(text: string, source = 'inventory'): Inventory {
  let data: unknown;
  try {
    data = parseYaml(text);
  } catch (e) {
    throw new DispatcherError('validation_failed', `${source}: not valid YAML: ${(e as Error).message}`, {
      problems: [{ path: '', message: `not valid YAML: ${(e as Error).message}` }],
    });
  }
  return validateInventory(data);
}

/**
 * Applies defaults and makes local paths (key, known_hosts) absolute relative to the inventory's folder.
 * `env` supplies SSH_AUTH_SOCK for `agent: true`.
 */
export function resolveHosts(inv: Inventory, baseDir: string, env: NodeJS.ProcessEnv = process.env): ResolvedHost[] {
  const problems: Problem[] = [];
  const hosts = inv.hosts.map((h, index): ResolvedHost => {
    let agent: string | undefined;
    if (h.agent === true) {
      agent = env.SSH_AUTH_SOCK;
      if (!agent && h.keyFile === undefined) problems.push({ path: `hosts[${index}].agent`, message: 'agent: true but SSH_AUTH_SOCK is not set' });
    } else if (typeof h.agent === 'string') agent = path.resolve(baseDir, h.agent);
    const port = h.port ?? inv.port;
    return {
      index,
      id: h.id ?? defaultHostId(h.address),
      address: h.address,
      sshPort: h.sshPort,
      user: h.user,
      keyFile: h.keyFile === undefined ? undefined : path.resolve(baseDir, h.keyFile),
      agent,
      hostKeyFingerprint: h.hostKeyFingerprint,
      knownHostsFile: h.knownHostsFile === undefined ? undefined : path.resolve(baseDir, h.knownHostsFile),
      sudo: h.sudo,
      addresses: h.addresses,
      port,
      prefix: h.prefix ?? inv.prefix,
      dataDir: h.dataDir ?? inv.dataDir,
      configDir: h.configDir ?? inv.configDir,
      serviceManager: h.serviceManager ?? inv.serviceManager,
      unitName: h.unitName ?? inv.unitName,
      endpoint: endpointFor(h.addresses[0], port),
    };
  });
  if (problems.length) throw new DispatcherError('validation_failed', 'inventory is invalid', { problems });
  return hosts;
}
