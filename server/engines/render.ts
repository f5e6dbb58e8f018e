/**
 * The pure renderer: (engine, plan, process id, machine context) → the ProcessSpec the supervisor runs plus
 * the files to write next to it. No I/O: the engine's templates were read by the loader, the secrets and
 * allowed binaries come from the caller. The template language and its per-format escaping helpers live in
 * template.ts.
 */
import { randomBytes } from 'node:crypto';
import { isAbsolute, relative, resolve, sep } from 'node:path';
import { DispatcherError } from '../../api/errors.js';
import type { Plan, PlanProcess, Role } from '../../api/plan.js';
import { DEFAULT_RESTART_POLICY, type ProbeSpec, type ProcessSpec } from '../supervisor/types.js';
import type { ArgvEntry, Engine } from './types.js';
import { hostAddresses, singleSocketAddress } from '../core/listen-addresses.js';
import { renderTemplate, toCidr } from './template.js';

export interface RenderContext {
  /** This dispatcher's data directory (absolute); process dirs are plan dataDirs inside it. */
  dispatcherDataDir: string;
  /**
   * program name → the absolute path(s) this machine's config allows for it (the first is the default).
   * A plan's `binaries` may only choose among the paths of the SAME program (docs/SECURITY.md).
   */
  binaries: Readonly<Record<string, string | readonly string[]>>;
  /** The cluster's generated secrets (generateSecrets), by name. */
  secrets: Record<string, string>;
  runAs?: { uid: number; gid: number; user?: string };
  /**
   * The process's certificate, key and the cluster CA (docs/SECURITY.md, "Cluster-internal TLS"). Written as
   * 0600 tls-* files in the process dir; templates name them as {{tls.caFile}}, {{tls.certFile}},
   * {{tls.keyFile}} and {{tls.pemFile}} (certificate + key in one file, for HAProxy).
   */
  tls?: { ca: string; cert: string; key: string };
  /**
   * The agency this process starts with: `new` for a launch (the plan's agents bootstrap together),
   * `existing` for an agent a scale operation added as a member first (docs/DESIGN.md, "Scaling"); the
   * templates name it {{agencyState}}. Only a process's first start reads it (etcd ignores it afterwards).
   */
  agencyState?: 'new' | 'existing';
}

/** Where a process's TLS files live, relative to its dir. */
// Directly in the process dir: a subdirectory the process user owns could be swapped for a link between
// check and write (docs/SECURITY.md, "Process user"), so engine files never sit below one.
export const TLS_FILES = { caFile: 'tls-ca.crt', certFile: 'tls-server.crt', keyFile: 'tls-server.key', pemFile: 'tls-server.pem' } as const;

export interface RenderedFile {
  /** Absolute, inside the process directory. */
  path: string;
  content: string;
  mode: number;
}

export interface RenderedProcess {
  spec: ProcessSpec;
  files: RenderedFile[];
  /** A pid file a grandchild may leave running after the process stops (postgres under Patroni). */
  leftoverPidFile?: string;
  /** The role's companion program (server/engines/types.ts EngineCompanionSchema), same dir and TLS files. */
  companion?: { spec: ProcessSpec; files: RenderedFile[]; reloadSignal?: NodeJS.Signals };
  /** How the running program re-reads its TLS files (templates/<engine>/engine.yaml `certificateReload`). */
  certificateReload?: CertificateReload;
  /** The signal that makes the running program re-read its configuration (engine.yaml `configReload`). */
  configReloadSignal?: NodeJS.Signals;
}

/** The supervisor id of a process's companion. */
export function companionId(processId: string, name: string): string {
  return `${processId}.${name}`;
}

/** A rendered `certificateReload` declaration (server/engines/types.ts). */
export type CertificateReload =
  | { kind: 'per-handshake'; description: string }
  | { kind: 'signal'; signal: 'SIGHUP' | 'SIGUSR1' | 'SIGUSR2'; description: string }
  | { kind: 'action'; action: string; socket?: string; description: string };

/**
 * Template data `tls` when the dispatcher has no certificates for the process: any use of it fails with
 * this message instead of handlebars' "certFile not defined in null".
 */
const NO_TLS = new Proxy(
  {},
  {
    has() {
      throw new DispatcherError('conflict', "this process needs the cluster's TLS certificates, which this dispatcher has not installed (a cluster launched before cluster-internal TLS: launch it again)");
    },
    get(_t, name) {
      if (typeof name === 'symbol' || name === 'toJSON' || name === 'then') return undefined;
      throw new DispatcherError('conflict', "this process needs the cluster's TLS certificates, which this dispatcher has not installed (a cluster launched before cluster-internal TLS: launch it again)");
    },
  },
);

interface Member {
  id: string;
  role: Role;
  dispatcher: string;
  address: string;
  ports: Record<string, number>;
}

function member(p: PlanProcess): Member {
  return { id: p.id, role: p.role, dispatcher: p.dispatcher, address: p.address, ports: Object.fromEntries(p.ports.map((x) => [x.name, x.port])) };
}

/** The directory of a process: the plan's relative dataDir inside the dispatcher's data dir, never outside. */
export function processDir(dispatcherDataDir: string, dataDir: string): string {
  if (!isAbsolute(dispatcherDataDir)) throw new DispatcherError('config_invalid', 'the dispatcher data dir must be absolute');
  const dir = resolve(dispatcherDataDir, dataDir);
  const rel = relative(dispatcherDataDir, dir);
  if (isAbsolute(dataDir) || rel === '' || rel.startsWith('..') || isAbsolute(rel)) {
    throw new DispatcherError('validation_failed', `data dir ${dataDir} escapes the dispatcher data dir`, {
      problems: [{ path: 'processes[].dataDir', message: 'must be a relative path inside the data root' }],
    });
  }
  return dir;
}

export function engineSecrets(engine: Engine): string[] {
  return engine.manifest.secrets.map((s) => s.name);
}

/** Fresh random secrets for a new cluster (hex: no ':' for basic auth, no quoting trouble in configs). */
export function generateSecrets(engine: Engine): Record<string, string> {
  return Object.fromEntries(engine.manifest.secrets.map((s) => [s.name, randomBytes(s.bytes).toString('hex')]));
}

/** The template data of one process: itself, its peers by role, the cluster's addresses and the machine's binaries. */
export function templateData(engine: Engine, plan: Plan, proc: PlanProcess, dir: string, binaries: Record<string, string>, ctx: RenderContext): Record<string, unknown> {
  const all = plan.processes.map(member);
  const agents = all.filter((m) => m.role === 'agent');
  const addresses = [...new Set(plan.dispatchers.flatMap((d) => d.addresses))];
  return {
    cluster: { name: plan.name, engine: plan.engine },
    process: member(proc),
    me: member(proc),
    ports: member(proc).ports,
    dir,
    agents,
    otherAgents: agents.filter((m) => m.id !== proc.id),
    dbservers: all.filter((m) => m.role === 'dbserver'),
    coordinators: all.filter((m) => m.role === 'coordinator'),
    agencySize: agents.length,
    agencyState: ctx.agencyState ?? 'new',
    clusterAddresses: addresses,
    hostAddresses: hostAddresses(plan, proc),
    singleSocketAddress: singleSocketAddress(hostAddresses(plan, proc)),
    // pg_hba sources: the cluster's addresses; on loopback the kernel uses 127.0.0.1 (or ::1) as the source
    // whatever 127.x address was dialled, so a loopback cluster admits the loopback range it lives in.
    hbaSources: [
      ...addresses.map(toCidr),
      ...(addresses.some((a) => a.startsWith('127.')) && !addresses.includes('127.0.0.1') ? ['127.0.0.1/32'] : []),
    ],
    binaries,
    secrets: ctx.secrets,
    tls: ctx.tls ? Object.fromEntries(Object.entries(TLS_FILES).map(([k, f]) => [k, resolve(dir, f)])) : NO_TLS,
    vars: engine.manifest.vars,
  };
}

function renderArgv(entries: ArgvEntry[], data: Record<string, unknown>, what: string): string[] {
  const out: string[] = [];
  for (const e of entries) {
    if (typeof e === 'string') out.push(renderTemplate(e, data, what));
    else for (const m of data[e.each] as Member[]) for (const a of e.args) out.push(renderTemplate(a, { ...data, item: m }, what));
  }
  return out;
}

/** The paths this machine allows for a program ([] when none); own keys only, first = default. */
export function allowedPaths(binaries: RenderContext['binaries'], program: string): readonly string[] {
  if (!Object.hasOwn(binaries, program)) return [];
  const v = binaries[program];
  return typeof v === 'string' ? [v] : v;
}

/**
 * program → the path it runs from for this plan on this machine: the plan's choice for that program when it
 * is among the paths the machine allows for THAT program, the machine's default otherwise. Every program the
 * role needs must be configured; a plan choice for any other path is refused (403).
 */
export function chosenBinaries(engine: Engine, plan: Plan, ctx: RenderContext, role: Role): Record<string, string> {
  const r = engine.manifest.roles[role];
  const programs = new Set([r.program, ...r.requires, ...(r.readiness.kind === 'command' ? [r.readiness.program] : []), ...(r.companion ? [r.companion.program] : [])]);
  const out: Record<string, string> = Object.create(null);
  for (const [program, path] of Object.entries(plan.binaries)) {
    if (!allowedPaths(ctx.binaries, program).includes(path)) {
      throw new DispatcherError('forbidden', `plan binary ${path} for program ${program} is not among the paths this dispatcher allows for ${program}`, {
        details: { program, engine: engine.name },
      });
    }
  }
  for (const prog of new Set([...programs, ...Object.keys(ctx.binaries)])) {
    const allowed = allowedPaths(ctx.binaries, prog);
    if (allowed.length === 0) {
      if (!programs.has(prog)) continue;
      throw new DispatcherError('preflight_failed', `engine ${engine.name} needs program "${prog}" for role ${role}, but this dispatcher has no binary configured for it`, {
        details: { engine: engine.name, program: prog, role },
      });
    }
    for (const p of allowed) {
      if (!isAbsolute(p)) throw new DispatcherError('config_invalid', `binary for program "${prog}" must be an absolute path`, { details: { program: prog } });
    }
    out[prog] = Object.hasOwn(plan.binaries, prog) ? plan.binaries[prog] : allowed[0];
  }
  return out;
}

function requireTls(data: Record<string, unknown>): { caFile: string; certFile: string; keyFile: string } {
  const t = data.tls as Record<string, string>;
  return { caFile: t.caFile, certFile: t.certFile, keyFile: t.keyFile };
}

export function renderProcess(engine: Engine, plan: Plan, processId: string, ctx: RenderContext): RenderedProcess {
  const proc = plan.processes.find((p) => p.id === processId);
  if (!proc) throw new DispatcherError('not_found', `process ${processId} is not in plan ${plan.name}`);
  if (plan.engine !== engine.name) throw new DispatcherError('bad_request', `plan ${plan.name} uses engine ${plan.engine}, not ${engine.name}`);
  const role = engine.manifest.roles[proc.role];
  const what = `${engine.name}/${proc.role}/${proc.id}`;

  // Only binaries this machine's config allows may run (docs/SECURITY.md), and each program only as itself: the
  // role's program is fixed by the engine, the plan may only pick one of that program's allowed paths.
  const chosen = chosenBinaries(engine, plan, ctx, proc.role);
  const executable = chosen[role.program];
  for (const s of engineSecrets(engine)) {
    if (typeof ctx.secrets[s] !== 'string' || ctx.secrets[s] === '') {
      throw new DispatcherError('config_invalid', `secret "${s}" of engine ${engine.name} is missing`, { details: { secret: s } });
    }
  }

  const dir = processDir(ctx.dispatcherDataDir, proc.dataDir);
  const data = templateData(engine, plan, proc, dir, chosen, ctx);
  const argv = [executable, ...renderArgv(role.argv, data, `argv of ${what}`), ...proc.args];

  const renderFile = (f: (typeof role.files)[number], whose: string): RenderedFile => {
    const path = resolve(dir, f.path);
    if (!path.startsWith(dir + sep)) throw new DispatcherError('config_invalid', `engine ${engine.name}: file ${f.path} escapes the process dir`);
    const content = f.secret !== undefined ? ctx.secrets[f.secret] : renderTemplate(engine.templates[f.template!], data, `${f.template} of ${whose}`);
    if (content === undefined) throw new DispatcherError('config_invalid', `secret "${f.secret}" of engine ${engine.name} is missing`);
    return { path, content, mode: f.mode };
  };
  const files = role.files.map((f) => renderFile(f, what));
  if (ctx.tls) {
    const t = ctx.tls;
    const content = { caFile: t.ca, certFile: t.cert, keyFile: t.key, pemFile: `${t.cert.trimEnd()}\n${t.key}` };
    for (const [k, f] of Object.entries(TLS_FILES)) files.push({ path: resolve(dir, f), content: content[k as keyof typeof TLS_FILES], mode: 0o600 });
  }

  const probe = (r: typeof role.readiness, whose: string): ProbeSpec =>
    r.kind === 'tcp'
      ? { kind: 'tcp', host: proc.address, port: Number(renderTemplate(`{{ports.${r.port}}}`, data, `readiness of ${whose}`)) }
      : r.kind === 'command'
      ? {
          kind: 'command',
          argv: [chosen[r.program], ...r.args.map((a) => renderTemplate(a, data, `readiness of ${whose}`))],
          ...(r.timeoutMs ? { timeoutMs: r.timeoutMs } : {}),
          // As the process user: the probe reads that user's files (probe.pgpass) and nothing of root's.
          ...(ctx.runAs ? { runAs: { uid: ctx.runAs.uid, gid: ctx.runAs.gid } } : {}),
        }
      : {
          kind: 'http',
          url: renderTemplate(r.url, data, `readiness of ${whose}`),
          ...(r.expectStatus ? { expectStatus: r.expectStatus } : {}),
          ...(r.bodyMatch ? { bodyMatch: r.bodyMatch } : {}),
          ...(r.clusterTls ? { tls: requireTls(data) } : {}),
        };

  const readiness = probe(role.readiness, what);
  const env = Object.fromEntries(Object.entries(role.env).map(([k, v]) => [k, renderTemplate(v, data, `env ${k} of ${what}`)]));
  const spec: ProcessSpec = {
    id: proc.id,
    role: proc.role,
    cluster: plan.name,
    argv,
    env,
    cwd: dir,
    dir,
    ...(ctx.runAs ? { runAs: ctx.runAs } : {}),
    readiness,
    ...(role.readinessIntervalMs ? { readinessIntervalMs: role.readinessIntervalMs } : {}),
    stopSignal: role.stop.signal,
    stopTimeoutMs: role.stop.timeoutMs,
    restart: { ...DEFAULT_RESTART_POLICY },
  };
  const out: RenderedProcess = { spec, files };
  const c = role.companion;
  if (c) {
    const cwhat = `${what}.${c.name}`;
    out.companion = {
      spec: {
        ...spec,
        id: companionId(proc.id, c.name),
        argv: [chosen[c.program], ...renderArgv(c.argv, data, `argv of ${cwhat}`)],
        env: Object.fromEntries(Object.entries(c.env).map(([k, v]) => [k, renderTemplate(v, data, `env ${k} of ${cwhat}`)])),
        readiness: probe(c.readiness, cwhat),
        ...(c.readinessIntervalMs ? { readinessIntervalMs: c.readinessIntervalMs } : {}),
        stopSignal: c.stop.signal,
        stopTimeoutMs: c.stop.timeoutMs,
        restart: { ...DEFAULT_RESTART_POLICY },
      },
      files: c.files.map((f) => renderFile(f, cwhat)),
      ...(c.reloadSignal ? { reloadSignal: c.reloadSignal } : {}),
    };
  }
  const cr = role.certificateReload;
  if (cr?.kind === 'action' && cr.socket !== undefined) {
    const socket = resolve(dir, renderTemplate(cr.socket, data, `certificateReload of ${what}`));
    if (!socket.startsWith(dir + sep)) throw new DispatcherError('config_invalid', `engine ${engine.name}: certificateReload socket of ${what} escapes the process dir`);
    out.certificateReload = { ...cr, socket };
  } else if (cr) out.certificateReload = cr;
  if (role.configReload) out.configReloadSignal = role.configReload.signal;
  if (role.leftoverPidFile) out.leftoverPidFile = resolve(dir, renderTemplate(role.leftoverPidFile, data, `leftoverPidFile of ${what}`));
  return out;
}

/** The rolling-restart steps an engine declares for a role (data; the orchestrator implements the actions). */
export function rollingRestartSteps(engine: Engine, role: Role) {
  return engine.manifest.roles[role].rollingRestart;
}
