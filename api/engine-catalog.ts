/**
 * The Planner's and validator's view of an engine: the program each role runs, its port names with defaults
 * and exposures, and the options a plan may pass (an allow list) or may not override (managed). Plain data,
 * made from templates/<engine>/engine.yaml by server/engines/loader.ts and handed to the pure code
 * (server/core/planner.ts, validate-plan.ts), which never reads the disk itself (docs/DESIGN.md,
 * "Dependency rules").
 */
import type { Exposure, Role } from './plan.js';

/** One option a user may pass: its name (without dashes) and, when it takes a value, the value's pattern. */
export interface AllowedOption {
  name: string;
  /** A regular expression the WHOLE value must match; absent = a flag without value. */
  value?: string;
}

export interface RoleOptions {
  /** Options a user may pass. */
  allowed: readonly AllowedOption[];
  /** Options the engine sets itself (Starter-style): named separately so the refusal says why. */
  managed: readonly string[];
}

export interface EngineDefaults {
  name: string;
  portOffsetStep: number;
  /** Every program the engine runs or names (role programs, `requires`, probe programs): the keys a plan's `binaries` may use. */
  programs: string[];
  roles: Record<
    Role,
    {
      /** The program this role runs (argv[0]); fixed by the engine, never by a plan. */
      program: string;
      ports: { name: string; default: number; exposure: Exposure }[];
      options: RoleOptions;
    }
  >;
}

/** Engines by name. A Map, never a plain object: an engine name like "constructor" must not find anything. */
export type EngineCatalog = ReadonlyMap<string, EngineDefaults>;
