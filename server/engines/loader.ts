/**
 * Loads engine profiles from templates/<engine>/ (the I/O edge of the engines). Everything after loading —
 * planning, validation, rendering — is pure and takes the loaded Engine as data.
 */
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import { DispatcherError } from '../../api/errors.js';
import { ROLES, zodProblems } from '../../api/plan.js';
import { optionListProblems } from '../core/extra-args.js';
import { CERTIFICATE_RELOAD_ACTIONS } from './certificate-reload.js';
import { EngineManifestSchema, type Engine, type EngineDefaults } from './types.js';

/**
 * The templates folder: walk up from this module (source tree or dist/) to the package root. The
 * DISPATCHER_TEMPLATES_DIR variable wins so an installed package can be pointed at customised profiles.
 */
export function templatesDir(): string {
  const fromEnv = process.env.DISPATCHER_TEMPLATES_DIR;
  if (fromEnv) return resolve(fromEnv);
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const candidate = join(dir, 'templates');
    if (existsSync(join(candidate, 'pg-ha', 'engine.yaml'))) return candidate;
    dir = dirname(dir);
  }
  throw new DispatcherError('config_invalid', 'cannot find the templates folder (set DISPATCHER_TEMPLATES_DIR)');
}

const cache = new Map<string, Engine>();

/** Names of the engines found in the templates folder (folders holding an engine.yaml), sorted. */
export function listEngines(dir = templatesDir()): string[] {
  return readdirSync(dir)
    .filter((n) => statSync(join(dir, n)).isDirectory() && existsSync(join(dir, n, 'engine.yaml')))
    .sort();
}

/** Loads (and caches) an engine. Unknown engine → DispatcherError('validation_failed') naming the known ones. */
export function loadEngine(name: string, dir = templatesDir()): Engine {
  const key = `${dir}\0${name}`;
  const hit = cache.get(key);
  if (hit) return hit;
  const known = listEngines(dir);
  if (typeof name !== 'string' || !known.includes(name)) {
    throw new DispatcherError('validation_failed', `unknown engine "${name}"`, {
      problems: [{ path: 'engine', message: `unknown engine "${name}"; known: ${known.join(', ')}` }],
    });
  }
  const folder = join(dir, name);
  const file = join(folder, 'engine.yaml');
  let raw: unknown;
  try {
    raw = YAML.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new DispatcherError('config_invalid', `engine ${name}: ${file} is not valid YAML`, { cause: err });
  }
  const parsed = EngineManifestSchema.safeParse(raw);
  if (!parsed.success) {
    throw new DispatcherError('config_invalid', `engine ${name}: ${file} does not match the engine schema`, {
      problems: zodProblems(parsed.error),
    });
  }
  const manifest = parsed.data;
  if (manifest.name !== name) throw new DispatcherError('config_invalid', `engine folder ${name} declares name ${manifest.name}`);
  const listProblems = ROLES.flatMap((role) =>
    optionListProblems({ allowed: manifest.roles[role].options, managed: manifest.roles[role].managedOptions }, `roles.${role}.options`),
  );
  for (const role of ROLES) {
    const r = manifest.roles[role].certificateReload;
    if (r?.kind === 'action' && !CERTIFICATE_RELOAD_ACTIONS.includes(r.action)) listProblems.push(`roles.${role}.certificateReload: unknown action ${r.action} (known: ${CERTIFICATE_RELOAD_ACTIONS.join(', ')})`);
  }
  if (listProblems.length) throw new DispatcherError('config_invalid', `engine ${name}: ${listProblems.join('; ')}`);
  const templates: Record<string, string> = {};
  for (const role of ROLES) {
    for (const f of [...manifest.roles[role].files, ...(manifest.roles[role].companion?.files ?? [])]) {
      if (f.template !== undefined && !(f.template in templates)) {
        if (f.template.includes('/') || f.template.startsWith('.')) {
          throw new DispatcherError('config_invalid', `engine ${name}: template ${f.template} must be a file name in the engine folder`);
        }
        templates[f.template] = readFileSync(join(folder, f.template), 'utf8');
      }
    }
  }
  const engine: Engine = { name, manifest, templates };
  cache.set(key, engine);
  return engine;
}

/** The Planner's and validator's view of an engine: ports, exposures, forbidden options. */
export function defaultsOf(engine: Engine): EngineDefaults {
  const roles = {} as EngineDefaults['roles'];
  for (const role of ROLES) {
    const r = engine.manifest.roles[role];
    roles[role] = {
      program: r.program,
      ports: r.ports.map((p) => ({ name: p.name, default: p.default, exposure: p.exposure })),
      options: { allowed: r.options.map((o) => ({ name: o.name, ...(o.value !== undefined ? { value: o.value } : {}) })), managed: r.managedOptions },
    };
  }
  return { name: engine.name, portOffsetStep: engine.manifest.portOffsetStep, programs: enginePrograms(engine), roles };
}

/** Every program an engine runs or names: the only keys a plan's `binaries` may have. */
export function enginePrograms(engine: Engine): string[] {
  const out = new Set<string>();
  for (const role of ROLES) {
    const r = engine.manifest.roles[role];
    out.add(r.program);
    for (const q of r.requires) out.add(q);
    if (r.readiness.kind === 'command') out.add(r.readiness.program);
    if (r.companion) out.add(r.companion.program);
  }
  return [...out].sort();
}

export function engineDefaults(name: string): EngineDefaults {
  return defaultsOf(loadEngine(name));
}

/** Every known engine's defaults, keyed by name: the catalog the Planner and validator use by default. */
export function defaultEngineCatalog(): ReadonlyMap<string, EngineDefaults> {
  return new Map(listEngines().map((n) => [n, engineDefaults(n)]));
}
