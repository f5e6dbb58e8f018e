/**
 * The Planner: a short spec → the full, explicit plan (ArangoDB 2.x's Planner). Pure and deterministic: the
 * same spec and engine profiles always give the same plan (no clocks, no randomness, no host lookups).
 *
 * Placement: round-robin over the dispatchers that allow a role, visiting hosts in turn (dispatchers that
 * share an address are one host), so the agents — and the other roles — spread over distinct hosts first.
 * Ports: engine defaults (or spec.ports overrides); dispatchers sharing one address (a local cluster) get
 * their own offset (slot × step); a further process of the same kind on the same address moves on by the
 * number of dispatchers sharing it, so offsets never collide.
 */
import { isIP } from 'node:net';
import YAML from 'yaml';
import { DispatcherError, formatProblems, type Problem } from '../../api/errors.js';
import {
  FirewallPolicySchema,
  ROLE_ORDER,
  SpecSchema,
  zodProblems,
  prototypeKeyProblems,
  type Plan,
  type PlanProcess,
  type Role,
  type Spec,
  type SpecDispatcher,
  type SpecInput,
} from '../../api/plan.js';
import {
  agencySizeProblem,
  isAddressOrCidr,
  isContainedRelativePath,
  validatePlan,
  type EngineCatalog,
} from './validate-plan.js';
import { extraArgProblems } from './extra-args.js';

const COUNT_KEY: Record<Role, 'agents' | 'dbservers' | 'coordinators'> = { agent: 'agents', dbserver: 'dbservers', coordinator: 'coordinators' };
const ALLOW_FLAG: Record<Role, 'allowAgents' | 'allowDBservers' | 'allowCoordinators'> = {
  agent: 'allowAgents',
  dbserver: 'allowDBservers',
  coordinator: 'allowCoordinators',
};

function fail(message: string, problems: Problem[]): never {
  throw new DispatcherError('validation_failed', `${message}:\n${formatProblems(problems)}`, { problems });
}

/** Parses a YAML or JSON spec document (JSON is YAML). Syntax errors name line and column. */
export function parseSpecText(text: string, filename = 'spec'): unknown {
  if (typeof text !== 'string') fail('the spec is not text', [{ path: '', message: 'expected YAML or JSON text' }]);
  let doc: YAML.Document.Parsed;
  try {
    doc = YAML.parseDocument(text, { uniqueKeys: true, prettyErrors: true, strict: true });
  } catch (err) {
    fail(`${filename} cannot be parsed`, [{ path: filename, message: (err as Error).message }]);
  }
  if (doc.errors.length > 0) {
    fail(
      `${filename} is not valid YAML/JSON`,
      doc.errors.map((e) => {
        const pos = e.linePos?.[0];
        return { path: pos ? `${filename}:${pos.line}:${pos.col}` : filename, message: e.message.split('\n')[0] };
      }),
    );
  }
  try {
    // A small alias budget: a "billion laughs" document must not expand into gigabytes.
    return doc.toJS({ maxAliasCount: 50 });
  } catch (err) {
    fail(`${filename} cannot be read`, [{ path: filename, message: (err as Error).message }]);
  }
}

/** Host index of every dispatcher: dispatchers sharing any address are one host (first one's index). */
function hostsOf(ds: SpecDispatcher[]): number[] {
  const host: number[] = [];
  ds.forEach((d, i) => {
    const j = ds.findIndex((e, k) => k < i && e.addresses.some((a) => d.addresses.includes(a)));
    host.push(j < 0 ? i : host[j]);
  });
  return host;
}

/** Dispatchers allowing a role, ordered so consecutive picks land on different hosts where possible. */
function placementOrder(ds: SpecDispatcher[], hosts: number[], role: Role): number[] {
  const byHost = new Map<number, number[]>();
  ds.forEach((d, i) => {
    if (!d[ALLOW_FLAG[role]]) return;
    const list = byHost.get(hosts[i]) ?? [];
    list.push(i);
    byHost.set(hosts[i], list);
  });
  const lists = [...byHost.values()];
  const order: number[] = [];
  for (let round = 0; order.length < lists.reduce((n, l) => n + l.length, 0); round++) {
    for (const l of lists) if (round < l.length) order.push(l[round]);
  }
  return order;
}

/** Problems of a spec that the schema cannot see, reported with spec paths. */
function specProblems(spec: Spec, catalog: EngineCatalog): Problem[] {
  const problems: Problem[] = [];
  const add = (path: string, message: string) => problems.push({ path, message });
  const engine = catalog.get(spec.engine);
  if (!engine) add('engine', `unknown engine "${spec.engine}"; known: ${[...catalog.keys()].sort().join(', ')}`);
  const agency = agencySizeProblem(spec.agents, 'agents');
  if (agency) problems.push(agency);
  if (!isContainedRelativePath(spec.dataRoot)) add('dataRoot', 'must be a relative path without ".." (it lives inside each dispatcher data dir)');
  const ids = new Set<string>();
  spec.dispatchers.forEach((d, i) => {
    if (ids.has(d.id)) add(`dispatchers[${i}].id`, `dispatcher id "${d.id}" is used twice`);
    ids.add(d.id);
    d.addresses.forEach((a, j) => {
      if (isIP(a) === 0) add(`dispatchers[${i}].addresses[${j}]`, `"${a}" is not an IP address; firewall rules need addresses, not host names`);
    });
  });
  for (const key of ['clientSources', 'operatorSources'] as const) {
    (spec.firewall?.[key] ?? []).forEach((s, i) => {
      if (!isAddressOrCidr(s)) add(`firewall.${key}[${i}]`, `"${s}" is not an IP address or CIDR; firewall rules need addresses, not host names`);
    });
  }
  for (const role of ROLE_ORDER) {
    if (spec[COUNT_KEY[role]] > 0 && !spec.dispatchers.some((d) => d[ALLOW_FLAG[role]])) {
      add(COUNT_KEY[role], `no dispatcher allows role ${role} (${ALLOW_FLAG[role]})`);
    }
  }
  if (engine) {
    for (const role of ROLE_ORDER) {
      problems.push(...extraArgProblems(spec.extraArgs?.[role] ?? [], engine.roles[role].options, `extraArgs.${role}`, engine.name, role));
    }
    for (const key of Object.keys(spec.ports ?? {})) {
      const [role, name, ...rest] = key.split('.');
      // Own roles only: a key like "constructor.x" must not find Object.prototype.constructor.
      const r = (ROLE_ORDER as readonly string[]).includes(role) ? engine.roles[role as Role] : undefined;
      if (rest.length > 0 || !r || !r.ports.some((p) => p.name === name)) {
        const known = ROLE_ORDER.flatMap((ro) => engine.roles[ro].ports.map((p) => `${ro}.${p.name}`)).join(', ');
        add(`ports.${key}`, `unknown port "${key}" for engine ${engine.name}; known: ${known}`);
      }
    }
  }
  return problems;
}

/**
 * Makes the plan for a spec. Throws DispatcherError('validation_failed') listing every problem (spec paths
 * for spec problems; plan paths if the resulting plan still fails validation, e.g. overridden ports clash).
 */
export function planFromSpec(input: SpecInput | unknown, engines: EngineCatalog): Plan {
  const protoKeys = prototypeKeyProblems(input);
  const parsed = SpecSchema.safeParse(input);
  if (!parsed.success) fail('the spec is invalid', [...protoKeys, ...zodProblems(parsed.error)]);
  if (protoKeys.length) fail('the spec is invalid', protoKeys);
  const spec = parsed.data;
  const catalog = engines;
  const problems = specProblems(spec, catalog);
  if (problems.length > 0) fail('the spec is invalid', problems);
  const engine = catalog.get(spec.engine)!;

  const ds = spec.dispatchers;
  const hosts = hostsOf(ds);
  // Port slots: dispatchers sharing the same (first) address, in spec order.
  const slot: number[] = [];
  const groupSize = new Map<string, number>();
  ds.forEach((d, i) => {
    slot[i] = ds.filter((e, k) => k < i && e.addresses[0] === d.addresses[0]).length;
    groupSize.set(d.addresses[0], (groupSize.get(d.addresses[0]) ?? 0) + 1);
  });
  const used = new Map<string, Set<number>>();
  const usedOn = (a: string) => used.get(a) ?? used.set(a, new Set()).get(a)!;
  // The dispatchers' own ports are taken too.
  for (const d of ds) {
    try {
      const u = new URL(d.endpoint);
      const host = u.hostname.replace(/^\[(.*)\]$/, '$1');
      if (isIP(host)) usedOn(host).add(u.port ? Number(u.port) : 443);
    } catch {
      /* the schema already checked it is a URL */
    }
  }

  const processes: PlanProcess[] = [];
  for (const role of ROLE_ORDER) {
    const order = placementOrder(ds, hosts, role);
    const count = spec[COUNT_KEY[role]];
    const ports = engine.roles[role].ports;
    for (let k = 0; k < count; k++) {
      const di = order[k % order.length];
      const d = ds[di];
      const address = d.addresses[0];
      const taken = usedOn(address);
      const g = groupSize.get(address)!;
      const step = engine.portOffsetStep;
      let chosen: number[] | undefined;
      for (let n = slot[di]; ; n += g) {
        const cand = ports.map((p) => (spec.ports?.[`${role}.${p.name}`] ?? p.default) + n * step);
        if (cand.some((c) => c > 65535)) break;
        if (cand.every((c) => !taken.has(c)) && new Set(cand).size === cand.length) {
          chosen = cand;
          break;
        }
      }
      const id = `${role}-${k + 1}`;
      if (!chosen) fail('the spec is invalid', [{ path: COUNT_KEY[role], message: `no free ports left on ${address} for ${id}` }]);
      chosen.forEach((c) => taken.add(c));
      processes.push({
        id,
        role,
        dispatcher: d.id,
        address,
        ports: ports.map((p, j) => ({ name: p.name, port: chosen![j], exposure: p.exposure })),
        dataDir: `${spec.dataRoot}/${spec.name}/${id}`,
        args: [...(spec.extraArgs?.[role] ?? [])],
      });
    }
  }

  const plan: Plan = {
    apiVersion: 'dispatcher/v1',
    name: spec.name,
    engine: spec.engine,
    binaries: {},
    dataRoot: spec.dataRoot,
    dispatchers: ds.map((d) => ({ ...d, addresses: [...d.addresses] })),
    processes,
    firewall: FirewallPolicySchema.parse(spec.firewall ?? {}),
  };
  const planProblems = validatePlan(plan, catalog);
  if (planProblems.length > 0) fail('the planned cluster is invalid', planProblems);
  return plan;
}

/** parseSpecText + planFromSpec. */
export function planFromSpecText(text: string, filename: string | undefined, engines: EngineCatalog): Plan {
  return planFromSpec(parseSpecText(text, filename), engines);
}

/** POST /v1/plans: the body is a spec (JSON object), or YAML/JSON text. Throws DispatcherError. */
export function planFromRequestBody(body: unknown, engines: EngineCatalog): Plan {
  if (typeof body === 'string') return planFromSpec(parseSpecText(body, 'body'), engines);
  if (body === undefined || body === null) {
    throw new DispatcherError('validation_failed', 'the request body must be a spec', { problems: [{ path: '', message: 'expected a spec object' }] });
  }
  return planFromSpec(body, engines);
}
