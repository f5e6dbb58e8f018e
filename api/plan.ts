/**
 * The plan schema: ONE module that both server/ and launcher/ import and that imports neither (as the
 * ArangoDB Starter's client/ imports only pkg/api). A spec is what a person writes; a plan is the full,
 * explicit description of a cluster that the Planner makes from it and every dispatcher persists.
 *
 * Shape-only checks live here (zod). Checks of meaning that need the whole plan (unique ports per host,
 * odd agency size, known dispatchers, ...) live in server/core/validate-plan.ts, which lists every problem.
 */
import { z } from 'zod';

export const ROLES = ['agent', 'dbserver', 'coordinator'] as const;
export const RoleSchema = z.enum(ROLES);
export type Role = z.infer<typeof RoleSchema>;

/** Launch and rolling-restart order. */
export const ROLE_ORDER: readonly Role[] = ['agent', 'dbserver', 'coordinator'];

export const EXPOSURES = ['public', 'cluster', 'operator'] as const;
export const ExposureSchema = z.enum(EXPOSURES);
/** public: clients may reach it; cluster: only the cluster's own hosts; operator: allowlist + cluster. */
export type Exposure = z.infer<typeof ExposureSchema>;

export const ENGINES = ['pg-ha', 'arangodb'] as const;

/**
 * Text that may reach an argv entry or a config file: no control characters (C0, DEL, C1) and no Unicode
 * line or paragraph separators, so no plan string can start a new line in any rendered file
 * (docs/SECURITY.md, "Operator account"). Fields with a tighter grammar use their own pattern.
 */
export const CONTROL_CHARACTERS = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/u;
export const SafeTextSchema = z
  .string()
  .max(4096)
  .refine((s) => !CONTROL_CHARACTERS.test(s), 'must not contain control characters (newline, carriage return, NUL, tab, ...)');

/** A relative path inside a dispatcher's data dir: plain segments only (letters, digits, `._-`, not starting with `.` or `-`). */
export const RelativePathSchema = z
  .string()
  .max(200)
  .regex(/^[A-Za-z0-9_][A-Za-z0-9._-]*(\/[A-Za-z0-9_][A-Za-z0-9._-]*)*$/, 'must be a relative path of plain segments (letters, digits, "._-", not starting with "." or "-") separated by "/"');

/** An engine program's name (etcd, python3, psql, ...): the key of `binaries` in a plan and in a machine's config. */
export const ProgramNameSchema = z.string().regex(/^[a-z0-9][a-z0-9._+-]{0,62}$/, 'must be a program name (lowercase letters, digits, "._+-")');

export const EngineNameSchema = z
  .string()
  .regex(/^[a-z0-9][a-z0-9-]{0,62}$/, 'must be an engine name (lowercase letters, digits, dashes), e.g. pg-ha or arangodb')
  .describe('engine name, e.g. pg-ha or arangodb');

export const FIREWALL_BACKENDS = ['auto', 'nftables', 'iptables', 'none'] as const;
export const FirewallBackendSchema = z.enum(FIREWALL_BACKENDS);
export type FirewallBackendName = z.infer<typeof FirewallBackendSchema>;

/** A name usable as a process id, cluster name or file name: no slashes, no dots at the start. */
export const NameSchema = z
  .string()
  .regex(/^[a-z0-9][a-z0-9-]{0,62}$/, 'must be 1-63 lowercase letters, digits or dashes, starting with a letter or digit');

/** An IPv4/IPv6 address or CIDR. Hostnames are refused: firewall rules need addresses (nft resolves names at load time). */
export const CidrSchema = SafeTextSchema.pipe(z.string().min(1).max(64)).describe('an IPv4 or IPv6 address, optionally with /prefix');

export const PortSchema = z.number().int().min(1).max(65535);

export const FingerprintSchema = z
  .string()
  .regex(/^([0-9A-F]{2}:){31}[0-9A-F]{2}$/, 'must be a SHA-256 fingerprint: 32 upper-case hex pairs separated by colons');

export const FirewallPolicySchema = z
  .object({
    mode: z.enum(['guard', 'deny']).default('guard').describe('guard: only our ports; deny: default-deny inbound'),
    backend: FirewallBackendSchema.default('auto'),
    clientSources: z.array(CidrSchema).default(['0.0.0.0/0', '::/0']).describe('who may reach public (coordinator) ports'),
    operatorSources: z.array(CidrSchema).default([]).describe('who may reach operator (dispatcher) ports besides the cluster'),
    sshPort: PortSchema.default(22).describe('never closed by us'),
    outboundAllow: z.boolean().default(false).describe('deny mode only: also restrict outbound traffic to an allowlist'),
  })
  .strict();
export type FirewallPolicy = z.infer<typeof FirewallPolicySchema>;

export const SpecDispatcherSchema = z
  .object({
    id: NameSchema,
    endpoint: SafeTextSchema.pipe(z.string().url()).describe('https://ADDRESS:PORT of this dispatcher'),
    fingerprint: FingerprintSchema,
    addresses: z.array(SafeTextSchema.pipe(z.string().min(1).max(64))).min(1).describe('every address of the host (IPv4 and IPv6)'),
    allowAgents: z.boolean().default(true),
    allowDBservers: z.boolean().default(true),
    allowCoordinators: z.boolean().default(true),
  })
  .strict();
export type SpecDispatcher = z.infer<typeof SpecDispatcherSchema>;

/** Extra arguments of one process or role: checked against the engine's allow list (server/core/extra-args.ts). */
export const ExtraArgsSchema = z.array(SafeTextSchema).max(64);

export const RoleArgsSchema = z
  .object({ agent: ExtraArgsSchema.default([]), dbserver: ExtraArgsSchema.default([]), coordinator: ExtraArgsSchema.default([]) })
  .strict();

/** An engine port name (client, peer, postgres, ...). */
export const PortNameSchema = z.string().regex(/^[a-z][a-z0-9-]{0,62}$/, 'must be a port name (lowercase letters, digits, dashes)');

/** What a person writes (YAML or JSON). */
export const SpecSchema = z
  .object({
    name: NameSchema,
    engine: EngineNameSchema.default('pg-ha'),
    dispatchers: z.array(SpecDispatcherSchema).min(1).max(1000),
    // Upper bounds keep a typo (agents: 3000000) from making a plan of millions of processes.
    agents: z.number().int().max(99).default(3).describe('agency size: odd (1, 3, 5)'),
    dbservers: z.number().int().min(0).max(999).default(3),
    coordinators: z.number().int().min(0).max(999).default(1),
    ports: z
      .record(z.string().regex(/^[a-z]+\.[a-z][a-z0-9-]{0,62}$/, 'must be ROLE.PORTNAME, e.g. agent.client'), PortSchema)
      .optional()
      .describe('override engine default ports by name, e.g. {"agent.client": 2379}'),
    dataRoot: RelativePathSchema.default('clusters').describe('relative to each dispatcher data dir'),
    extraArgs: RoleArgsSchema.optional(),
    firewall: FirewallPolicySchema.optional(),
  })
  .strict();
export type Spec = z.infer<typeof SpecSchema>;
export type SpecInput = z.input<typeof SpecSchema>;

export const PlanPortSchema = z
  .object({
    name: PortNameSchema.describe('engine port name, e.g. client, peer, rest, postgres'),
    port: PortSchema,
    exposure: ExposureSchema,
  })
  .strict();
export type PlanPort = z.infer<typeof PlanPortSchema>;

export const PlanProcessSchema = z
  .object({
    id: NameSchema,
    role: RoleSchema,
    dispatcher: NameSchema,
    address: SafeTextSchema.pipe(z.string().min(1).max(64)).describe('the host address this process binds and advertises'),
    ports: z.array(PlanPortSchema).min(1),
    dataDir: RelativePathSchema.describe('relative to the dispatcher data dir; must stay inside it'),
    args: ExtraArgsSchema.default([]),
  })
  .strict();
export type PlanProcess = z.infer<typeof PlanProcessSchema>;

export const PlanDispatcherSchema = SpecDispatcherSchema;
export type PlanDispatcher = SpecDispatcher;

export const PlanSchema = z
  .object({
    apiVersion: z.literal('dispatcher/v1'),
    name: NameSchema,
    engine: EngineNameSchema,
    /**
     * Optional choice of binary per PROGRAM (for upgrades): program name -> one of the paths that machine's
     * config allows for that same program. A plan can never make a role run another program (docs/SECURITY.md, "Process user").
     */
    binaries: z.record(ProgramNameSchema, SafeTextSchema.pipe(z.string().min(1).max(1024))).default({}),
    dataRoot: RelativePathSchema,
    dispatchers: z.array(PlanDispatcherSchema).min(1),
    processes: z.array(PlanProcessSchema).min(1),
    firewall: FirewallPolicySchema,
  })
  .strict();
export type Plan = z.infer<typeof PlanSchema>;
export type PlanInput = z.input<typeof PlanSchema>;

/**
 * Problems for every own `__proto__` key anywhere in a parsed JSON document. JSON.parse makes such keys own
 * properties; the schema would silently drop them, and code copying objects by assignment would turn them
 * into prototypes. Refused with their path instead, so bad input is a 400 naming it.
 */
export function prototypeKeyProblems(input: unknown, path: PropertyKey[] = [], depth = 0): { path: string; message: string }[] {
  if (input === null || typeof input !== 'object' || depth > 64) return [];
  const out: { path: string; message: string }[] = [];
  if (Object.hasOwn(input, '__proto__')) out.push({ path: formatPath([...path, '__proto__']), message: 'the key "__proto__" is not allowed' });
  for (const [k, v] of Object.entries(input)) out.push(...prototypeKeyProblems(v, [...path, Array.isArray(input) ? Number(k) : k], depth + 1));
  return out;
}

/** Converts zod issues to the project's Problem list (every problem, each with its path). */
export function zodProblems(error: z.ZodError): { path: string; message: string }[] {
  return error.issues.map((i) => ({ path: formatPath(i.path), message: i.message }));
}

export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out ? `.${String(p)}` : String(p);
  return out;
}
