/**
 * The daemon's configuration: a YAML or JSON file, then DISPATCHER_* environment overrides, validated by
 * one strict zod schema so that an unknown key or a bad value stops start-up with a message naming it.
 * Paths in the file are resolved relative to the file's directory; paths from the environment relative
 * to the working directory. Pure apart from reading the file (the parsing core is `parseConfig`).
 */
import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { hostname } from 'node:os';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { DispatcherError, type Problem } from '../api/errors.js';
import { EngineNameSchema, FirewallBackendSchema, NameSchema, ProgramNameSchema, formatPath } from '../api/plan.js';

export const DEFAULT_PORT = 8528;

const AbsPath = z.string().min(1).refine(isAbsolute, 'must be an absolute path');
const Port = z.number().int().min(1).max(65535);
/** The HTTPS port may be 0 (an ephemeral port, for tests); the real one is in the daemon handle. */
const ListenPort = z.number().int().min(0).max(65535);

/**
 * program → the absolute path, or the paths, this machine allows for it (several for upgrades; the first is
 * the default). A plan may only choose among the paths of the same program (server/engines/render.ts).
 */
export const EngineBinariesSchema = z
  .object({ binaries: z.record(ProgramNameSchema, z.union([AbsPath, z.array(AbsPath).min(1)])).default({}) })
  .strict();

export const ConfigFileSchema = z
  .object({
    id: NameSchema.optional().describe('stable dispatcher id; default: the host name'),
    listen: z.string().min(1).default('0.0.0.0'),
    port: ListenPort.default(DEFAULT_PORT),
    redirectPort: Port.optional().describe('plain-HTTP port that only redirects to HTTPS'),
    endpoint: z.string().url().optional().describe('https://ADDRESS:PORT peers and clients use; default from listen/host name'),
    dataDir: AbsPath,
    cert: AbsPath.optional(),
    key: AbsPath.optional(),
    usersFile: AbsPath.optional(),
    engines: z.record(EngineNameSchema, EngineBinariesSchema).default({}),
    runAs: z.string().regex(/^[a-z_][a-z0-9_-]*\$?$/, 'must be a user name').refine((u) => u !== 'root', 'must be an unprivileged user').optional(),
    log: z
      .object({
        level: z.enum(['error', 'warn', 'info', 'debug']).default('info'),
        file: AbsPath.optional(),
      })
      .strict()
      .default({ level: 'info' }),
    firewall: z
      .object({
        backend: FirewallBackendSchema.default('auto'),
        driftIntervalMs: z.number().int().min(100).default(10_000),
      })
      .strict()
      .default({ backend: 'auto', driftIntervalMs: 10_000 }),
    relaunchOnBoot: z.boolean().default(true),
    socketPath: AbsPath.optional(),
    readOnlyUsers: z
      .array(z.string().min(1))
      .default([])
      .describe('users that may only read (GET and HEAD), e.g. the account Prometheus scrapes /metrics with'),
    maxBodyBytes: z.number().int().min(1024).max(64 * 1024 * 1024).default(1024 * 1024),
    auth: z
      .object({
        /** How long a verified user+password pair skips scrypt (ms). */
        cacheTtlMs: z.number().int().min(0).default(60_000),
        cacheMaxEntries: z.number().int().min(0).default(1000),
        /** Login attempts (failed or in flight) per source address within failWindowMs before 429. */
        maxFailures: z.number().int().min(1).default(10),
        /**
         * Attempts per account over all sources within failWindowMs before 429 (a guesser rotating source
         * addresses). Larger than maxFailures, so one throttled source cannot lock an account alone.
         */
        maxAccountFailures: z.number().int().min(1).default(30),
        failWindowMs: z.number().int().min(1000).default(60_000),
      })
      .strict()
      .default({ cacheTtlMs: 60_000, cacheMaxEntries: 1000, maxFailures: 10, maxAccountFailures: 30, failWindowMs: 60_000 }),
    operations: z
      .object({
        /** Finished operation records older than this are dropped (memory and <dataDir>/operations). */
        maxAgeDays: z.number().min(0.001).default(30),
        /** At most this many finished records are kept (the newest). */
        maxCount: z.number().int().min(1).default(200),
        /** Time to live of the agency lease behind the cluster-wide operation lock: how long a dead runner blocks the cluster (docs/DESIGN.md, "Operation lifecycle"). */
        lockTtlSeconds: z.number().int().min(2).max(600).default(10),
        /** A dispatcher `launching` with no word from the launch's runner for this long rolls its own part back (server/cluster/launch-watchdog.ts). */
        launchStaleSeconds: z.number().int().min(5).max(86_400).default(300),
      })
      .strict()
      .default({ maxAgeDays: 30, maxCount: 200, lockTtlSeconds: 10, launchStaleSeconds: 300 }),
  })
  .strict();

type Parsed = z.infer<typeof ConfigFileSchema>;

/** The resolved configuration: every path filled in. */
export interface DispatcherConfig extends Omit<Parsed, 'cert' | 'key' | 'usersFile' | 'socketPath' | 'log' | 'id'> {
  id: string;
  cert: string;
  key: string;
  usersFile: string;
  socketPath: string;
  log: { level: Parsed['log']['level']; file: string };
}

/** Environment variable -> config key path, with how to read its string value. */
export const ENV_KEYS: Record<string, { path: string[]; kind: 'string' | 'int' | 'bool' | 'path' }> = {
  DISPATCHER_ID: { path: ['id'], kind: 'string' },
  DISPATCHER_LISTEN: { path: ['listen'], kind: 'string' },
  DISPATCHER_PORT: { path: ['port'], kind: 'int' },
  DISPATCHER_REDIRECT_PORT: { path: ['redirectPort'], kind: 'int' },
  DISPATCHER_ENDPOINT: { path: ['endpoint'], kind: 'string' },
  DISPATCHER_DATA_DIR: { path: ['dataDir'], kind: 'path' },
  DISPATCHER_CERT: { path: ['cert'], kind: 'path' },
  DISPATCHER_KEY: { path: ['key'], kind: 'path' },
  DISPATCHER_USERS_FILE: { path: ['usersFile'], kind: 'path' },
  DISPATCHER_RUN_AS: { path: ['runAs'], kind: 'string' },
  DISPATCHER_LOG_LEVEL: { path: ['log', 'level'], kind: 'string' },
  DISPATCHER_LOG_FILE: { path: ['log', 'file'], kind: 'path' },
  DISPATCHER_FIREWALL_BACKEND: { path: ['firewall', 'backend'], kind: 'string' },
  DISPATCHER_RELAUNCH_ON_BOOT: { path: ['relaunchOnBoot'], kind: 'bool' },
  DISPATCHER_SOCKET_PATH: { path: ['socketPath'], kind: 'path' },
};

/** Makes a dispatcher id from a host name (ids are lowercase names, see NameSchema). */
export function defaultId(host = hostname()): string {
  const id = host.toLowerCase().split('.')[0].replace(/[^a-z0-9-]/g, '-').replace(/^-+/, '').slice(0, 63);
  return id || 'dispatcher';
}

const PATH_KEYS = new Set(['dataDir', 'cert', 'key', 'usersFile', 'socketPath', 'file']);

/** Resolves relative paths of the file against its directory (only string values of path-like keys). */
function resolvePaths(obj: unknown, base: string): unknown {
  if (!obj || typeof obj !== 'object' || Array.isArray(obj)) return obj;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(obj)) {
    if (typeof v === 'string' && PATH_KEYS.has(k) && v && !isAbsolute(v)) out[k] = resolve(base, v);
    else if (k === 'log' || k === 'firewall') out[k] = resolvePaths(v, base);
    else out[k] = v;
  }
  return out;
}

/**
 * Pure core: merges the raw file object and the environment, validates, fills in defaults.
 * `fileBase` is the directory relative file paths resolve against; `cwd` the one for env paths.
 */
export function parseConfig(raw: unknown, env: Record<string, string | undefined> = {}, fileBase = process.cwd(), cwd = process.cwd()): DispatcherConfig {
  if (raw !== undefined && (raw === null || typeof raw !== 'object' || Array.isArray(raw))) {
    throw new DispatcherError('config_invalid', 'configuration must be a mapping of keys to values', {
      problems: [{ path: '(root)', message: 'expected an object' }],
    });
  }
  const merged = structuredClone((resolvePaths(raw ?? {}, fileBase) as Record<string, unknown>) ?? {});
  const fromEnv = new Map<string, string>(); // config path -> env var name, to name the source in errors
  const problems: Problem[] = [];
  for (const [name, spec] of Object.entries(ENV_KEYS)) {
    const value = env[name];
    if (value === undefined || value === '') continue;
    let v: unknown = value;
    if (spec.kind === 'int') {
      v = /^\d+$/.test(value) ? Number(value) : value; // a non-number stays a string so zod names it
    } else if (spec.kind === 'bool') {
      if (/^(1|true|yes|on)$/i.test(value)) v = true;
      else if (/^(0|false|no|off)$/i.test(value)) v = false;
      else problems.push({ path: name, message: 'must be true or false' });
    } else if (spec.kind === 'path') {
      v = resolve(cwd, value);
    }
    let node = merged as Record<string, unknown>;
    for (const key of spec.path.slice(0, -1)) {
      if (!node[key] || typeof node[key] !== 'object') node[key] = {};
      node = node[key] as Record<string, unknown>;
    }
    node[spec.path[spec.path.length - 1]] = v;
    fromEnv.set(spec.path.join('.'), name);
  }
  const result = ConfigFileSchema.safeParse(merged);
  if (!result.success) {
    for (const issue of result.error.issues) {
      const path = formatPath(issue.path);
      if (issue.code === 'unrecognized_keys') {
        for (const key of issue.keys) {
          const full = path ? `${path}.${key}` : key;
          problems.push({ path: full, message: `unknown key "${full}"` });
        }
        continue;
      }
      const envName = fromEnv.get(path);
      problems.push({ path: envName ? `${path} (from ${envName})` : path || '(root)', message: issue.message });
    }
  }
  if (problems.length || !result.success) {
    throw new DispatcherError('config_invalid', `invalid configuration: ${problems.map((p) => `${p.path}: ${p.message}`).join('; ')}`, { problems });
  }
  const c = result.data;
  return {
    ...c,
    id: c.id ?? defaultId(),
    cert: c.cert ?? join(c.dataDir, 'tls', 'cert.pem'),
    key: c.key ?? join(c.dataDir, 'tls', 'key.pem'),
    usersFile: c.usersFile ?? join(c.dataDir, 'users.json'),
    socketPath: c.socketPath ?? join(c.dataDir, 'control.sock'),
    log: { level: c.log.level, file: c.log.file ?? join(c.dataDir, 'dispatcher.log') },
  };
}

/** Reads a YAML or JSON file (JSON is YAML, but parse .json strictly for clearer messages). */
export function readConfigFile(file: string): unknown {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new DispatcherError('config_invalid', `cannot read config file ${file}: ${(err as Error).message}`, { cause: err });
  }
  try {
    return file.endsWith('.json') ? JSON.parse(text) : parseYaml(text);
  } catch (err) {
    throw new DispatcherError('config_invalid', `config file ${file} is not valid ${file.endsWith('.json') ? 'JSON' : 'YAML'}: ${(err as Error).message}`, { cause: err });
  }
}

/** Loads the file (optional) and applies DISPATCHER_* overrides from `env` (default process.env). */
export function loadConfig(file?: string, env: Record<string, string | undefined> = process.env): DispatcherConfig {
  const raw = file ? readConfigFile(file) : undefined;
  return parseConfig(raw ?? undefined, env, file ? dirname(resolve(file)) : process.cwd());
}

/** Name of the config file `dispatcherd init` writes in the data dir. */
export const CONFIG_FILE_NAME = 'config.yaml';
