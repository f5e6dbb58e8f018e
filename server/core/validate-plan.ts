/**
 * Validation of a plan: its shape (api/plan.ts) and its meaning. Pure: the engines' port names, exposures
 * and forbidden options come in as data (EngineCatalog, api/engine-catalog.ts): this module never reads the disk.
 * It lists EVERY problem with its path, never only the first, so an operator fixes a plan in one round.
 */
import { isIP } from 'node:net';
import { DispatcherError, formatProblems, type Problem } from '../../api/errors.js';
import { PlanSchema, ROLES, prototypeKeyProblems, zodProblems, type Plan, type Role } from '../../api/plan.js';
import type { EngineCatalog } from '../../api/engine-catalog.js';
import { extraArgProblems } from './extra-args.js';

export type { EngineCatalog };

const ALLOW_FLAG: Record<Role, 'allowAgents' | 'allowDBservers' | 'allowCoordinators'> = {
  agent: 'allowAgents',
  dbserver: 'allowDBservers',
  coordinator: 'allowCoordinators',
};

/** An address or CIDR usable in a firewall rule (IPs only: nft resolves names at load time). */
export function isAddressOrCidr(s: string): boolean {
  const slash = s.indexOf('/');
  if (slash < 0) return isIP(s) !== 0;
  const addr = s.slice(0, slash);
  const prefix = s.slice(slash + 1);
  const v = isIP(addr);
  if (v === 0 || !/^\d{1,3}$/.test(prefix)) return false;
  return Number(prefix) <= (v === 4 ? 32 : 128);
}

/** An absolute path with no empty, `.` or `..` segments (so it names exactly the file a machine's config lists). */
export function isAbsoluteCleanPath(p: string): boolean {
  return p.startsWith('/') && p.length > 1 && p.slice(1).split('/').every((seg) => seg !== '' && seg !== '.' && seg !== '..');
}

/** A relative path that stays where it is put: no absolute path, no `..`, no empty or `.` segments. */
export function isContainedRelativePath(p: string): boolean {
  if (p === '' || p.startsWith('/') || p.includes('\\') || p.includes('\0')) return false;
  return p.split('/').every((seg) => seg !== '' && seg !== '.' && seg !== '..');
}

export function agencySizeProblem(n: number, path: string): Problem | undefined {
  if (n <= 0) return { path, message: 'the agency needs at least one agent (3 recommended)' };
  if (n % 2 === 0) return { path, message: `agency size ${n} is even: use an odd number so a majority survives a split (1, 3, 5)` };
  return undefined;
}

function endpointHostPort(endpoint: string): { host: string; port: number } | undefined {
  try {
    const u = new URL(endpoint);
    const host = u.hostname.replace(/^\[(.*)\]$/, '$1');
    const port = u.port ? Number(u.port) : u.protocol === 'https:' ? 443 : 80;
    return { host, port };
  } catch {
    return undefined;
  }
}

/**
 * How strict: `agencyParity` (default) refuses an even agency, a rule for the plans an operator asks for
 * (launch, the target of a scale change). A plan a dispatcher stores or runs may be an intermediate
 * version of a scale change, which adds agents one at a time (docs/DESIGN.md, "Scaling"): 3 → 4 → 5.
 */
export interface ValidateOptions {
  agencyParity?: boolean;
}

/** For plans a dispatcher stores or runs (server/cluster/store.ts, node.ts): every rule but the agency's parity. */
export const STORED_PLAN: ValidateOptions = { agencyParity: false };

/** Every problem of a plan, each with its path; [] when the plan is valid. */
export function validatePlan(input: unknown, engines: EngineCatalog, opts: ValidateOptions = {}): Problem[] {
  const protoKeys = prototypeKeyProblems(input);
  const parsed = PlanSchema.safeParse(input);
  if (!parsed.success) return [...protoKeys, ...zodProblems(parsed.error)];
  if (protoKeys.length) return protoKeys;
  const plan: Plan = parsed.data;
  const problems: Problem[] = [];
  const add = (path: string, message: string) => problems.push({ path, message });

  const catalog = engines;
  const engine = catalog.get(plan.engine);
  if (!engine) add('engine', `unknown engine "${plan.engine}"; known: ${[...catalog.keys()].sort().join(', ')}`);

  if (!isContainedRelativePath(plan.dataRoot)) add('dataRoot', 'must be a relative path without ".." (it lives inside each dispatcher data dir)');

  // binaries: program → path. Which paths a machine allows for a program only that machine's config knows
  // (checked when it renders, server/engines/render.ts); here: the key must be a program of the engine.
  for (const [program, path] of Object.entries(plan.binaries)) {
    if (engine && !engine.programs.includes(program)) add(`binaries.${program}`, `engine ${engine.name} runs no program "${program}"; programs: ${engine.programs.join(', ')}`);
    if (!isAbsoluteCleanPath(path)) add(`binaries.${program}`, 'must be an absolute path without "." or ".." segments');
  }

  const dispatchers = new Map<string, Plan['dispatchers'][number]>();
  /** address → port → who uses it, for "a port used twice on a host". */
  const used = new Map<string, Map<number, string>>();
  const claim = (address: string, port: number, who: string, path: string) => {
    let m = used.get(address);
    if (!m) used.set(address, (m = new Map()));
    const prev = m.get(port);
    if (prev !== undefined) add(path, `port ${port} on ${address} is already used by ${prev}`);
    else m.set(port, who);
  };

  plan.dispatchers.forEach((d, i) => {
    if (dispatchers.has(d.id)) add(`dispatchers[${i}].id`, `dispatcher id "${d.id}" is used twice`);
    else dispatchers.set(d.id, d);
    d.addresses.forEach((a, j) => {
      if (isIP(a) === 0) add(`dispatchers[${i}].addresses[${j}]`, `"${a}" is not an IP address; firewall rules need addresses, not host names`);
    });
    const ep = endpointHostPort(d.endpoint);
    if (!ep || !['https:'].includes(new URL(d.endpoint).protocol)) add(`dispatchers[${i}].endpoint`, 'must be an https:// URL');
    else if (isIP(ep.host) !== 0) claim(ep.host, ep.port, `dispatcher ${d.id}`, `dispatchers[${i}].endpoint`);
  });

  plan.firewall.clientSources.forEach((s, i) => {
    if (!isAddressOrCidr(s)) add(`firewall.clientSources[${i}]`, `"${s}" is not an IP address or CIDR; firewall rules need addresses, not host names`);
  });
  plan.firewall.operatorSources.forEach((s, i) => {
    if (!isAddressOrCidr(s)) add(`firewall.operatorSources[${i}]`, `"${s}" is not an IP address or CIDR; firewall rules need addresses, not host names`);
  });

  const ids = new Set<string>();
  const dirs = new Set<string>();
  plan.processes.forEach((p, i) => {
    const at = `processes[${i}]`;
    if (ids.has(p.id)) add(`${at}.id`, `process id "${p.id}" is used twice`);
    ids.add(p.id);

    const d = dispatchers.get(p.dispatcher);
    if (!d) add(`${at}.dispatcher`, `unknown dispatcher "${p.dispatcher}"`);
    else {
      if (!d[ALLOW_FLAG[p.role]]) add(`${at}.dispatcher`, `dispatcher ${d.id} does not allow role ${p.role} (${ALLOW_FLAG[p.role]}: false)`);
      if (isIP(p.address) !== 0 && !d.addresses.includes(p.address)) add(`${at}.address`, `${p.address} is not an address of dispatcher ${d.id}`);
    }
    if (isIP(p.address) === 0) add(`${at}.address`, `"${p.address}" is not an IP address; firewall rules need addresses, not host names`);

    if (!isContainedRelativePath(p.dataDir)) add(`${at}.dataDir`, 'must be a relative path without ".." (inside the data root)');
    else if (isContainedRelativePath(plan.dataRoot) && !p.dataDir.startsWith(`${plan.dataRoot}/`)) add(`${at}.dataDir`, `must be inside the data root "${plan.dataRoot}"`);
    const dirKey = `${p.dispatcher}\0${p.dataDir}`;
    if (dirs.has(dirKey)) add(`${at}.dataDir`, `data dir ${p.dataDir} is used twice on dispatcher ${p.dispatcher}`);
    dirs.add(dirKey);

    const names = new Set<string>();
    p.ports.forEach((port, j) => {
      if (names.has(port.name)) add(`${at}.ports[${j}].name`, `port name "${port.name}" is used twice`);
      names.add(port.name);
      if (p.role === 'agent' && port.exposure === 'public') add(`${at}.ports[${j}].exposure`, 'agency ports are never public');
      claim(p.address, port.port, `${p.id} (${port.name})`, `${at}.ports[${j}].port`);
    });

    if (engine) {
      const role = engine.roles[p.role];
      if (!role) add(`${at}.role`, `engine ${engine.name} has no role "${p.role}"`);
      else {
        for (const want of role.ports) if (!names.has(want.name)) add(`${at}.ports`, `engine ${engine.name} needs port "${want.name}" for role ${p.role}`);
        p.ports.forEach((port, j) => {
          if (!role.ports.some((w) => w.name === port.name)) add(`${at}.ports[${j}].name`, `engine ${engine.name} has no port "${port.name}" for role ${p.role}`);
        });
        problems.push(...extraArgProblems(p.args, role.options, `${at}.args`, engine.name, p.role));
      }
    }
  });

  const agents = plan.processes.filter((p) => p.role === 'agent').length;
  const agency = opts.agencyParity === false && agents > 0 ? undefined : agencySizeProblem(agents, 'processes');
  if (agency) problems.push(agency);
  return problems;
}

/** Throws DispatcherError('validation_failed') listing every problem; returns the parsed plan otherwise. */
export function assertValidPlan(input: unknown, engines: EngineCatalog, opts: ValidateOptions = {}): Plan {
  const problems = validatePlan(input, engines, opts);
  if (problems.length > 0) {
    throw new DispatcherError('validation_failed', `the plan has ${problems.length} problem(s):\n${formatProblems(problems)}`, { problems });
  }
  return PlanSchema.parse(input);
}
