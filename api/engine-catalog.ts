/**
 * The Planner's and validator's view of an engine: its port names with defaults and exposures, and the
 * options a plan may not override. Plain data, made from templates/<engine>/engine.yaml by
 * server/engines/loader.ts and handed to the pure code (server/core/planner.ts, validate-plan.ts), which
 * never reads the disk itself (docs/DESIGN.md, "Dependency rules").
 */
import type { Exposure, Role } from './plan.js';

export interface EngineDefaults {
  name: string;
  portOffsetStep: number;
  roles: Record<Role, { ports: { name: string; default: number; exposure: Exposure }[]; forbiddenOptions: string[] }>;
}

/** Every engine a caller knows, keyed by name. */
export type EngineCatalog = Record<string, EngineDefaults>;
