/**
 * The shape of an engine profile (templates/<engine>/engine.yaml). An engine is DATA: per role, which program
 * runs, its argv and config-file templates, its named ports with their exposure, its readiness probe, how to
 * stop it, which options users may not override, and what a rolling restart must do around it. The schema
 * is strict so that a typo in a profile fails at load time, not when a cluster launches.
 */
import { z } from 'zod';
import { ExposureSchema, PortSchema, ROLES } from '../../api/plan.js';
import type { RoleOptions } from '../core/extra-args.js';

export const EnginePortSchema = z
  .object({
    name: z.string().regex(/^[a-z][a-z0-9-]*$/),
    default: PortSchema,
    exposure: ExposureSchema,
    description: z.string().optional(),
  })
  .strict();

/** An argv entry: a template string, or a group repeated for each member of a list (e.g. every other agent). */
export const ArgvEntrySchema = z.union([
  z.string(),
  z
    .object({
      each: z.enum(['agents', 'otherAgents', 'dbservers', 'coordinators']),
      args: z.array(z.string()).min(1),
    })
    .strict(),
]);
export type ArgvEntry = z.infer<typeof ArgvEntrySchema>;

export const EngineFileSchema = z
  .object({
    /** Relative to the process directory. */
    path: z.string().min(1),
    /** A handlebars template file in the engine's folder; or `secret` to write a generated secret verbatim. */
    template: z.string().optional(),
    secret: z.string().optional(),
    mode: z.number().int().min(0).max(0o777).default(0o600),
  })
  .strict()
  .refine((f) => (f.template === undefined) !== (f.secret === undefined), 'exactly one of template or secret');

export const ProbeTemplateSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('tcp'), port: z.string().min(1) }).strict(),
  z
    .object({
      kind: z.literal('http'),
      url: z.string().min(1),
      expectStatus: z.array(z.number().int()).optional(),
      bodyMatch: z.string().optional(),
      /** https with the cluster CA and the process's own certificate as client certificate. */
      clusterTls: z.boolean().optional(),
    })
    .strict(),
  z
    .object({
      kind: z.literal('command'),
      /** argv[0] names a program (looked up among the allowed binaries); the rest are templates. */
      program: z.string().min(1),
      args: z.array(z.string()),
      timeoutMs: z.number().int().positive().optional(),
    })
    .strict(),
]);

export const AllowedOptionSchema = z
  .object({
    name: z.string().regex(/^[a-z][a-z0-9._-]*$/),
    value: z.string().min(1).optional(),
    description: z.string().optional(),
  })
  .strict();

/** One step of a rolling restart, by name; the orchestrator (server/) implements each action. */
export const RollingStepSchema = z
  .object({
    action: z.string().regex(/^[a-z][a-z0-9-]*$/),
    description: z.string(),
    /** Only for the process that currently leads (e.g. Patroni switchover before restarting the leader). */
    onlyLeader: z.boolean().optional(),
    timeoutMs: z.number().int().positive().optional(),
  })
  .strict();
export type RollingStep = z.infer<typeof RollingStepSchema>;

/**
 * Connection-layer pause around a rolling restart's disruptive moments (docs/DESIGN.md, "Rolling restart
 * without failed statements"): `all-coordinators` pauses every coordinator's companion around this role's
 * switchover; `self` pauses the process's own companion around its restart; `all-coordinators-restart`
 * pauses every coordinator's companion around each restart of this role's processes, until every
 * coordinator routes to a primary again. At most `maxMs` long.
 */
export const RollingPauseSchema = z
  .object({
    scope: z.enum(['all-coordinators', 'self', 'all-coordinators-restart']),
    maxMs: z.number().int().positive().max(60_000).default(10_000),
  })
  .strict();

/**
 * The DB servers' automatic failover held while this role's processes restart (pg-ha: Patroni's
 * maintenance mode around the agency's restart; docs/DESIGN.md, "Rolling restart without failed
 * statements"). Released on every path, at the latest `maxMs` after it was taken.
 */
export const RollingFailoverHoldSchema = z
  .object({
    description: z.string(),
    maxMs: z.number().int().positive().max(600_000).default(120_000),
  })
  .strict();

export const RollingRestartSchema = z
  .object({
    /** followers-then-leader: restart non-leaders first, the leader last. one-at-a-time: plan order. */
    order: z.enum(['followers-then-leader', 'one-at-a-time']),
    /** Once before the first process of the role. */
    beforeRole: z.array(RollingStepSchema).default([]),
    /** Before stopping each process. */
    before: z.array(RollingStepSchema).default([]),
    /** After starting each process again, before the next one. */
    after: z.array(RollingStepSchema).default([]),
    /** Once after the last process of the role. */
    afterRole: z.array(RollingStepSchema).default([]),
    pause: RollingPauseSchema.optional(),
    holdFailover: RollingFailoverHoldSchema.optional(),
  })
  .strict();
export type RollingRestart = z.infer<typeof RollingRestartSchema>;

/**
 * What a role's main program and a companion both declare: the program (looked up among the binaries this
 * machine's config allows; becomes argv[0]), its argv, files, env, readiness probe and stop.
 */
const programFields = {
  program: z.string().min(1),
  argv: z.array(ArgvEntrySchema),
  files: z.array(EngineFileSchema).default([]),
  env: z.record(z.string(), z.string()).default({}),
  readiness: ProbeTemplateSchema,
  readinessIntervalMs: z.number().int().positive().optional(),
  stop: z.object({ signal: z.enum(['SIGTERM', 'SIGINT', 'SIGQUIT', 'SIGUSR1', 'SIGHUP']), timeoutMs: z.number().int().positive() }).strict(),
};

/**
 * A second program that serves the role next to its main one (pg-ha: PgBouncer in front of each
 * coordinator's HAProxy). Same shape as a role's process, minus ports (it uses the role's, by name) and
 * options. It starts after the main program is ready and stops before it; a rolling restart of the role
 * restarts only the main program and keeps the companion (and its clients' connections) running.
 */
export const EngineCompanionSchema = z
  .object({
    /** Suffix of its supervisor id: `<process id>.<name>`. */
    name: z.string().regex(/^[a-z][a-z0-9-]*$/),
    ...programFields,
    /** Sent when it is kept across its main program's restart, so it re-reads its rewritten files (new certificates). */
    reloadSignal: z.enum(['SIGHUP', 'SIGUSR1', 'SIGUSR2']).optional(),
  })
  .strict();
export type EngineCompanion = z.infer<typeof EngineCompanionSchema>;

/**
 * How a RUNNING program re-reads its TLS files after certificate renewal (docs/DESIGN.md, "Certificate
 * renewal"): nothing to do (it reads them on every handshake), a signal to the supervised process, or a
 * named engine action (server/engines/certificate-reload.ts maps names to code under
 * server/engines/<engine>/). No kind restarts anything.
 */
export const CertificateReloadSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('per-handshake'), description: z.string() }).strict(),
  z.object({ kind: z.literal('signal'), signal: z.enum(['SIGHUP', 'SIGUSR1', 'SIGUSR2']), description: z.string() }).strict(),
  z
    .object({
      kind: z.literal('action'),
      action: z.string().regex(/^[a-z][a-z0-9-]*$/),
      /** A template: the local socket the action talks to (in the process dir). */
      socket: z.string().min(1).optional(),
      description: z.string(),
    })
    .strict(),
]);
export type CertificateReloadTemplate = z.infer<typeof CertificateReloadSchema>;

export const EngineRoleSchema = z
  .object({
    ...programFields,
    /** Other programs the argv or configs name (e.g. patroni run by python3, postgres for bin_dir). */
    requires: z.array(z.string()).default([]),
    ports: z.array(EnginePortSchema).min(1),
    /** A pid file a child may leave behind (postgres is NOT Patroni's child): check it after stop. */
    leftoverPidFile: z.string().optional(),
    /**
     * The ALLOW list of extra args (server/core/extra-args.ts): each option a plan may pass for this role,
     * with a pattern its whole value must match (no pattern: a flag). Anything else is refused.
     */
    options: z.array(AllowedOptionSchema).default([]),
    /** Options the engine sets itself (names without dashes), Starter-style: refused with "managed". */
    managedOptions: z.array(z.string()).default([]),
    rollingRestart: RollingRestartSchema,
    companion: EngineCompanionSchema.optional(),
    /** Absent: certificate renewal falls back to a rolling restart for the whole cluster. */
    certificateReload: CertificateReloadSchema.optional(),
    /**
     * How the running program re-reads its rendered configuration (a scale step changed the plan's hosts:
     * pg_hba, etcd hosts): the signal its main program takes. Absent: the role cannot take a new plan in place.
     */
    configReload: z.object({ signal: z.enum(['SIGHUP', 'SIGUSR1', 'SIGUSR2']), description: z.string() }).strict().optional(),
  })
  .strict();
export type EngineRole = z.infer<typeof EngineRoleSchema>;

export const EngineSecretSchema = z
  .object({
    name: z.string().regex(/^[a-z][a-z0-9-]*$/),
    /** Random bytes; the secret is their hex form (no ':' or quoting trouble anywhere). */
    bytes: z.number().int().min(16).max(128).default(24),
    description: z.string().optional(),
  })
  .strict();

export const EngineManifestSchema = z
  .object({
    name: z.string().regex(/^[a-z0-9][a-z0-9-]*$/),
    description: z.string(),
    /** Offset step between port sets of dispatchers (or processes) sharing one address. */
    portOffsetStep: z.number().int().min(1).max(1000),
    secrets: z.array(EngineSecretSchema).default([]),
    /** Fixed values templates may use ({{vars.x}}), e.g. where PostgreSQL's binaries live. */
    vars: z.record(z.string(), z.string()).default({}),
    roles: z.object(Object.fromEntries(ROLES.map((r) => [r, EngineRoleSchema])) as Record<(typeof ROLES)[number], typeof EngineRoleSchema>).strict(),
  })
  .strict();
export type EngineManifest = z.infer<typeof EngineManifestSchema>;

/** A loaded engine: its manifest plus the text of every template file it names. */
export interface Engine {
  name: string;
  manifest: EngineManifest;
  /** template file name -> content */
  templates: Record<string, string>;
}

/** What the Planner and the validator need from an engine (no templates). */
/** Defined in api/ so the pure Planner and validator can take it without importing server code. */
export type { EngineDefaults } from '../../api/engine-catalog.js';
