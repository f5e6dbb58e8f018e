/**
 * The Planner as the launcher uses it: the pure Planner (server/core/planner.ts) bound to the engine
 * profiles installed with this package (templates/, read by server/engines/loader.ts). The launcher plans
 * offline — `dispatch plan` needs no dispatcher — so it reads the same engine data the daemon reads; this is
 * the one place it does (docs/DESIGN.md, "Dependency rules").
 */
import type { EngineCatalog } from '../api/engine-catalog.js';
import type { Plan } from '../api/plan.js';
import * as core from '../server/core/planner.js';
import { defaultEngineCatalog } from '../server/engines/loader.js';

export { parseSpecText } from '../server/core/planner.js';

/** The engines installed with this package. */
export function installedEngines(): EngineCatalog {
  return defaultEngineCatalog();
}

export function planFromSpec(input: unknown, engines: EngineCatalog = installedEngines()): Plan {
  return core.planFromSpec(input, engines);
}

export function planFromSpecText(text: string, filename?: string, engines: EngineCatalog = installedEngines()): Plan {
  return core.planFromSpecText(text, filename, engines);
}
